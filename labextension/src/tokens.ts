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
}

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
}

export interface IStatus {
  activeHpc: string | null;
  config: IStatusConfig;
}

export interface ILaunchRequest {
  hpc: string;
  cpus: string;
  mem: string;
  time: string;
}

export interface ILaunchReply {
  status: 'running' | 'connected' | 'pending';
  jobId: string;
  node: string | null;
  hpc: string;
  url?: string;
  reason?: string | null;
}

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

/** Keys of cluster-status that are not clusters. */
export const STATUS_KEYS = new Set(['activeHpc', 'updatedAt', 'cached', 'cacheAge', 'cacheTtl']);
