import { GeodrApiError, errorFromResponse } from './errors.js';
import type {
  CreateMode,
  Database,
  DroppedDatabase,
  Health,
  LongTermBackup,
  LongTermRetentionPolicy,
  Operation,
  OperationState,
  Pool,
  PoolSettings,
  RecoverableDatabase,
  RestoreMode,
  RestoreOptions,
  RestorePoints,
  RetentionResult,
  ServerInfo,
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

/** An interactive transaction; finish it with {@link commit} or {@link rollback} before {@link expiresAt}. */
export class Transaction {
  /** @internal Opened by {@link GeodrClient.transaction}. */
  constructor(
    private readonly client: GeodrClient,
    readonly database: string,
    readonly id: string,
    readonly expiresAt: Date,
  ) {}

  query(sql: string, params?: SqlParams): Promise<QueryResult> {
    return this.client.query(this.database, sql, params, this.id);
  }

  /** Runs statements atomically inside the transaction (under a savepoint). */
  batch(statements: readonly Statement[]): Promise<QueryResult[]> {
    return this.client.batch(this.database, statements, this.id);
  }

  /** Commits; resolves with the TXID once the transaction is durable. */
  async commit(): Promise<number> {
    const r = await this.client.send<{ txid: number }>({ method: 'POST', path: `${dbPath(this.database)}/transactions/${enc(this.id)}/commit`, inTransaction: true });
    return r.txid;
  }

  async rollback(): Promise<void> {
    await this.client.send({ method: 'POST', path: `${dbPath(this.database)}/transactions/${enc(this.id)}/rollback`, inTransaction: true });
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
  /** Part of an interactive transaction: never re-sent once it may have reached the server. */
  inTransaction?: boolean;
  /** Whether sending it twice leaves the same state as once. Default: every method but POST. */
  replaySafe?: boolean;
  text?: boolean;
  signal?: AbortSignal;
}

/**
 * A client for one geodr server: management API (pools, databases, operations) and
 * SQL. Failed calls reject with {@link GeodrApiError}. Calls that cannot apply a write
 * twice are retried on connection failures and retryable 503s (see `retries`).
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
  readonly url: string;
  private readonly token: string | undefined;
  private readonly retries: number;
  private readonly timeoutMs: number | undefined;
  private readonly fetchFn: typeof fetch;
  private readonly intMode: IntMode;

  constructor(opts: GeodrClientOptions) {
    let u: URL;
    try {
      u = new URL(opts.url);
    } catch {
      throw new TypeError(`url ${JSON.stringify(opts.url)} is not a URL`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError(`url ${JSON.stringify(opts.url)} must be http: or https:`);
    this.url = opts.url.replace(/\/+$/, '');
    this.token = opts.token;
    this.retries = Math.max(0, Math.floor(opts.retries ?? 3));
    this.timeoutMs = opts.timeoutMs;
    this.fetchFn = opts.fetch ?? globalThis.fetch;
    this.intMode = opts.intMode ?? 'number';
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
   * {@link restoreDatabase}. Passing one here rejects with a TypeError before anything
   * is sent. `Copy` and `Secondary` reject with UNSUPPORTED (from the server).
   */
  async createDatabase(name: string, opts: { pool?: string; createMode?: CreateMode } = {}): Promise<Database> {
    if (opts.createMode !== undefined && isRestoreMode(opts.createMode)) {
      throw new TypeError(`createMode ${opts.createMode} restores from backups and answers with an operation: use restoreDatabase(${JSON.stringify(name)}, { mode: '${opts.createMode}', ... })`);
    }
    const body: Record<string, string> = {};
    if (opts.pool !== undefined) body.elasticPoolName = opts.pool;
    if (opts.createMode !== undefined) body.createMode = opts.createMode;
    return this.send({ method: 'PUT', path: dbPath(name), body });
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
    return this.send({ method: 'PUT', path: dbPath(name), body, replaySafe: false });
  }

  /** Deletes a database; its files are kept and it is listed by {@link listDroppedDatabases}. */
  deleteDatabase(name: string): Promise<DroppedDatabase> {
    return this.send({ method: 'DELETE', path: dbPath(name) });
  }

  renameDatabase(name: string, newName: string): Promise<Database> {
    return this.send({ method: 'POST', path: `${dbPath(name)}/rename`, body: { newName } });
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

  /** Runs one statement (autocommit). Writes resolve once durable. */
  async query(database: string, sql: string, params?: SqlParams, transaction?: string): Promise<QueryResult> {
    const body = { sql, ...encodeParams(params), ...(transaction === undefined ? {} : { transaction }) };
    const r = await this.send<WireResult>({ method: 'POST', path: `${dbPath(database)}/query`, body, inTransaction: transaction !== undefined });
    return new QueryResult(r, this.intMode);
  }

  /** Runs statements atomically, as one transaction: all apply or none. */
  async batch(database: string, statements: readonly Statement[], transaction?: string): Promise<QueryResult[]> {
    const stmts = statements.map((s) => (typeof s === 'string' ? { sql: s } : { sql: s.sql, ...encodeParams(s.params) }));
    const body = { statements: stmts, ...(transaction === undefined ? {} : { transaction }) };
    const r = await this.send<{ results: WireResult[] }>({ method: 'POST', path: `${dbPath(database)}/batch`, body, inTransaction: transaction !== undefined });
    return r.results.map((x) => new QueryResult(x, this.intMode));
  }

  /**
   * Opens an interactive transaction (`write` by default; `read` sees one snapshot).
   * The server rolls it back after `timeoutMs` (its default when omitted).
   */
  async transaction(database: string, opts: { mode?: 'write' | 'read'; timeoutMs?: number } = {}): Promise<Transaction> {
    const body: Record<string, unknown> = {};
    if (opts.mode !== undefined) body.mode = opts.mode;
    if (opts.timeoutMs !== undefined) body.timeoutMs = opts.timeoutMs;
    // A re-sent begin would leave the first transaction open (holding the write lock) until it times out.
    const r = await this.send<{ transaction: string; expiresAt: string }>({ method: 'POST', path: `${dbPath(database)}/transactions`, body, inTransaction: true });
    return new Transaction(this, database, r.transaction, new Date(r.expiresAt));
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
   */
  async send<T>(spec: RequestSpec): Promise<T> {
    const replaySafe = spec.replaySafe ?? spec.method !== 'POST';
    for (let attempt = 0; ; attempt++) {
      const canRetry = attempt < this.retries;
      let res: Response;
      try {
        res = await this.attempt(spec);
      } catch (e) {
        if (spec.signal?.aborted === true) throw spec.signal.reason;
        const failure = networkFailure(e, this.timeoutMs);
        if (failure === undefined) throw e;
        if (canRetry && (!failure.mayHaveArrived || replaySafe)) {
          await sleep(backoff(attempt), spec.signal);
          continue;
        }
        const unknownOutcome = failure.mayHaveArrived && !replaySafe;
        throw new GeodrApiError(
          'UNAVAILABLE',
          !failure.mayHaveArrived
            ? `cannot reach ${this.url} (${failure.message})`
            : `no answer from ${this.url} to ${spec.method} ${spec.path} (${failure.message})${unknownOutcome ? '; the request may or may not have been applied' : ''}`,
          { status: 0, retryable: !unknownOutcome, context: unknownOutcome ? { details: { outcomeUnknown: true } } : {}, cause: e },
        );
      }
      if (res.ok) {
        if (res.status === 204) return undefined as T;
        if (spec.text === true) return (await res.text()) as T;
        return (await readJson(res)) as T;
      }
      const err = errorFromResponse(res.status, await readJson(res).catch(() => undefined));
      // /readyz answers 503 while draining: that is its answer, not a refusal to retry.
      if (res.status === 503 && err.retryable && spec.inTransaction !== true && spec.path !== '/readyz' && canRetry) {
        await sleep(backoff(attempt), spec.signal);
        continue;
      }
      throw err;
    }
  }

  private attempt(spec: RequestSpec): Promise<Response> {
    let url = `${this.url}${spec.path}`;
    const q = Object.entries(spec.query ?? {}).filter((e): e is [string, string] => e[1] !== undefined);
    if (q.length > 0) url += `?${new URLSearchParams(q).toString()}`;
    const headers: Record<string, string> = { accept: spec.text === true ? 'text/plain' : 'application/json' };
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
}

const enc = encodeURIComponent;

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
