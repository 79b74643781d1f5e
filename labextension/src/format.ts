import { ILastEnd, IPartition, ITrans, plainTrans } from './tokens';

/** How a cluster's last session ended, for a person. */
export function describeEnd(end: ILastEnd, hpc: string, trans: ITrans = plainTrans): string {
  switch (end.reason) {
    case 'idle':
      return trans.__("%1's job %2 was cancelled: nobody had used it for a while.", hpc, end.jobId);
    case 'walltime':
      return trans.__("%1's job %2 reached its time limit.", hpc, end.jobId);
    case 'stopped':
      return trans.__("%1's job %2 was stopped from here.", hpc, end.jobId);
    case 'failed':
      return trans.__("%1's job %2 failed.", hpc, end.jobId);
    default:
      return trans.__("%1's job %2 ended outside this server (cancelled or done).", hpc, end.jobId);
  }
}

/** HH:MM:SS (D-HH:MM:SS from a day on), as the server writes it. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const days = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const hms = [h, m, sec].map(x => String(x).padStart(2, '0')).join(':');
  return days ? `${days}-${hms}` : hms;
}

/**
 * When SLURM expects a pending job to start, counted down from now: "in 00:09:30 (14:05)", or
 * "any moment now" once the time has come. The estimate is SLURM's (ISO, the cluster's clock).
 */
export function formatEstimate(iso: string, now = Date.now(), trans: ITrans = plainTrans): string {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) {
    return iso;
  }
  const clock = new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const left = (at - now) / 1000;
  return left > 0
    ? trans.__('in %1 (%2)', formatDuration(left), clock)
    : trans.__('any moment now (%1)', clock);
}

const MEM_UNITS: Record<string, number> = { K: 1 / 1024, M: 1, G: 1024, T: 1024 * 1024 };

/**
 * SLURM's memory ("200000M", "40G", a bare number of megabytes) in human units:
 * "195.3 GiB", "40 GiB", "512 MiB" (SLURM's M and G are binary). Anything else as it came.
 */
export function formatMemory(memory: string | number | null | undefined): string {
  if (memory === null || memory === undefined || memory === '') {
    return '';
  }
  const match = /^(\d+(?:\.\d+)?)([KMGT]?)$/i.exec(String(memory).trim());
  if (!match) {
    return String(memory);
  }
  const mb = parseFloat(match[1]) * MEM_UNITS[(match[2] || 'M').toUpperCase()];
  const [value, unit] =
    mb >= 1024 * 1024 ? [mb / (1024 * 1024), 'TiB'] : mb >= 1024 ? [mb / 1024, 'GiB'] : [mb, 'MiB'];
  const shown = Number.isInteger(value) ? String(value) : value.toFixed(1).replace(/\.0$/, '');
  return `${shown} ${unit}`;
}

/** "gpu: up to 1-00:00:00, 16 CPUs, 195 GiB, 2 tesla GPUs" */
export function describePartition(p: IPartition, trans: ITrans = plainTrans): string {
  const limits = [
    p.maxTime ? trans.__('up to %1', p.maxTime) : trans.__('no time limit'),
    trans._n('%1 CPU', '%1 CPUs', p.maxCpusPerNode),
    formatMemory(p.maxMemPerNodeMb)
  ];
  for (const [kind, n] of Object.entries(p.gpus)) {
    limits.push(
      kind === 'gpu'
        ? trans._n('%1 GPU', '%1 GPUs', n)
        : trans._n('%1 %2 GPU', '%1 %2 GPUs', n, kind)
    );
  }
  const state = p.state === 'up' ? '' : ` [${p.state}]`;
  return `${partitionName(p, trans)}: ${limits.join(', ')}${state}`;
}

/** "debug (default)": what the closed select shows (its limits are under it, in full). */
export function partitionName(p: IPartition, trans: ITrans = plainTrans): string {
  return p.default ? trans.__('%1 (default)', p.name) : p.name;
}
