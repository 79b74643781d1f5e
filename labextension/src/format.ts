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
export function formatEstimate(iso: string, now = Date.now()): string {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) {
    return iso;
  }
  const clock = new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const left = (at - now) / 1000;
  return left > 0 ? `in ${formatDuration(left)} (${clock})` : `any moment now (${clock})`;
}
