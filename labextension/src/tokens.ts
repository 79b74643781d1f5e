/**
 * Shapes of the REST contract under {base_url}api/hpc/, command ids and constants.
 */

export const PLUGIN_ID = 'jupyter-hpc-manager:plugin';
export const PANEL_ID = 'jupyter-hpc-manager-panel';

export namespace CommandIDs {
  export const openPanel = 'hpc:open-panel';
  export const launch = 'hpc:launch';
  export const openVSCode = 'hpc:open-vscode';
  export const stop = 'hpc:stop';
  export const refresh = 'hpc:refresh';
}

export type ClusterState = 'idle' | 'pending' | 'running' | 'unknown';

export interface IClusterEntry {
  status: ClusterState;
  jobId?: string;
  node?: string | null;
  timeLeft?: string;
  timeLeftSeconds?: number | null;
  timeLeftHuman?: string;
  timeLimit?: string;
  timeLimitSeconds?: number | null;
  cpus?: string;
  memory?: string;
  startTime?: string | null;
  reason?: string | null;
  error?: string;
  url?: string;
  /** Only for a cluster that asks for a password or code: log in first, or logged in. */
  login?: 'required' | 'connected';
  /** What the job asked, besides CPUs and memory. */
  partition?: string;
  gpus?: string;
  account?: string;
  qos?: string;
  /** A pending job: its reason in words, and when SLURM expects it to start (ISO). */
  reasonText?: string | null;
  estimatedStart?: string | null;
  /** The server holds this session but SLURM has not answered lately: last known. */
  stale?: boolean;
  slurmState?: string;
  /** A running job's notebook kernels (kernelspecs the Launcher shows). */
  kernels?: { name: string; displayName: string }[];
  /** Idle auto-cancel on (a running session): seconds nobody has used it, and when it goes. */
  idleSeconds?: number;
  idleCancelAt?: string;
  /** How the last session this server followed here ended. */
  lastEnd?: ILastEnd;
}

export type EndReason = 'idle' | 'walltime' | 'stopped' | 'slurm' | 'failed';

export interface ILastEnd {
  jobId: string;
  reason: EndReason;
  at: string;
}

/** The answer of time/<hpc>. */
export interface ITimeReply {
  status: 'updated' | 'extended';
  hpc: string;
  jobId: string;
  timeLimit: string;
  change: 'lower' | 'raise' | 'same' | 'extended';
}

export interface IPartition {
  name: string;
  default: boolean;
  maxTime: string | null;
  maxTimeSeconds: number | null;
  maxCpusPerNode: number;
  maxMemPerNode: string;
  maxMemPerNodeMb: number;
  gpus: Record<string, number>;
  state: string;
}

/** What a cluster offers a launch (status config.clusterOptions). */
export interface IClusterOptions {
  partitions: IPartition[] | null;
  partitionsError?: string;
  /** sinfo is being asked now: a later status call has its answer. */
  partitionsPending?: boolean;
  accounts: string[] | null;
  qos: string[] | null;
  presets: Record<string, Record<string, string>>;
  defaultPartition: string | null;
  defaultAccount: string | null;
  defaultQos: string | null;
}

export type LaunchField =
  'cpus' | 'mem' | 'time' | 'partition' | 'gpus' | 'account' | 'qos' | 'workdir';
export type LaunchValues = Partial<Record<LaunchField, string>>;

export interface ILoginPrompt {
  status: 'prompt';
  loginId: string;
  host: string;
  title: string;
  instructions: string;
  prompts: { text: string; echo: boolean }[];
  expiresIn: number;
}

export type ILoginReply = ILoginPrompt | { status: 'connected'; hpc: string };

export interface IClusterStatus {
  activeHpc: string | null;
  updatedAt: string;
  cached: boolean;
  cacheAge: number;
  cacheTtl: number;
  [cluster: string]: IClusterEntry | string | number | boolean | null;
}

export interface IStatusConfig {
  defaultHpc: string | null;
  defaultCpus: string;
  defaultMem: string;
  defaultTime: string;
  maxCpus: number;
  clusters: string[];
  clusterOptions?: Record<string, IClusterOptions>;
  /** Minutes before an idle cancel that the panel warns. */
  idleWarningMinutes?: number;
}

export interface IStatus {
  activeHpc: string | null;
  config: IStatusConfig;
}

export interface ILaunchReply {
  status: 'running' | 'connected' | 'pending';
  jobId: string;
  node: string | null;
  hpc: string;
  url?: string;
  reason?: string | null;
}

/**
 * The part of JupyterLab's TranslationBundle the sidebar uses (`__` with %1-style
 * arguments, `_n` for plurals); `plainTrans` is its untranslated stand-in for unit tests.
 */
export interface ITrans {
  __(msgid: string, ...args: any[]): string;
  _n(msgid: string, msgid_plural: string, n: number, ...args: any[]): string;
}

function fill(text: string, args: any[]): string {
  return text.replace(/%(\d+)/g, (all, i) =>
    args[i - 1] !== undefined ? String(args[i - 1]) : all
  );
}

export const plainTrans: ITrans = {
  __: (msgid, ...args) => fill(msgid, args),
  _n: (one, many, n, ...args) => fill(n === 1 ? one : many, [n, ...args])
};

export interface ISettings {
  warnMinutesLeft: number;
  pollSeconds: number;
  pendingPollSeconds: number;
}

export const DEFAULT_SETTINGS: ISettings = {
  warnMinutesLeft: 15,
  pollSeconds: 30,
  pendingPollSeconds: 5
};

/** The state database's key for each cluster's last launch ("same as last time"). */
export const LAST_LAUNCH_KEY = 'jupyter-hpc-manager:last-launch';

/** Keys of cluster-status that are not clusters. */
export const STATUS_KEYS = new Set(['activeHpc', 'updatedAt', 'cached', 'cacheAge', 'cacheTtl']);
