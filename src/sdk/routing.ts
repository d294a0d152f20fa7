/**
 * Data-dependent routing: find the database that holds a shard key through the global
 * shard map (GSM), and run SQL there.
 *
 * - Lookups are cached (ranges and keys as the GSM answers them) for `cacheTtlMs`.
 * - Every statement is validated where it runs: the shard's server runs it only if its
 *   local shard map (LSM) still gives the key to that database through the cached
 *   mapping id and version (the check and the statements are atomic there). Opening a
 *   connection validates too (one cheap read of the LSM), unless `validate: false`.
 * - When the shard says the cache is stale (the tenant moved, was split, failed over,
 *   restored elsewhere), or the database is gone from that server or the server does
 *   not answer, the mapping is looked up again and the statements retried — only when
 *   nothing can have run, so a write is never applied twice.
 * - A mapping (or shard) that is offline in the GSM is TENANT_OFFLINE.
 *
 * Routing needs only read access to the catalog database: a data token scoped to it.
 */
import { GeodrError } from '../errors.js';
import { keyText, normalizeKey, type KeyType, type ShardKey } from '../catalog/keys.js';
import { normalizeServer, type Mapping, type Shard, type ShardLocation, type ShardMapInfo } from '../catalog/model.js';
import { GeodrClient, QueryResult, type Statement } from './client.js';
import { GeodrApiError } from './errors.js';
import { encodeParams, type IntMode, type SqlParams } from './values.js';

export * from '../catalog/index.js';

export interface ShardMapClientOptions {
  /** The catalog: its server's URL, a token that may read the catalog database, and the database. */
  catalog: { url: string; token?: string | undefined; database: string };
  /** Token for the shards' servers (a data token covering the tenant databases). Default: the catalog token. */
  shardToken?: string | ((server: string) => string | undefined) | undefined;
  /** The URL of a shard's server, when the shard map names servers by name or alias. Default: the server is a URL. */
  resolveServer?: ((server: string) => string) | undefined;
  /** How long a cached mapping is used before it is looked up again (each use is validated regardless). Default 60,000 ms. */
  cacheTtlMs?: number;
  /** Attempts of one call when the cache turns out stale. Default 4. */
  attempts?: number;
  retries?: number;
  timeoutMs?: number;
  fetch?: typeof fetch;
  intMode?: IntMode;
}

/** Where a key routes: the mapping and shard the GSM gave, as cached. */
export interface Route {
  map: string;
  /** The key's text form (decimal, the string, or hex). */
  key: string;
  mapping: Mapping;
  shard: Shard;
}

interface Entry {
  mapping: Mapping;
  shard: Shard;
  low: Buffer;
  high: Buffer | null;
  fetchedAt: number;
}

/** A map's cached mappings: list keys by their bytes, ranges sorted by low bound. */
class MapCache {
  readonly points = new Map<string, Entry>();
  ranges: Entry[] = [];
  constructor(readonly info: ShardMapInfo) {}

  get(key: Buffer): Entry | undefined {
    if (this.info.kind === 'list') return this.points.get(key.toString('latin1'));
    let lo = 0;
    let hi = this.ranges.length - 1;
    let found: Entry | undefined;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const e = this.ranges[mid]!;
      if (Buffer.compare(e.low, key) <= 0) {
        found = e;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found !== undefined && (found.high === null || Buffer.compare(key, found.high) < 0) ? found : undefined;
  }

  put(e: Entry): void {
    if (this.info.kind === 'list') {
      this.points.set(e.low.toString('latin1'), e);
      return;
    }
    // Cached ranges that overlap the new one are stale (a split or merge happened).
    const overlaps = (r: Entry): boolean => (e.high === null || Buffer.compare(r.low, e.high) < 0) && (r.high === null || Buffer.compare(r.high, e.low) > 0);
    this.ranges = this.ranges.filter((r) => !overlaps(r));
    const at = this.ranges.findIndex((r) => Buffer.compare(r.low, e.low) > 0);
    if (at < 0) this.ranges.push(e);
    else this.ranges.splice(at, 0, e);
  }

  drop(key: Buffer): void {
    const e = this.get(key);
    if (e === undefined) return;
    if (this.info.kind === 'list') this.points.delete(key.toString('latin1'));
    else this.ranges = this.ranges.filter((r) => r !== e);
  }
}

// Refusals that ran nothing and say this copy may no longer be the key's: a moved mapping, a
// secondary or deposed primary after a failover, a copy behind what the client has seen.
const STALE_REASONS = new Set(['MAPPING_STALE', 'READ_ONLY', 'STALE_EPOCH', 'STALE_READ']);

/** Whether an error from a shard means "the cache may be stale, and nothing ran". */
function staleError(e: unknown): boolean {
  if (!(e instanceof GeodrApiError)) return false;
  if (STALE_REASONS.has(e.code)) return true;
  // The database is not (or no longer) on that server.
  if (e.code === 'NOT_FOUND' && e.context.database !== undefined) return true;
  // The server did not answer, or refused before running anything (a geo-secondary, a database
  // being moved); unless the request may have arrived and its outcome is unknown.
  return e.code === 'UNAVAILABLE' && e.context.details?.outcomeUnknown !== true;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Routes shard keys to databases through a shard map manager's GSM.
 *
 * @example
 * const maps = new ShardMapClient({ catalog: { url: 'http://127.0.0.1:7481', token: readToken, database: 'catalog' }, shardToken: appToken })
 * const conn = await maps.openConnectionForKey('tenants', 'contoso')
 * await conn.query('insert into tickets (customer) values (?)', ['ada'])
 */
export class ShardMapClient {
  private readonly catalog: GeodrClient;
  private readonly clients = new Map<string, GeodrClient>();
  private readonly maps = new Map<string, MapCache>();
  private readonly ttl: number;
  readonly attempts: number;
  /** Counters: cache hits and misses, GSM lookups, validations, stale answers that caused a retry. */
  readonly stats = { hits: 0, misses: 0, lookups: 0, validations: 0, stale: 0 };

  constructor(readonly options: ShardMapClientOptions) {
    this.catalog = new GeodrClient({ url: options.catalog.url, token: options.catalog.token, retries: options.retries, timeoutMs: options.timeoutMs, fetch: options.fetch });
    this.ttl = options.cacheTtlMs ?? 60_000;
    this.attempts = Math.max(1, options.attempts ?? 4);
  }

  private gsm(rest: string): string {
    return `/v1/databases/${encodeURIComponent(this.options.catalog.database)}/shardMapManager${rest}`;
  }

  /** @internal */
  shard(server: string): GeodrClient {
    const url = this.options.resolveServer?.(server) ?? server;
    let c = this.clients.get(url);
    if (c === undefined) {
      if (!/^https?:\/\//i.test(url)) throw new GeodrError('INVALID_ARGUMENT', `shard server ${JSON.stringify(server)} is a name, not a URL; give ShardMapClient a resolveServer function`);
      const t = this.options.shardToken;
      const token = typeof t === 'function' ? t(server) : (t ?? this.options.catalog.token);
      c = new GeodrClient({ url, token, retries: this.options.retries, timeoutMs: this.options.timeoutMs, fetch: this.options.fetch, intMode: this.options.intMode });
      this.clients.set(url, c);
    }
    return c;
  }

  /** @internal The URL of a shard's server. */
  serverUrl(server: string): string {
    return this.options.resolveServer?.(server) ?? normalizeServer(server);
  }

  private async cacheFor(map: string): Promise<MapCache> {
    let c = this.maps.get(map);
    if (c === undefined) {
      const info = await this.catalog.send<ShardMapInfo>({ method: 'GET', path: this.gsm(`/maps/${encodeURIComponent(map)}`) });
      c = this.maps.get(map) ?? new MapCache(info);
      this.maps.set(map, c);
    }
    return c;
  }

  /** Loads every mapping of `map` into the cache (instead of one lookup per key on first use). */
  async loadMap(map: string): Promise<number> {
    const cache = await this.cacheFor(map);
    const path = (rest: string): string => this.gsm(`/maps/${encodeURIComponent(map)}${rest}`);
    const [shards, mappings] = await Promise.all([this.catalog.send<{ value: Shard[] }>({ method: 'GET', path: path('/shards') }), this.catalog.send<{ value: Mapping[] }>({ method: 'GET', path: path('/mappings') })]);
    const byId = new Map(shards.value.map((s) => [s.id, s]));
    const now = Date.now();
    for (const m of mappings.value) {
      const shard = byId.get(m.shardId);
      if (shard !== undefined) cache.put(entry(cache.info.keyType, m, shard, now));
    }
    return mappings.value.length;
  }

  /** Forgets cached mappings: of one key, of one map, or all. */
  invalidate(map?: string, key?: ShardKey): void {
    if (map === undefined) this.maps.clear();
    else if (key === undefined) this.maps.delete(map);
    else {
      const c = this.maps.get(map);
      c?.drop(normalizeKey(c.info.keyType, key));
    }
  }

  /**
   * Where `key` routes: from the cache, else from the GSM. NOT_FOUND when no mapping covers
   * it; TENANT_OFFLINE when its mapping or shard is offline. Does not contact the shard.
   */
  async lookup(map: string, key: ShardKey): Promise<Route> {
    const cache = this.maps.get(map) ?? (await this.cacheFor(map));
    const bytes = normalizeKey(cache.info.keyType, key);
    return this.route(map, cache, bytes, textOf(cache.info.keyType, key), false);
  }

  /** @internal `text` is the key's text form (keyText of `key`). */
  async route(map: string, cache: MapCache, key: Buffer, text: string, refresh: boolean): Promise<Route> {
    let e = refresh ? undefined : cache.get(key);
    if (e !== undefined && Date.now() - e.fetchedAt > this.ttl) e = undefined;
    // An offline entry is looked up again before the caller hears it is offline.
    if (e !== undefined && (e.mapping.status !== 'online' || e.shard.status !== 'online')) e = undefined;
    if (e !== undefined) this.stats.hits++;
    else {
      this.stats.misses++;
      e = await this.fetch(map, cache, key);
    }
    const route: Route = { map, key: text, mapping: e.mapping, shard: e.shard };
    if (e.mapping.status !== 'online' || e.shard.status !== 'online') {
      throw new GeodrApiError('TENANT_OFFLINE', `key ${route.key} of shard map ${map} is offline (${e.mapping.status !== 'online' ? 'its mapping' : 'its shard'} is offline): the tenant is being restored or moved, or was taken offline`, {
        status: 503,
        retryable: true,
        context: { database: e.shard.database, details: { map, key: route.key, mappingId: e.mapping.id } },
      });
    }
    return route;
  }

  private async fetch(map: string, cache: MapCache, key: Buffer): Promise<Entry> {
    this.stats.lookups++;
    cache.drop(key);
    const r = await this.catalog.send<{ mapping: Mapping; shard: Shard }>({
      method: 'GET',
      path: this.gsm(`/maps/${encodeURIComponent(map)}/lookup`),
      query: { key: keyText(cache.info.keyType, key) },
    });
    const e = entry(cache.info.keyType, r.mapping, r.shard, Date.now());
    cache.put(e);
    return e;
  }

  /**
   * A connection to the database that holds `key` in `map`. Validates the route against
   * the shard's LSM first (a stale one is refreshed), unless `validate` is false; every
   * statement run through it is validated where it runs anyway.
   */
  async openConnectionForKey(map: string, key: ShardKey, opts: { validate?: boolean } = {}): Promise<ShardConnection> {
    const cache = this.maps.get(map) ?? (await this.cacheFor(map));
    const bytes = normalizeKey(cache.info.keyType, key);
    let route = await this.route(map, cache, bytes, textOf(cache.info.keyType, key), false);
    if (opts.validate !== false) route = await this.validate(cache, bytes, route);
    return new ShardConnection(this, cache, bytes, route);
  }

  /** Checks the route against the shard's LSM; refreshes and re-checks while it is stale. */
  private async validate(cache: MapCache, key: Buffer, first: Route): Promise<Route> {
    let route = first;
    let last: unknown;
    for (let attempt = 0; attempt < this.attempts; attempt++) {
      try {
        this.stats.validations++;
        const r = await this.shard(route.shard.server).send<{ mapping: { id: string; version: number; status: string } | null; shard: { status: string } }>({
          method: 'GET',
          path: `/v1/databases/${encodeURIComponent(route.shard.database)}/localShardMap/lookup`,
          query: { map: route.map, mappingId: route.mapping.id, key: route.key },
        });
        const m = r.mapping;
        if (m !== null && m.version === route.mapping.version && m.status === 'online' && r.shard.status === 'online') return route;
        last = new GeodrApiError('MAPPING_STALE', `the shard's local shard map does not hold mapping ${route.mapping.id} at version ${route.mapping.version}, online`, {
          status: 409,
          context: { database: route.shard.database, details: { map: route.map, mappingId: route.mapping.id } },
        });
      } catch (e) {
        if (!staleError(e) && !(e instanceof GeodrApiError && e.code === 'NOT_FOUND')) throw e;
        last = e;
      }
      route = await this.afterStale(cache, key, route, attempt);
    }
    throw staleAfterRetries(route, last, this.attempts);
  }

  /** @internal A stale answer: look the key up again; when the GSM still says the same, wait a little (an operation may be finishing). */
  async afterStale(cache: MapCache, key: Buffer, before: Route, attempt: number): Promise<Route> {
    this.stats.stale++;
    const next = await this.route(before.map, cache, key, before.key, true);
    if (next.mapping.id === before.mapping.id && next.mapping.version === before.mapping.version && next.shard.server === before.shard.server && next.shard.database === before.shard.database) {
      await sleep(Math.min(1000, 50 * 2 ** attempt));
    }
    return next;
  }
}

/** The text form of a key already known to fit its type (cheaper than decoding the normalized bytes). */
function textOf(type: KeyType, key: ShardKey): string {
  if (type === 'binary') return Buffer.from(key as Uint8Array).toString('hex');
  return typeof key === 'string' ? key : String(key);
}

function entry(type: KeyType, mapping: Mapping, shard: Shard, fetchedAt: number): Entry {
  const low = normalizeKey(type, keyValueOf(type, mapping.low));
  return { mapping, shard, low, high: mapping.high === null ? null : normalizeKey(type, keyValueOf(type, mapping.high)), fetchedAt };
}

function keyValueOf(type: KeyType, text: string): ShardKey {
  return type === 'int' ? BigInt(text) : type === 'binary' ? Buffer.from(text, 'hex') : text;
}

function staleAfterRetries(route: Route, last: unknown, attempts: number): GeodrApiError {
  const why = last instanceof Error ? last.message : String(last);
  return new GeodrApiError('MAPPING_STALE', `key ${route.key} of shard map ${route.map}: the GSM routes it to ${route.shard.server}/${route.shard.database}, which still refuses it after ${attempts} attempts (${why}); the GSM and that database's LSM disagree: run the recovery manager`, {
    status: 409,
    context: { database: route.shard.database, details: { map: route.map, key: route.key, mappingId: route.mapping.id } },
    cause: last,
  });
}

/**
 * SQL for one shard key. Each call runs where the key lives now: if the tenant moved
 * since the connection was opened, the call follows it.
 */
export class ShardConnection {
  /** @internal */
  constructor(
    private readonly client: ShardMapClient,
    private readonly cache: MapCache,
    private readonly keyBytes: Buffer,
    private current: Route,
  ) {}

  /** The route the last call used (or the one validated at open). */
  get route(): Route {
    return this.current;
  }

  get location(): ShardLocation {
    return { server: this.current.shard.server, database: this.current.shard.database };
  }

  /** A URL for @libsql/client (or Drizzle, Kysely) to this database. It is not validated per statement: prefer query/batch. */
  get libsqlUrl(): string {
    return `${this.client.serverUrl(this.current.shard.server)}/v1/databases/${encodeURIComponent(this.current.shard.database)}/`;
  }

  /** Runs one statement (atomically, validated against the shard's LSM). */
  async query(sql: string, params?: SqlParams): Promise<QueryResult> {
    return (await this.batch([params === undefined ? sql : { sql, params }]))[0]!;
  }

  /** Runs statements as one transaction on the key's database, validated against its LSM; retried elsewhere if the key moved. */
  async batch(statements: readonly Statement[]): Promise<QueryResult[]> {
    const stmts = statements.map((s) => (typeof s === 'string' ? { sql: s } : { sql: s.sql, ...encodeParams(s.params) }));
    let last: unknown;
    for (let attempt = 0; attempt < this.client.attempts; attempt++) {
      const r = this.current;
      try {
        const res = await this.client.shard(r.shard.server).send<{ results: ConstructorParameters<typeof QueryResult>[0][] }>({
          method: 'POST',
          path: `/v1/databases/${encodeURIComponent(r.shard.database)}/localShardMap/execute`,
          body: { map: r.map, key: r.key, mappingId: r.mapping.id, version: r.mapping.version, statements: stmts },
        });
        return res.results.map((w) => new QueryResult(w, this.client.options.intMode ?? 'number'));
      } catch (e) {
        if (!staleError(e)) throw e;
        last = e;
      }
      this.current = await this.client.afterStale(this.cache, this.keyBytes, r, attempt);
    }
    throw staleAfterRetries(this.current, last, this.client.attempts);
  }
}
