/**
 * Short-term retention: which objects of a database may go so that every point in the
 * window [windowStart, now] stays restorable. The newest full snapshot at or before the
 * window's start is the base those points need: it and everything after it stay.
 */
import type { VaultHistory } from './restore.js';

export function planRetention(h: VaultHistory, windowStart: number): string[] {
  const base = [...h.snapshots].reverse().find((s) => s.time <= windowStart);
  if (base === undefined) return [];
  return [...h.snapshots.filter((s) => s.txid < base.txid).map((s) => s.key), ...h.batches.filter((b) => b.last <= base.txid).map((b) => b.key)];
}
