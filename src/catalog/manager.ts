/**
 * The shard map manager, client side: creates shard maps and changes them (shards,
 * list and range mappings, split, merge, move, online/offline) keeping the global
 * shard map (GSM, in the catalog database) and every shard's local shard map (LSM)
 * consistent. It talks HTTP only (the catalog server's `shardMapManager` routes, and
 * each shard server's `localShardMap` routes), so it runs in an application, the CLI,
 * or a server acting for a caller.
 *
 * Every change runs in three steps, each durable before the next:
 *   1. the catalog server checks the request, applies it to the GSM and records a
 *      pending operation listing the LSM change each shard needs (in one transaction);
 *   2. the LSM changes are made, each idempotent;
 *   3. the operation is completed.
 * If the process dies in between, the pending operation holds the rows it changed
 * (other changes to them are refused) until {@link ShardMapManager.recoverPendingOperations}
 * or the recovery manager replays it. Routing validates every cached mapping against
 * the LSM, so a half-done change never sends a key to a database that does not own it.
 */
import { GeodrError } from '../errors.js';
import { GeodrClient } from '../sdk/client.js';
import { GeodrApiError } from '../sdk/errors.js';
import { formatKey, type KeyType, type ShardKey } from './keys.js';
import {
  formatLocation,
  normalizeLocation,
  validateCatalogName,
  type InventoryServer,
  type LocalChange,
  type LocalShardMap,
  type MapKind,
  type Mapping,
  type PendingOperation,
  type Shard,
  type ShardLocation,
  type ShardMapInfo,
  type Status,
  type Tenant,
} from './model.js';
import { RecoveryManager } from './recovery.js';

export interface CatalogOptions {
  /** URL of the server holding the catalog database. */
  url: string;
  /** Token for the catalog server: admin to change shard maps, any token that may use the catalog database to read. */
  token?: string | undefined;
  /** The catalog database (holds the GSM). */
  database: string;
  /** Token for shard servers: the catalog token by default; a function picks one per server. */
  shardToken?: string | ((server: string) => string | undefined) | undefined;
  /**
   * The URL to reach a shard's server at. Default: the server itself, which must then
   * be a URL; give this when shards name servers by name or alias.
   */
  resolveServer?: ((server: string) => string) | undefined;
  /** Retries after connection failures and retryable 503s (see GeodrClient). Default 3. */
  retries?: number | undefined;
  timeoutMs?: number | undefined;
  fetch?: typeof fetch | undefined;
}

export interface ShardMapManagerOptions extends CatalogOptions {
  /** LSM changes of one operation made at once (bulk operations). Default 16. */
  concurrency?: number;
  /** Called between the steps of every operation, with a label; a test hook (the property test kills the process here). */
  onStep?: (label: string) => void | Promise<void>;
}

/** A mapping to add: its key (list maps) or range (range maps), and the shard to put it on. */
export interface MappingSpec {
  /** List maps: the key. */
  key?: ShardKey;
  /** Range maps: the first key (inclusive); omitted or null means the smallest key. */
  low?: ShardKey | null;
  /** Range maps: the end (exclusive); omitted or null means no upper bound. */
  high?: ShardKey | null;
  location: ShardLocation;
  status?: Status;
}

export interface PendingRecovery {
  completed: string[];
  failed: Array<{ operation: string; error: string }>;
}

const enc = encodeURIComponent;
/** Time limit for requests to a copy that may be gone (fencing, reachability). */
const QUICK_MS = 2000;

/** Runs fn over items, at most `limit` at a time. */
export async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

/** The rows an operation returned were held by it until it completed: show them as they are now. */
function released(v: unknown, opId: string): void {
  if (Array.isArray(v)) for (const x of v) released(x, opId);
  else if (typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    if (o.pendingOperation === opId) o.pendingOperation = null;
    for (const x of Object.values(o)) if (typeof x === 'object') released(x, opId);
  }
}

/** Creates the shard map manager's tables in the catalog database (idempotent) and returns a manager for it. */
export async function createShardMapManager(opts: ShardMapManagerOptions): Promise<ShardMapManager> {
  const smm = new ShardMapManager(opts);
  await smm.catalog.send({ method: 'PUT', path: smm.gsmPath('') });
  return smm;
}

/** A manager for an existing shard map manager (no I/O until used). */
export function getShardMapManager(opts: ShardMapManagerOptions): ShardMapManager {
  return new ShardMapManager(opts);
}

export class ShardMapManager {
  /** @internal */
  readonly catalog: GeodrClient;
  readonly database: string;
  private readonly clients = new Map<string, GeodrClient>();
  private readonly mapCache = new Map<string, ShardMapInfo>();
  private readonly concurrency: number;
  private recovery: RecoveryManager | undefined;

  constructor(readonly options: ShardMapManagerOptions) {
    this.catalog = new GeodrClient({ url: options.url, token: options.token, retries: options.retries, timeoutMs: options.timeoutMs, fetch: options.fetch });
    this.database = options.database;
    this.concurrency = Math.max(1, options.concurrency ?? 16);
  }

  /** @internal `/v1/databases/{catalog}/shardMapManager{rest}` */
  gsmPath(rest: string): string {
    return `/v1/databases/${enc(this.database)}/shardMapManager${rest}`;
  }

  /** @internal */
  catalogPath(rest: string): string {
    return `/v1/databases/${enc(this.database)}/catalog${rest}`;
  }

  getRecoveryManager(): RecoveryManager {
    this.recovery ??= new RecoveryManager(this);
    return this.recovery;
  }

  /** @internal The client for a shard's server; `quick` asks once with a short time limit (fencing a copy that may be gone). */
  shardClient(server: string, quick = false): GeodrClient {
    const url = this.options.resolveServer?.(server) ?? server;
    if (!/^https?:\/\//i.test(url)) {
      throw new GeodrError('INVALID_ARGUMENT', `shard server ${JSON.stringify(server)} is a name, not a URL; give the manager a resolveServer function`);
    }
    const key = `${url}\u0000${quick}`;
    let c = this.clients.get(key);
    if (c === undefined) {
      const t = this.options.shardToken;
      const token = typeof t === 'function' ? t(server) : (t ?? this.options.token);
      c = new GeodrClient({ url, token, retries: quick ? 0 : this.options.retries, timeoutMs: quick ? QUICK_MS : this.options.timeoutMs, fetch: this.options.fetch });
      this.clients.set(key, c);
    }
    return c;
  }

  // Shard maps

  async listShardMaps(): Promise<ShardMapInfo[]> {
    return (await this.catalog.send<{ value: ShardMapInfo[] }>({ method: 'GET', path: this.gsmPath('/maps') })).value;
  }

  async getShardMap(name: string): Promise<ShardMapInfo> {
    const m = await this.catalog.send<ShardMapInfo>({ method: 'GET', path: this.gsmPath(`/maps/${enc(validateCatalogName('shard map', name))}`) });
    this.mapCache.set(name, m);
    return m;
  }

  /** Kind and key type of a map (cached: they never change). */
  async mapInfo(name: string): Promise<ShardMapInfo> {
    return this.mapCache.get(name) ?? this.getShardMap(name);
  }

  /** Creates a list map (one key per mapping); the same call again answers the existing map. */
  createListShardMap(name: string, keyType: KeyType): Promise<ShardMapInfo> {
    return this.createShardMap(name, 'list', keyType);
  }

  /** Creates a range map (mappings are key ranges [low, high)). */
  createRangeShardMap(name: string, keyType: KeyType): Promise<ShardMapInfo> {
    return this.createShardMap(name, 'range', keyType);
  }

  async createShardMap(name: string, kind: MapKind, keyType: KeyType): Promise<ShardMapInfo> {
    const m = await this.catalog.send<ShardMapInfo>({ method: 'PUT', path: this.gsmPath(`/maps/${enc(validateCatalogName('shard map', name))}`), body: { kind, keyType } });
    this.mapCache.set(name, m);
    return m;
  }

  /** Deletes a map without shards, pending operations or tenants. */
  async deleteShardMap(name: string): Promise<void> {
    await this.catalog.send({ method: 'DELETE', path: this.gsmPath(`/maps/${enc(validateCatalogName('shard map', name))}`) });
    this.mapCache.delete(name);
  }

  // Reads

  async getShards(map: string, location?: ShardLocation): Promise<Shard[]> {
    const loc = location === undefined ? undefined : normalizeLocation(location);
    return (await this.catalog.send<{ value: Shard[] }>({ method: 'GET', path: this.gsmPath(`/maps/${enc(map)}/shards`), query: { server: loc?.server, database: loc?.database } })).value;
  }

  /** The shard of `map` at `location`, or undefined. */
  async getShard(map: string, location: ShardLocation): Promise<Shard | undefined> {
    return (await this.getShards(map, location))[0];
  }

  /** Shards of every map at a location (`database` given) or on a server. @internal */
  async shardsAt(location: { server: string; database?: string }, map?: string): Promise<Shard[]> {
    return (await this.catalog.send<{ value: Shard[] }>({ method: 'GET', path: this.gsmPath('/shards'), query: { server: location.server, database: location.database, map } })).value;
  }

  async getMappings(map: string, opts: { shardId?: string } = {}): Promise<Mapping[]> {
    return (await this.catalog.send<{ value: Mapping[] }>({ method: 'GET', path: this.gsmPath(`/maps/${enc(map)}/mappings`), query: { shardId: opts.shardId } })).value;
  }

  /** The mapping covering `key` and its shard; NOT_FOUND when none does. */
  async lookup(map: string, key: ShardKey): Promise<{ mapping: Mapping; shard: Shard }> {
    const info = await this.mapInfo(map);
    return this.catalog.send({ method: 'GET', path: this.gsmPath(`/maps/${enc(map)}/lookup`), query: { key: formatKey(info.keyType, key) } });
  }

  async pendingOperations(map?: string): Promise<PendingOperation[]> {
    return (await this.catalog.send<{ value: PendingOperation[] }>({ method: 'GET', path: this.gsmPath('/operations'), query: { map } })).value;
  }

  /** @internal A database's LSM (only `map`'s part when given). */
  readLocal(location: ShardLocation, map?: string, quick = false): Promise<LocalShardMap> {
    return this.shardClient(location.server, quick).send({ method: 'GET', path: `/v1/databases/${enc(location.database)}/localShardMap`, query: { map } });
  }

  /** @internal Changes a database's LSM (idempotent, so safe to re-send). */
  writeLocal(location: ShardLocation, changes: LocalChange[], quick = false): Promise<{ versions: Record<string, number>; txid: number }> {
    return this.shardClient(location.server, quick).send({ method: 'POST', path: `/v1/databases/${enc(location.database)}/localShardMap`, body: { changes }, replaySafe: true });
  }

  // Changes

  /** Adds a shard (the database must exist on its server; its LSM gets the shard's row). */
  async addShard(map: string, location: ShardLocation, opts: { status?: Status } = {}): Promise<Shard> {
    const r = await this.operate<{ shards: Shard[] }>(map, { kind: 'addShards', shards: [{ ...normalizeLocation(location), ...(opts.status === undefined ? {} : { status: opts.status }) }] });
    return r.shards[0]!;
  }

  /** Adds many shards, and optionally mappings on them, as one operation (provisioning at scale). */
  async addShards(map: string, shards: Array<ShardLocation & { status?: Status }>, mappings: MappingSpec[] = []): Promise<{ shards: Shard[]; mappings: Mapping[] }> {
    const info = await this.mapInfo(map);
    return this.operate(map, {
      kind: 'addShards',
      shards: shards.map((s) => ({ ...normalizeLocation(s), ...(s.status === undefined ? {} : { status: s.status }) })),
      mappings: mappings.map((m) => this.specWire(info, m)),
    });
  }

  /** Removes a shard that holds no mappings; its LSM loses the map. */
  async removeShard(map: string, location: ShardLocation): Promise<void> {
    await this.operate(map, { kind: 'removeShard', ...normalizeLocation(location) });
  }

  /** Takes a shard (all its mappings) offline or brings it back. */
  async setShardStatus(map: string, location: ShardLocation, status: Status): Promise<Shard> {
    return (await this.operate<{ shard: Shard }>(map, { kind: 'setShardStatus', ...normalizeLocation(location), status })).shard;
  }

  /** Adds a list mapping: `key` routes to the shard at `location`. */
  async addPointMapping(map: string, key: ShardKey, location: ShardLocation, opts: { status?: Status } = {}): Promise<Mapping> {
    return (await this.addMappings(map, [{ key, location, ...opts }]))[0]!;
  }

  /** Adds a range mapping: keys in [low, high) route to the shard at `location` (null bounds are open). */
  async addRangeMapping(map: string, range: { low: ShardKey | null; high: ShardKey | null }, location: ShardLocation, opts: { status?: Status } = {}): Promise<Mapping> {
    return (await this.addMappings(map, [{ low: range.low, high: range.high, location, ...opts }]))[0]!;
  }

  /** Adds mappings as one operation; an overlap with any existing mapping refuses all of them (CONFLICT). */
  async addMappings(map: string, specs: MappingSpec[]): Promise<Mapping[]> {
    const info = await this.mapInfo(map);
    return (await this.operate<{ mappings: Mapping[] }>(map, { kind: 'addMappings', mappings: specs.map((m) => this.specWire(info, m)) })).mappings;
  }

  /**
   * Changes a mapping's status, or moves it to another shard. Moving needs it offline
   * (before and after): move the data meanwhile, then bring it online.
   */
  async updateMapping(map: string, mappingId: string, change: { status?: Status; location?: ShardLocation }): Promise<Mapping> {
    const body: Record<string, unknown> = { kind: 'updateMapping', mappingId };
    if (change.status !== undefined) body.status = change.status;
    if (change.location !== undefined) Object.assign(body, normalizeLocation(change.location));
    return (await this.operate<{ mapping: Mapping }>(map, body)).mapping;
  }

  takeOffline(map: string, mappingId: string): Promise<Mapping> {
    return this.updateMapping(map, mappingId, { status: 'offline' });
  }

  bringOnline(map: string, mappingId: string): Promise<Mapping> {
    return this.updateMapping(map, mappingId, { status: 'online' });
  }

  /** Takes the mapping offline, moves it to `location`, and brings it back online (three operations). */
  async moveMapping(map: string, mappingId: string, location: ShardLocation): Promise<Mapping> {
    const m = await this.takeOffline(map, mappingId);
    await this.updateMapping(map, m.id, { location });
    return this.bringOnline(map, m.id);
  }

  /** Removes an offline mapping. */
  async removeMapping(map: string, mappingId: string): Promise<void> {
    await this.operate(map, { kind: 'removeMapping', mappingId });
  }

  /** Splits a range mapping at `at` into [low, at) and [at, high) (new ids, same shard and status). */
  async splitMapping(map: string, mappingId: string, at: ShardKey): Promise<[Mapping, Mapping]> {
    const info = await this.mapInfo(map);
    const r = await this.operate<{ mappings: Mapping[] }>(map, { kind: 'splitMapping', mappingId, at: formatKey(info.keyType, at) });
    return [r.mappings[0]!, r.mappings[1]!];
  }

  /** Merges two adjacent range mappings of one shard and status into one (a new id). */
  async mergeMappings(map: string, leftId: string, rightId: string): Promise<Mapping> {
    return (await this.operate<{ mapping: Mapping }>(map, { kind: 'mergeMappings', leftId, rightId })).mapping;
  }

  /** Replays every pending operation (of `map`, or one `id`); what fails stays pending. */
  async recoverPendingOperations(filter: { map?: string | undefined; id?: string | undefined } = {}): Promise<PendingRecovery> {
    const ops = (await this.pendingOperations(filter.map)).filter((o) => filter.id === undefined || o.id === filter.id);
    const out: PendingRecovery = { completed: [], failed: [] };
    for (const op of ops) {
      try {
        await this.finish(op);
        out.completed.push(op.id);
      } catch (e) {
        out.failed.push({ operation: op.id, error: e instanceof Error ? e.message : String(e) });
      }
    }
    return out;
  }

  // Tenant catalog and inventory (the tenants' mappings live in a list map)

  async listTenants(): Promise<Tenant[]> {
    return (await this.catalog.send<{ value: Tenant[] }>({ method: 'GET', path: this.catalogPath('/tenants') })).value;
  }

  getTenant(name: string): Promise<Tenant> {
    return this.catalog.send({ method: 'GET', path: this.catalogPath(`/tenants/${enc(validateCatalogName('tenant', name))}`) });
  }

  /** @internal */
  putTenantRow(name: string, body: { map: string; key: string; pool?: string | null }): Promise<Tenant> {
    return this.catalog.send({ method: 'PUT', path: this.catalogPath(`/tenants/${enc(validateCatalogName('tenant', name))}`), body });
  }

  /** @internal */
  patchTenantRow(name: string, body: Record<string, unknown>): Promise<Tenant> {
    return this.catalog.send({ method: 'PATCH', path: this.catalogPath(`/tenants/${enc(validateCatalogName('tenant', name))}`), body });
  }

  /** @internal */
  deleteTenantRow(name: string): Promise<Tenant> {
    return this.catalog.send({ method: 'DELETE', path: this.catalogPath(`/tenants/${enc(validateCatalogName('tenant', name))}`) });
  }

  async getInventory(): Promise<InventoryServer[]> {
    return (await this.catalog.send<{ value: InventoryServer[] }>({ method: 'GET', path: this.catalogPath('/inventory') })).value;
  }

  /** @internal */
  putInventory(inv: Omit<InventoryServer, 'syncedAt'>): Promise<InventoryServer> {
    return this.catalog.send({ method: 'POST', path: this.catalogPath('/inventory'), body: inv, replaySafe: true });
  }

  // Operations

  private specWire(info: ShardMapInfo, m: MappingSpec): Record<string, unknown> {
    const loc = normalizeLocation(m.location);
    const out: Record<string, unknown> = { ...loc };
    if (m.status !== undefined) out.status = m.status;
    if (info.kind === 'list') {
      if (m.key === undefined) throw new GeodrError('INVALID_ARGUMENT', `shard map ${info.name} is a list map: a mapping is one key`);
      out.key = formatKey(info.keyType, m.key);
    } else {
      if (m.key !== undefined) throw new GeodrError('INVALID_ARGUMENT', `shard map ${info.name} is a range map: a mapping is a range (low, high)`);
      if (m.low !== undefined && m.low !== null) out.low = formatKey(info.keyType, m.low);
      if (m.high !== undefined && m.high !== null) out.high = formatKey(info.keyType, m.high);
    }
    return out;
  }

  private async step(label: string): Promise<void> {
    await this.options.onStep?.(label);
  }

  /** Steps 1-3 of a change; a row held by a pending operation is released by replaying that operation first, once. */
  private async operate<R>(map: string, request: Record<string, unknown>): Promise<R> {
    validateCatalogName('shard map', map);
    let r: { operation: PendingOperation | null; result: R };
    try {
      r = await this.startOperation(map, request);
    } catch (e) {
      const held = e instanceof GeodrApiError && e.code === 'CONFLICT' ? e.context.details?.pendingOperation : undefined;
      if (typeof held !== 'string') throw e;
      const rec = await this.recoverPendingOperations({ id: held });
      if (rec.failed.length > 0) throw e;
      r = await this.startOperation(map, request);
    }
    if (r.operation !== null) {
      await this.finish(r.operation);
      released(r.result, r.operation.id);
    }
    return r.result;
  }

  private startOperation<R>(map: string, request: Record<string, unknown>): Promise<{ operation: PendingOperation | null; result: R }> {
    // A POST that may have reached the server is never re-sent (it would apply twice).
    return this.catalog.send({ method: 'POST', path: this.gsmPath(`/maps/${enc(map)}/operations`), body: request });
  }

  /** @internal Steps 2 and 3 of an operation (also the replay of a pending one). */
  async finish(op: PendingOperation): Promise<void> {
    await this.step(`gsm ${op.kind} ${op.id}`);
    const failed: Array<{ index: number; error: unknown }> = [];
    await forEachLimit(op.steps, this.concurrency, async (s) => {
      try {
        if (s.change !== null) await this.writeLocal(s, [s.change]);
        else if (s.resolve !== null) await this.getRecoveryManager().resolveShard(s, s.map, s.resolve, { skipOperation: op.id });
      } catch (e) {
        failed.push({ index: s.index, error: e });
      }
      await this.step(`lsm ${op.kind} ${op.id} ${s.index}`);
    });
    await this.catalog.send({ method: 'POST', path: this.gsmPath(`/operations/${enc(op.id)}/complete`), body: { failedSteps: failed.map((f) => f.index) }, replaySafe: true });
    await this.step(`complete ${op.kind} ${op.id}`);
    if (failed.length > 0) {
      const first = failed[0]!.error;
      const step = op.steps.find((s) => s.index === failed[0]!.index)!;
      const why = first instanceof Error ? first.message : String(first);
      throw new GeodrApiError(
        first instanceof GeodrApiError ? first.code : 'INTERNAL',
        `operation ${op.id} (${op.kind}) is applied to the GSM, but ${failed.length} of its ${op.steps.length} LSM steps failed (first: ${formatLocation(step)}: ${why}); it stays pending until recoverPendingOperations() finishes it`,
        { status: first instanceof GeodrApiError ? first.status : 0, retryable: true, context: { details: { operationId: op.id, failedSteps: failed.map((f) => f.index) } }, cause: first },
      );
    }
  }
}
