import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  DEFAULT_SETTINGS,
  IClusterEntry,
  IClusterOptions,
  IClusterStatus,
  ILaunchReply,
  ISettings,
  ITimeReply,
  EndReason,
  IStatus,
  IStatusConfig,
  LaunchValues,
  STATUS_KEYS
} from './tokens';

/** The steps of a launch the card shows. */
export type Progress = 'submitted' | 'pending' | 'running' | 'ready';

/** What the sidebar knows about one cluster. */
export interface IClusterState {
  readonly hpc: string;
  /** The server's last answer about it (cluster-status), null before the first. */
  readonly entry: IClusterEntry | null;
  /** When that answer arrived (ms): timeLeftSeconds was true then. */
  readonly fetchedAt: number;
  /** A launch of this sidebar under way (or just done): its step. */
  readonly progress: Progress | null;
  /** A launch, stop or login of this sidebar is under way. */
  readonly busy: boolean;
}

/** A running job that idle auto-cancel will end soon. */
export interface IIdleWarning {
  hpc: string;
  jobId: string;
  idleMinutes: number;
  cancelInMinutes: number;
}

/** What changed: one cluster's state, or (null) the configuration or the active cluster. */
export type Change = { hpc: string | null; what: 'state' | 'options' | 'config' };

/** The REST call the model makes (requestAPI in the sidebar; a fake in the unit tests). */
export type Request = <T>(endPoint: string, init?: RequestInit) => Promise<T>;

/**
 * The sidebar's state, apart from any view: the server's configuration, one state per
 * cluster, and the operations on them. Views listen to `changed` and update in place.
 *
 * Polling goes through one `Poll`: it stands by while the panel is closed or the tab hidden,
 * backs off while SLURM is slow or failing (a stale or failed answer), and asks sooner while
 * a job pends or a launch runs. It never asks the server to skip its cache: the server's TTL
 * bounds how often SLURM is asked (a user's Refresh is the exception). Answers are ordered:
 * one issued before an answer already applied, or before a launch or stop began, is dropped.
 */
export class HPCModel implements IDisposable {
  constructor(options: HPCModel.IOptions) {
    this._request = options.request;
    this._now = options.now ?? Date.now;
    this._poll = new Poll({
      auto: false,
      factory: () => this._pollOnce(),
      frequency: this._frequency(),
      name: 'jupyter-hpc-manager:cluster-status',
      standby: () => (this._visible ? 'when-hidden' : true)
    });
  }

  /** A cluster's state, options or the configuration changed. */
  get changed(): ISignal<this, Change> {
    return this._changed;
  }

  /** A running session ended without this sidebar stopping it, and why (when known). */
  get ended(): ISignal<this, { hpc: string; jobId: string; reason: EndReason | null }> {
    return this._ended;
  }

  /** A running job nobody uses will be cancelled soon (idle auto-cancel): once per job until
   * it is kept or used again. */
  get idleWarning(): ISignal<this, IIdleWarning> {
    return this._idleWarning;
  }

  /** A launch ran: what it asked for ("same as last time" from now on). */
  get launched(): ISignal<this, { hpc: string; values: LaunchValues }> {
    return this._launched;
  }

  get config(): IStatusConfig | null {
    return this._config;
  }

  get activeHpc(): string | null {
    return this._active;
  }

  get clusters(): string[] {
    return this._config?.clusters ?? [];
  }

  get poll(): Poll {
    return this._poll;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  get settings(): ISettings {
    return this._settings;
  }

  set settings(settings: ISettings) {
    this._settings = settings;
    this._retune();
  }

  /** What each cluster's last launch that ran asked for. */
  lastLaunch: Record<string, LaunchValues> = {};

  /** Whether anyone looks (the panel is open): a closed panel's poll stands by. */
  set visible(visible: boolean) {
    if (visible === this._visible) {
      return;
    }
    this._visible = visible;
    if (visible && this._started) {
      void this._poll.refresh(); // what may have changed while nobody looked
    }
  }

  state(hpc: string): IClusterState {
    return this._states.get(hpc) ?? empty(hpc);
  }

  options(hpc: string): IClusterOptions | null {
    return this._config?.clusterOptions?.[hpc] ?? null;
  }

  /** Read the configuration (status answers from memory), then start polling. */
  async start(): Promise<void> {
    const status = await this._request<IStatus>('status');
    this._config = status.config;
    this._active = status.activeHpc;
    this._changed.emit({ hpc: null, what: 'config' });
    this._started = true;
    void this._followOptions();
    await this._poll.start();
  }

  /**
   * One cluster-status call, applied unless a newer answer was applied first (then: false).
   * force asks the server to skip its cache (the user's Refresh).
   */
  async refresh(force = false): Promise<boolean> {
    const sent = ++this._issued;
    const status = await this._request<IClusterStatus>(
      force ? 'cluster-status?refresh=true' : 'cluster-status'
    );
    if (sent <= this._applied) {
      return false; // older than what the sidebar shows: dropped
    }
    this._applied = sent;
    this._apply(status);
    return true;
  }

  /** Launch on hpc with these fields; the reply, or the server's error (thrown). */
  async launch(hpc: string, values: LaunchValues): Promise<ILaunchReply> {
    this._update(hpc, { busy: true, progress: 'submitted' });
    this._fence();
    try {
      const reply = await this._request<ILaunchReply>('launch', post({ hpc, ...values }));
      if (reply.status === 'pending') {
        this._update(hpc, { progress: 'pending' });
      } else {
        this._update(hpc, { progress: 'ready' });
        if (Object.keys(values).length) {
          this.lastLaunch = { ...this.lastLaunch, [hpc]: values };
          this._launched.emit({ hpc, values });
        }
        // The steps have been seen; the card goes back to showing the session.
        setTimeout(() => {
          if (this.state(hpc).progress === 'ready') {
            this._update(hpc, { progress: null });
          }
        }, 5000);
      }
      return reply;
    } catch (error) {
      this._update(hpc, { progress: null });
      throw error;
    } finally {
      this._update(hpc, { busy: false });
      await this._settle();
    }
  }

  /** Stop hpc's session (cancelJob: and its job); the server's error is thrown. */
  async stop(hpc: string, cancelJob: boolean): Promise<void> {
    this._update(hpc, { busy: true });
    this._fence();
    try {
      await this._request(`stop/${encodeURIComponent(hpc)}`, post({ cancelJob }));
      // The user ended it: no "session has ended" on the next answer.
      this._update(hpc, { entry: null });
    } finally {
      this._update(hpc, { busy: false, progress: null });
      await this._settle();
    }
  }

  /** Keep hpc's running session (its idle clock starts again). */
  async keep(hpc: string): Promise<void> {
    await this._request(`keep/${encodeURIComponent(hpc)}`, post({}));
    this._warned.delete(hpc);
    await this.refresh().catch(() => undefined);
  }

  /** A new time limit for hpc's job (HH:MM:SS or D-HH:MM:SS); the server's error is thrown. */
  async changeTime(hpc: string, time: string): Promise<ITimeReply> {
    this._update(hpc, { busy: true });
    this._fence();
    try {
      return await this._request<ITimeReply>(`time/${encodeURIComponent(hpc)}`, post({ time }));
    } finally {
      this._update(hpc, { busy: false });
      await this._settle();
    }
  }

  async switchTo(hpc: string): Promise<void> {
    await this._request(`switch/${encodeURIComponent(hpc)}`, post({}));
    this._active = hpc;
    this._changed.emit({ hpc: null, what: 'state' });
    await this.refresh().catch(() => undefined);
  }

  async logout(hpc: string): Promise<void> {
    try {
      await this._request(`logout/${encodeURIComponent(hpc)}`, post({}));
    } finally {
      await this.refresh(true).catch(() => undefined);
    }
  }

  /** A login (its dialog is the view's) is under way on hpc, or over. */
  async loggingIn(hpc: string, busy: boolean, connected = false): Promise<void> {
    this._update(hpc, { busy });
    if (!busy) {
      if (connected) {
        // What the cluster offers could not be read before the login: ask now (and follow
        // it while the server asks sinfo).
        await this._reloadOptions();
        void this._followOptions();
      }
      await this.refresh(true).catch(() => undefined);
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._poll.dispose();
    Signal.clearData(this);
  }

  // -- internals ------------------------------------------------------------------------------

  /** What the Poll calls: an answer that shows SLURM slow or failing makes it back off. */
  private async _pollOnce(): Promise<void> {
    await this.refresh(false);
    this._retune();
    const troubled = this.clusters.some(hpc => {
      const entry = this.state(hpc).entry;
      return (
        !!entry &&
        entry.login !== 'required' &&
        (entry.stale === true || (entry.status === 'unknown' && !!entry.error))
      );
    });
    if (troubled) {
      throw new SlurmTrouble();
    }
  }

  /** The interval fits what is going on: sooner while a job pends or a launch runs. */
  private _frequency(): Poll.IOptions<void, unknown, 'standby'>['frequency'] {
    const waiting = [...this._states.values()].some(
      s => s.busy || s.entry?.status === 'pending' || s.progress === 'pending'
    );
    const seconds = waiting ? this._settings.pendingPollSeconds : this._settings.pollSeconds;
    return { interval: seconds * 1000, backoff: true, max: 300 * 1000 };
  }

  private _retune(): void {
    const next = this._frequency()!;
    const now = this._poll.frequency;
    if (next.interval !== now.interval) {
      this._poll.frequency = { ...now, ...next } as typeof now;
      if (this._started && next.interval! < now.interval) {
        void this._poll.refresh(); // sooner from now, not after the long wait
      }
    }
  }

  /** A launch or stop began or ended: answers asked before it are not applied. */
  private _fence(): void {
    this._applied = this._issued;
    this._retune();
  }

  private async _settle(): Promise<void> {
    this._fence();
    await this.refresh().catch(() => undefined);
    this._retune();
  }

  private _apply(status: IClusterStatus): void {
    this._active = status.activeHpc;
    const now = this._now();
    for (const [hpc, value] of Object.entries(status)) {
      if (STATUS_KEYS.has(hpc) || typeof value !== 'object' || value === null) {
        continue;
      }
      const entry = value as IClusterEntry;
      const before = this.state(hpc);
      if (
        before.entry?.status === 'running' &&
        entry.status === 'idle' &&
        !before.busy &&
        before.entry.jobId
      ) {
        const end = entry.lastEnd;
        this._ended.emit({
          hpc,
          jobId: before.entry.jobId,
          reason: end && end.jobId === before.entry.jobId ? end.reason : null
        });
      }
      this._checkIdle(hpc, entry, now);
      let progress = before.progress;
      if (before.busy && (progress === 'submitted' || progress === 'pending')) {
        // A launch under way: its steps follow the job.
        progress =
          entry.status === 'pending'
            ? 'pending'
            : entry.status === 'running'
              ? 'running'
              : progress;
      } else if (!before.busy && entry.status === 'idle') {
        progress = null;
      } else if (
        !before.busy &&
        entry.status === 'running' &&
        (progress === 'pending' || progress === 'submitted')
      ) {
        progress = null; // a launch that answered "pending" has run since
      }
      this._update(hpc, { entry, fetchedAt: now, progress });
    }
  }

  /** Warn once when a running job's idle cancel comes within idleWarningMinutes. */
  private _checkIdle(hpc: string, entry: IClusterEntry, now: number): void {
    const at = entry.idleCancelAt ? Date.parse(entry.idleCancelAt) : NaN;
    if (entry.status !== 'running' || Number.isNaN(at) || !entry.jobId) {
      this._warned.delete(hpc);
      return;
    }
    const warning = (this._config?.idleWarningMinutes ?? 5) * 60_000;
    const left = at - now;
    if (left > warning) {
      this._warned.delete(hpc); // used again since
    } else if (this._warned.get(hpc) !== entry.jobId) {
      this._warned.set(hpc, entry.jobId);
      this._idleWarning.emit({
        hpc,
        jobId: entry.jobId,
        idleMinutes: Math.round((entry.idleSeconds ?? 0) / 60),
        cancelInMinutes: Math.max(0, Math.ceil(left / 60_000))
      });
    }
  }

  private _update(hpc: string, change: Partial<Omit<IClusterState, 'hpc'>>): void {
    const before = this.state(hpc);
    const after = { ...before, ...change };
    if (
      after.entry === before.entry &&
      after.busy === before.busy &&
      after.progress === before.progress &&
      after.fetchedAt === before.fetchedAt
    ) {
      return;
    }
    this._states.set(hpc, after);
    this._changed.emit({ hpc, what: 'state' });
  }

  /**
   * status answers from memory: what a cluster offers may still be asked in the background
   * (partitionsPending). Ask again, less often each time, for about a minute.
   */
  private async _followOptions(): Promise<void> {
    if (this._following) {
      return;
    }
    this._following = true;
    try {
      for (let tries = 0; this._pendingOptions().length && tries < 20; tries++) {
        await new Promise(resolve => setTimeout(resolve, Math.min(1000 * (tries + 1), 5000)));
        if (this._disposed || !(await this._reloadOptions())) {
          return;
        }
      }
    } finally {
      this._following = false;
    }
  }

  private async _reloadOptions(): Promise<boolean> {
    let status: IStatus;
    try {
      status = await this._request<IStatus>('status');
    } catch {
      return false; // the forms keep what they have; a launch is still checked by the server
    }
    if (!this._config) {
      return false;
    }
    const before = this._config.clusterOptions ?? {};
    const after = status.config.clusterOptions ?? {};
    this._config = { ...this._config, clusterOptions: after };
    for (const hpc of Object.keys(after)) {
      if (JSON.stringify(before[hpc]) !== JSON.stringify(after[hpc])) {
        this._changed.emit({ hpc, what: 'options' });
      }
    }
    return true;
  }

  private _pendingOptions(): string[] {
    const options = this._config?.clusterOptions ?? {};
    return Object.keys(options).filter(hpc => options[hpc]?.partitionsPending);
  }

  private _request: Request;
  private _now: () => number;
  private _poll: Poll;
  private _settings: ISettings = { ...DEFAULT_SETTINGS };
  private _config: IStatusConfig | null = null;
  private _active: string | null = null;
  private _states = new Map<string, IClusterState>();
  private _issued = 0;
  private _applied = 0;
  private _visible = true;
  private _started = false;
  private _following = false;
  private _disposed = false;
  private _changed = new Signal<this, Change>(this);
  private _ended = new Signal<this, { hpc: string; jobId: string; reason: EndReason | null }>(this);
  private _idleWarning = new Signal<this, IIdleWarning>(this);
  private _warned = new Map<string, string>(); // hpc -> the job warned about
  private _launched = new Signal<this, { hpc: string; values: LaunchValues }>(this);
}

export namespace HPCModel {
  export interface IOptions {
    request: Request;
    /** The clock (ms), for the countdowns; Date.now unless a test sets it. */
    now?: () => number;
  }
}

/** What the poll's factory rejects with while SLURM is slow or failing: the Poll backs off. */
export class SlurmTrouble extends Error {
  constructor() {
    super('SLURM is slow or failing: asking less often');
  }
}

/** A running job's seconds left, counted down since its answer arrived. */
export function secondsLeft(state: IClusterState, now = Date.now()): number | null {
  const left = state.entry?.timeLeftSeconds;
  if (left === undefined || left === null) {
    return null;
  }
  return Math.max(0, left - Math.floor((now - state.fetchedAt) / 1000));
}

function empty(hpc: string): IClusterState {
  return { hpc, entry: null, fetchedAt: 0, progress: null, busy: false };
}

function post(body: unknown): RequestInit {
  return { method: 'POST', body: JSON.stringify(body) };
}
