import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { logIn } from './login';
import { post, requestAPI } from './request';
import {
  DEFAULT_SETTINGS,
  IClusterEntry,
  IClusterStatus,
  ILaunchReply,
  ISettings,
  IStatus,
  IStatusConfig,
  LaunchValues,
  STATUS_KEYS
} from './tokens';
import { ICard, Progress, explainReason, renderCard, secondsLeft } from './card';
import { el } from './dom';
import { LaunchForm } from './form';
import { formatDuration, formatEstimate } from './format';

function message(error: unknown): string {
  return (error as Error)?.message || String(error);
}

/**
 * The HPC sidebar: one card per configured cluster with its state, a live countdown, launch,
 * open, switch and stop; polls gently, faster while something is pending.
 */
export class HPCPanel extends Widget {
  constructor() {
    super();
    this.id = 'jupyter-hpc-manager-panel';
    this.addClass('jp-HPCPanel');
    const header = el('div', 'jp-HPCPanel-header');
    header.appendChild(el('h2', 'jp-HPCPanel-title', 'HPC clusters'));
    const refresh = el('button', 'jp-Button jp-mod-styled jp-HPCPanel-refresh', 'Refresh');
    refresh.title = 'Ask SLURM now';
    refresh.onclick = () => void this.refresh(true);
    header.appendChild(refresh);
    this.node.appendChild(header);
    this._status = el('div', 'jp-HPCPanel-status');
    this.node.appendChild(this._status);
    this._list = el('div', 'jp-HPCPanel-list');
    this.node.appendChild(this._list);
    this._ticker = window.setInterval(() => this._tick(), 1000);
  }

  settings: ISettings = { ...DEFAULT_SETTINGS };

  /** A launch that ran: what it asked for (kept as "same as last time"). */
  onLaunched: ((hpc: string, values: LaunchValues) => void) | null = null;

  get config(): IStatusConfig | null {
    return this._config;
  }

  get activeHpc(): string | null {
    return this._active;
  }

  entry(hpc: string): IClusterEntry | null {
    return this._cards.get(hpc)?.entry ?? null;
  }

  dispose(): void {
    window.clearInterval(this._ticker);
    window.clearTimeout(this._timer);
    super.dispose();
  }

  /** Load the configuration (defaults, clusters), then start polling. */
  async start(): Promise<void> {
    try {
      const status = await requestAPI<IStatus>('status');
      this._config = status.config;
      this._active = status.activeHpc;
      for (const hpc of status.config.clusters) {
        this._card(hpc);
      }
      void this._followOptions(status);
    } catch (error) {
      this._status.textContent = `Cannot reach the HPC manager: ${message(error)}`;
    }
    await this.refresh(false);
  }

  /** status answers from memory: what a cluster offers (its partitions) may still be asked
   * in the background (partitionsPending). Ask again a few times, and make the forms of the
   * clusters whose answer came in anew. */
  private async _followOptions(status: IStatus): Promise<void> {
    let pending = pendingOptions(status);
    // sinfo is bounded by the server's command timeout: follow it for about a minute.
    for (let tries = 0; pending.length && tries < 20; tries++) {
      await new Promise(resolve => window.setTimeout(resolve, Math.min(1000 * (tries + 1), 5000)));
      try {
        status = await requestAPI<IStatus>('status');
      } catch {
        return;
      }
      if (this._config) {
        this._config.clusterOptions = status.config.clusterOptions;
      }
      const still = pendingOptions(status);
      for (const hpc of pending.filter(h => !still.includes(h))) {
        // In place: what the user typed, and an open "More options", stay.
        this._card(hpc).form?.setOptions(status.config.clusterOptions?.[hpc] ?? null);
      }
      pending = still;
    }
  }

  /** One cluster-status call; refresh=true skips the server's cache. */
  async refresh(force: boolean): Promise<void> {
    window.clearTimeout(this._timer);
    try {
      const status = await requestAPI<IClusterStatus>(
        force ? 'cluster-status?refresh=true' : 'cluster-status'
      );
      this._apply(status);
      this._status.textContent = '';
    } catch (error) {
      this._status.textContent = `Cannot reach the HPC manager: ${message(error)}`;
    }
    this._schedule();
  }

  /** Launch (or reconnect) on a cluster with the card's form values (checked by the server
   * first, nothing submitted while a value is refused); resolves to the reply. */
  async launch(hpc: string, values?: LaunchValues) {
    const card = this._card(hpc);
    const form = card.form;
    const asked: LaunchValues = values ?? form?.values() ?? {};
    const body = { hpc, ...asked };
    if (!values && form) {
      const problem = await form.check();
      if (problem) {
        Notification.error(`Launch on ${hpc}: ${problem}`, { autoClose: 8000 });
        return null;
      }
    }
    card.busy = true;
    this._setProgress(card, 'submitted');
    // The launch waits on the server until the IDE is up; follow the job meanwhile.
    const follow = window.setInterval(() => void this._follow(card), 2000);
    try {
      const reply = await post<ILaunchReply>('launch', body);
      if (reply.status === 'pending') {
        this._setProgress(card, 'pending');
        const why = explainReason(reply);
        Notification.info(`Job ${reply.jobId} on ${hpc} is queued${why ? ` (${why})` : ''}.`, {
          autoClose: 8000
        });
      } else {
        this._setProgress(card, 'ready');
        if (Object.keys(asked).length) {
          // "Same as last time" offers this from now on (the form is made anew when the card
          // next shows it).
          this.settings.lastLaunch = { ...this.settings.lastLaunch, [hpc]: asked };
          this.onLaunched?.(hpc, asked);
          card.form?.dispose();
          card.form = null;
        }
        // The steps have been seen; the card goes back to showing the session.
        window.setTimeout(() => {
          if (card.progress === 'ready') {
            this._setProgress(card, null);
          }
        }, 5000);
      }
      return reply;
    } catch (error) {
      this._setProgress(card, null);
      Notification.error(`Launch on ${hpc} failed: ${message(error)}`, { autoClose: false });
      return null;
    } finally {
      window.clearInterval(follow);
      card.busy = false;
      await this.refresh(true);
    }
  }

  async switchTo(hpc: string): Promise<void> {
    try {
      await post(`switch/${encodeURIComponent(hpc)}`);
      this._active = hpc;
      await this.refresh(false);
    } catch (error) {
      Notification.error(message(error), { autoClose: 8000 });
    }
  }

  /** Ask, then stop (and maybe cancel the job). */
  async stop(hpc: string): Promise<void> {
    const body = new Widget();
    const label = el('label', 'jp-HPCPanel-cancel');
    const box = el('input');
    box.type = 'checkbox';
    box.checked = true;
    box.className = 'jp-HPCPanel-cancelJob';
    label.append(box, ' also cancel the SLURM job (ends the session; unsaved work is lost)');
    body.node.append(
      el(
        'p',
        '',
        `Stop VS Code on ${hpc}? Without cancelling, the job keeps running and a
      later launch reconnects to it.`
      ),
      label
    );
    const result = await showDialog({
      title: `Stop VS Code on ${hpc}`,
      body,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop' })]
    });
    if (!result.button.accept) {
      return;
    }
    const card = this._card(hpc);
    card.busy = true;
    this._render(card);
    try {
      await post(`stop/${encodeURIComponent(hpc)}`, { cancelJob: box.checked });
      // The user ended it: no "session has ended" notice on the next refresh.
      card.entry = null;
      Notification.info(
        box.checked ? `Cancelled the job on ${hpc}.` : `Stopped; the job on ${hpc} keeps running.`,
        { autoClose: 5000 }
      );
    } catch (error) {
      Notification.error(`Stop on ${hpc} failed: ${message(error)}`, { autoClose: false });
    } finally {
      card.busy = false;
      card.progress = null;
      await this.refresh(true);
    }
  }

  /** The login dialog, for a cluster that asks for a password or code; then the card. */
  async login(hpc: string): Promise<boolean> {
    const card = this._card(hpc);
    card.busy = true;
    this._render(card);
    try {
      const connected = await logIn(hpc);
      if (connected) {
        // What the cluster offers could not be read before the login: ask now, and make the
        // card's form anew with it.
        await this._reloadOptions(hpc);
      }
      return connected;
    } finally {
      card.busy = false;
      await this.refresh(true);
    }
  }

  private async _reloadOptions(hpc: string): Promise<void> {
    let status: IStatus;
    try {
      status = await requestAPI<IStatus>('status');
      if (this._config) {
        this._config.clusterOptions = status.config.clusterOptions;
      }
    } catch {
      return; // the form keeps its plain fields; a launch is still checked by the server
    }
    this._card(hpc).form?.setOptions(status.config.clusterOptions?.[hpc] ?? null);
    void this._followOptions(status);
  }

  async logout(hpc: string): Promise<void> {
    try {
      await post(`logout/${encodeURIComponent(hpc)}`);
    } catch (error) {
      Notification.error(`Log out of ${hpc}: ${message(error)}`, { autoClose: 8000 });
    }
    await this.refresh(true);
  }

  openVSCode(hpc: string, target?: Window | null): void {
    const url = this.entry(hpc)?.url;
    if (!url) {
      Notification.warning(`No VS Code session is running on ${hpc}.`, { autoClose: 5000 });
      target?.close();
      return;
    }
    if (target) {
      target.location.href = url;
    } else {
      window.open(url, '_blank', 'noopener');
    }
  }

  // -- internals ------------------------------------------------------------------------------

  private async _follow(card: ICard): Promise<void> {
    try {
      const status = await requestAPI<IClusterStatus>('cluster-status?refresh=true');
      this._apply(status);
    } catch {
      return;
    }
    const state = card.entry?.status;
    if (state === 'pending') {
      this._setProgress(card, 'pending');
    } else if (state === 'running') {
      this._setProgress(card, 'running');
    }
  }

  private _schedule(): void {
    const waiting = [...this._cards.values()].some(
      c => c.busy || c.entry?.status === 'pending' || c.progress === 'pending'
    );
    const seconds = waiting ? this.settings.pendingPollSeconds : this.settings.pollSeconds;
    this._timer = window.setTimeout(() => void this.refresh(waiting), seconds * 1000);
  }

  private _apply(status: IClusterStatus): void {
    this._active = status.activeHpc;
    const now = Date.now();
    for (const [hpc, value] of Object.entries(status)) {
      if (STATUS_KEYS.has(hpc) || typeof value !== 'object' || value === null) {
        continue;
      }
      const card = this._card(hpc);
      const before = card.entry;
      const entry = value as IClusterEntry;
      if (before?.status === 'running' && entry.status === 'idle') {
        Notification.info(`The VS Code session on ${hpc} has ended (job ${before.jobId}).`, {
          autoClose: false
        });
      }
      if (entry.status !== 'running' || entry.jobId !== before?.jobId) {
        card.warned = false;
      }
      if (entry.status === 'idle' && !card.busy) {
        card.progress = null;
      }
      if (
        entry.status === 'running' &&
        !card.busy &&
        (card.progress === 'pending' || card.progress === 'submitted')
      ) {
        // A launch that answered "pending" has run since: its steps are over.
        card.progress = null;
      }
      card.entry = entry;
      card.fetchedAt = now;
      this._render(card);
    }
  }

  private _setProgress(card: ICard, progress: Progress | null): void {
    card.progress = progress;
    this._render(card);
  }

  private _tick(): void {
    for (const card of this._cards.values()) {
      const estimate = card.entry?.estimatedStart;
      if (card.entry?.status === 'pending' && estimate) {
        const node = card.root.querySelector('.jp-HPCPanel-estimate');
        if (node) {
          node.textContent = formatEstimate(estimate);
        }
      }
      if (card.entry?.status !== 'running') {
        continue;
      }
      const left = secondsLeft(card);
      const clock = card.root.querySelector('.jp-HPCPanel-timeLeft');
      if (clock && left !== null) {
        clock.textContent = formatDuration(left);
      }
      const warnAt = this.settings.warnMinutesLeft * 60;
      if (left !== null && warnAt > 0 && left < warnAt && !card.warned) {
        card.warned = true;
        Notification.warning(
          `VS Code on ${card.hpc} has ${Math.ceil(left / 60)} minutes left before the job ` +
            'reaches its time limit. Save your work.',
          { autoClose: false }
        );
      }
    }
  }

  private _card(hpc: string): ICard {
    let card = this._cards.get(hpc);
    if (!card) {
      const root = el('section', 'jp-HPCPanel-card');
      root.dataset.hpc = hpc;
      card = {
        root,
        hpc,
        entry: null,
        fetchedAt: 0,
        form: null,
        progress: null,
        problem: null,
        busy: false,
        warned: false
      };
      this._cards.set(hpc, card);
      this._list.appendChild(root);
      this._render(card);
    }
    return card;
  }

  private _render(card: ICard): void {
    renderCard(card, this);
  }

  /** The card's launch form, made once (it keeps what the user typed across renders). */
  formFor(card: ICard): LaunchForm {
    if (!card.form) {
      const config = this._config;
      card.form = new LaunchForm(
        card.hpc,
        {
          cpus: config?.defaultCpus ?? '2',
          mem: config?.defaultMem ?? '40G',
          time: config?.defaultTime ?? '12:00:00'
        },
        config?.clusterOptions?.[card.hpc] ?? null,
        this.settings.lastLaunch?.[card.hpc] ?? null,
        problem => {
          card.problem = problem;
          const launch = card.root.querySelector<HTMLButtonElement>('.jp-HPCPanel-launch');
          if (launch) {
            launch.disabled = card.busy || problem !== null;
          }
        },
        () => void this.launch(card.hpc)
      );
    }
    card.form.node
      .querySelectorAll<HTMLInputElement>('input, select')
      .forEach(input => (input.disabled = card.busy));
    return card.form;
  }

  private _config: IStatusConfig | null = null;
  private _active: string | null = null;
  private _cards = new Map<string, ICard>();
  private _list: HTMLElement;
  private _status: HTMLElement;
  private _ticker: number;
  private _timer = 0;
}

function pendingOptions(status: IStatus): string[] {
  const options = status.config.clusterOptions ?? {};
  return Object.keys(options).filter(hpc => options[hpc]?.partitionsPending);
}
