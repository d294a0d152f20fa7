/**
 * Short-term retention: which objects of a database may go so that every point in the
 * window [windowStart, now] stays restorable. The newest full snapshot at or before the
 * window's start is the base those points need: it and everything after it stay.
 *
 * Only the winning lineage is history (src/vault/lineage.ts). Objects a deposed primary
 * shipped past the new epoch's start are orphans: no restore uses them, but they are what
 * the old primary wrote alone, so they are kept for the operator as long as the retention
 * window would keep history of that age, and go once they are older than its start.
 */
import { parseBatchKey, type BatchRef } from './layout.js';
import { chooseLineage } from './lineage.js';
import type { VaultHistory } from './restore.js';

export function planRetention(h: VaultHistory, windowStart: number): string[] {
  const lineage = chooseLineage(h);
  const history = lineage.history;
  // Long-term copies expire by their own policy, orphaned or not.
  const orphans = lineage.orphans.filter((o) => o.kind !== 'ltr' && o.time < windowStart).map((o) => o.key);
  const base = [...history.snapshots].reverse().find((s) => s.time <= windowStart);
  if (base === undefined) return orphans;
  // Snapshots first, oldest first, then batches oldest first: a pass stopped anywhere leaves
  // a chain that still starts at a snapshot and runs without a hole into the window. Orphans
  // last: they are no part of any chain.
  // A batch cut at a newer epoch's start also holds an orphaned tail: it ages by its newest record.
  const aged = (b: BatchRef): boolean => {
    if (b.last > base.txid) return false;
    const whole = parseBatchKey(b.key);
    return whole === undefined || whole.last === b.last || whole.lastTime < windowStart;
  };
  return [...history.snapshots.filter((s) => s.txid < base.txid).map((s) => s.key), ...history.batches.filter(aged).map((b) => b.key), ...orphans];
}
