import { GeodrApiError, errorFromResponse } from './errors.js';
import type {
  AddSecondaryOptions,
  AddSecondaryResult,
  CopySyncResult,
  CreateMode,
  CreateSecondaryOptions,
  Database,
  DroppedDatabase,
  Durability,
  FailoverGroup,
  FailoverGroupFailoverResult,
  FailoverGroupSettings,
  FailoverResult,
  Health,
  ListenerKind,
  ListenerTarget,
  LongTermBackup,
  LongTermRetentionPolicy,
  LostTransactionsReport,
  Operation,
  OperationState,
  Pool,
  PoolSettings,
  Position,
  RecoverableDatabase,
  RemovedLink,
  ReplicationLink,
  RestoreMode,
  RestoreOptions,
  RestorePoints,
  RetentionResult,
  ServerInfo,
  WaitForCopySyncOptions,
} from './types.js';
import { decodeValue, encodeParams, type IntMode, type SqlParams, type SqlValue } from './values.js';

export interface GeodrClientOptions {
  /** Base URL of the server, e.g. `http://127.0.0.1:7480`. */
  url: string;
  /** Bearer token (admin, or a data token for SQL on the databases it covers). */
  token?: string;
  /** Retries after a connection failure or a retryable 503, with exponential backoff from 100 ms. Default 3. */
  retries?: number;
  /** Time limit for each attempt, in milliseconds. Default: none. */
  timeoutMs?: number;
  /** The fetch to use. Default: the global fetch. */
  fetch?: typeof fetch;
  /** How result INTEGERs come back. Default `number`. */
  intMode?: IntMode;
  /** Durability of SQL writes unless a call says otherwise (see {@link Durability}). Default: the server's (`local`). */
  durability?: Durability;
}

/**
 * A client for a failover group's listener: `servers` are the URLs of the group's
 * servers (both sides; any that answers resolves the listener).
 */
export interface ListenerClientOptions extends Omit<GeodrClientOptions, 'url'> {
  servers: readonly string[];
  /** The failover group's name. */
  group: string;
  /** `rw`: the side whose databases are primaries; `ro`: the readable secondaries. */
  kind: ListenerKind;
}

/** Per-call options of SQL calls. */
export interface SqlCallOptions {
  /** Overrides the client's durability for this call. */
  durability?: Durability;
  signal?: AbortSignal;
}

/** One statement of a batch: SQL text, or SQL with parameters. */
export type Statement = string | { sql: string; params?: SqlParams };

/** The result of one statement. */
export class QueryResult {
  /** Column names (empty for statements that return no rows). */
  readonly columns: string[];
  /** Declared column types; null for expressions. */
  readonly types: Array<string | null>;
  /** Rows as arrays, in column order. */
  readonly rows: SqlValue[][];
  readonly rowsAffected: number;
  readonly lastInsertRowid: number | bigint | null;
  /** The database's TXID after the statement; for a write, the TXID that holds it. */
  readonly txid: number;

  /** @internal Built from the wire form by the client. */
  constructor(wire: WireResult, intMode: IntMode) {
    this.columns = wire.columns;
    this.types = wire.types;
    this.rows = wire.rows.map((r) => r.map((v) => decodeValue(v, intMode)));
    this.rowsAffected = wire.rowsAffected;
    this.lastInsertRowid = wire.lastInsertRowid === null ? null : (decodeValue(wire.lastInsertRowid, intMode) as number | bigint);
    this.txid = wire.txid;
  }

  /** Rows as objects keyed by column name (a later duplicate name wins). */
  objects(): Array<Record<string, SqlValue>> {
    return this.rows.map((r) => Object.fromEntries(this.columns.map((c, i) => [c, r[i] ?? null])));
  }
}

interface WireResult {
  columns: string[];
  types: Array<string | null>;
  rows: unknown[][];
  rowsAffected: number;
  lastInsertRowid: unknown;
  txid: number;
}

/** @internal What the client knows of an open interactive transaction. */
interface TxState {
  id: string;
  /** The server it lives on: every statement goes there, whatever a listener resolves meanwhile. */
  server: string;
  /** The newest position seen when the begin was sent: its answers must not be older. */
  baseline: Position;
  /** The epoch of the copy that opened it (undefined when the server did not say). */
  epoch: number | undefined;
}

/** An interactive transaction; finish it with {@link commit} or {@link rollback} before {@link expiresAt}. */
export class Transaction {
  /** @internal Opened by {@link GeodrClient.transaction}. */
  constructor(
    private readonly client: GeodrClient,
    readonly database: string,
    private readonly state: TxState,
    readonly expiresAt: Date,
  ) {}

  get id(): string {
    return this.state.id;
  }

  /** The server the transaction lives on. */
  get server(): string {
    return this.state.server;
  }

  query(sql: string, params?: SqlParams): Promise<QueryResult> {
    return this.client.runQuery(this.database, sql, params, {}, this.state);
  }

  /** Runs statements atomically inside the transaction (under a savepoint). */
  batch(statements: readonly Statement[]): Promise<QueryResult[]> {
    return this.client.runBatch(this.database, statements, {}, this.state);
  }

  /** Commits; resolves with the TXID once the transaction is durable (and, with `sync` durability, on a secondary). */
  async commit(): Promise<number> {
    const r = await this.client.send<{ txid: number }>({ method: 'POST', path: `${dbPath(this.database)}/transactions/${enc(this.id)}/commit`, inTransaction: true, server: this.state.server });
    if (this.state.epoch !== undefined) this.client.notePosition(this.database, { epoch: this.state.epoch, txid: r.txid });
    return r.txid;
  }

  async rollback(): Promise<void> {
    await this.client.send({ method: 'POST', path: `${dbPath(this.database)}/transactions/${enc(this.id)}/rollback`, inTransaction: true, server: this.state.server });
  }
}

export interface WaitOptions {
  /** Called with the operation after every poll. */
  onProgress?: (op: Operation) => void;
  /** Poll interval. Default 250 ms. */
  intervalMs?: number;
  /** Give up (GeodrApiError TIMEOUT) after this long. Default: wait indefinitely. */
  timeoutMs?: number;
  /** Stops waiting (rejects with the signal's reason); the operation keeps running. */
  signal?: AbortSignal;
}

/** @internal */
export interface RequestSpec {
  method: 'GET' | 'PUT' | 'PATCH' | 'DELETE' | 'POST';
  path: string;
  query?: Record<string, string | undefined>;
  body?: unknown;
  /** Extra request headers, or a function giving them for each attempt. */
  headers?: Record<string, string> | (() => Record<string, string>);
  /** Part of an interactive transaction: never re-sent once it may have reached the server. */
  inTransaction?: boolean;
  /** Whether sending it twice leaves the same state as once. Default: every method but POST. */
  replaySafe?: boolean;
  text?: boolean;
  signal?: AbortSignal;
  /** Send to this server, never to a listener's target (an interactive transaction's server). */
  server?: string;
  /** Checks a successful answer; throws a {@link GeodrApiError} (status 0) to refuse it. */
  onAnswer?: (res: Response, body: unknown, server: string) => void;
  /** Sees an error answer before it is thrown or retried. */
  onError?: (res: Response, err: GeodrApiError) => void;
}

/** A listener client's routing: the group's servers and the target it resolved last. */
interface Route {
  servers: string[];
  group: string;
  kind: ListenerKind;
  target: string | undefined;
  /** The target that failed last: asked last at the next resolution. */
  avoid?: string | undefined;
}

/**
 * A client for one geodr server: management API (pools, databases, operations,
 * replication links, failover groups) and SQL. Failed calls reject with
 * {@link GeodrApiError}. Calls that cannot apply a write twice are retried on
 * connection failures and retryable 503s (see `retries`).
 *
 * **Consistency.** For each database (by name) the client remembers the newest
 * *position* it has seen: the epoch of the copy that answered (its `Geodr-Epoch`
 * header, on every SQL answer) and the TXID its answer reflects (for a write, the
 * TXID that holds it; for a read, the TXID the copy had applied when it read).
 * Positions are ordered by epoch, then TXID: a newer epoch supersedes whatever TXID an
 * older one reached, since after a forced failover the old primary's TXIDs past the
 * split are not history any more (they are in its lost-transactions report).
 *
 * - Every SQL request carries `Geodr-Min-Epoch` with the newest epoch seen, so a copy
 *   at an older epoch (a deposed primary that does not know it yet, a secondary that
 *   has not heard of a failover) refuses it with STALE_EPOCH (status 409) before
 *   running anything: the client never writes to, or reads from, a copy at an older
 *   epoch than one it has seen.
 * - *Monotonic* means: the answer to a SQL request reflects a position no older than
 *   the newest position the client had seen when it sent the request (for statements
 *   of an interactive transaction: when it sent the begin). An answer that would go
 *   back is refused and nothing of it is returned: STALE_EPOCH for an older epoch,
 *   STALE_READ for the same epoch and a lower TXID (a secondary lagging behind what this
 *   client already read or wrote; it may catch up, so STALE_READ is retryable). Both
 *   have `status` 0 and `details: { seen, answered, server }`; inside an interactive
 *   transaction, roll it back. Requests sent concurrently are each held to the
 *   position when they were sent, so they never refuse each other.
 * - It holds per client object. To carry it to another client or process (a user's
 *   next web request), hand {@link position} to the other's {@link notePosition}.
 * - A name whose history starts over (a database deleted and created or restored
 *   again, a restore renamed into place, a secondary made independent by removing its
 *   link) is a new history: the calls of this client that do that forget or move the
 *   position themselves; other clients must call {@link forgetPosition}, or their
 *   requests are refused (STALE_EPOCH or STALE_READ) until the new history passes
 *   the old position.
 *
 * A client made with {@link GeodrClient.forListener} follows a failover group's
 * listener instead of one server; see there.
 *
 * @example
 * import { GeodrClient } from 'geodr/sdk'
 *
 * const geodr = new GeodrClient({ url: 'http://127.0.0.1:7480', token: process.env.GEODR_TOKEN })
 * await geodr.createDatabase('tenant-42', { pool: 'default' })
 * await geodr.batch('tenant-42', [
 *   'create table notes (id integer primary key, body text)',
 *   { sql: 'insert into notes (body) values (?)', params: ['hello'] },
 * ])
 * const { rows } = await geodr.query('tenant-42', 'select id, body from notes where id = :id', { id: 1 })
 */
export class GeodrClient {
  private readonly baseUrl: string;
  private readonly token: string | undefined;
  private readonly retries: number;
  private readonly timeoutMs: number | undefined;
  private readonly fetchFn: typeof fetch;
  private readonly intMode: IntMode;
  private readonly durability: Durability | undefined;
  private readonly route: Route | undefined;
  private readonly positions = new Map<string, Position>();
  /** The identity (engine database id) each name's answers came from: a new identity is a new history. */
  private readonly identities = new Map<string, string>();
  /** One resolution at a time: concurrent requests that lost the target share it. */
  private resolving: Promise<string> | undefined;

  constructor(opts: GeodrClientOptions) {
    this.baseUrl = checkUrl(opts.url, 'url');
    this.token = opts.token;
    this.retries = Math.max(0, Math.floor(opts.retries ?? 3));
    this.timeoutMs = opts.timeoutMs;
    this.fetchFn = opts.fetch ?? globalThis.fetch;
    this.intMode = opts.intMode ?? 'number';
    this.durability = checkDurability(opts.durability);
    const route = (opts as { [LISTENER]?: Route })[LISTENER];
    this.route = route === undefined ? undefined : { ...route, servers: [...route.servers] };
  }

  /**
   * A client that follows a failover group's listener alias: it resolves
   * `/v1/failoverGroups/{group}/listener/{kind}` on whichever of `servers` answers,
   * sends everything to that target, and keeps it until the target fails it. Then it
   * resolves again (asking the other servers first) and retries the request, when that
   * is safe:
   * - the target could not be reached, and the request never left (any request), or it
   *   is one whose repetition is harmless (GET, PUT, DELETE); a SQL write whose
   *   connection broke after sending is never re-sent (UNAVAILABLE with
   *   `details.outcomeUnknown`), as for any client;
   * - the target refused with READ_ONLY (it is a secondary now) or STALE_EPOCH (it was
   *   deposed, or is older than a copy this client saw): those refuse before anything
   *   runs;
   * - for an `ro` listener, the client refused the answer as older than one it had seen
   *   (STALE_READ, or STALE_EPOCH): the target is a secondary, which runs reads only.
   *
   * Each retry counts against `retries` (default 3), with backoff. Statements of an
   * interactive transaction always go to the server that opened it, and are never
   * retried elsewhere. {@link url} is the current target.
   *
   * Throws a TypeError for a bad option.
   *
   * @example
   * const app = GeodrClient.forListener({ servers: ['https://east.example:7480', 'https://west.example:7480'], group: 'tenants', kind: 'rw', token })
   * await app.query('tenant-42', 'insert into notes (body) values (?)', ['still works after a failover'])
   */
  static forListener(opts: ListenerClientOptions): GeodrClient {
    const { servers, group, kind, ...rest } = opts;
    if (!Array.isArray(servers) || servers.length === 0) throw new TypeError('servers must list the URLs of the failover group\'s servers');
    const urls = (servers as readonly string[]).map((u, i) => checkUrl(u, `servers[${i}]`));
    if (typeof group !== 'string' || group === '') throw new TypeError('group must name the failover group');
    if (kind !== 'rw' && kind !== 'ro') throw new TypeError(`kind must be "rw" or "ro", not ${JSON.stringify(kind)}`);
    const route: Route = { servers: urls, group, kind, target: undefined };
    return new GeodrClient({ ...rest, url: urls[0]!, [LISTENER]: route } as GeodrClientOptions);
  }

  /** The server this client talks to; for a listener client, the listener's current target (before the first request: the first of its servers). */
  get url(): string {
    return this.route?.target ?? this.baseUrl;
  }

  /** The newest position this client has seen of `database` (see "Consistency"), or undefined. */
  position(database: string): Position | undefined {
    const p = this.positions.get(database);
    return p === undefined ? undefined : { ...p };
  }

  /**
   * Raises the position this client holds `database`'s answers to (a position another
   * client saw); a lower one changes nothing. Throws a TypeError for a position that
   * is not two non-negative integers.
   */
  notePosition(database: string, p: Position): void {
    if (!Number.isSafeInteger(p?.epoch) || !Number.isSafeInteger(p?.txid) || p.epoch < 0 || p.txid < 0) {
      throw new TypeError(`a position is { epoch, txid } with non-negative integers, not ${JSON.stringify(p)}`);
    }
    const cur = this.positions.get(database);
    if (cur === undefined || comparePositions(p, cur) > 0) this.positions.set(database, { epoch: p.epoch, txid: p.txid });
  }

  /** Forgets what this client saw of `database`: for a database whose history started over. */
  forgetPosition(database: string): void {
    this.positions.delete(database);
    this.identities.delete(database);
  }

  /**
   * A name that now answers with another identity (deleted and re-created, restored into
   * place, a former secondary made independent) has a history of its own: what was seen
   * of the old one no longer orders it. Returns true when the identity changed.
   */
  private noteIdentity(database: string, res: Response): boolean {
    const id = res.headers.get('geodr-db-id');
    if (id === null || !/^[0-9a-f]{32}$/.test(id)) return false;
    const known = this.identities.get(database);
    if (known === id) return false;
    this.identities.set(database, id);
    // First sight of the identity: a position noted before (from another client) still holds.
    if (known === undefined) return false;
    this.positions.delete(database);
    return true;
  }

  // Server

  server(): Promise<ServerInfo> {
    return this.send({ method: 'GET', path: '/v1/server' });
  }

  /** Liveness and readiness; rejects (UNAVAILABLE) only when the server cannot be reached. */
  async health(): Promise<Health> {
    await this.send({ method: 'GET', path: '/healthz' });
    try {
      await this.send({ method: 'GET', path: '/readyz' });
      return { live: true, ready: true };
    } catch (e) {
      if (e instanceof GeodrApiError && e.status === 503) return { live: true, ready: false };
      throw e;
    }
  }

  /** Prometheus metrics, as text (admin token). */
  metrics(): Promise<string> {
    return this.send({ method: 'GET', path: '/metrics', text: true });
  }

  // Elastic pools

  async listPools(): Promise<Pool[]> {
    return (await this.send<{ value: Pool[] }>({ method: 'GET', path: '/v1/elasticPools' })).value;
  }

  getPool(name: string): Promise<Pool> {
    return this.send({ method: 'GET', path: `/v1/elasticPools/${enc(name)}` });
  }

  /** Creates the pool, or updates the given settings of an existing one. */
  putPool(name: string, settings: PoolSettings = {}): Promise<Pool> {
    return this.send({ method: 'PUT', path: `/v1/elasticPools/${enc(name)}`, body: settings });
  }

  /** Updates an existing pool (NOT_FOUND if there is none). */
  updatePool(name: string, settings: PoolSettings): Promise<Pool> {
    return this.send({ method: 'PATCH', path: `/v1/elasticPools/${enc(name)}`, body: settings });
  }

  /** Deletes an empty pool (CONFLICT while it holds databases, or for the default pool). */
  async deletePool(name: string): Promise<void> {
    await this.send({ method: 'DELETE', path: `/v1/elasticPools/${enc(name)}` });
  }

  // Databases

  async listDatabases(opts: { pool?: string } = {}): Promise<Database[]> {
    return (await this.send<{ value: Database[] }>({ method: 'GET', path: '/v1/databases', query: { pool: opts.pool } })).value;
  }

  getDatabase(name: string): Promise<Database> {
    return this.send({ method: 'GET', path: dbPath(name) });
  }

  /**
   * Creates an empty database, in the server's default pool unless `pool` is given.
   * Repeating the same call succeeds (CONFLICT only if it exists in another pool).
   *
   * A restore mode (`PointInTimeRestore`, `Restore`, `Recovery`,
   * `RestoreLongTermRetentionBackup`) answers with an operation, not a database: use
   * {@link restoreDatabase}; `Secondary` and `Copy` too: use {@link createSecondary}.
   * Passing one of those here rejects with a TypeError before anything is sent.
   */
  async createDatabase(name: string, opts: { pool?: string; createMode?: CreateMode } = {}): Promise<Database> {
    if (opts.createMode !== undefined && isRestoreMode(opts.createMode)) {
      throw new TypeError(`createMode ${opts.createMode} restores from backups and answers with an operation: use restoreDatabase(${JSON.stringify(name)}, { mode: '${opts.createMode}', ... })`);
    }
    if (opts.createMode === 'Secondary' || opts.createMode === 'Copy') {
      throw new TypeError(`createMode ${opts.createMode} seeds from a primary on another server and answers with an operation: use createSecondary(${JSON.stringify(name)}, { sourceServer, sourceDatabaseName${opts.createMode === 'Copy' ? ', copy: true' : ''} })`);
    }
    const body: Record<string, string> = {};
    if (opts.pool !== undefined) body.elasticPoolName = opts.pool;
    if (opts.createMode !== undefined) body.createMode = opts.createMode;
    const d = await this.send<Database>({ method: 'PUT', path: dbPath(name), body });
    // A new database under this name: a history of its own (a repeat answers the same database, whose position stays).
    if (d.txid === 0) this.forgetPosition(name);
    return d;
  }

  /**
   * Starts an operation that creates database `name` from backups; follow it with
   * {@link waitForOperation} (its `result` holds `restoredTxid`, `restoredTime`,
   * `checksum`, `dbId`). The database appears only once the operation Succeeded; a
   * failed restore creates nothing.
   *
   * - `PointInTimeRestore` needs `sourceDatabaseName`; without `time` or `txid` it
   *   restores to now (the latest point in the vault).
   * - `Restore` needs `sourceDatabaseId`: a dropped database's `id` or `dbId`
   *   ({@link listDroppedDatabases}); default: its latest point.
   * - `RestoreLongTermRetentionBackup` needs `sourceDatabaseId` (the database's `dbId`)
   *   and `txid` (a {@link listLongTermBackups} entry).
   * - `Recovery` (geo-restore) needs `sourceDatabaseId` (a {@link listRecoverableDatabases}
   *   entry's `dbId`); default: its latest point in this region's copy.
   *
   * Rejects with INVALID_ARGUMENT for a missing or contradicting option (`time` and
   * `txid` together), NOT_FOUND for an unknown source, CONFLICT when `name` exists or a
   * restore into it is already under way; the operation fails with TARGET_OUT_OF_RANGE
   * when the point is outside the source's restore window, LOG_GAP when the vault lacks
   * records before it. An invalid `Date` rejects with a RangeError before sending.
   *
   * Not re-sent after a lost answer (a repeat would answer CONFLICT): when that
   * happens it rejects with UNAVAILABLE, `context.details.outcomeUnknown`; look for the
   * operation with `listOperations({ database: name })`.
   *
   * @example
   * const op = await geodr.restoreDatabase('shop-before-bug', { mode: 'PointInTimeRestore', sourceDatabaseName: 'shop', time: '2026-05-01T12:00:00Z' })
   * const done = await geodr.waitForOperation(op.id)
   * console.log(done.result?.restoredTxid)
   */
  async restoreDatabase(name: string, opts: RestoreOptions): Promise<Operation> {
    if (!isRestoreMode(opts.mode)) throw new TypeError(`mode ${JSON.stringify(opts.mode)} is not a restore mode (PointInTimeRestore, Restore, Recovery, RestoreLongTermRetentionBackup)`);
    const body: Record<string, string | number> = { createMode: opts.mode };
    if (opts.pool !== undefined) body.elasticPoolName = opts.pool;
    if (opts.sourceDatabaseName !== undefined) body.sourceDatabaseName = opts.sourceDatabaseName;
    if (opts.sourceDatabaseId !== undefined) body.sourceDatabaseId = opts.sourceDatabaseId;
    // toISOString throws a RangeError for an invalid Date.
    if (opts.time !== undefined) body.restorePointInTime = opts.time instanceof Date ? opts.time.toISOString() : opts.time;
    if (opts.txid !== undefined) body.restorePointTxid = opts.txid;
    this.forgetPosition(name);
    return this.send({ method: 'PUT', path: dbPath(name), body, replaySafe: false });
  }

  /** Deletes a database; its files are kept and it is listed by {@link listDroppedDatabases}. */
  deleteDatabase(name: string): Promise<DroppedDatabase> {
    this.forgetPosition(name);
    return this.send({ method: 'DELETE', path: dbPath(name) });
  }

  /** Renames a database; what this client saw of it moves to the new name. */
  async renameDatabase(name: string, newName: string): Promise<Database> {
    const d = await this.send<Database>({ method: 'POST', path: `${dbPath(name)}/rename`, body: { newName } });
    const p = this.positions.get(name);
    this.forgetPosition(name);
    this.forgetPosition(newName);
    if (p !== undefined) this.positions.set(newName, p);
    return d;
  }


  /** Moves a database to another elastic pool. */
  moveDatabase(name: string, pool: string): Promise<Database> {
    return this.send({ method: 'PATCH', path: dbPath(name), body: { elasticPoolName: pool } });
  }

  /** Starts an operation that recomputes the checksum and runs integrity_check; see {@link waitForOperation}. */
  verifyDatabase(name: string): Promise<Operation> {
    return this.send({ method: 'POST', path: `${dbPath(name)}/verify` });
  }

  /** Deleted databases whose files (and backups, within their retention) are kept; restore one with {@link restoreDatabase} mode `Restore`. */
  async listDroppedDatabases(): Promise<DroppedDatabase[]> {
    return (await this.send<{ value: DroppedDatabase[] }>({ method: 'GET', path: '/v1/restorableDroppedDatabases' })).value;
  }

  // Backups and retention

  /**
   * The database's restore window in the vault (`earliest`, `latest`; null until its
   * first snapshot is shipped) and where shipping stands: shipped TXID, unshipped
   * records, estimated data loss, the paired region's copy. A data token covering the
   * database may call it.
   */
  restorePoints(database: string): Promise<RestorePoints> {
    return this.send({ method: 'GET', path: `${dbPath(database)}/restorePoints` });
  }

  /** The point-in-time restore window, days. */
  getShortTermRetention(database: string): Promise<{ retentionDays: number }> {
    return this.send({ method: 'GET', path: `${dbPath(database)}/backupShortTermRetentionPolicies/default` });
  }

  /** Sets the point-in-time restore window: a whole number of days, 1-35 (INVALID_ARGUMENT otherwise). */
  setShortTermRetention(database: string, days: number): Promise<{ retentionDays: number }> {
    return this.send({ method: 'PUT', path: `${dbPath(database)}/backupShortTermRetentionPolicies/default`, body: { retentionDays: days } });
  }

  /** The long-term retention policy; every duration null when there is none. */
  getLongTermRetention(database: string): Promise<LongTermRetentionPolicy> {
    return this.send({ method: 'GET', path: `${dbPath(database)}/backupLongTermRetentionPolicies/default` });
  }

  /**
   * Replaces the long-term retention policy (it is not merged with the current one):
   * durations are ISO-8601 `PnD`, `PnW`, `PnM` or `PnY`, yearly at most `P10Y`; an
   * omitted or null duration keeps no backups of that kind, and `{}` removes the
   * policy. `weekOfYear` (1-52, default 1) picks the week whose backup is the yearly
   * one. Resolves with the policy as stored.
   *
   * @example
   * await geodr.setLongTermRetention('tenant-42', { weeklyRetention: 'P12W', monthlyRetention: 'P12M', yearlyRetention: 'P5Y', weekOfYear: 1 })
   */
  setLongTermRetention(database: string, policy: Partial<LongTermRetentionPolicy>): Promise<LongTermRetentionPolicy> {
    const body: Record<string, string | number | null> = {};
    if (policy.weeklyRetention !== undefined) body.weeklyRetention = policy.weeklyRetention;
    if (policy.monthlyRetention !== undefined) body.monthlyRetention = policy.monthlyRetention;
    if (policy.yearlyRetention !== undefined) body.yearlyRetention = policy.yearlyRetention;
    if (policy.weekOfYear !== undefined) body.weekOfYear = policy.weekOfYear;
    return this.send({ method: 'PUT', path: `${dbPath(database)}/backupLongTermRetentionPolicies/default`, body });
  }

  /** Long-term backups of a database, oldest first; restore one with {@link restoreDatabase} mode `RestoreLongTermRetentionBackup`. */
  async listLongTermBackups(database: string): Promise<LongTermBackup[]> {
    return (await this.send<{ value: LongTermBackup[] }>({ method: 'GET', path: `${dbPath(database)}/longTermRetentionBackups` })).value;
  }

  /**
   * Databases of the paired region whose backups this region's vault holds, with
   * their restore points and estimated data loss: what a geo-restore
   * ({@link restoreDatabase} mode `Recovery`) can bring back here.
   */
  async listRecoverableDatabases(): Promise<RecoverableDatabase[]> {
    return (await this.send<{ value: RecoverableDatabase[] }>({ method: 'GET', path: '/v1/recoverableDatabases' })).value;
  }

  /** Runs the retention job now (it also runs on the server's schedule): deletes expired backups, takes due long-term ones. */
  runRetention(): Promise<RetentionResult> {
    return this.send({ method: 'POST', path: '/v1/backup/retention' });
  }

  // Geo-replication

  /** The replication links of a database on this server (as primary or as secondary), with state and lag. */
  async replicationLinks(database: string): Promise<ReplicationLink[]> {
    return (await this.send<{ value: ReplicationLink[] }>({ method: 'GET', path: `${dbPath(database)}/replicationLinks` })).value;
  }

  /** One replication link (NOT_FOUND when `database` has no link `id` here). */
  replicationLink(database: string, id: string): Promise<ReplicationLink> {
    return this.send({ method: 'GET', path: `${dbPath(database)}/replicationLinks/${enc(id)}` });
  }

  /**
   * Asked of the primary's server: adds a readable geo-secondary of `database` on
   * `partnerServer` (ALTER DATABASE … ADD SECONDARY ON SERVER). The partner creates the
   * database and seeds it while the primary keeps taking writes; the answer is the
   * seeding operation, which lives on the partner: follow it with a client for that
   * server (`new GeodrClient({ url: partnerUrl, token }).waitForOperation(r.operation.id)`),
   * or watch the link's state here until it leaves `SEEDING`.
   *
   * Rejects with INVALID_ARGUMENT for this server itself or an unknown peer, CONFLICT
   * when `database` is a secondary or already has a secondary there, LIMIT_EXCEEDED
   * past four secondaries. Not re-sent after a lost answer (UNAVAILABLE with
   * `details.outcomeUnknown`): look at {@link replicationLinks}.
   */
  addSecondary(database: string, opts: AddSecondaryOptions): Promise<AddSecondaryResult> {
    const body: Record<string, string> = { partnerServer: opts.partnerServer };
    if (opts.partnerDatabase !== undefined) body.partnerDatabase = opts.partnerDatabase;
    if (opts.partnerElasticPoolName !== undefined) body.partnerElasticPoolName = opts.partnerElasticPoolName;
    return this.send({ method: 'POST', path: `${dbPath(database)}/replicationLinks`, body });
  }

  /**
   * Asked of the server that will hold the copy: creates `database` as a geo-secondary
   * of `sourceDatabaseName` on `sourceServer` (createMode `Secondary`), or with `copy` a
   * one-time copy that becomes an independent database once seeded (createMode `Copy`).
   * Resolves with the seeding operation; follow it with {@link waitForOperation}.
   * Repeating a `Secondary` request reports the seeding under way; a `Copy` is not
   * re-sent after a lost answer.
   */
  createSecondary(database: string, opts: CreateSecondaryOptions): Promise<Operation> {
    const body: Record<string, string> = { createMode: opts.copy === true ? 'Copy' : 'Secondary', sourceServer: opts.sourceServer, sourceDatabaseName: opts.sourceDatabaseName };
    if (opts.elasticPoolName !== undefined) body.elasticPoolName = opts.elasticPoolName;
    this.forgetPosition(database);
    return this.send({ method: 'PUT', path: dbPath(database), body, replaySafe: opts.copy !== true });
  }

  /**
   * Removes a link (REMOVE SECONDARY), asked of either side: the secondary becomes an
   * independent, writable database with an identity of its own and a history that
   * starts over: this client forgets its position of `database`, and other clients
   * that used the copy should {@link forgetPosition} it.
   */
  removeReplicationLink(database: string, id: string): Promise<RemovedLink> {
    this.forgetPosition(database);
    return this.send({ method: 'DELETE', path: `${dbPath(database)}/replicationLinks/${enc(id)}` });
  }

  /**
   * Planned failover, asked of the server holding the secondary that is to become the
   * primary: the primary stops taking writes, this copy catches up fully, the roles
   * swap and the epoch rises; nothing is lost, and the old primary and the other
   * secondaries follow the new primary. Without `linkId`, the database's link to its
   * primary is looked up first.
   *
   * Rejects with CONFLICT when `database` is not a geo-secondary here, UNAVAILABLE when
   * it is still seeding or could not catch up in time (then nothing changed). Not
   * re-sent after a lost answer (UNAVAILABLE, `details.outcomeUnknown`): look at the
   * database's role.
   */
  async failover(database: string, linkId?: string): Promise<FailoverResult> {
    const id = linkId ?? (await this.linkToPrimary(database));
    return this.send({ method: 'POST', path: `${dbPath(database)}/replicationLinks/${enc(id)}/failover` });
  }

  /**
   * Forced failover (FORCE_FAILOVER_ALLOW_DATA_LOSS), asked of the secondary's server:
   * it becomes the primary at once, at the TXID it has, even with the primary
   * unreachable. Transactions the primary had not sent are lost here; when the old
   * primary returns it is fenced, keeps them aside ({@link lostTransactions}) and
   * rejoins as a secondary. Without `linkId`, the link to the primary is looked up.
   */
  async forceFailoverAllowDataLoss(database: string, linkId?: string): Promise<FailoverResult> {
    const id = linkId ?? (await this.linkToPrimary(database));
    return this.send({ method: 'POST', path: `${dbPath(database)}/replicationLinks/${enc(id)}/forceFailoverAllowDataLoss` });
  }

  /**
   * Asked of the primary's server (sp_wait_for_database_copy_sync): resolves once every
   * secondary (or the one named) has applied every transaction committed before the
   * call. Rejects with REPLICATION_TIMEOUT past `timeoutMs`, CONFLICT on a secondary,
   * NOT_FOUND without a matching secondary. A data token covering the database may
   * call it. Mind the client's own `timeoutMs`, which limits each attempt.
   */
  waitForCopySync(database: string, opts: WaitForCopySyncOptions = {}): Promise<CopySyncResult> {
    const body: Record<string, string | number> = {};
    if (opts.partnerServer !== undefined) body.partnerServer = opts.partnerServer;
    if (opts.partnerDatabase !== undefined) body.partnerDatabase = opts.partnerDatabase;
    if (opts.timeoutMs !== undefined) body.timeoutMs = opts.timeoutMs;
    // Waiting twice is as good as waiting once.
    return this.send({ method: 'POST', path: `${dbPath(database)}/waitForCopySync`, body, replaySafe: true, signal: opts.signal });
  }

  /** Reports of what deposed primaries on this server wrote alone before they rejoined (TXIDs, times, pages, kept files). */
  async lostTransactions(): Promise<LostTransactionsReport[]> {
    return (await this.send<{ value: LostTransactionsReport[] }>({ method: 'GET', path: '/v1/lostTransactions' })).value;
  }

  /** The id of the link from `database` (a secondary here) to its primary. */
  private async linkToPrimary(database: string): Promise<string> {
    const links = await this.replicationLinks(database);
    const up = links.filter((l) => l.role === 'Secondary');
    if (up.length === 1) return up[0]!.id;
    throw new GeodrApiError('CONFLICT', `database ${database} on ${this.url} is not a geo-secondary (${links.length === 0 ? 'it has no replication link' : 'it is the primary of its links'}); fail over from the server holding the secondary that is to become the primary`, {
      context: { database, details: { links: links.map((l) => ({ id: l.id, role: l.role, partnerServer: l.partnerServer })) } },
    });
  }

  // Failover groups

  /** Failover groups this server is a side of. */
  async listFailoverGroups(): Promise<FailoverGroup[]> {
    return (await this.send<{ value: FailoverGroup[] }>({ method: 'GET', path: '/v1/failoverGroups' })).value;
  }

  getFailoverGroup(name: string): Promise<FailoverGroup> {
    return this.send({ method: 'GET', path: groupPath(name) });
  }

  /**
   * Creates or updates a failover group, asked of its primary side: `databases` (each
   * with a geo-secondary on `partnerServer`) fail over together. CONFLICT when one has
   * no secondary there or is a secondary here.
   */
  putFailoverGroup(name: string, settings: FailoverGroupSettings): Promise<FailoverGroup> {
    return this.send({ method: 'PUT', path: groupPath(name), body: { partnerServer: settings.partnerServer, databases: settings.databases } });
  }

  /** Deletes a failover group on both sides; its databases and links stay. */
  async deleteFailoverGroup(name: string): Promise<void> {
    await this.send({ method: 'DELETE', path: groupPath(name) });
  }

  /** Planned failover of every database of the group to this server (asked of the secondary side); CONFLICT when it is the primary side already. */
  failoverGroupFailover(name: string): Promise<FailoverGroupFailoverResult> {
    return this.send({ method: 'POST', path: `${groupPath(name)}/failover` });
  }

  /** Forced failover (allow data loss) of every database of the group to this server. */
  failoverGroupForceFailoverAllowDataLoss(name: string): Promise<FailoverGroupFailoverResult> {
    return this.send({ method: 'POST', path: `${groupPath(name)}/forceFailoverAllowDataLoss` });
  }

  /** Where a listener alias points now: `rw` at the primary side, `ro` at the other. Any valid token may ask. */
  async failoverGroupListener(name: string, kind: ListenerKind): Promise<ListenerTarget> {
    if (kind !== 'rw' && kind !== 'ro') throw new TypeError(`kind must be "rw" or "ro", not ${JSON.stringify(kind)}`);
    return this.send({ method: 'GET', path: `${groupPath(name)}/listener/${kind}` });
  }

  // Operations

  /** Operations, newest first. */
  async listOperations(filter: { state?: OperationState; database?: string } = {}): Promise<Operation[]> {
    return (await this.send<{ value: Operation[] }>({ method: 'GET', path: '/v1/operations', query: { state: filter.state, database: filter.database } })).value;
  }

  getOperation(id: string, signal?: AbortSignal): Promise<Operation> {
    return this.send({ method: 'GET', path: `/v1/operations/${enc(id)}`, signal });
  }

  /** Requests cancellation (CONFLICT if it already finished); a queued operation is cancelled at once. */
  cancelOperation(id: string): Promise<Operation> {
    return this.send({ method: 'POST', path: `/v1/operations/${enc(id)}/cancel` });
  }

  /**
   * Polls until the operation finishes. Resolves with it when Succeeded; rejects with
   * a GeodrApiError carrying the operation's error code when it Failed, `CANCELLED`
   * when it was cancelled (both with `.operation` set), `TIMEOUT` after `timeoutMs`.
   */
  async waitForOperation(id: string, opts: WaitOptions = {}): Promise<Operation> {
    const interval = opts.intervalMs ?? 250;
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    for (;;) {
      opts.signal?.throwIfAborted();
      const op = await this.getOperation(id, opts.signal);
      opts.onProgress?.(op);
      const context = { database: op.database ?? undefined, details: { operationId: op.id, kind: op.kind } };
      if (op.state === 'Succeeded') return op;
      if (op.state === 'Failed') {
        throw new GeodrApiError(op.error?.code ?? 'INTERNAL', op.error?.message ?? `operation ${id} failed`, { context, operation: op });
      }
      if (op.state === 'Cancelled') throw new GeodrApiError('CANCELLED', `operation ${id} (${op.kind}) was cancelled`, { context, operation: op });
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new GeodrApiError('TIMEOUT', `operation ${id} (${op.kind}) is still ${op.state} at ${op.percentComplete}% after ${opts.timeoutMs} ms`, {
          status: 0,
          retryable: true,
          context,
        });
      }
      await sleep(Math.min(interval, left), opts.signal);
    }
  }

  // SQL

  /**
   * Runs one statement (autocommit). Writes resolve once durable (with `sync`
   * durability, once a geo-secondary has them too; see {@link Durability}). The answer
   * is held to this client's position ("Consistency" above): STALE_EPOCH or STALE_READ
   * when it would go back. The last argument is the call's options, or the id of an
   * interactive transaction (prefer {@link Transaction.query}).
   */
  query(database: string, sql: string, params?: SqlParams, options?: SqlCallOptions | string): Promise<QueryResult> {
    if (typeof options === 'string') return this.runQuery(database, sql, params, {}, this.looseTx(database, options));
    return this.runQuery(database, sql, params, options ?? {}, undefined);
  }

  /** Runs statements atomically, as one transaction: all apply or none. Options and checks as {@link query}. */
  batch(database: string, statements: readonly Statement[], options?: SqlCallOptions | string): Promise<QueryResult[]> {
    if (typeof options === 'string') return this.runBatch(database, statements, {}, this.looseTx(database, options));
    return this.runBatch(database, statements, options ?? {}, undefined);
  }

  /**
   * Opens an interactive transaction (`write` by default; `read` sees one snapshot).
   * The server rolls it back after `timeoutMs` (its default when omitted). `durability`
   * applies to its commit. Its statements go to the server that opened it, and their
   * answers are held to the position this client had seen when it sent the begin.
   */
  async transaction(database: string, opts: { mode?: 'write' | 'read'; timeoutMs?: number; durability?: Durability; signal?: AbortSignal } = {}): Promise<Transaction> {
    const body: Record<string, unknown> = {};
    if (opts.mode !== undefined) body.mode = opts.mode;
    if (opts.timeoutMs !== undefined) body.timeoutMs = opts.timeoutMs;
    const durability = checkDurability(opts.durability);
    const baseline = this.baselineOf(database);
    let answered: { server: string; epoch: number | undefined } = { server: this.url, epoch: undefined };
    // A re-sent begin would leave the first transaction open (holding the write lock) until it times out.
    const r = await this.send<{ transaction: string; expiresAt: string }>({
      method: 'POST',
      path: `${dbPath(database)}/transactions`,
      body,
      inTransaction: true,
      signal: opts.signal,
      headers: () => this.sqlHeaders(database, durability),
      onAnswer: (res, _body, server) => (answered = { server, epoch: headerEpoch(res) }),
      onError: (res, err) => this.learnFromError(database, res, err),
    });
    const state: TxState = { id: r.transaction, server: answered.server, baseline, epoch: answered.epoch };
    if (state.epoch !== undefined && state.epoch < baseline.epoch) {
      // Opened on a copy older than one this client saw: release it, then refuse.
      await this.send({ method: 'POST', path: `${dbPath(database)}/transactions/${enc(state.id)}/rollback`, inTransaction: true, server: state.server }).catch(() => undefined);
      throw staleAnswer(database, baseline, { epoch: state.epoch, txid: 0 }, state.server);
    }
    if (state.epoch !== undefined) this.notePosition(database, { epoch: state.epoch, txid: 0 });
    return new Transaction(this, database, state, new Date(r.expiresAt));
  }

  /** @internal A statement, alone or in a transaction. */
  async runQuery(database: string, sql: string, params: SqlParams | undefined, opts: SqlCallOptions, tx: TxState | undefined): Promise<QueryResult> {
    const body = { sql, ...encodeParams(params), ...(tx === undefined ? {} : { transaction: tx.id }) };
    const r = await this.sqlSend<WireResult>(database, 'query', body, opts, tx, (w) => [w.txid]);
    return new QueryResult(r, this.intMode);
  }

  /** @internal A batch, alone or in a transaction. */
  async runBatch(database: string, statements: readonly Statement[], opts: SqlCallOptions, tx: TxState | undefined): Promise<QueryResult[]> {
    const stmts = statements.map((s) => (typeof s === 'string' ? { sql: s } : { sql: s.sql, ...encodeParams(s.params) }));
    const body = { statements: stmts, ...(tx === undefined ? {} : { transaction: tx.id }) };
    const r = await this.sqlSend<{ results: WireResult[] }>(database, 'batch', body, opts, tx, (w) => w.results.map((x) => x.txid));
    return r.results.map((x) => new QueryResult(x, this.intMode));
  }

  /** A transaction known only by its id (the older `query(db, sql, params, id)` form): on the current server, held to the current position. */
  private looseTx(database: string, id: string): TxState {
    return { id, server: this.url, baseline: this.baselineOf(database), epoch: undefined };
  }

  private baselineOf(database: string): Position {
    return this.position(database) ?? { epoch: 0, txid: 0 };
  }

  private sqlHeaders(database: string, durability: Durability | undefined): Record<string, string> {
    const h: Record<string, string> = { 'geodr-min-epoch': String(this.positions.get(database)?.epoch ?? 0) };
    const id = this.identities.get(database);
    if (id !== undefined) h['geodr-db-id'] = id;
    const d = durability ?? this.durability;
    if (d !== undefined) h['geodr-durability'] = d;
    return h;
  }

  private async sqlSend<T>(database: string, what: 'query' | 'batch', body: unknown, opts: SqlCallOptions, tx: TxState | undefined, txids: (answer: T) => number[]): Promise<T> {
    const durability = checkDurability(opts.durability);
    // Held to what was seen when the request (or its transaction) was sent, not to what
    // concurrent requests see meanwhile.
    const baseline = tx?.baseline ?? this.baselineOf(database);
    return this.send<T>({
      method: 'POST',
      path: `${dbPath(database)}/${what}`,
      body,
      inTransaction: tx !== undefined,
      server: tx?.server,
      signal: opts.signal,
      // Per attempt: a retry carries any newer epoch the failed attempt taught.
      headers: () => this.sqlHeaders(database, durability),
      onAnswer: (res, answer, server) => this.checkAnswer(database, baseline, res, txids(answer as T), server),
      onError: (res, err) => this.learnFromError(database, res, err),
    });
  }

  /** Refuses an answer older than `baseline`; otherwise remembers its position. */
  private checkAnswer(database: string, baseline: Position, res: Response, txids: number[], server: string): void {
    const epoch = headerEpoch(res);
    // A server that does not say its epoch gives nothing to compare.
    if (epoch === undefined) return;
    const answered = { epoch, txid: Math.max(0, ...txids) };
    const renewed = this.noteIdentity(database, res);
    if (!renewed && comparePositions(answered, baseline) < 0) throw staleAnswer(database, baseline, answered, server);
    this.notePosition(database, answered);
  }

  /** An error answer still says the copy's epoch; a sync write that timed out is committed at its TXID. */
  private learnFromError(database: string, res: Response, err: GeodrApiError): void {
    const epoch = headerEpoch(res);
    if (epoch === undefined) return;
    this.noteIdentity(database, res);
    const txid = err.code === 'REPLICATION_TIMEOUT' && typeof err.context.txid === 'number' ? err.context.txid : 0;
    this.notePosition(database, { epoch, txid });
  }

  // Transport

  /**
   * @internal Sends one request, retrying where that cannot apply a write twice:
   * - a connection that was never established (refused, DNS, unreachable): always,
   *   since the server never saw the request;
   * - a connection lost after sending (reset, hang-up, per-attempt timeout): only
   *   GET/PUT/PATCH/DELETE, whose repetition leaves the same state. A POST may have
   *   committed SQL (or renamed, or started an operation) before the answer was lost,
   *   so it is never re-sent: the error says the outcome is unknown. The same goes
   *   for a request marked `replaySafe: false` (a restore's PUT starts an operation);
   * - a 503 answer with a retryable error (BUSY, UNAVAILABLE): the server refuses
   *   those before running anything, and a statement or batch outside an interactive
   *   transaction is atomic, so nothing was applied. Requests inside an interactive
   *   transaction are not retried: the transaction's state is the caller's to judge.
   *
   * A listener client also re-resolves its target and retries after the failures
   * {@link GeodrClient.forListener} lists; a request pinned to a server (`server`: an
   * interactive transaction's statements) never moves.
   */
  async send<T>(spec: RequestSpec): Promise<T> {
    const replaySafe = spec.replaySafe ?? spec.method !== 'POST';
    const movable = spec.server === undefined && this.route !== undefined;
    for (let attempt = 0; ; attempt++) {
      const canRetry = attempt < this.retries;
      let server: string;
      try {
        server = spec.server ?? (this.route === undefined ? this.baseUrl : await this.target());
      } catch (e) {
        if (e instanceof GeodrApiError && e.retryable && canRetry) {
          await sleep(backoff(attempt), spec.signal);
          continue;
        }
        throw e;
      }
      let res: Response;
      try {
        res = await this.attempt(server, spec);
      } catch (e) {
        if (spec.signal?.aborted === true) throw spec.signal.reason;
        const failure = networkFailure(e, this.timeoutMs);
        if (failure === undefined) throw e;
        if (canRetry && (!failure.mayHaveArrived || replaySafe)) {
          if (movable) this.lose(server);
          await sleep(backoff(attempt), spec.signal);
          continue;
        }
        const unknownOutcome = failure.mayHaveArrived && !replaySafe;
        throw new GeodrApiError(
          'UNAVAILABLE',
          !failure.mayHaveArrived
            ? `cannot reach ${server} (${failure.message})`
            : `no answer from ${server} to ${spec.method} ${spec.path} (${failure.message})${unknownOutcome ? '; the request may or may not have been applied' : ''}`,
          { status: 0, retryable: !unknownOutcome, context: unknownOutcome ? { details: { outcomeUnknown: true } } : {}, cause: e },
        );
      }
      if (res.ok) {
        const body: unknown = res.status === 204 ? undefined : spec.text === true ? await res.text() : await readJson(res);
        try {
          spec.onAnswer?.(res, body, server);
        } catch (e) {
          // An ro listener's target is a secondary, which runs reads only: asking a copy
          // that is not behind cannot apply anything twice.
          if (e instanceof GeodrApiError && movable && this.route?.kind === 'ro' && canRetry) {
            this.lose(server);
            await sleep(backoff(attempt), spec.signal);
            continue;
          }
          throw e;
        }
        return body as T;
      }
      const err = errorFromResponse(res.status, await readJson(res).catch(() => undefined));
      spec.onError?.(res, err);
      // Both refuse before anything runs: the target is a secondary now, or deposed.
      if (movable && canRetry && (err.code === 'READ_ONLY' || err.code === 'STALE_EPOCH')) {
        this.lose(server);
        await sleep(backoff(attempt), spec.signal);
        continue;
      }
      // /readyz answers 503 while draining: that is its answer, not a refusal to retry.
      if (res.status === 503 && err.retryable && spec.inTransaction !== true && spec.path !== '/readyz' && canRetry) {
        await sleep(backoff(attempt), spec.signal);
        continue;
      }
      throw err;
    }
  }

  private attempt(server: string, spec: RequestSpec): Promise<Response> {
    let url = `${server}${spec.path}`;
    const q = Object.entries(spec.query ?? {}).filter((e): e is [string, string] => e[1] !== undefined);
    if (q.length > 0) url += `?${new URLSearchParams(q).toString()}`;
    const extra = typeof spec.headers === 'function' ? spec.headers() : spec.headers;
    const headers: Record<string, string> = { ...extra, accept: spec.text === true ? 'text/plain' : 'application/json' };
    if (this.token !== undefined && this.token !== '') headers.authorization = `Bearer ${this.token}`;
    let body: string | undefined;
    // Only with a body: the server refuses an empty body declared as JSON.
    if (spec.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(spec.body);
    }
    const signals = [spec.signal, this.timeoutMs === undefined ? undefined : AbortSignal.timeout(this.timeoutMs)].filter((s): s is AbortSignal => s !== undefined);
    const signal = signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    return this.fetchFn(url, { method: spec.method, headers, body, signal });
  }

  // Listener routing

  /** The listener's target, resolving it when there is none (one resolution at a time). */
  private target(): Promise<string> {
    const r = this.route!;
    if (r.target !== undefined) return Promise.resolve(r.target);
    this.resolving ??= this.resolve(r).finally(() => (this.resolving = undefined));
    return this.resolving;
  }

  /** The target failed a request: the next one resolves again, asking the other servers first. */
  private lose(server: string): void {
    const r = this.route!;
    if (r.target === server) {
      r.target = undefined;
      r.avoid = server;
    }
  }

  /**
   * Asks the group's servers, the one that just failed last, where the listener points.
   * Servers can disagree for a moment (a deposed primary that has not heard yet still
   * names itself): an answer naming the server that just failed is taken only when no
   * server names another.
   */
  private async resolve(r: Route): Promise<string> {
    const avoid = r.avoid;
    const order = [...r.servers.filter((s) => !sameServer(s, avoid)), ...r.servers.filter((s) => sameServer(s, avoid))];
    const path = `${groupPath(r.group)}/listener/${r.kind}`;
    const failures: GeodrApiError[] = [];
    let fallback: string | undefined;
    for (const server of order) {
      let t: Partial<ListenerTarget> | undefined;
      try {
        const headers: Record<string, string> = { accept: 'application/json' };
        if (this.token !== undefined && this.token !== '') headers.authorization = `Bearer ${this.token}`;
        const res = await this.fetchFn(`${server}${path}`, { method: 'GET', headers, signal: AbortSignal.timeout(this.timeoutMs ?? RESOLVE_TIMEOUT_MS) });
        if (!res.ok) {
          failures.push(errorFromResponse(res.status, await readJson(res).catch(() => undefined)));
          continue;
        }
        t = (await readJson(res)) as Partial<ListenerTarget> | undefined;
      } catch (e) {
        const f = networkFailure(e, this.timeoutMs ?? RESOLVE_TIMEOUT_MS);
        if (f === undefined && !(e instanceof GeodrApiError)) throw e;
        failures.push(e instanceof GeodrApiError ? e : new GeodrApiError('UNAVAILABLE', `cannot reach ${server} (${f!.message})`, { status: 0, retryable: true, cause: e }));
        continue;
      }
      if (typeof t?.url !== 'string' || t.url === '') {
        failures.push(new GeodrApiError('UNAVAILABLE', `${server} resolved the ${r.kind} listener of ${r.group} to server ${String(t?.server)} without a URL (set that server's advertiseUrl)`, { status: 0, retryable: true }));
        continue;
      }
      const url = t.url.replace(/\/+$/, '');
      if (sameServer(url, avoid)) {
        fallback ??= url;
        continue;
      }
      r.target = url;
      r.avoid = undefined;
      return url;
    }
    if (fallback !== undefined) {
      r.target = fallback;
      return fallback;
    }
    // Every server answered, and each refused (no such group, a bad token): that is the answer.
    if (failures.length > 0 && failures.every((f) => f.status !== 0)) throw failures[0]!;
    throw new GeodrApiError('UNAVAILABLE', `no server resolved the ${r.kind} listener of failover group ${r.group}: ${failures.map((f) => f.message).join('; ')}`, {
      status: 0,
      retryable: true,
      context: { details: { group: r.group, kind: r.kind } },
    });
  }
}

const enc = encodeURIComponent;

/** Carries a listener route from {@link GeodrClient.forListener} into the constructor. */
const LISTENER = Symbol('geodr.listener');

/** How long resolving a listener waits for each server when the client has no `timeoutMs`. */
const RESOLVE_TIMEOUT_MS = 5000;

const groupPath = (name: string): string => `/v1/failoverGroups/${enc(name)}`;

function checkUrl(value: string, what: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new TypeError(`${what} ${JSON.stringify(value)} is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError(`${what} ${JSON.stringify(value)} must be http: or https:`);
  return value.replace(/\/+$/, '');
}

function checkDurability(d: unknown): Durability | undefined {
  if (d === undefined || d === 'sync' || d === 'local') return d;
  throw new TypeError(`durability must be "sync" or "local", not ${JSON.stringify(d)}`);
}

/** Two URLs name the same server when their origins match. */
function sameServer(a: string, b: string | undefined): boolean {
  if (b === undefined) return false;
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return a === b;
  }
}

/** The copy's epoch from an SQL answer's `Geodr-Epoch` header; undefined without one. */
function headerEpoch(res: Response): number | undefined {
  const v = res.headers.get('geodr-epoch');
  if (v === null || !/^\d{1,15}$/.test(v)) return undefined;
  return Number(v);
}

/** Orders positions: by epoch, then TXID. Negative when `a` is older. */
export function comparePositions(a: Position, b: Position): number {
  return a.epoch !== b.epoch ? a.epoch - b.epoch : a.txid - b.txid;
}

/** The client's refusal of an answer older than what it had seen. */
function staleAnswer(database: string, seen: Position, answered: Position, server: string): GeodrApiError {
  const olderEpoch = answered.epoch < seen.epoch;
  const what = olderEpoch
    ? `a copy at epoch ${answered.epoch}, older than epoch ${seen.epoch} this client has seen (a deposed primary, or a secondary that has not heard of a failover)`
    : `TXID ${answered.txid}, behind TXID ${seen.txid} of epoch ${seen.epoch} this client has already seen (a lagging secondary)`;
  return new GeodrApiError(olderEpoch ? 'STALE_EPOCH' : 'STALE_READ', `the answer from ${server} for database ${database} reflects ${what}; it was discarded`, {
    status: 0,
    retryable: !olderEpoch,
    context: { database, txid: answered.txid, details: { seen, answered, server } },
  });
}

const RESTORE_MODES: ReadonlySet<string> = new Set<RestoreMode>(['PointInTimeRestore', 'Restore', 'Recovery', 'RestoreLongTermRetentionBackup']);
const isRestoreMode = (mode: string): mode is RestoreMode => RESTORE_MODES.has(mode);
const dbPath = (name: string): string => `/v1/databases/${enc(name)}`;

async function readJson(res: Response): Promise<unknown> {
  const text = await res.text();
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new GeodrApiError('INTERNAL', `the server answered ${res.status} with a body that is not JSON: ${text.slice(0, 100)}`, { status: res.status });
  }
}

/** Error codes of failures before any byte of the request was sent. */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * Classifies a fetch rejection: undefined when it is not a network failure (a bug, a
 * bad URL); otherwise whether the request may have reached the server.
 */
function networkFailure(e: unknown, timeoutMs: number | undefined): { mayHaveArrived: boolean; message: string } | undefined {
  if (e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError')) return { mayHaveArrived: true, message: `no answer within ${timeoutMs} ms` };
  const codes: string[] = [];
  let message = '';
  const visit = (x: unknown, depth: number): void => {
    if (typeof x !== 'object' || x === null || depth > 3) return;
    const o = x as { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown };
    if (typeof o.code === 'string') codes.push(o.code);
    if (typeof o.message === 'string' && o.message !== '' && o.message !== 'fetch failed') message ||= o.message;
    visit(o.cause, depth + 1);
    if (Array.isArray(o.errors)) for (const sub of o.errors) visit(sub, depth + 1);
  };
  visit(e, 0);
  if (codes.length === 0 && !(e instanceof TypeError && e.message === 'fetch failed')) return undefined;
  return { mayHaveArrived: !codes.some((c) => NOT_SENT.has(c)), message: message || codes[0] || 'fetch failed' };
}

/** 100 ms doubling up to 5 s, with jitter so many clients do not retry in step. */
function backoff(attempt: number): number {
  const d = Math.min(5000, 100 * 2 ** attempt);
  return d / 2 + (Math.random() * d) / 2;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
