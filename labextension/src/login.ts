import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { post } from './request';
import { ILoginReply, ILoginPrompt, ITrans, plainTrans } from './tokens';

/**
 * The "Log in" dialog for a cluster whose login node (or a jump host) asks for a password or
 * a one-time code: each round of the server's prompts is one dialog (password fields where the
 * prompt is secret), Enter submits. A refused answer shows the server's words and starts a new
 * attempt at once. The answers go to the server, which passes them to the cluster; nothing here
 * keeps them.
 */
export async function logIn(hpc: string, trans: ITrans = plainTrans): Promise<boolean> {
  const path = `login/${encodeURIComponent(hpc)}`;
  let problem = '';
  for (;;) {
    let reply: ILoginReply;
    try {
      reply = await post<ILoginReply>(path, {});
    } catch (error) {
      Notification.error(trans.__('Log in to %1: %2', hpc, (error as Error).message), {
        autoClose: false
      });
      return false;
    }
    let refused = false;
    while (reply.status === 'prompt') {
      const answers = await askRound(hpc, reply, problem, trans);
      problem = '';
      if (answers === null) {
        // Cancelled: end the attempt on the server now rather than when it expires.
        await post(`logout/${encodeURIComponent(hpc)}`).catch(() => undefined);
        return false;
      }
      try {
        reply = await post<ILoginReply>(path, { loginId: reply.loginId, answers });
      } catch (error) {
        if (error instanceof ServerConnection.ResponseError && error.response.status === 401) {
          problem = error.message; // a wrong password or code, or too slow: try again
          refused = true;
          break;
        }
        Notification.error(trans.__('Log in to %1: %2', hpc, (error as Error).message), {
          autoClose: false
        });
        return false;
      }
    }
    if (!refused) {
      Notification.success(trans.__('Logged in to %1.', hpc), { autoClose: 4000 });
      return true;
    }
  }
}

class RoundBody extends Widget implements Dialog.IBodyWidget<string[]> {
  constructor(round: ILoginPrompt, problem: string, trans: ITrans) {
    super();
    this.addClass('jp-HPCLogin');
    const add = (tag: string, cls: string, text: string) => {
      if (text.trim()) {
        const node = document.createElement(tag);
        node.className = cls;
        node.textContent = text;
        this.node.appendChild(node);
      }
    };
    add('p', 'jp-HPCLogin-error', problem);
    this.node.querySelector('.jp-HPCLogin-error')?.setAttribute('role', 'alert');
    add('p', 'jp-HPCLogin-host', trans.__('The %1 asks:', round.host));
    add('h3', 'jp-HPCLogin-title', round.title);
    add('p', 'jp-HPCLogin-instructions', round.instructions);
    for (const prompt of round.prompts) {
      const label = document.createElement('label');
      label.className = 'jp-HPCLogin-field';
      const text = document.createElement('span');
      text.textContent = prompt.text.trim();
      const input = document.createElement('input');
      input.className = 'jp-mod-styled jp-HPCLogin-answer';
      input.type = prompt.echo ? 'text' : 'password';
      // A one-time code is filled from an authenticator or SMS (one-time-code), never kept;
      // a password may come from the user's password manager.
      const code = /code|token|otp|verification|passcode/i.test(prompt.text);
      input.autocomplete = code ? 'one-time-code' : prompt.echo ? 'off' : 'current-password';
      if (code) {
        input.inputMode = 'numeric';
      }
      input.spellcheck = false;
      label.append(text, input);
      this.node.appendChild(label);
      this._inputs.push(input);
    }
  }

  getValue(): string[] {
    return this._inputs.map(input => input.value);
  }

  private _inputs: HTMLInputElement[] = [];
}

async function askRound(
  hpc: string,
  round: ILoginPrompt,
  problem: string,
  trans: ITrans
): Promise<string[] | null> {
  const body = new RoundBody(round, problem, trans);
  const result = await showDialog({
    title: trans.__('Log in to %1', hpc),
    body,
    focusNodeSelector: 'input',
    buttons: [
      Dialog.cancelButton({ label: trans.__('Cancel') }),
      Dialog.okButton({ label: trans.__('Log in') })
    ]
  });
  const answers = result.button.accept ? result.value : null;
  body.dispose(); // the typed values go with the dialog
  return answers;
}
