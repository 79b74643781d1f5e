import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { post } from './request';
import { ILoginReply, ILoginPrompt } from './tokens';

/**
 * The "Log in" dialog for a cluster whose login node (or a jump host) asks for a password or
 * a one-time code: each round of the server's prompts is one dialog (password fields where the
 * prompt is secret), Enter submits. A refused answer shows the server's words and starts a new
 * attempt at once. The answers go to the server, which passes them to the cluster; nothing here
 * keeps them.
 */
export async function logIn(hpc: string): Promise<boolean> {
  const path = `login/${encodeURIComponent(hpc)}`;
  let problem = '';
  for (;;) {
    let reply: ILoginReply;
    try {
      reply = await post<ILoginReply>(path, {});
    } catch (error) {
      Notification.error(`Log in to ${hpc}: ${(error as Error).message}`, { autoClose: false });
      return false;
    }
    let refused = false;
    while (reply.status === 'prompt') {
      const answers = await askRound(hpc, reply, problem);
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
        Notification.error(`Log in to ${hpc}: ${(error as Error).message}`, {
          autoClose: false
        });
        return false;
      }
    }
    if (!refused) {
      Notification.success(`Logged in to ${hpc}.`, { autoClose: 4000 });
      return true;
    }
  }
}

class RoundBody extends Widget implements Dialog.IBodyWidget<string[]> {
  constructor(round: ILoginPrompt, problem: string) {
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
    add('p', 'jp-HPCLogin-host', `The ${round.host} asks:`);
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
      // Not for the browser's password manager to keep, nor its autofill to guess.
      input.autocomplete = 'off';
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
  problem: string
): Promise<string[] | null> {
  const body = new RoundBody(round, problem);
  const result = await showDialog({
    title: `Log in to ${hpc}`,
    body,
    focusNodeSelector: 'input',
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Log in' })]
  });
  const answers = result.button.accept ? result.value : null;
  body.dispose(); // the typed values go with the dialog
  return answers;
}
