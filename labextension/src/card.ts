import { el } from './dom';
import { LaunchForm } from './form';
import { describeEnd, formatDuration, formatEstimate, formatMemory } from './format';
import { HPCModel, IClusterState, Progress, secondsLeft } from './model';
import { ITrans } from './tokens';

/**
 * One cluster's card in the sidebar: its state, what its job asked for and how long it has
 * left (or why it waits and when it should start), its launch form, and the buttons that fit.
 *
 * A view of the model: its elements are made once and updated in place, so a field the user
 * types in, a focused button and an open "More options" stay as they are while answers land.
 */

const PROGRESS: Progress[] = ['submitted', 'pending', 'running', 'ready'];

/** What the card's buttons do (the panel does the work: dialogs, notifications). */
export interface ICardActions {
  launch(hpc: string): void;
  stop(hpc: string): void;
  switchTo(hpc: string): void;
  login(hpc: string): void;
  logout(hpc: string): void;
  openVSCode(hpc: string): void;
  changeTime(hpc: string): void;
}

type ButtonName = 'login' | 'open' | 'switch' | 'connect' | 'stop' | 'launch' | 'logout' | 'time';

/** A pending job's reason: the server's words for it, else SLURM's code. */
export function explainReason(entry: { reason?: string | null; reasonText?: string | null }) {
  return entry.reasonText ?? entry.reason ?? null;
}

export class ClusterCard {
  readonly node: HTMLElement;

  constructor(
    readonly hpc: string,
    private readonly _model: HPCModel,
    private readonly _actions: ICardActions,
    private readonly _trans: ITrans
  ) {
    const trans = _trans;
    this.node = el('section', 'jp-HPCPanel-card');
    this.node.dataset.hpc = hpc;
    this.node.setAttribute('aria-label', trans.__('Cluster %1', hpc));
    const head = el('div', 'jp-HPCPanel-cardHead');
    const name = el('h3', 'jp-HPCPanel-name', hpc);
    this._badge = el('span', 'jp-HPCPanel-badge', '…');
    // Screen readers hear a cluster's state when it changes.
    this._badge.setAttribute('role', 'status');
    this._activeMark = el('span', 'jp-HPCPanel-active', trans.__('active'));
    this._activeMark.title = trans.__('hpc/code/ serves this cluster');
    head.append(name, this._badge, this._activeMark);
    this._facts = el('dl', 'jp-HPCPanel-facts');
    this._error = el('p', 'jp-HPCPanel-error');
    this._error.setAttribute('role', 'alert');
    this._progress = el('ol', 'jp-HPCPanel-progress');
    this._progress.setAttribute('aria-label', trans.__('Launch progress'));
    this._formSlot = el('div', 'jp-HPCPanel-formSlot');
    const actions = el('div', 'jp-HPCPanel-actions');
    const add = (name: ButtonName, label: string, cls: string, onclick: () => void) => {
      const b = el('button', `jp-Button jp-mod-styled ${cls}`, label);
      b.type = 'button';
      b.onclick = onclick;
      actions.appendChild(b);
      this._buttons.set(name, b);
    };
    const a = this._actions;
    add('login', trans.__('Log in'), 'jp-mod-accept jp-HPCPanel-login', () => a.login(hpc));
    add('open', trans.__('Open VS Code'), 'jp-mod-accept jp-HPCPanel-open', () =>
      a.openVSCode(hpc)
    );
    add('switch', trans.__('Switch'), 'jp-HPCPanel-switch', () => a.switchTo(hpc));
    add('connect', trans.__('Connect'), 'jp-mod-accept jp-HPCPanel-connect', () => a.launch(hpc));
    add('launch', trans.__('Launch'), 'jp-mod-accept jp-HPCPanel-launch', () => a.launch(hpc));
    add('time', trans.__('Give back time'), 'jp-HPCPanel-time', () => a.changeTime(hpc));
    add('stop', trans.__('Stop'), 'jp-mod-warn jp-HPCPanel-stop', () => a.stop(hpc));
    add('logout', trans.__('Log out'), 'jp-HPCPanel-logout', () => a.logout(hpc));
    this._buttons.get('logout')!.title = trans.__(
      'Close the connection to the login node (a job keeps running)'
    );
    this.node.append(head, this._facts, this._error, this._progress, this._formSlot, actions);
    this.update();
  }

  /** The launch form (made once the server's configuration is known; kept across updates). */
  get form(): LaunchForm | null {
    return this._form;
  }

  /** Show the model's state for this cluster, in place. */
  update(): void {
    const trans = this._trans;
    const before = document.activeElement;
    const hadFocus = before instanceof HTMLElement && this.node.contains(before);
    const s = this._model.state(this.hpc);
    const { entry } = s;
    const state = s.busy && !entry ? 'pending' : (entry?.status ?? 'unknown');
    this.node.dataset.state = state;
    // A cluster waiting for the user's login is not in trouble: it says what to do.
    const shown = entry?.login === 'required' ? 'login' : state;
    this._badge.className = `jp-HPCPanel-badge jp-mod-${shown}`;
    setText(this._badge, entry ? badgeText(shown, trans) : '…');
    this._badge.title = entry?.stale ? trans.__('last known: SLURM has not answered lately') : '';
    this._activeMark.hidden = this._model.activeHpc !== this.hpc;

    this._renderFacts(s);
    const error = entry?.error && (entry.status === 'unknown' || entry.stale) ? entry.error : '';
    this._error.className =
      entry?.login === 'required' ? 'jp-HPCPanel-loginNeeded' : 'jp-HPCPanel-error';
    setText(this._error, error);
    this._error.hidden = !error;
    this._renderProgress(s.progress);

    const showForm = !entry || entry.status === 'idle' || entry.status === 'unknown';
    const login = entry?.login === 'required';
    if (showForm && !login && this._model.config && !this._form) {
      this._form = this._makeForm();
      this._formSlot.appendChild(this._form.node);
    }
    this._formSlot.hidden = !showForm || login;
    this._form?.setDisabled(s.busy);

    const running = entry?.status === 'running';
    const visible: Record<ButtonName, boolean> = {
      login,
      open: !login && running && !!entry?.url,
      switch: !login && running && !!entry?.url && this._model.activeHpc !== this.hpc,
      connect: !login && running && !entry?.url,
      stop: !login && (running || entry?.status === 'pending'),
      time: !login && (running || entry?.status === 'pending'),
      launch: !login && showForm,
      logout: entry?.login === 'connected'
    };
    // A running job's limit can only go down (SLURM); a pending one's either way.
    setText(
      this._buttons.get('time')!,
      running ? trans.__('Give back time') : trans.__('Change time')
    );
    for (const [name, button] of this._buttons) {
      button.hidden = !visible[name];
      button.disabled = s.busy || (name === 'launch' && this._problem !== null);
    }
    this._keepFocus(hadFocus ? (before as HTMLElement) : null);
  }

  /** The options changed (partitions came in): the form takes them in place. */
  updateOptions(): void {
    this._form?.setOptions(this._model.options(this.hpc));
  }

  /** The last launch changed: the form offers it as "same as last time". */
  updateLast(): void {
    this._form?.setLast(this._model.lastLaunch[this.hpc] ?? null);
  }

  /** Once a second: the countdowns. */
  tick(now = Date.now()): void {
    const s = this._model.state(this.hpc);
    const estimate = s.entry?.estimatedStart;
    if (s.entry?.status === 'pending' && estimate) {
      setText(
        this._facts.querySelector('.jp-HPCPanel-estimate'),
        formatEstimate(estimate, now, this._trans)
      );
    }
    if (s.entry?.status === 'running') {
      const left = secondsLeft(s, now);
      if (left !== null) {
        setText(this._facts.querySelector('.jp-HPCPanel-timeLeft'), formatDuration(left));
      }
    }
  }

  dispose(): void {
    this._form?.dispose();
  }

  /**
   * A keyboard user's focus is not dropped on the page when the button they pressed goes
   * (Launch becomes Open VS Code, Stop becomes Launch): it moves to the card's first button
   * that can be used, as soon as there is one, unless they have gone elsewhere meanwhile.
   */
  private _keepFocus(had: HTMLElement | null): void {
    if (had && !usable(had)) {
      this._lostFocus = true;
    }
    if (!this._lostFocus) {
      return;
    }
    const now = document.activeElement;
    if (now && now !== document.body && now !== had && !this.node.contains(now)) {
      this._lostFocus = false; // the user went elsewhere
      return;
    }
    const next = [...this._buttons.values()].find(usable);
    if (next) {
      this._lostFocus = false;
      next.focus();
    }
  }

  private _makeForm(): LaunchForm {
    const config = this._model.config!;
    return new LaunchForm(
      this.hpc,
      { cpus: config.defaultCpus, mem: config.defaultMem, time: config.defaultTime },
      this._model.options(this.hpc),
      this._model.lastLaunch[this.hpc] ?? null,
      problem => {
        this._problem = problem;
        const launch = this._buttons.get('launch')!;
        launch.disabled = this._model.state(this.hpc).busy || problem !== null;
      },
      () => this._actions.launch(this.hpc),
      this._trans
    );
  }

  private _renderFacts(s: IClusterState): void {
    const { entry } = s;
    const trans = this._trans;
    const facts: [string, string | null | undefined, string][] = [];
    if (entry?.status === 'running' || entry?.status === 'pending') {
      facts.push(
        [trans.__('Job'), entry.jobId, 'jp-HPCPanel-jobId'],
        [trans.__('Node'), entry.node, 'jp-HPCPanel-node'],
        [trans.__('Partition'), entry.partition, 'jp-HPCPanel-partition'],
        [trans.__('CPUs'), entry.cpus, ''],
        [trans.__('GPUs'), entry.gpus, 'jp-HPCPanel-gpus'],
        [trans.__('Memory'), formatMemory(entry.memory), 'jp-HPCPanel-memory'],
        [trans.__('Account'), entry.account, '']
      );
      if (entry.status === 'running') {
        // The job's notebook kernels (in the Launcher and the kernel picker), by their names.
        const suffix = ` on ${this.hpc} (`;
        facts.push([
          trans.__('Kernels'),
          (entry.kernels ?? [])
            .map(k => (k.displayName.includes(suffix) ? k.displayName.split(suffix)[0] : k.name))
            .join(', '),
          'jp-HPCPanel-kernels'
        ]);
        const left = secondsLeft(s);
        facts.push([
          trans.__('Time left'),
          left !== null ? formatDuration(left) : entry.timeLeft,
          'jp-HPCPanel-timeLeft'
        ]);
        if (entry.idleSeconds !== undefined && entry.idleCancelAt) {
          // Idle auto-cancel: unused for how long, and when the job goes if it stays so.
          const at = new Date(Date.parse(entry.idleCancelAt)).toLocaleTimeString([], {
            hour: '2-digit',
            minute: '2-digit'
          });
          facts.push([
            trans.__('Idle'),
            trans.__('%1 (cancelled at %2 if unused)', formatDuration(entry.idleSeconds), at),
            'jp-HPCPanel-idle'
          ]);
        }
      } else {
        facts.push(
          [trans.__('Time limit'), entry.timeLimit, ''],
          [trans.__('Waiting'), explainReason(entry), 'jp-HPCPanel-reason']
        );
        if (entry.estimatedStart) {
          facts.push([
            trans.__('Starts'),
            formatEstimate(entry.estimatedStart, Date.now(), trans),
            'jp-HPCPanel-estimate'
          ]);
        }
      }
    }
    if (entry?.status === 'idle' && entry.lastEnd) {
      facts.push([
        trans.__('Last job'),
        describeEnd(entry.lastEnd, this.hpc, trans),
        'jp-HPCPanel-lastEnd'
      ]);
    }
    const shown = facts.filter(([, v]) => !!v) as [string, string, string][];
    // The countdowns change every second (tick): the list is made anew only when its rows do.
    const key = JSON.stringify(
      shown.map(([k, v, c]) => (c.endsWith('timeLeft') || c.endsWith('estimate') ? k : [k, v]))
    );
    if (key !== this._factsKey) {
      this._factsKey = key;
      this._facts.replaceChildren(
        ...shown.flatMap(([k, v, cls]) => [el('dt', '', k), el('dd', cls, v)])
      );
    }
    this._facts.hidden = !shown.length;
  }

  private _renderProgress(progress: Progress | null): void {
    this._progress.hidden = progress === null;
    if (progress === this._shownProgress) {
      return;
    }
    this._shownProgress = progress;
    const reached = progress ? PROGRESS.indexOf(progress) : -1;
    const names: Record<Progress, string> = {
      submitted: this._trans.__('submitted'),
      pending: this._trans.__('pending'),
      running: this._trans.__('running'),
      ready: this._trans.__('ready')
    };
    this._progress.replaceChildren(
      ...PROGRESS.map((step, i) => {
        const item = el(
          'li',
          i < reached ? 'jp-mod-done' : i === reached ? 'jp-mod-current' : '',
          names[step]
        );
        if (i === reached) {
          item.setAttribute('aria-current', 'step');
        }
        return item;
      })
    );
  }

  private _badge: HTMLElement;
  private _activeMark: HTMLElement;
  private _facts: HTMLElement;
  private _factsKey = '';
  private _error: HTMLElement;
  private _progress: HTMLElement;
  private _shownProgress: Progress | null = null;
  private _formSlot: HTMLElement;
  private _form: LaunchForm | null = null;
  private _problem: string | null = null;
  private _buttons = new Map<ButtonName, HTMLButtonElement>();
  private _lostFocus = false;
}

/** Shown (no hidden ancestor) and enabled: it can hold the focus. */
function usable(node: HTMLElement): boolean {
  return !(node as HTMLButtonElement).disabled && node.closest('[hidden]') === null;
}

function badgeText(state: string, trans: ITrans): string {
  switch (state) {
    case 'idle':
      return trans.__('idle');
    case 'pending':
      return trans.__('pending');
    case 'running':
      return trans.__('running');
    case 'login':
      return trans.__('login');
    default:
      return trans.__('unknown');
  }
}

/** Set a node's text only when it differs (no needless DOM mutation for assistive tech). */
function setText(node: Element | null, text: string): void {
  if (node && node.textContent !== text) {
    node.textContent = text;
  }
}
