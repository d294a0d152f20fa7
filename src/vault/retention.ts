/**
 * Short-term retention: which objects of a database may go so that every point in the
 * window [windowStart, now] stays restorable. The newest full snapshot at or before the
 * window's start is the base those points need: it and everything after it stay.
 */
import type { VaultHistory } from './restore.js';

export function planRetention(h: VaultHistory, windowStart: number): string[] {
  const base = [...h.snapshots].reverse().find((s) => s.time <= windowStart);
  if (base === undefined) return [];
  // Snapshots first, oldest first, then batches oldest first: a pass stopped anywhere leaves
  // a chain that still starts at a snapshot and runs without a hole into the window.
  return [...h.snapshots.filter((s) => s.txid < base.txid).map((s) => s.key), ...h.batches.filter((b) => b.last <= base.txid).map((b) => b.key)];
}
