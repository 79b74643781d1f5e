import { el } from './dom';
import { LaunchForm } from './form';
import { formatDuration, formatEstimate } from './format';
import { IClusterEntry } from './tokens';

/**
 * One cluster's card in the sidebar: its state, what its job asked for and how long it has
 * left (or why it waits and when it should start), its launch form, and the buttons that fit.
 * Rendering only: the panel (panel.ts) owns the state and does the work.
 */

export type Progress = 'submitted' | 'pending' | 'running' | 'ready';
const PROGRESS: Progress[] = ['submitted', 'pending', 'running', 'ready'];

export interface ICard {
  root: HTMLElement;
  hpc: string;
  entry: IClusterEntry | null;
  fetchedAt: number; // ms, when entry.timeLeftSeconds was true
  form: LaunchForm | null;
  progress: Progress | null;
  problem: string | null; // what the server finds wrong with the form now
  busy: boolean;
  warned: boolean;
}

/** What a card's buttons do, and what it shows of the panel. */
export interface ICardView {
  readonly activeHpc: string | null;
  formFor(card: ICard): LaunchForm;
  launch(hpc: string): Promise<unknown>;
  stop(hpc: string): Promise<void>;
  switchTo(hpc: string): Promise<void>;
  login(hpc: string): Promise<boolean>;
  logout(hpc: string): Promise<void>;
  openVSCode(hpc: string): void;
}

/** A pending job's reason: the server's words for it, else SLURM's code. */
export function explainReason(entry: { reason?: string | null; reasonText?: string | null }) {
  return entry.reasonText ?? entry.reason ?? null;
}

/** A running job's seconds left, counted down since its entry arrived. */
export function secondsLeft(card: ICard): number | null {
  const left = card.entry?.timeLeftSeconds;
  if (left === undefined || left === null) {
    return null;
  }
  return Math.max(0, left - Math.floor((Date.now() - card.fetchedAt) / 1000));
}

export function renderCard(card: ICard, view: ICardView): void {
  const { root, hpc, entry } = card;
  const state = card.busy && !entry ? 'pending' : (entry?.status ?? 'unknown');
  root.replaceChildren();
  root.dataset.state = state;
  const head = el('div', 'jp-HPCPanel-cardHead');
  head.appendChild(el('span', 'jp-HPCPanel-name', hpc));
  // A cluster waiting for the user's login is not in trouble: it says what to do.
  const shown = entry?.login === 'required' ? 'login' : state;
  const badge = el('span', `jp-HPCPanel-badge jp-mod-${shown}`, entry ? shown : '…');
  head.appendChild(badge);
  if (view.activeHpc === hpc) {
    const active = el('span', 'jp-HPCPanel-active', 'active');
    active.title = 'hpc/code/ serves this cluster';
    head.appendChild(active);
  }
  root.appendChild(head);

  if (entry?.status === 'running' || entry?.status === 'pending') {
    const facts = el('dl', 'jp-HPCPanel-facts');
    const add = (k: string, v: string | null | undefined, cls = '') => {
      if (v) {
        facts.append(el('dt', '', k), el('dd', cls, v));
      }
    };
    add('Job', entry.jobId, 'jp-HPCPanel-jobId');
    add('Node', entry.node, 'jp-HPCPanel-node');
    add('Partition', entry.partition, 'jp-HPCPanel-partition');
    add('CPUs', entry.cpus);
    add('GPUs', entry.gpus, 'jp-HPCPanel-gpus');
    add('Memory', entry.memory);
    add('Account', entry.account);
    if (entry.status === 'running') {
      const left = secondsLeft(card);
      add(
        'Time left',
        left !== null ? formatDuration(left) : entry.timeLeft,
        'jp-HPCPanel-timeLeft'
      );
    } else {
      add('Time limit', entry.timeLimit);
      add('Waiting', explainReason(entry), 'jp-HPCPanel-reason');
      if (entry.estimatedStart) {
        add('Starts', formatEstimate(entry.estimatedStart), 'jp-HPCPanel-estimate');
      }
    }
    root.appendChild(facts);
  }
  if (entry?.status === 'unknown' && entry.error) {
    const cls = entry.login === 'required' ? 'jp-HPCPanel-loginNeeded' : 'jp-HPCPanel-error';
    root.appendChild(el('p', cls, entry.error));
  }
  if (card.progress) {
    root.appendChild(progressSteps(card.progress));
  }

  const actions = el('div', 'jp-HPCPanel-actions');
  const button = (label: string, onclick: () => void, cls = '') => {
    const b = el('button', `jp-Button jp-mod-styled ${cls}`, label);
    b.disabled = card.busy;
    b.onclick = onclick;
    actions.appendChild(b);
    return b;
  };
  if (entry?.login === 'required') {
    // Nothing can run there before the user answers the login node's password or code.
    button('Log in', () => void view.login(hpc), 'jp-mod-accept jp-HPCPanel-login');
  } else if (entry?.status === 'running') {
    if (entry.url) {
      button('Open VS Code', () => view.openVSCode(hpc), 'jp-mod-accept jp-HPCPanel-open');
    }
    if (view.activeHpc !== hpc && entry.url) {
      button('Switch', () => void view.switchTo(hpc), 'jp-HPCPanel-switch');
    }
    if (!entry.url) {
      button('Connect', () => void view.launch(hpc), 'jp-mod-accept jp-HPCPanel-launch');
    }
    button('Stop', () => void view.stop(hpc), 'jp-mod-warn jp-HPCPanel-stop');
  } else if (entry?.status === 'pending') {
    button('Stop', () => void view.stop(hpc), 'jp-mod-warn jp-HPCPanel-stop');
  } else if (entry?.status === 'idle' || entry?.status === 'unknown' || !entry) {
    root.appendChild(view.formFor(card).node);
    const launch = button(
      'Launch',
      () => void view.launch(hpc),
      'jp-mod-accept jp-HPCPanel-launch'
    );
    launch.disabled = card.busy || card.problem !== null;
  }
  if (entry?.login === 'connected') {
    const out = button('Log out', () => void view.logout(hpc), 'jp-HPCPanel-logout');
    out.title = 'Close the connection to the login node (a job keeps running)';
  }
  root.appendChild(actions);
}

function progressSteps(progress: Progress): HTMLElement {
  const list = el('ol', 'jp-HPCPanel-progress');
  const reached = PROGRESS.indexOf(progress);
  PROGRESS.forEach((step, i) => {
    const item = el(
      'li',
      i < reached ? 'jp-mod-done' : i === reached ? 'jp-mod-current' : '',
      step
    );
    list.appendChild(item);
  });
  return list;
}
