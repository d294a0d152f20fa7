/**
 * The recovery manager: finds and repairs differences between the global shard map
 * (GSM) and the local shard maps (LSM) — after a shard was deleted or restored to an
 * earlier point, after the catalog itself was restored, after an interrupted
 * operation, and after a failover moved shards to another server.
 *
 * - detachShard / attachShard: take a location out of the GSM (fencing its LSM when
 *   it still answers) or put it back as its LSM describes it;
 * - detectMappingDifferences: one RecoveryToken per shard map that differs at a location;
 * - resolveMappingDifferences: KeepShardMapping (trust the LSM) or KeepGlobalMapping
 *   (trust the GSM); pending operations on the shard are replayed first;
 * - rebuildAfterFailover: the five-step failover workflow for every shard of a server,
 *   idempotent and resumable.
 */
import { GeodrError } from '../errors.js';
import { GeodrApiError } from '../sdk/errors.js';
import { validateName } from '../server/names.js';
import { diffShard, pendingOn, sameLocation, sameMappings, settle } from './diff.js';
import { forEachLimit, type ShardMapManager } from './manager.js';
import {
  RESOLUTIONS,
  formatLocation,
  normalizeLocation,
  normalizeServer,
  type LocalChange,
  type LocalMapping,
  type LocalShard,
  type Mapping,
  type MappingDifferenceResolution,
  type PendingOperation,
  type RecoveryToken,
  type Shard,
  type ShardLocation,
  type Status,
} from './model.js';
import type { KeyType } from './keys.js';

export interface ResolveResult {
  map: string;
  location: ShardLocation;
  resolution: MappingDifferenceResolution;
  /** The shard id at the location afterwards (null when neither side has one). */
  shardId: string | null;
  /** Pending operations replayed first. */
  replayed: string[];
  changedGlobal: boolean;
  changedLocal: boolean;
  /** LSM mappings KeepShardMapping could not keep: they collide with another shard's mapping in the GSM (which wins), so they left the LSM too. */
  conflicts: Array<{ id: string; reason: string }>;
}

export interface RebuildOptions {
  /** The server the shards were on (URL or name, as the GSM records it). */
  fromServer: string;
  /** The server they are on now. */
  toServer: string;
  /** Only this shard map's shards. */
  map?: string | undefined;
  /** New database names, when the copies were restored under other names (old name → new name). */
  databases?: Record<string, string> | ((database: string) => string) | undefined;
  /** Mark the old copies' LSMs detached when the old server still answers (default true), so stale caches cannot use them. */
  fence?: boolean | undefined;
  /** Shards handled at once. Default 16. */
  concurrency?: number | undefined;
}

export interface RebuildResult {
  moved: Array<{ shardId: string; map: string; from: ShardLocation; to: ShardLocation }>;
  /** Shards left where they were: their new copy does not answer yet, or is not that shard. Run again once it does. */
  notMoved: Array<{ shardId: string; map: string; database: string; reason: string }>;
  /** Moved shards whose GSM or LSM had to change to agree (the rest agreed already). */
  reconciled: Array<{ shardId: string; map: string; changedGlobal: boolean; changedLocal: boolean }>;
  conflicts: Array<{ shardId: string; id: string; reason: string }>;
  /** Reconciliations that failed; they stay pending and the next run retries them. */
  failed: Array<{ shardId: string; map: string; error: string }>;
  /** Old copies marked detached. */
  fenced: number;
  /** Relocations an earlier, interrupted run left pending and this run finished. */
  resumed: string[];
}

interface Known {
  g: Shard | undefined;
  gm: Mapping[];
  l: LocalShard | undefined;
}

export class RecoveryManager {
  constructor(private readonly smm: ShardMapManager) {}

  private post<R>(rest: string, body: unknown): Promise<R> {
    // Each of these GSM calls is idempotent or checks its preconditions, so a lost answer may be re-sent.
    return this.smm.catalog.send({ method: 'POST', path: this.smm.gsmPath(rest), body, replaySafe: true });
  }

  /**
   * Removes the shard(s) at `location` (of `map`, or of every map) and their mappings from
   * the GSM: use it when the database was deleted, or before attaching its replacement.
   * When the old copy still answers, its LSM is marked detached so that routing with a
   * stale cache refuses it (`fenced`).
   */
  async detachShard(location: ShardLocation, map?: string): Promise<{ detached: Shard[]; fenced: boolean }> {
    const loc = normalizeLocation(location);
    const detached = (await this.post<{ value: Shard[] }>('/global/detach', { ...loc, ...(map === undefined ? {} : { map }) })).value;
    let fenced = false;
    if (detached.length > 0) {
      try {
        const lsm = await this.smm.readLocal(loc, map, true);
        const changes = lsm.maps.filter((l) => detached.some((d) => d.map === l.map && d.id === l.shardId)).map((l) => fence(l));
        if (changes.length > 0) {
          await this.smm.writeLocal(loc, changes, true);
          fenced = true;
        }
      } catch {
        // Gone, unreachable or read-only: nothing can route to it through geodr then either.
      }
    }
    return { detached, fenced };
  }

  /**
   * Adds the database at `location` to the GSM as the shard its LSM says it is (same id,
   * map, kind, key type; a map the GSM lacks is created), and lifts a fence. Its mappings
   * follow with detect and resolve (KeepShardMapping).
   */
  async attachShard(location: ShardLocation, map?: string): Promise<{ attached: Array<Shard & { attached: boolean }> }> {
    const loc = normalizeLocation(location);
    const lsm = await this.smm.readLocal(loc, map);
    if (lsm.maps.length === 0) {
      throw new GeodrApiError('NOT_FOUND', `${formatLocation(loc)} holds no local shard map${map === undefined ? '' : ` for ${map}`}: it is not a shard`, { status: 404, context: { database: loc.database } });
    }
    const attached = (
      await this.post<{ value: Array<Shard & { attached: boolean }> }>('/global/attach', {
        ...loc,
        shards: lsm.maps.map((l) => ({ map: l.map, shardId: l.shardId, kind: l.kind, keyType: l.keyType, status: l.status })),
      })
    ).value;
    const fenced = lsm.maps.filter((l) => l.status === 'detached');
    if (fenced.length > 0) await this.smm.writeLocal(loc, fenced.map((l) => ({ ...fence(l), shardStatus: attached.find((a) => a.id === l.shardId)?.status ?? 'online' })));
    return { attached };
  }

  /** Compares the GSM with the LSM at `location`: one token per shard map that differs; none when they agree. */
  async detectMappingDifferences(location: ShardLocation, map?: string): Promise<RecoveryToken[]> {
    const loc = normalizeLocation(location);
    const [shards, lsm, ops] = await Promise.all([this.smm.shardsAt(loc, map), this.smm.readLocal(loc, map), this.smm.pendingOperations(map)]);
    const names = [...new Set([...shards.map((s) => s.map), ...lsm.maps.map((l) => l.map)])].sort();
    const tokens: RecoveryToken[] = [];
    for (const name of names) {
      const g = shards.find((s) => s.map === name);
      const l = lsm.maps.find((x) => x.map === name);
      const gm = g === undefined ? [] : await this.smm.getMappings(name, { shardId: g.id });
      const differences = diffShard(g, gm, l, pendingOn(ops, name, loc, [g?.id, l?.shardId]));
      if (differences.length > 0) tokens.push({ map: name, location: loc, shardId: g?.id ?? l?.shardId ?? null, differences, detectedAt: new Date().toISOString() });
    }
    return tokens;
  }

  /**
   * Makes the GSM and the LSM agree for the token's map and location. Reads both sides
   * again (a token may be old), replays pending operations on the shard, then:
   *
   * - KeepShardMapping: the LSM wins. A shard the GSM lacks is attached; the GSM's
   *   mappings of the shard become the LSM's, except mappings that collide with another
   *   shard's (those stay with the other shard and leave this LSM: reported as conflicts).
   * - KeepGlobalMapping: the GSM wins. The LSM's mappings become the GSM's; an LSM for a
   *   shard the GSM does not have here is dropped.
   *
   * A mapping whose two copies differed gets a version above both, so every cached copy
   * is refreshed. Idempotent: resolving a consistent shard changes nothing.
   */
  async resolveMappingDifferences(token: RecoveryToken, resolution: MappingDifferenceResolution): Promise<ResolveResult> {
    if (!RESOLUTIONS.includes(resolution)) throw new GeodrError('INVALID_ARGUMENT', `resolution must be KeepShardMapping or KeepGlobalMapping, not ${JSON.stringify(resolution)}`);
    if (token === null || typeof token !== 'object' || typeof token.map !== 'string') throw new GeodrError('INVALID_ARGUMENT', 'token must be a recovery token from detectMappingDifferences');
    return this.resolveShard(normalizeLocation(token.location), token.map, resolution);
  }

  /** @internal Resolution for one map at one location; `known` skips the reads (bulk rebuild), `skipOperation` the replay of the operation calling it. */
  async resolveShard(location: ShardLocation, map: string, resolution: MappingDifferenceResolution, opts: { skipOperation?: string; known?: Known } = {}): Promise<ResolveResult> {
    const loc = normalizeLocation(location);
    const replayed: string[] = [];
    let known = opts.known;
    if (known === undefined) {
      const ops = pendingOn(await this.smm.pendingOperations(map), map, loc, []).filter((o) => o.id !== opts.skipOperation && o.kind !== 'relocate');
      for (const op of ops) {
        try {
          await this.smm.finish(op);
          replayed.push(op.id);
        } catch {
          // It stays pending; the GSM refuses to reconcile rows it holds, which says so.
        }
      }
      const g = (await this.smm.shardsAt(loc, map))[0];
      known = { g, gm: g === undefined ? [] : await this.smm.getMappings(map, { shardId: g.id }), l: (await this.smm.readLocal(loc, map)).maps[0] };
    }
    const out: ResolveResult = { map, location: loc, resolution, shardId: null, replayed, changedGlobal: false, changedLocal: false, conflicts: [] };
    const { g, gm, l } = known;
    if (resolution === 'KeepShardMapping') await this.keepShard(loc, map, g, gm, l, out);
    else await this.keepGlobal(loc, map, g, gm, l, out);
    return out;
  }

  private async reconcile(loc: ShardLocation, map: string, shardId: string, status: Status, mappings: LocalMapping[]): Promise<{ mappings: Mapping[]; conflicts: Array<{ id: string; reason: string }> }> {
    return this.post('/global/reconcile', { map, shardId, ...loc, status, mappings });
  }

  private async keepShard(loc: ShardLocation, map: string, g0: Shard | undefined, gm0: Mapping[], l: LocalShard | undefined, out: ResolveResult): Promise<void> {
    let g = g0;
    let gm = gm0;
    if (l === undefined) {
      if (g === undefined) return;
      // The database says it is no shard of this map: the GSM keeps the shard, without mappings.
      out.shardId = g.id;
      const info = await this.smm.mapInfo(map);
      if (gm.length > 0) {
        await this.reconcile(loc, map, g.id, g.status, []);
        out.changedGlobal = true;
      }
      await this.smm.writeLocal(loc, [{ map, shardId: g.id, kind: info.kind, keyType: info.keyType, shardStatus: g.status, replace: true, put: [] }]);
      out.changedLocal = true;
      return;
    }
    if (g !== undefined && g.id !== l.shardId) {
      await this.post('/global/detach', { ...loc, map });
      g = undefined;
      gm = [];
      out.changedGlobal = true;
    }
    if (g === undefined) {
      const attached = (await this.post<{ value: Shard[] }>('/global/attach', { ...loc, shards: [{ map, shardId: l.shardId, kind: l.kind, keyType: l.keyType, status: l.status }] })).value;
      g = attached[0]!;
      out.changedGlobal = true;
    }
    out.shardId = g.id;
    // A fenced LSM is one whose detach was undone by attaching it again.
    const status: Status = l.status === 'detached' ? g.status : l.status;
    const desired = settle(l.mappings, gm);
    let final: Array<LocalMapping | Mapping> = desired;
    if (!sameMappings(desired, gm) || status !== g.status) {
      const r = await this.reconcile(loc, map, g.id, status, desired);
      final = r.mappings;
      out.conflicts = r.conflicts;
      out.changedGlobal = true;
    }
    if (!sameMappings(final, l.mappings) || l.status !== status) {
      await this.smm.writeLocal(loc, [{ map, shardId: g.id, kind: l.kind, keyType: l.keyType, shardStatus: status, replace: true, put: final.map(toLocal) }]);
      out.changedLocal = true;
    }
  }

  private async keepGlobal(loc: ShardLocation, map: string, g: Shard | undefined, gm: Mapping[], l0: LocalShard | undefined, out: ResolveResult): Promise<void> {
    let l = l0;
    if (l !== undefined && (g === undefined || l.shardId !== g.id)) {
      // The GSM has no such shard here: the LSM's claim goes.
      await this.smm.writeLocal(loc, [{ ...fence(l), dropShard: true }]);
      out.changedLocal = true;
      l = undefined;
    }
    if (g === undefined) return;
    out.shardId = g.id;
    const final = settle(gm, l?.mappings ?? []);
    if (!sameMappings(final, gm)) {
      await this.reconcile(loc, map, g.id, g.status, final);
      out.changedGlobal = true;
    }
    if (l === undefined || !sameMappings(final, l.mappings) || l.status !== g.status) {
      const info = l ?? (await this.smm.mapInfo(map));
      await this.smm.writeLocal(loc, [{ map, shardId: g.id, kind: info.kind, keyType: info.keyType, shardStatus: g.status, replace: true, put: final }]);
      out.changedLocal = true;
    }
  }

  /**
   * The failover workflow of the seed, as one call: for every shard on `fromServer`
   * (of `map`, or of every map) whose database answers on `toServer` with its LSM:
   * fence the old copy if it still answers; detach it and attach the new location —
   * done as one GSM transaction per run that keeps each shard's id and mappings, so an
   * interruption can never lose a shard between the two; then detect and resolve the
   * differences trusting the LSM (KeepShardMapping). The relocation is recorded as a
   * pending operation until every shard is reconciled, so a run that dies is finished
   * by the next. Shards whose new copy is not there yet stay put (`notMoved`): run it
   * again as more databases come online. Running it twice equals running it once.
   */
  async rebuildAfterFailover(opts: RebuildOptions): Promise<RebuildResult> {
    const from = normalizeServer(opts.fromServer);
    const to = normalizeServer(opts.toServer);
    const concurrency = Math.max(1, opts.concurrency ?? 16);
    const rename = (db: string): string => validateName('database', typeof opts.databases === 'function' ? opts.databases(db) : (opts.databases?.[db] ?? db));
    const result: RebuildResult = { moved: [], notMoved: [], reconciled: [], conflicts: [], failed: [], fenced: 0, resumed: [] };

    for (const op of (await this.smm.pendingOperations(opts.map)).filter((o) => o.kind === 'relocate')) {
      await this.finishRelocation(op, result, new Map(), concurrency);
      result.resumed.push(op.id);
    }

    const shards = await this.smm.shardsAt({ server: from }, opts.map);
    const candidates = shards.map((shard) => ({ shard, to: { server: to, database: rename(shard.database) } })).filter((c) => !sameLocation(c.shard, c.to));
    const ready: Array<{ shard: Shard; to: ShardLocation; lsm: LocalShard }> = [];
    await forEachLimit(candidates, concurrency, async (c) => {
      const notMoved = (reason: string): void => void result.notMoved.push({ shardId: c.shard.id, map: c.shard.map, database: c.shard.database, reason });
      try {
        const lsm = (await this.smm.readLocal(c.to, c.shard.map)).maps[0];
        if (lsm === undefined) notMoved(`${formatLocation(c.to)} holds no local shard map for ${c.shard.map}`);
        else if (lsm.shardId !== c.shard.id) notMoved(`${formatLocation(c.to)} is shard ${lsm.shardId} of ${c.shard.map}, not ${c.shard.id}`);
        else ready.push({ ...c, lsm });
      } catch (e) {
        notMoved(e instanceof Error ? e.message : String(e));
      }
    });
    if (ready.length === 0) return result;

    if (opts.fence !== false && (await this.answers(from))) {
      await forEachLimit(ready, concurrency, async (c) => {
        try {
          await this.smm.writeLocal(c.shard, [fence(c.lsm)], true);
          result.fenced++;
        } catch {
          // Read-only (a deposed primary), deleted, or gone meanwhile: nothing routes there.
        }
      });
    }

    const rel = await this.post<{ moved: Shard[]; skipped: Array<{ shardId: string; reason: string }>; operation: PendingOperation | null }>('/global/relocate', {
      moves: ready.map((c) => ({ shardId: c.shard.id, ...c.to })),
      reconcile: true,
    });
    for (const m of rel.moved) {
      const c = ready.find((x) => x.shard.id === m.id)!;
      result.moved.push({ shardId: m.id, map: m.map, from: { server: c.shard.server, database: c.shard.database }, to: { server: m.server, database: m.database } });
    }
    for (const s of rel.skipped) {
      const c = ready.find((x) => x.shard.id === s.shardId)!;
      result.notMoved.push({ shardId: s.shardId, map: c.shard.map, database: c.shard.database, reason: s.reason });
    }
    if (rel.operation !== null) await this.finishRelocation(rel.operation, result, new Map(ready.map((c) => [c.shard.id, c.lsm])), concurrency);
    return result;
  }

  /** Reconciles every shard of a relocation trusting its LSM, reading the GSM once per map; completes it. */
  private async finishRelocation(op: PendingOperation, result: RebuildResult, lsms: Map<string, LocalShard>, concurrency: number): Promise<void> {
    const ids = new Set(op.steps.map((s) => s.shardId));
    // Other interrupted changes to these shards go first; their steps follow the shards to their new place.
    for (const other of await this.smm.pendingOperations()) {
      if (other.kind !== 'relocate' && other.steps.some((s) => ids.has(s.shardId))) {
        await this.smm.finish(other).catch(() => undefined);
      }
    }
    const failed: number[] = [];
    for (const map of [...new Set(op.steps.map((s) => s.map))]) {
      const [shards, mappings] = await Promise.all([this.smm.getShards(map), this.smm.getMappings(map)]);
      const byId = new Map(shards.map((s) => [s.id, s]));
      const byShard = new Map<string, Mapping[]>();
      for (const m of mappings) (byShard.get(m.shardId) ?? byShard.set(m.shardId, []).get(m.shardId)!).push(m);
      await forEachLimit(
        op.steps.filter((s) => s.map === map),
        concurrency,
        async (s) => {
          try {
            const l = lsms.get(s.shardId) ?? (await this.smm.readLocal(s, map)).maps[0];
            const r = await this.resolveShard(s, map, 'KeepShardMapping', { skipOperation: op.id, known: { g: byId.get(s.shardId), gm: byShard.get(s.shardId) ?? [], l } });
            if (r.changedGlobal || r.changedLocal) result.reconciled.push({ shardId: s.shardId, map, changedGlobal: r.changedGlobal, changedLocal: r.changedLocal });
            for (const c of r.conflicts) result.conflicts.push({ shardId: s.shardId, ...c });
          } catch (e) {
            failed.push(s.index);
            result.failed.push({ shardId: s.shardId, map, error: e instanceof Error ? e.message : String(e) });
          }
        },
      );
    }
    await this.post(`/operations/${encodeURIComponent(op.id)}/complete`, { failedSteps: failed });
  }

  /** Whether a server answers at all (a quick health check, no retries). */
  private async answers(server: string): Promise<boolean> {
    try {
      await this.smm.shardClient(server, true).send({ method: 'GET', path: '/healthz' });
      return true;
    } catch (e) {
      if (e instanceof GeodrApiError && e.status !== 0) return true;
      return false;
    }
  }
}

function toLocal(m: LocalMapping | Mapping): LocalMapping {
  return { id: m.id, low: m.low, high: m.high, status: m.status, version: m.version };
}

/** The change that marks an LSM's shard row detached (its other fields as they are). */
function fence(l: { map: string; shardId: string; kind: LocalShard['kind']; keyType: KeyType }): LocalChange {
  return { map: l.map, shardId: l.shardId, kind: l.kind, keyType: l.keyType, shardStatus: 'detached' };
}
