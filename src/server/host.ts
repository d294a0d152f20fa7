/**
 * The open tenant databases of one server. Databases open lazily on first use and sit
 * in an LRU; beyond `maxOpenDatabases`, or after `idleCloseMs` unused, they are closed,
 * so an idle database holds no file descriptor and no memory beyond its metadata row.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type Database from 'better-sqlite3';
import { GeodrError, isGeodrError } from '../errors.js';
import { PrimaryDatabase } from '../engine/index.js';
import type { Connection } from '../engine/index.js';
import { AsyncLock } from './lock.js';
import type { DatabaseRecord, MetaStore } from './store.js';

/** SQLite page cache per tenant connection (KiB): small, because thousands share a process. */
const TENANT_CACHE_KIB = 1024;
const STATEMENT_CACHE = 64;

export interface HostOptions {
  dataDir: string;
  store: MetaStore;
  maxOpenDatabases: number;
  idleCloseMs: number;
  writeWaitMs: number;
  durability: 'group' | 'commit';
  groupCommitMs: number;
  /** Local log segment size (whole segments are pruned). */
  logSegmentBytes?: number;
  /** WAL frames between checkpoints. */
  checkpointFrames?: number;
  /** Called when a database is opened or closed, for metrics and logs. */
  onOpenChange?: (open: number) => void;
  /** Returning true keeps an idle database open (its records are not in the vault yet). */
  keepOpen?: (t: Tenant) => boolean;
  /** Called before waiting for exclusive use: long-lived leases (replication streams) let go. */
  beforeExclusive?: (name: string) => void;
  /** Failures in background work (idle sweep, close): nobody else would hear of them. */
  onError?: (error: unknown, database: string) => void;
}

/** One open tenant database. Held through {@link DatabaseHost.acquire}; give it back with release(). */
export class Tenant {
  refs = 0;
  lastUsed = Date.now();
  dirty = false;
  /** Serializes writers: autocommit writes and interactive transactions. */
  readonly writer = new AsyncLock();
  /** max_page_count last applied to the writer connection (quota enforcement). */
  appliedMaxPages = -1;
  writes = 0;
  private readonly readStatements = new Map<string, Database.Statement>();
  private readonly writeStatements = new Map<string, Database.Statement>();

  constructor(
    public name: string,
    readonly record: DatabaseRecord,
    readonly db: PrimaryDatabase,
  ) {}

  /**
   * A prepared statement from a small per-connection cache. Reads prepare on the
   * read-only guard connection; `writer` gives the writer's connection.
   */
  prepare(conn: Connection, sql: string, forWrite: boolean): Database.Statement {
    const cache = forWrite ? this.writeStatements : this.readStatements;
    let st = cache.get(sql);
    if (st !== undefined) {
      cache.delete(sql);
      cache.set(sql, st);
      return st;
    }
    st = conn.prepare(sql);
    st.safeIntegers(true);
    cache.set(sql, st);
    if (cache.size > STATEMENT_CACHE) cache.delete(cache.keys().next().value as string);
    return st;
  }

  clearStatements(): void {
    this.readStatements.clear();
    this.writeStatements.clear();
  }
}

export interface TenantPaths {
  dir: string;
  file: string;
  stateDir: string;
}

export class DatabaseHost {
  private readonly open = new Map<string, Tenant>(); // by name, least recently used first
  private readonly exclusive = new Set<string>();
  /** Logical bytes per database and per pool, for quotas without reopening anything. */
  private readonly sizes = new Map<string, number>();
  private readonly poolUsed = new Map<string, number>();
  private sweeper: NodeJS.Timeout | undefined;
  private closing = false;

  constructor(private readonly opts: HostOptions) {
    for (const d of opts.store.listDatabases()) this.trackSize(d.name, d.pool, d.sizeBytes);
    this.sweeper = setInterval(() => this.sweep(), Math.max(250, Math.min(5000, opts.idleCloseMs / 2)));
    this.sweeper.unref();
  }

  static pathsFor(dataDir: string, id: string): TenantPaths {
    const dir = path.join(dataDir, 'databases', id);
    const file = path.join(dir, 'db.sqlite');
    return { dir, file, stateDir: `${file}.geodr` };
  }

  paths(id: string): TenantPaths {
    return DatabaseHost.pathsFor(this.opts.dataDir, id);
  }

  get openCount(): number {
    return this.open.size;
  }

  /** The open database of that name, if it is open (no lease taken). */
  peek(name: string): Tenant | undefined {
    return this.open.get(name);
  }

  openTenants(): Tenant[] {
    return [...this.open.values()];
  }

  /**
   * Opens (if needed) and leases a database. Every acquire needs a release().
   * Throws NOT_FOUND for an unknown name and UNAVAILABLE while it is being moved.
   */
  acquire(name: string): Tenant {
    if (this.closing) throw new GeodrError('UNAVAILABLE', 'the server is shutting down', { database: name });
    if (this.exclusive.has(name)) throw new GeodrError('UNAVAILABLE', 'the database is being changed (rename, move or delete); retry shortly', { database: name });
    let t = this.open.get(name);
    if (t !== undefined) {
      this.open.delete(name);
      this.open.set(name, t);
      t.refs++;
    } else {
      const rec = this.opts.store.getDatabase(name);
      if (rec === undefined) throw new GeodrError('NOT_FOUND', `database ${JSON.stringify(name)} does not exist`, { database: name });
      // A geo-secondary is served by the replication manager; here it would be opened as a primary.
      if (rec.role === 'secondary') throw new GeodrError('UNAVAILABLE', `database ${name} is a geo-secondary that is not ready for reads yet (seeding)`, { database: name });
      t = this.openTenant(rec);
      this.open.set(name, t);
      // Leased before evicting, so the eviction can never pick the database just opened.
      t.refs++;
      this.evict();
      this.opts.onOpenChange?.(this.open.size);
    }
    t.lastUsed = Date.now();
    return t;
  }

  release(t: Tenant): void {
    t.refs--;
    t.lastUsed = Date.now();
  }

  /** acquire + release around fn. */
  async use<T>(name: string, fn: (t: Tenant) => Promise<T> | T): Promise<T> {
    const t = this.acquire(name);
    try {
      return await fn(t);
    } finally {
      this.release(t);
    }
  }

  private openTenant(rec: DatabaseRecord): Tenant {
    const p = this.paths(rec.id);
    const db = PrimaryDatabase.open({
      file: p.file,
      stateDir: p.stateDir,
      name: rec.name,
      durability: this.opts.durability,
      groupCommitMs: this.opts.groupCommitMs,
      segmentBytes: this.opts.logSegmentBytes,
      checkpointFrames: this.opts.checkpointFrames,
    });
    try {
      db.write((c) => c.pragma(`cache_size = -${TENANT_CACHE_KIB}`), { transaction: false });
    } catch (e) {
      db.close();
      throw e;
    }
    return new Tenant(rec.name, rec, db);
  }

  /** Creates the files of a new, empty database; returns the engine's database id. */
  createFiles(rec: Pick<DatabaseRecord, 'id' | 'name'>): { dbId: string; checksum: string; sizeBytes: number } {
    const p = this.paths(rec.id);
    fs.mkdirSync(p.dir, { recursive: true });
    const db = PrimaryDatabase.open({ file: p.file, stateDir: p.stateDir, name: rec.name, durability: 'commit' });
    const st = db.status();
    db.close();
    return { dbId: st.dbId, checksum: st.checksum, sizeBytes: st.pageCount * st.pageSize };
  }

  /**
   * Makes a restored file a new database: moved into place, then opened, which gives it
   * a new identity and a base snapshot. Returns the engine's database id.
   */
  adoptFile(rec: Pick<DatabaseRecord, 'id' | 'name'>, file: string): { dbId: string; checksum: string; sizeBytes: number } {
    const p = this.paths(rec.id);
    fs.rmSync(p.dir, { recursive: true, force: true });
    fs.mkdirSync(p.dir, { recursive: true });
    fs.renameSync(file, p.file);
    return this.createFiles(rec);
  }

  /**
   * Waits until nobody holds `name`, keeps new users out, closes it, and runs fn
   * (which may move or rename files). Used for rename, move between pools and delete.
   */
  async withExclusive<T>(name: string, fn: () => Promise<T> | T): Promise<T> {
    if (this.exclusive.has(name)) throw new GeodrError('CONFLICT', 'another change to this database is in progress', { database: name });
    this.exclusive.add(name);
    try {
      this.opts.beforeExclusive?.(name);
      const t = this.open.get(name);
      if (t !== undefined) {
        const deadline = Date.now() + this.opts.writeWaitMs;
        while (t.refs > 0 || t.writer.locked) {
          if (Date.now() > deadline) throw new GeodrError('BUSY', `the database stayed in use for ${this.opts.writeWaitMs} ms`, { database: name });
          await new Promise((r) => setTimeout(r, 5));
        }
        this.closeTenant(t);
      }
      return await fn();
    } finally {
      this.exclusive.delete(name);
    }
  }

  /**
   * Applies the pool's storage quota to the writer connection as max_page_count, so
   * SQLite itself refuses the page that would cross it and the transaction rolls back.
   */
  applyQuota(t: Tenant, quotaBytes: number): void {
    const pageSize = t.db.pageSize;
    let maxPages = 4294967294; // SQLite's own ceiling: no quota
    if (quotaBytes > 0) {
      const own = this.sizes.get(t.name) ?? 0;
      const others = (this.poolUsed.get(t.record.pool) ?? 0) - own;
      maxPages = Math.max(1, Math.floor((quotaBytes - others) / pageSize));
    }
    if (maxPages !== t.appliedMaxPages) {
      t.db.write((c) => c.pragma(`max_page_count = ${maxPages}`), { transaction: false });
      t.appliedMaxPages = maxPages;
    }
  }

  /** Records a write: size for quotas, dirty for the periodic metadata flush. */
  noteWrite(t: Tenant): void {
    const st = t.db.status();
    this.trackSize(t.name, t.record.pool, st.pageCount * st.pageSize);
    t.dirty = true;
    t.writes++;
  }

  private trackSize(name: string, pool: string, bytes: number): void {
    const before = this.sizes.get(name) ?? 0;
    this.sizes.set(name, bytes);
    this.poolUsed.set(pool, (this.poolUsed.get(pool) ?? 0) - before + bytes);
  }

  /** Forgets a database's size (deleted) or moves it to another pool's total. */
  retrack(name: string, fromPool: string, toPool: string | undefined, newName = name): void {
    const bytes = this.sizes.get(name) ?? 0;
    this.sizes.delete(name);
    this.poolUsed.set(fromPool, (this.poolUsed.get(fromPool) ?? 0) - bytes);
    if (toPool !== undefined) this.trackSize(newName, toPool, bytes);
  }

  /** Records the size of a database created from a file (a restore), for quotas. */
  noteSize(name: string, pool: string, bytes: number): void {
    this.trackSize(name, pool, bytes);
  }

  poolUsedBytes(pool: string): number {
    return this.poolUsed.get(pool) ?? 0;
  }

  sizeOf(name: string): number {
    return this.sizes.get(name) ?? 0;
  }

  private persist(t: Tenant): void {
    if (!t.dirty) return;
    const st = t.db.status();
    this.opts.store.updateDatabaseState(t.name, {
      sizeBytes: st.pageCount * st.pageSize,
      txid: st.txid,
      checksum: st.checksum,
      epoch: st.epoch,
      lastWriteTime: st.lastWriteTime,
    });
    t.dirty = false;
  }

  /** Writes the state of every open database to the metadata store. */
  flushStates(): void {
    this.opts.store.transaction(() => {
      for (const t of this.open.values()) this.persistQuietly(t);
    });
  }

  private persistQuietly(t: Tenant): void {
    try {
      this.persist(t);
    } catch (e) {
      if (!isGeodrError(e, 'DATABASE_CLOSED')) throw e;
    }
  }

  private closeTenant(t: Tenant): void {
    this.open.delete(t.name);
    try {
      this.persistQuietly(t);
      t.clearStatements();
      t.db.close();
    } catch (e) {
      // The engine is fail-stop: the next open reconciles the files with the log.
      this.opts.onError?.(e, t.name);
    }
    this.opts.onOpenChange?.(this.open.size);
  }

  private evict(): void {
    if (this.open.size <= this.opts.maxOpenDatabases) return;
    for (const t of this.open.values()) {
      if (this.open.size <= this.opts.maxOpenDatabases) break;
      if (t.refs === 0 && !t.writer.locked && this.opts.keepOpen?.(t) !== true) this.closeTenant(t);
    }
  }

  private sweep(): void {
    const cutoff = Date.now() - this.opts.idleCloseMs;
    // One metadata transaction (one fsync) for all the databases written since the last sweep.
    this.opts.store.transaction(() => {
      for (const t of [...this.open.values()]) {
        if (t.refs === 0 && !t.writer.locked && t.lastUsed < cutoff && this.opts.keepOpen?.(t) !== true) this.closeTenant(t);
        else this.persistQuietly(t);
      }
      // Databases kept open past the LRU bound (unshipped records) are let go once they may be.
      this.evict();
    });
  }

  /** Waits for durability of everything written, then closes every database. */
  async closeAll(): Promise<void> {
    this.closing = true;
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
    const open = [...this.open.values()];
    await Promise.all(
      open.map((t) =>
        t.db.waitDurable().catch(() => {
          // a database that failed is closed below all the same; its log is what it is
        }),
      ),
    );
    this.opts.store.transaction(() => {
      for (const t of open) this.closeTenant(t);
    });
  }
}
