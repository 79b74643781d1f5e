/**
 * The same checks the server makes, so that a bad value is shown at once and nothing is sent.
 */

export function checkCpus(value: string, maxCpus: number): string | null {
  if (!/^[0-9]{1,4}$/.test(value) || +value < 1 || +value > maxCpus) {
    return `Invalid CPU value: must be integer 1-${maxCpus}`;
  }
  return null;
}

export function checkMem(value: string): string | null {
  if (!/^[1-9][0-9]{0,8}[KMGT]$/i.test(value)) {
    return 'Invalid memory value: a whole number with a unit K, M, G or T, like 40G or 100M';
  }
  return null;
}

export function checkTime(value: string): string | null {
  const m = /^(?:([0-9]{1,3})-)?([0-9]{1,3}):([0-5][0-9]):([0-5][0-9])$/.exec(value);
  if (!m || (m[1] !== undefined && +m[2] > 23)) {
    return 'Invalid time value: must be HH:MM:SS or D-HH:MM:SS';
  }
  if (m.slice(1).every(x => !x || +x === 0)) {
    return 'Invalid time value: must be longer than zero';
  }
  return null;
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
