/**
 * Running tenants' SQL: single statements, atomic batches and interactive
 * transactions, with the tenant-isolation guard, limits, quotas, and durable
 * acknowledgement (a write returns only once its record is fsynced in the log).
 * The JSON SQL endpoint and the libSQL (Hrana) endpoint are both thin layers over
 * {@link SqlSession}.
 */
import Database from 'better-sqlite3';
import { GeodrError, isGeodrError } from '../errors.js';
import { isInterrupt, openConnection, withDeadline, type Connection, type ReadTransaction, type ReplicaDatabase, type WriteTransaction } from '../engine/index.js';
import type { DatabaseHost, Tenant } from './host.js';
import { checkStatement, type CheckedStatement } from './sqlguard.js';
import type { Limits } from './config.js';
import type { MetaStore } from './store.js';

/** A SQLite value as the server handles it: integers are always bigint. */
export type SqlValue = null | bigint | number | string | Uint8Array;

export interface SqlStatement {
  sql: string;
  /** Positional parameters (`?`). */
  args?: SqlValue[] | undefined;
  /** Named parameters (`:name`, `@name`, `$name`); keys with or without the prefix. */
  named?: Record<string, SqlValue> | undefined;
}

export interface SqlResult {
  columns: string[];
  /** Declared column types (null for expressions). */
  decltypes: Array<string | null>;
  rows: SqlValue[][];
  rowsAffected: number;
  lastInsertRowid: bigint | null;
  /** The database's TXID after the statement (for writes: the TXID that holds it). */
  txid: number;
}

/**
 * `write` takes the writer at BEGIN (BEGIN IMMEDIATE); `read` pins a snapshot and refuses
 * writes; `deferred` starts as a read and becomes a write at its first writing statement,
 * if nothing was committed since its snapshot (else BUSY, as SQLite's BUSY_SNAPSHOT).
 */
export type TransactionMode = 'write' | 'read' | 'deferred';

type OpenTx =
  | { kind: 'write'; tenant: Tenant; handle: WriteTransaction; timer: NodeJS.Timeout; expiresAt: number }
  | {
      kind: 'read';
      /** Undefined on a geo-secondary: the read runs on the replica, which holds applies back meanwhile. */
      tenant: Tenant | undefined;
      replicaRead?: ReadTransaction;
      conn: Connection;
      timer: NodeJS.Timeout;
      expiresAt: number;
      deferred: boolean;
      snapshotTxid: number;
    };

/** How SQL meets geo-replication: secondaries serve reads, primaries may be fenced or held for a failover. */
export interface ReplicationHooks {
  /** The replica of a geo-secondary hosted here, or undefined for a primary. */
  replica(name: string): ReplicaDatabase | undefined;
  /** Throws when the database may not take writes (fenced, failed over); waits while a failover or a start-up check holds them. */
  beforeWrite(name: string): Promise<void>;
  /** Sync durability: resolves once a secondary has applied `txid`. */
  waitReplicated(name: string, txid: number): Promise<void>;
  /** The READ_ONLY error for a write sent to a geo-secondary, naming its primary. */
  readOnlyError(name: string): GeodrError;
  /**
   * Answers the replication statements and system views (ALTER DATABASE … FAILOVER,
   * sys.geo_replication_links, …); undefined for ordinary SQL.
   */
  statement(database: string, stmt: SqlStatement, admin: boolean): Promise<SqlResult | undefined>;
}

export type WriteDurability = 'local' | 'sync';

export interface SessionOptions {
  /** `sync`: a write is acknowledged only once a geo-secondary has applied it. */
  durability?: WriteDurability;
  /** The caller holds an admin token: management statements (ALTER DATABASE …) are allowed. */
  admin?: boolean;
}

export interface SqlContext {
  host: DatabaseHost;
  store: MetaStore;
  limits: Limits;
  /** Counts statements for metrics. */
  onStatement?: (database: string, write: boolean) => void;
  replication?: ReplicationHooks;
}

const guardCache = new Map<string, CheckedStatement | GeodrError>();

/** checkStatement with a bounded cache: apps repeat the same statements. */
function checked(sql: string): CheckedStatement {
  let c = guardCache.get(sql);
  if (c === undefined) {
    try {
      c = checkStatement(sql);
    } catch (e) {
      if (!(e instanceof GeodrError)) throw e;
      c = e;
    }
    if (guardCache.size >= 2000) guardCache.delete(guardCache.keys().next().value as string);
    guardCache.set(sql, c);
  }
  if (c instanceof GeodrError) throw c;
  return c;
}

/**
 * A client's session with one database: autocommit statements, or one interactive
 * transaction at a time. Not safe for concurrent calls; callers queue per session.
 */
export class SqlSession {
  private tx: OpenTx | undefined;
  private expired = false;
  private closed = false;

  constructor(
    private readonly ctx: SqlContext,
    readonly database: string,
    readonly options: SessionOptions = {},
  ) {}

  private replica(): ReplicaDatabase | undefined {
    return this.ctx.replication?.replica(this.database);
  }

  private async writeAllowed(): Promise<void> {
    await this.ctx.replication?.beforeWrite(this.database);
  }

  /** Local durability first (the caller waited for it), then the secondary's when asked. */
  private async replicated(txid: number): Promise<void> {
    if (this.options.durability === 'sync') {
      if (this.ctx.replication === undefined) throw new GeodrError('INVALID_ARGUMENT', 'sync durability needs geo-replication, which this server does not run', { database: this.database });
      await this.ctx.replication.waitReplicated(this.database, txid);
    }
  }

  private readOnlySecondary(): GeodrError {
    return this.ctx.replication?.readOnlyError(this.database) ?? new GeodrError('READ_ONLY', `database ${this.database} is a geo-secondary: it serves reads; send writes to its primary`, { database: this.database });
  }

  get inTransaction(): boolean {
    return this.tx !== undefined;
  }

  get transactionExpiresAt(): number | undefined {
    return this.tx?.expiresAt;
  }

  /** Runs one statement. BEGIN/COMMIT/ROLLBACK open and end an interactive transaction. */
  async execute(stmt: SqlStatement): Promise<SqlResult> {
    this.ensureOpen();
    if (this.ctx.replication !== undefined && this.tx === undefined) {
      const special = await this.ctx.replication.statement(this.database, stmt, this.options.admin === true);
      if (special !== undefined) return special;
    }
    const c = checked(stmt.sql);
    if (c.control !== undefined) return this.control(c);
    this.throwIfExpired();
    if (this.tx !== undefined) return this.inTx(this.tx, c, stmt);
    return this.autocommit([{ c, stmt }], false).then((r) => r[0] as SqlResult);
  }

  /**
   * Runs statements as one atomic unit: all apply or none. In an open transaction
   * the batch runs under a savepoint. A failure names the statement's index.
   */
  async batch(stmts: SqlStatement[]): Promise<SqlResult[]> {
    this.ensureOpen();
    if (stmts.length > this.ctx.limits.batchStatements) {
      throw new GeodrError('LIMIT_EXCEEDED', `a batch holds ${stmts.length} statements; the limit is ${this.ctx.limits.batchStatements}`, { database: this.database });
    }
    const items = stmts.map((stmt, i) => {
      try {
        const c = checked(stmt.sql);
        if (c.control !== undefined) {
          throw new GeodrError('SQL_REFUSED', `${c.verb} inside a batch: a batch already runs as one transaction`, { database: this.database });
        }
        return { c, stmt };
      } catch (e) {
        throw withStatementIndex(e, i);
      }
    });
    this.throwIfExpired();
    let tx = this.tx;
    if (tx !== undefined) {
      if (tx.kind === 'read') {
        const readTx = tx;
        const writes = items.some((it) => settingPragma(it.c) || !readTx.conn.prepare(it.c.sql).readonly);
        if (writes) tx = await this.upgrade(readTx);
      }
      const conn = tx.kind === 'write' ? tx.handle.conn : tx.conn;
      conn.prepare('SAVEPOINT geodr_batch').run();
      try {
        const out = [];
        for (const [i, it] of items.entries()) {
          try {
            out.push(await this.inTx(tx, it.c, it.stmt));
          } catch (e) {
            throw withStatementIndex(e, i);
          }
        }
        conn.prepare('RELEASE geodr_batch').run();
        return out;
      } catch (e) {
        if (conn.inTransaction) {
          conn.prepare('ROLLBACK TO geodr_batch').run();
          conn.prepare('RELEASE geodr_batch').run();
        }
        throw e;
      }
    }
    return this.autocommit(items, true);
  }

  /** Opens an interactive transaction. */
  async begin(mode: TransactionMode, timeoutMs?: number): Promise<void> {
    this.ensureOpen();
    this.expired = false;
    if (this.tx !== undefined) throw new GeodrError('SQL_ERROR', 'cannot start a transaction within a transaction', { database: this.database, details: { sqliteCode: 'SQLITE_ERROR' } });
    const limits = this.ctx.limits;
    const ttl = Math.min(timeoutMs ?? limits.transactionTimeoutMs, limits.transactionTimeoutMs);
    this.lifetimeMs = ttl;
    const replica = this.replica();
    if (replica !== undefined) {
      if (mode === 'write') throw this.readOnlySecondary();
      const expiresAt = Date.now() + ttl;
      const replicaRead = await replica.beginRead();
      replicaRead.conn.defaultSafeIntegers(true);
      const timer = setTimeout(() => this.expire(), ttl);
      timer.unref();
      this.tx = { kind: 'read', tenant: undefined, replicaRead, conn: replicaRead.conn, timer, expiresAt, deferred: mode === 'deferred', snapshotTxid: replica.txid };
      return;
    }
    if (mode === 'write') await this.writeAllowed();
    const tenant = this.ctx.host.acquire(this.database);
    try {
      const expiresAt = Date.now() + ttl;
      const timer = setTimeout(() => this.expire(), ttl);
      timer.unref();
      if (mode !== 'write') {
        // A connection of its own pins one snapshot for the whole transaction.
        const snapshotTxid = tenant.db.txid;
        const conn = openConnection(tenant.db.file, { readonly: true });
        conn.defaultSafeIntegers(true);
        conn.prepare('BEGIN').run();
        conn.prepare('select 1 from sqlite_master limit 1').get();
        this.tx = { kind: 'read', tenant, conn, timer, expiresAt, deferred: mode === 'deferred', snapshotTxid };
      } else {
        await tenant.writer.acquire(limits.writeWaitMs, { database: this.database, operation: 'sql.begin' });
        try {
          this.ctx.host.applyQuota(tenant, this.quotaOf(tenant));
          this.tx = { kind: 'write', tenant, handle: tenant.db.begin(), timer, expiresAt };
        } catch (e) {
          tenant.writer.release();
          clearTimeout(timer);
          throw e;
        }
      }
    } catch (e) {
      this.ctx.host.release(tenant);
      throw translate(e, this.database);
    }
  }

  /** Commits the open transaction; resolves once it is durable. Returns the TXID. */
  async commit(): Promise<number> {
    this.ensureOpen();
    this.throwIfExpired();
    const tx = this.tx;
    if (tx === undefined) throw new GeodrError('SQL_ERROR', 'cannot commit - no transaction is active', { database: this.database, details: { sqliteCode: 'SQLITE_ERROR' } });
    if (tx.kind === 'read') {
      this.finish(tx);
      return tx.snapshotTxid;
    }
    let txid: number;
    try {
      txid = tx.handle.commit();
      this.ctx.host.noteWrite(tx.tenant);
      this.ctx.onStatement?.(this.database, true);
    } catch (e) {
      throw translate(e, this.database, this.quotaOf(tx.tenant));
    } finally {
      this.finish(tx);
    }
    await tx.tenant.db.waitDurable(txid);
    await this.replicated(txid);
    return txid;
  }

  /** Rolls back the open transaction (a no-op without one). */
  rollback(): void {
    this.expired = false;
    const tx = this.tx;
    if (tx === undefined) return;
    this.finish(tx);
  }

  /** Rolls back anything open; the session is unusable afterwards. */
  close(): void {
    this.rollback();
    this.closed = true;
  }

  /**
   * Turns a deferred transaction into a write transaction at its first write. Safe only
   * if nothing committed since its snapshot: then the writer's view equals what it read.
   */
  private async upgrade(tx: OpenTx & { kind: 'read' }): Promise<OpenTx> {
    if (!tx.deferred) throw new GeodrError('READ_ONLY', 'a write inside a read transaction', { database: this.database });
    if (tx.tenant === undefined) throw this.readOnlySecondary();
    const tenant = tx.tenant;
    await this.writeAllowed();
    const changed = (): GeodrError =>
      new GeodrError('BUSY', 'the database changed since this deferred transaction read it; roll back and retry the transaction', {
        database: this.database,
        details: { sqliteCode: 'SQLITE_BUSY_SNAPSHOT' },
      });
    if (tenant.db.txid !== tx.snapshotTxid) throw changed();
    await tenant.writer.acquire(this.ctx.limits.writeWaitMs, { database: this.database, operation: 'sql.upgrade' });
    if (this.tx !== tx || tenant.db.txid !== tx.snapshotTxid) {
      tenant.writer.release();
      throw this.tx !== tx ? new GeodrError('TRANSACTION_EXPIRED', 'the transaction ended while waiting for the writer', { database: this.database }) : changed();
    }
    let handle: WriteTransaction;
    try {
      this.ctx.host.applyQuota(tenant, this.quotaOf(tenant));
      handle = tenant.db.begin();
    } catch (e) {
      tenant.writer.release();
      throw e;
    }
    tx.conn.close();
    const next: OpenTx = { kind: 'write', tenant, handle, timer: tx.timer, expiresAt: tx.expiresAt };
    this.tx = next;
    return next;
  }

  private finish(tx: OpenTx): void {
    clearTimeout(tx.timer);
    this.tx = undefined;
    try {
      if (tx.kind === 'write') {
        tx.handle.rollback();
        tx.tenant.writer.release();
      } else if (tx.replicaRead !== undefined) {
        tx.replicaRead.end();
      } else {
        tx.conn.close();
      }
    } finally {
      if (tx.tenant !== undefined) this.ctx.host.release(tx.tenant);
    }
  }

  private expire(): void {
    if (this.tx === undefined) return;
    this.finish(this.tx);
    this.expired = true;
  }

  /** The lifetime the last transaction was given (its own, or the server's limit). */
  private lifetimeMs = 0;

  /** Stays thrown until ROLLBACK (or a new BEGIN): statements must not run outside the lost transaction. */
  private throwIfExpired(): void {
    if (this.expired) {
      throw new GeodrError('TRANSACTION_EXPIRED', `the transaction passed its ${this.lifetimeMs} ms lifetime and was rolled back`, { database: this.database });
    }
  }

  private ensureOpen(): void {
    if (this.closed) throw new GeodrError('TRANSACTION_EXPIRED', 'the session is closed', { database: this.database });
  }

  private async control(c: CheckedStatement): Promise<SqlResult> {
    const ctl = c.control!;
    switch (ctl.kind) {
      case 'begin':
        await this.begin(ctl.mode === 'readonly' ? 'read' : ctl.mode === 'deferred' ? 'deferred' : 'write');
        return emptyResult(this.tx === undefined ? 0 : txidOf(this.tx));
      case 'commit': {
        const txid = await this.commit();
        return emptyResult(txid);
      }
      case 'rollback': {
        if (this.expired) {
          // The client rolls back what the timeout already rolled back: that is fine.
          this.expired = false;
          return emptyResult(0);
        }
        if (this.tx === undefined) throw new GeodrError('SQL_ERROR', 'cannot rollback - no transaction is active', { database: this.database, details: { sqliteCode: 'SQLITE_ERROR' } });
        const txid = txidOf(this.tx);
        this.rollback();
        return emptyResult(txid);
      }
      default: {
        this.throwIfExpired();
        if (this.tx === undefined) throw new GeodrError('SQL_REFUSED', `${c.verb} outside a transaction: start one with BEGIN first`, { database: this.database });
        return this.inTx(this.tx, c, { sql: c.sql });
      }
    }
  }

  private quotaOf(t: Tenant | undefined): number {
    return t === undefined ? 0 : (this.ctx.store.getPool(t.record.pool)?.storageQuotaBytes ?? 0);
  }

  private async inTx(txIn: OpenTx, c: CheckedStatement, stmt: SqlStatement): Promise<SqlResult> {
    let tx = txIn;
    let conn = tx.kind === 'write' ? tx.handle.conn : tx.conn;
    const budget = new Budget(this.ctx.limits);
    try {
      if (c.verb === 'VACUUM') throw new GeodrError('SQL_ERROR', 'cannot VACUUM from within a transaction', { database: this.database, details: { sqliteCode: 'SQLITE_ERROR' } });
      let st = conn.prepare(c.sql);
      if (tx.kind === 'read' && (!st.readonly || settingPragma(c))) {
        tx = await this.upgrade(tx);
        conn = tx.kind === 'write' ? tx.handle.conn : conn;
        st = conn.prepare(c.sql);
      }
      st.safeIntegers(true);
      const r = runStatement(st, stmt, budget, txidOf(tx));
      this.ctx.onStatement?.(this.database, !st.readonly);
      return r;
    } catch (e) {
      // Some errors make SQLite roll the whole transaction back; the session must follow.
      if (!conn.inTransaction && this.tx === tx) this.finish(tx);
      throw translate(e, this.database, this.quotaOf(tx.tenant));
    }
  }

  private async autocommit(items: Array<{ c: CheckedStatement; stmt: SqlStatement }>, atomic: boolean): Promise<SqlResult[]> {
    const replica = this.replica();
    if (replica !== undefined) return this.secondaryReads(replica, items, atomic);
    const host = this.ctx.host;
    const tenant = host.acquire(this.database);
    let locked = false;
    try {
      const budget = new Budget(this.ctx.limits);
      // Prepare on the read connection first: a read-only statement never waits for the writer.
      const reads = items.map((it) => (it.c.verb === 'VACUUM' || settingPragma(it.c) ? undefined : tryPrepare(tenant, it.c.sql)));
      const allRead = reads.every((st) => st !== undefined && st.readonly);
      if (allRead) {
        return tenant.db.read((conn) => {
          const many = items.length > 1;
          if (many) conn.prepare('BEGIN').run();
          try {
            return items.map((it, i) => withIndex(atomic, i, () => runStatement(reads[i]!, it.stmt, budget, tenant.db.txid)));
          } finally {
            if (many && conn.inTransaction) conn.prepare('COMMIT').run();
          }
        });
      }
      await this.writeAllowed();
      if (!tenant.writer.tryAcquire()) await tenant.writer.acquire(this.ctx.limits.writeWaitMs, { database: this.database, operation: 'sql.write' });
      locked = true;
      const quota = this.quotaOf(tenant);
      host.applyQuota(tenant, quota);
      const vacuum = items.length === 1 && items[0]!.c.verb === 'VACUUM';
      if (items.some((it) => it.c.verb === 'VACUUM') && !vacuum) {
        throw new GeodrError('SQL_REFUSED', 'VACUUM must run on its own, not in a batch', { database: this.database });
      }
      let results: SqlResult[];
      let txid: number;
      try {
        const w = tenant.db.write(
          (conn) =>
            items.map((it, i) =>
              withIndex(atomic, i, () => {
                const st = vacuum ? conn.prepare(it.c.sql) : tenant.prepare(conn, it.c.sql, true);
                return runStatement(st, it.stmt, budget, 0);
              }),
            ),
          { transaction: !vacuum },
        );
        results = w.result;
        txid = w.txid;
      } catch (e) {
        throw translate(e, this.database, quota);
      }
      host.noteWrite(tenant);
      for (const r of results) r.txid = txid;
      tenant.writer.release();
      locked = false;
      this.ctx.onStatement?.(this.database, true);
      await tenant.db.waitDurable(txid);
      await this.replicated(txid);
      return results;
    } catch (e) {
      throw translate(e, this.database);
    } finally {
      if (locked) tenant.writer.release();
      host.release(tenant);
    }
  }

  /**
   * Autocommit statements on a geo-secondary: one synchronous read on the replica's
   * reader, so no apply can land in the middle of it (applies run on this thread).
   */
  private secondaryReads(replica: ReplicaDatabase, items: Array<{ c: CheckedStatement; stmt: SqlStatement }>, atomic: boolean): SqlResult[] {
    const budget = new Budget(this.ctx.limits);
    try {
      return replica.read((conn) => {
        const sts = items.map((it) => {
          if (it.c.verb === 'VACUUM' || settingPragma(it.c)) throw this.readOnlySecondary();
          const st = conn.prepare(it.c.sql);
          if (!st.readonly) throw this.readOnlySecondary();
          st.safeIntegers(true);
          return st;
        });
        const many = items.length > 1;
        if (many) conn.prepare('BEGIN').run();
        try {
          const txid = replica.txid;
          return items.map((it, i) => withIndex(atomic, i, () => runStatement(sts[i]!, it.stmt, budget, txid)));
        } finally {
          if (many && conn.inTransaction) conn.prepare('COMMIT').run();
        }
      });
    } catch (e) {
      throw translate(e, this.database);
    }
  }
}

function txidOf(tx: OpenTx): number {
  return tx.kind === 'read' && tx.tenant === undefined ? tx.snapshotTxid : tx.tenant!.db.txid;
}

/** A PRAGMA with a value changes connection state: it must run on the writer, where the tenant's later statements run. */
function settingPragma(c: CheckedStatement): boolean {
  if (c.verb !== 'PRAGMA') return false;
  if (c.sql.includes('=')) return true;
  const name = /^pragma\s+(?:\w+\s*\.\s*)?["'`[]?(\w+)/i.exec(c.sql)?.[1]?.toLowerCase();
  return name !== undefined && SETTABLE_WITH_ARGUMENT.has(name) && c.sql.includes('(');
}

const SETTABLE_WITH_ARGUMENT = new Set(['foreign_keys', 'defer_foreign_keys', 'user_version', 'application_id', 'incremental_vacuum', 'optimize']);

function tryPrepare(t: Tenant, sql: string): Database.Statement | undefined {
  try {
    return t.db.read((conn) => t.prepare(conn, sql, false));
  } catch (e) {
    // Some statements cannot even be prepared on a read-only connection; the writer decides.
    if (e instanceof Database.SqliteError) return undefined;
    throw e;
  }
}

function withIndex<T>(atomic: boolean, i: number, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw atomic ? withStatementIndex(e, i) : e;
  }
}

/** Tags an error with the index of the batch statement that raised it. */
function withStatementIndex(e: unknown, i: number): unknown {
  const g = translate(e, undefined);
  return g instanceof GeodrError ? g.withContext({ details: { statement: i } }, `statement ${i}: `) : g;
}

function emptyResult(txid: number): SqlResult {
  return { columns: [], decltypes: [], rows: [], rowsAffected: 0, lastInsertRowid: null, txid };
}

/** Per-request limits on time and result size. */
export class Budget {
  readonly deadline: number;
  bytes = 0;
  constructor(readonly limits: Pick<Limits, 'statementTimeoutMs' | 'resultBytes'>) {
    this.deadline = Date.now() + limits.statementTimeoutMs;
  }
  charge(row: SqlValue[]): void {
    for (const v of row) this.bytes += typeof v === 'string' ? v.length : v instanceof Uint8Array ? v.length : 8;
    if (this.bytes > this.limits.resultBytes) {
      throw new GeodrError('LIMIT_EXCEEDED', `the result is larger than the ${this.limits.resultBytes}-byte limit; select fewer rows or columns`);
    }
    if (Date.now() > this.deadline) throw this.expired();
  }
  expired(): GeodrError {
    return new GeodrError('STATEMENT_TIMEOUT', `the statement ran longer than ${this.limits.statementTimeoutMs} ms`);
  }
}

function bindArgs(stmt: SqlStatement): unknown[] {
  const out: unknown[] = (stmt.args ?? []).map(toBind);
  if (stmt.named !== undefined) {
    const named: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(stmt.named)) named[k.replace(/^[:@$]/, '')] = toBind(v);
    out.push(named);
  }
  return out;
}

function toBind(v: SqlValue): unknown {
  return v instanceof Uint8Array && !Buffer.isBuffer(v) ? Buffer.from(v.buffer, v.byteOffset, v.byteLength) : v;
}

/**
 * Runs one prepared statement within the budget: rows are counted as they stream, and
 * the statement is interrupted at the deadline even between rows (engine/native/deadline.c).
 */
export function runStatement(st: Database.Statement, stmt: SqlStatement, budget: Budget, txid: number): SqlResult {
  const args = bindArgs(stmt);
  const left = budget.deadline - Date.now();
  if (left <= 0) throw budget.expired();
  try {
    return withDeadline(st.database, left, () => {
      if (st.reader) {
        const cols = st.columns();
        const rows: SqlValue[][] = [];
        st.raw(true);
        for (const row of st.iterate(...args) as Iterable<SqlValue[]>) {
          budget.charge(row);
          rows.push(row);
        }
        return { columns: cols.map((c) => c.name), decltypes: cols.map((c) => c.type), rows, rowsAffected: 0, lastInsertRowid: null, txid };
      }
      const info = st.run(...args);
      if (Date.now() > budget.deadline) throw budget.expired();
      return { columns: [], decltypes: [], rows: [], rowsAffected: info.changes, lastInsertRowid: BigInt(info.lastInsertRowid), txid };
    });
  } catch (e) {
    throw isInterrupt(e) ? budget.expired() : e;
  }
}

/** Maps SQLite and binding errors to geodr errors that name the database. */
export function translate(e: unknown, database: string | undefined, quotaBytes = 0): unknown {
  if (e instanceof GeodrError) {
    return database !== undefined && e.context.database === undefined ? e.withContext({ database }) : e;
  }
  if (e instanceof Database.SqliteError) {
    if (e.code === 'SQLITE_FULL' && quotaBytes > 0) {
      return new GeodrError('QUOTA_EXCEEDED', `the write would take the elastic pool past its ${quotaBytes}-byte storage quota; nothing was written`, { database, details: { sqliteCode: e.code } }, { cause: e });
    }
    if (e.code === 'SQLITE_READONLY') return new GeodrError('READ_ONLY', e.message, { database, details: { sqliteCode: e.code } }, { cause: e });
    return new GeodrError('SQL_ERROR', e.message, { database, details: { sqliteCode: e.code } }, { cause: e });
  }
  if (e instanceof RangeError || e instanceof TypeError) {
    // better-sqlite3 reports parameter problems (count, names, types) this way.
    return new GeodrError('SQL_ERROR', e.message, { database, details: { sqliteCode: 'SQLITE_RANGE' } }, { cause: e });
  }
  return e;
}

export { isGeodrError };
