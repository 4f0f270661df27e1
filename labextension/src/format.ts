/** Short text forms of ids, ages and durations for a narrow side panel. */

/** The first block of a uuid: enough to tell recent tasks apart; the full id is in the title. */
export function shortId(id: string): string {
  return id.split('-')[0];
}

/** `42s`, `5m`, `3h`, `2d`: how long ago `ts` (unix seconds) was. */
export function formatAge(ts: number | undefined, now: number = Date.now() / 1000): string {
  if (ts === undefined) {
    return '';
  }
  const seconds = Math.max(0, Math.floor(now - ts));
  if (seconds < 60) {
    return `${seconds}s`;
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)}m`;
  }
  if (seconds < 86400) {
    return `${Math.floor(seconds / 3600)}h`;
  }
  return `${Math.floor(seconds / 86400)}d`;
}

/** `+0.125s`, `+12.3s`, `+4m05s`: the time between two unix timestamps. */
export function formatOffset(seconds: number): string {
  if (seconds < 10) {
    return `+${seconds.toFixed(3)}s`;
  }
  if (seconds < 60) {
    return `+${seconds.toFixed(1)}s`;
  }
  const minutes = Math.floor(seconds / 60);
  return `+${minutes}m${String(Math.floor(seconds % 60)).padStart(2, '0')}s`;
}

/** A local date and time for a tooltip. */
export function formatTime(ts: number): string {
  return new Date(ts * 1000).toLocaleString();
}
