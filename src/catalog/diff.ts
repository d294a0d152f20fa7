/**
 * Comparing one shard map at one location as the GSM and the LSM see it, and the
 * version rule resolutions follow. Pure functions, shared by detection and resolution.
 */
import type { LocalMapping, LocalShard, Mapping, MappingDifference, PendingOperation, Shard, ShardLocation } from './model.js';

export function sameLocation(a: ShardLocation, b: ShardLocation): boolean {
  return a.server === b.server && a.database === b.database;
}

/** The pending operations that still have to change (or reconcile) this shard. */
export function pendingOn(ops: readonly PendingOperation[], map: string, loc: ShardLocation, shardIds: ReadonlyArray<string | undefined>): PendingOperation[] {
  return ops.filter((op) => op.steps.some((s) => s.map === map && (sameLocation(s, loc) || shardIds.includes(s.shardId))));
}

function local(m: Mapping | LocalMapping): LocalMapping {
  return { id: m.id, low: m.low, high: m.high, status: m.status, version: m.version };
}

export function sameMapping(a: LocalMapping, b: LocalMapping): boolean {
  return a.low === b.low && a.high === b.high && a.status === b.status && a.version === b.version;
}

/**
 * Every difference between the GSM's view of a shard (`g`, its mappings `gm`) and
 * the LSM's (`l`), plus the pending operations that touch it. Empty: consistent.
 */
export function diffShard(g: Shard | undefined, gm: readonly Mapping[], l: LocalShard | undefined, pending: readonly PendingOperation[]): MappingDifference[] {
  const out: MappingDifference[] = pending.map((op) => ({ kind: 'PendingOperation', operationId: op.id }));
  if (g === undefined && l === undefined) return out;
  if (g === undefined) {
    out.push({ kind: 'ShardNotInGlobal', local: { shardId: l!.shardId, status: l!.status } });
    for (const m of l!.mappings) out.push({ kind: 'MappingOnlyInLocal', mappingId: m.id, local: { low: m.low, high: m.high, status: m.status, version: m.version } });
    return out;
  }
  if (l === undefined) {
    out.push({ kind: 'ShardNotInLocal', global: { shardId: g.id, status: g.status } });
    for (const m of gm) out.push({ kind: 'MappingOnlyInGlobal', mappingId: m.id, global: { low: m.low, high: m.high, status: m.status, version: m.version } });
    return out;
  }
  if (g.id !== l.shardId) out.push({ kind: 'ShardIdDiffers', global: { shardId: g.id }, local: { shardId: l.shardId } });
  if (g.status !== l.status) out.push({ kind: 'ShardStatusDiffers', global: { status: g.status }, local: { status: l.status } });
  const lm = new Map(l.mappings.map((m) => [m.id, m]));
  const ids = new Set<string>();
  for (const m of gm) {
    ids.add(m.id);
    const x = lm.get(m.id);
    const gv = { low: m.low, high: m.high, status: m.status, version: m.version };
    if (x === undefined) out.push({ kind: 'MappingOnlyInGlobal', mappingId: m.id, global: gv });
    else if (!sameMapping(local(m), x)) out.push({ kind: 'MappingDiffers', mappingId: m.id, global: gv, local: { low: x.low, high: x.high, status: x.status, version: x.version } });
  }
  for (const x of l.mappings) {
    if (!ids.has(x.id)) out.push({ kind: 'MappingOnlyInLocal', mappingId: x.id, local: { low: x.low, high: x.high, status: x.status, version: x.version } });
  }
  return out;
}

/**
 * The mappings a resolution writes to both sides: `trusted`'s, where a mapping whose
 * other copy differs gets a version above both, so a cached copy of either side is
 * stale afterwards. A mapping only one side has keeps its version.
 */
export function settle(trusted: ReadonlyArray<Mapping | LocalMapping>, other: ReadonlyArray<Mapping | LocalMapping>): LocalMapping[] {
  const o = new Map(other.map((m) => [m.id, local(m)]));
  return trusted.map((t) => {
    const m = local(t);
    const x = o.get(m.id);
    return x === undefined || sameMapping(m, x) ? m : { ...m, version: Math.max(m.version, x.version) + 1 };
  });
}

/** True when two mapping lists hold the same mappings (any order). */
export function sameMappings(a: ReadonlyArray<Mapping | LocalMapping>, b: ReadonlyArray<Mapping | LocalMapping>): boolean {
  if (a.length !== b.length) return false;
  const bm = new Map(b.map((m) => [m.id, local(m)]));
  return a.every((m) => {
    const x = bm.get(m.id);
    return x !== undefined && sameMapping(local(m), x);
  });
}
