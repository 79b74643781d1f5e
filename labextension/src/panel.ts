import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Message } from '@lumino/messaging';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { ClusterCard, ICardActions, explainReason } from './card';
import { describeEnd } from './format';
import { el } from './dom';
import { logIn } from './login';
import { Change, HPCModel, SlurmTrouble, secondsLeft } from './model';
import { APIError } from './request';
import { ILaunchReply, ITrans, PANEL_ID } from './tokens';

function message(error: unknown): string {
  return (error as Error)?.message || String(error);
}

/**
 * The HPC sidebar: a view of the model, one card per configured cluster. It shows what the
 * model holds and does what the buttons ask (with the dialogs and notifications they need).
 */
export class HPCPanel extends Widget implements ICardActions {
  constructor(
    readonly model: HPCModel,
    private readonly _trans: ITrans
  ) {
    super();
    const trans = _trans;
    this.id = PANEL_ID;
    this.addClass('jp-HPCPanel');
    const header = el('div', 'jp-HPCPanel-header');
    const title = el('h2', 'jp-HPCPanel-title', trans.__('HPC clusters'));
    title.id = `${PANEL_ID}-title`;
    header.appendChild(title);
    // A named region: a screen reader says where the focus went when the panel is shown.
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-labelledby', title.id);
    const refresh = el(
      'button',
      'jp-Button jp-mod-styled jp-HPCPanel-refresh',
      trans.__('Refresh')
    );
    refresh.type = 'button';
    refresh.title = trans.__('Ask SLURM now');
    refresh.onclick = () => void this.refresh(true);
    header.appendChild(refresh);
    this._status = el('div', 'jp-HPCPanel-status');
    this._status.setAttribute('role', 'alert');
    this._list = el('div', 'jp-HPCPanel-list');
    this.node.append(header, this._status, this._list);
    model.changed.connect(this._onChanged, this);
    model.ended.connect((_, { hpc, jobId, reason }) => {
      Notification.info(
        reason
          ? describeEnd({ jobId, reason, at: '' }, hpc, trans)
          : trans.__('The VS Code session on %1 has ended (job %2).', hpc, jobId),
        { autoClose: false }
      );
    }, this);
    model.idleWarning.connect((_, w) => {
      Notification.warning(
        trans.__(
          "%1's job %2 has been idle for %3 minutes and will be cancelled in %4.",
          w.hpc,
          w.jobId,
          w.idleMinutes,
          w.cancelInMinutes
        ),
        {
          autoClose: false,
          actions: [
            {
              label: trans.__('Keep it'),
              caption: trans.__('Keep the job running (its idle clock starts again)'),
              callback: () => {
                this.model.keep(w.hpc).catch(error => {
                  Notification.error(trans.__('Keep %1: %2', w.hpc, message(error)), {
                    autoClose: 8000
                  });
                });
              }
            }
          ]
        }
      );
    }, this);
    model.poll.ticked.connect((_, state) => {
      if (state.phase === 'rejected' && !(state.payload instanceof SlurmTrouble)) {
        this._status.textContent = trans.__(
          'Cannot reach the HPC manager: %1',
          message(state.payload)
        );
      } else if (state.phase === 'resolved' || state.phase === 'reconnected') {
        this._status.textContent = '';
      }
    }, this);
    this._ticker = window.setInterval(() => this._tick(), 1000);
  }

  /** The server could not be reached (the configuration did not load). */
  showProblem(error: unknown): void {
    this._status.textContent = this._trans.__('Cannot reach the HPC manager: %1', message(error));
  }

  card(hpc: string): ClusterCard | null {
    return this._cards.get(hpc) ?? null;
  }

  /** One cluster-status call now; force skips the server's cache (the user's Refresh). */
  async refresh(force: boolean): Promise<void> {
    try {
      await this.model.refresh(force);
      this._status.textContent = '';
    } catch (error) {
      this.showProblem(error);
    }
  }

  /** Launch hpc's form (or these values); a cluster that needs a login asks for it first. */
  async launchNow(hpc: string, values?: Record<string, string>): Promise<ILaunchReply | null> {
    const trans = this._trans;
    if (this.model.state(hpc).entry?.login === 'required' && !(await this.login(hpc))) {
      return null;
    }
    const form = this.card(hpc)?.form;
    if (!values && form) {
      const problem = await form.check();
      if (problem) {
        Notification.error(trans.__('Launch on %1: %2', hpc, problem), { autoClose: 8000 });
        return null;
      }
    }
    try {
      const reply = await this.model.launch(hpc, values ?? form?.values() ?? {});
      if (reply.status === 'pending') {
        const why = explainReason(reply);
        Notification.info(
          why
            ? trans.__('Job %1 on %2 is queued (%3).', reply.jobId, hpc, why)
            : trans.__('Job %1 on %2 is queued.', reply.jobId, hpc),
          { autoClose: 8000 }
        );
      }
      return reply;
    } catch (error) {
      if (error instanceof APIError && error.response.status === 401 && (await this.login(hpc))) {
        return this.launchNow(hpc, values); // the connection asked for a login meanwhile
      }
      Notification.error(trans.__('Launch on %1 failed: %2', hpc, message(error)), {
        autoClose: false
      });
      return null;
    }
  }

  launch(hpc: string): void {
    void this.launchNow(hpc);
  }

  switchTo(hpc: string): void {
    this.model.switchTo(hpc).catch(error => {
      Notification.error(message(error), { autoClose: 8000 });
    });
  }

  /** Ask, then stop (and maybe cancel the job). */
  stop(hpc: string): void {
    void this.stopNow(hpc);
  }

  async stopNow(hpc: string): Promise<void> {
    const trans = this._trans;
    const body = el(
      'p',
      '',
      trans.__(
        'Stop VS Code on %1? Without cancelling, the job keeps running and a later launch reconnects to it.',
        hpc
      )
    );
    const result = await showDialog({
      title: trans.__('Stop VS Code on %1', hpc),
      body: new Widget({ node: body }),
      checkbox: {
        label: trans.__('Also cancel the SLURM job (ends the session; unsaved work is lost)'),
        className: 'jp-HPCPanel-cancelJob',
        checked: true
      },
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.warnButton({ label: trans.__('Stop') })
      ]
    });
    if (!result.button.accept) {
      return;
    }
    const cancelJob = result.isChecked !== false;
    try {
      await this.model.stop(hpc, cancelJob);
      Notification.info(
        cancelJob
          ? trans.__('Cancelled the job on %1.', hpc)
          : trans.__('Stopped; the job on %1 keeps running.', hpc),
        { autoClose: 5000 }
      );
    } catch (error) {
      Notification.error(trans.__('Stop on %1 failed: %2', hpc, message(error)), {
        autoClose: false
      });
    }
  }

  /** Ask for the job's new time limit, then set it (as SLURM allows: see the server). */
  changeTime(hpc: string): void {
    void this.changeTimeNow(hpc);
  }

  async changeTimeNow(hpc: string): Promise<void> {
    const trans = this._trans;
    const entry = this.model.state(hpc).entry;
    if (!entry?.jobId) {
      return;
    }
    const running = entry.status === 'running';
    const body = el('div', 'jp-HPCPanel-timeDialog');
    const text = el(
      'p',
      '',
      running
        ? trans.__(
            'A shorter time limit gives the rest of the allocation back (SLURM lets only an operator make a running job longer).'
          )
        : trans.__(
            "The job waits in the queue: its time limit can go up (to its partition's maximum) or down."
          )
    );
    const label = el('label', '', trans.__('New time limit (HH:MM:SS or D-HH:MM:SS)'));
    const input = el('input', 'jp-mod-styled jp-HPCPanel-newTime') as HTMLInputElement;
    input.value = entry.timeLimit ?? '';
    input.name = 'time';
    label.appendChild(input);
    body.append(text, label);
    const result = await showDialog({
      title: running
        ? trans.__('Give back time: job %1 on %2', entry.jobId, hpc)
        : trans.__('Change the time of job %1 on %2', entry.jobId, hpc),
      body: new Widget({ node: body }),
      focusNodeSelector: 'input',
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.okButton({ label: trans.__('Set') })
      ]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      const reply = await this.model.changeTime(hpc, input.value.trim());
      Notification.info(trans.__('Job %1 on %2 now has %3.', reply.jobId, hpc, reply.timeLimit), {
        autoClose: 5000
      });
    } catch (error) {
      Notification.error(trans.__('Time of job %1 on %2: %3', entry.jobId, hpc, message(error)), {
        autoClose: false
      });
    }
  }

  /** The login dialog, for a cluster that asks for a password or code. */
  login(hpc: string): Promise<boolean> {
    if (!this._logins.has(hpc)) {
      const done = (async () => {
        await this.model.loggingIn(hpc, true);
        let connected = false;
        try {
          connected = await logIn(hpc, this._trans);
        } finally {
          await this.model.loggingIn(hpc, false, connected);
          this._logins.delete(hpc);
        }
        return connected;
      })();
      this._logins.set(hpc, done);
    }
    return this._logins.get(hpc)!;
  }

  logout(hpc: string): void {
    this.model.logout(hpc).catch(error => {
      Notification.error(this._trans.__('Log out of %1: %2', hpc, message(error)), {
        autoClose: 8000
      });
    });
  }

  openVSCode(hpc: string, target?: Window | null): void {
    const url = this.model.state(hpc).entry?.url;
    if (!url) {
      Notification.warning(this._trans.__('No VS Code session is running on %1.', hpc), {
        autoClose: 5000
      });
      target?.close();
      return;
    }
    if (target) {
      target.location.href = url;
    } else {
      window.open(url, '_blank', 'noopener');
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    window.clearInterval(this._ticker);
    this._cards.forEach(card => card.dispose());
    Signal.disconnectReceiver(this);
    super.dispose();
  }

  /**
   * Activated (its tab clicked, a Launcher card, a command): the keyboard focus comes into the
   * panel, as it does in JupyterLab's own panels, unless it is already in it; Tab goes on to
   * the controls.
   */
  protected onActivateRequest(msg: Message): void {
    super.onActivateRequest(msg);
    if (this.isAttached && !this.node.contains(document.activeElement)) {
      this.node.tabIndex = -1;
      this.node.focus();
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.visible = true;
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.visible = false;
  }

  private _onChanged(_: HPCModel, change: Change): void {
    if (change.what === 'config') {
      for (const hpc of this.model.clusters) {
        this._cardFor(hpc);
      }
    }
    if (change.hpc === null) {
      this._cards.forEach(card => card.update());
      return;
    }
    const card = this._cardFor(change.hpc);
    if (change.what === 'options') {
      card.updateOptions();
    } else {
      card.update();
    }
  }

  private _cardFor(hpc: string): ClusterCard {
    let card = this._cards.get(hpc);
    if (!card) {
      card = new ClusterCard(hpc, this.model, this, this._trans);
      this._cards.set(hpc, card);
      this._list.appendChild(card.node);
    }
    return card;
  }

  /** Once a second: the countdowns, and the warning before a job's time runs out. */
  private _tick(): void {
    const now = Date.now();
    const warnAt = this.model.settings.warnMinutesLeft * 60;
    for (const card of this._cards.values()) {
      card.tick(now);
      const state = this.model.state(card.hpc);
      if (state.entry?.status !== 'running') {
        this._warned.delete(card.hpc);
        continue;
      }
      const left = secondsLeft(state, now);
      const key = `${state.entry.jobId}`;
      if (left !== null && warnAt > 0 && left < warnAt && this._warned.get(card.hpc) !== key) {
        this._warned.set(card.hpc, key);
        Notification.warning(
          this._trans._n(
            'VS Code on %2 has %1 minute left before the job reaches its time limit. Save your work.',
            'VS Code on %2 has %1 minutes left before the job reaches its time limit. Save your work.',
            Math.ceil(left / 60),
            card.hpc
          ),
          { autoClose: false }
        );
      }
    }
  }

  private _cards = new Map<string, ClusterCard>();
  private _logins = new Map<string, Promise<boolean>>();
  private _warned = new Map<string, string>();
  private _list: HTMLElement;
  private _status: HTMLElement;
  private _ticker: number;
}
