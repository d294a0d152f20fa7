/**
 * The management logic behind the API: elastic pools, databases, and operations.
 * HTTP handlers validate shapes and call in here; everything that changes state
 * checks its preconditions first, so a refused request changes nothing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GeodrError } from '../errors.js';
import { checksumHex, integrityCheck, NodeFs, readMeta } from '../engine/index.js';
import { randomUUID } from 'node:crypto';
import { DatabaseHost } from './host.js';
import { validateName } from './names.js';
import { OperationManager, type OperationContext } from './operations.js';
import type { BackupService } from './backup.js';
import type { ReplicationManager } from '../replication/manager.js';
import { durationMs } from './backup.js';
import type { DatabaseRecord, DroppedRecord, LtrPolicy, MetaStore, OperationRecord, PoolRecord } from './store.js';

export const CREATE_MODES = ['Default', 'Copy', 'Secondary', 'PointInTimeRestore', 'Restore', 'Recovery', 'RestoreLongTermRetentionBackup'] as const;
export type CreateMode = (typeof CREATE_MODES)[number];

export interface CreateOptions {
  pool: string;
  createMode?: string | undefined;
  sourceDatabaseName?: string | undefined;
  sourceDatabaseId?: string | undefined;
  restorePointInTime?: string | undefined;
  restorePointTxid?: number | undefined;
  /** Secondary and Copy: the server holding the primary (a configured peer). */
  sourceServer?: string | undefined;
  /** Secondary: the link id the primary's server already recorded (ADD SECONDARY asked there). */
  linkId?: string | undefined;
  /** Internal: a PointInTimeRestore that names its source by database id (restore points). */
  bySourceId?: boolean;
}

export interface PoolSettings {
  maxDatabases?: number | undefined;
  maxConcurrentOperations?: number | undefined;
  storageQuotaBytes?: number | undefined;
}

export const POOL_DEFAULTS = { maxDatabases: 10_000, maxConcurrentOperations: 2, storageQuotaBytes: 0 };

export interface DatabaseView {
  name: string;
  id: string;
  /** The engine's database id: names its backups in the vault. */
  dbId: string;
  pool: string;
  role: string;
  /** Online; Seeding (a secondary not readable yet); Fenced (a deposed primary rejoining as a secondary). */
  status: 'Online' | 'Seeding' | 'Fenced';
  createMode: string;
  createdAt: string;
  sizeBytes: number;
  txid: number;
  checksum: string;
  epoch: number;
  lastWriteTime: string | null;
  retentionDays: number;
  /** The last scheduled restore test of this database's backups. */
  lastVerifiedRestore: { time: string; txid: number; error: string | null } | null;
}

export interface PoolView extends PoolRecord {
  databaseCount: number;
  usedBytes: number;
}

export class ServerService {
  /** Set when the server has a vault; restores and policies need it. */
  backup: BackupService | undefined;
  /** Geo-replication: secondaries, links, failover. */
  replication: ReplicationManager | undefined;
  defaultRetentionDays = 7;

  constructor(
    readonly dataDir: string,
    readonly store: MetaStore,
    readonly host: DatabaseHost,
    readonly operations: OperationManager,
  ) {
    operations.register('restoreDatabase', async (ctx) => this.runRestoreOp(ctx));
    operations.register('verifyBackup', async (ctx) => {
      const rec = this.requireDatabase(ctx.op.database!);
      const r = await this.backup!.verifyDatabaseBackup(rec, ctx.signal, (f) => ctx.progress(f * 95));
      if (r.error !== null) throw new GeodrError('INTEGRITY_CHECK_FAILED', `the latest backup does not restore: ${r.error}`, { database: rec.name });
      return { database: rec.name, restoredTxid: r.txid };
    });
    operations.register('verifyDatabase', async (ctx) => this.runVerify(ctx.op, (p) => ctx.progress(p), () => ctx.checkCancelled()));
  }

  /** Finishes drops a crash interrupted between moving the files and updating the store. */
  recover(): void {
    for (const d of this.store.listDatabases()) {
      if (d.dbId === '') {
        // A database created before the store kept engine ids: read it from its meta.json.
        const meta = readMeta(new NodeFs(), this.host.paths(d.id).stateDir);
        if (meta !== undefined) this.store.setDbId(d.name, meta.dbId);
      }
      const p = this.host.paths(d.id);
      const dropped = path.join(this.dataDir, 'dropped', d.id);
      if (!fs.existsSync(p.dir) && fs.existsSync(dropped)) this.recordDrop(d, dropped);
    }
  }

  // Pools

  ensurePool(name: string): void {
    if (this.store.getPool(name) === undefined) this.putPool(name, {});
  }

  listPools(): PoolView[] {
    return this.store.listPools().map((p) => this.poolView(p));
  }

  getPool(name: string): PoolView {
    return this.poolView(this.requirePool(name));
  }

  /** Creates or updates a pool; returns it and whether it was created. */
  putPool(name: string, settings: PoolSettings): { pool: PoolView; created: boolean } {
    validateName('pool', name);
    const existing = this.store.getPool(name);
    const next: PoolRecord = {
      name,
      maxDatabases: settings.maxDatabases ?? existing?.maxDatabases ?? POOL_DEFAULTS.maxDatabases,
      maxConcurrentOperations: settings.maxConcurrentOperations ?? existing?.maxConcurrentOperations ?? POOL_DEFAULTS.maxConcurrentOperations,
      storageQuotaBytes: settings.storageQuotaBytes ?? existing?.storageQuotaBytes ?? POOL_DEFAULTS.storageQuotaBytes,
      createdAt: existing?.createdAt ?? Date.now(),
    };
    if (existing !== undefined) {
      const count = this.store.countDatabases(name);
      if (next.maxDatabases < count) {
        throw new GeodrError('CONFLICT', `pool ${name} holds ${count} databases; maxDatabases cannot go below that`, { details: { pool: name } });
      }
      const used = this.host.poolUsedBytes(name);
      if (next.storageQuotaBytes > 0 && next.storageQuotaBytes < used) {
        throw new GeodrError('CONFLICT', `pool ${name} already uses ${used} bytes; storageQuotaBytes cannot go below that`, { details: { pool: name } });
      }
    }
    this.store.putPool(next);
    if (existing !== undefined && existing.storageQuotaBytes !== next.storageQuotaBytes) {
      // Open databases re-apply the quota on their next write.
      for (const t of this.host.openTenants()) if (t.record.pool === name) t.appliedMaxPages = -1;
    }
    return { pool: this.poolView(next), created: existing === undefined };
  }

  deletePool(name: string, defaultPool: string): void {
    this.requirePool(name);
    if (name === defaultPool) throw new GeodrError('CONFLICT', `pool ${name} is the server's default pool`, { details: { pool: name } });
    const count = this.store.countDatabases(name);
    if (count > 0) throw new GeodrError('CONFLICT', `pool ${name} still holds ${count} database(s); move or delete them first`, { details: { pool: name } });
    this.store.deletePool(name);
  }

  requirePoolRecord(name: string): PoolRecord {
    return this.requirePool(name);
  }

  private requirePool(name: string): PoolRecord {
    validateName('pool', name);
    const p = this.store.getPool(name);
    if (p === undefined) throw new GeodrError('NOT_FOUND', `elastic pool ${JSON.stringify(name)} does not exist`, { details: { pool: name } });
    return p;
  }

  private poolView(p: PoolRecord): PoolView {
    return { ...p, databaseCount: this.store.countDatabases(p.name), usedBytes: this.host.poolUsedBytes(p.name) };
  }

  checkPoolRoom(pool: PoolRecord, extraBytes: number): void {
    this.checkRoom(pool, extraBytes);
  }

  private checkRoom(pool: PoolRecord, extraBytes: number): void {
    const count = this.store.countDatabases(pool.name);
    if (count >= pool.maxDatabases) {
      throw new GeodrError('QUOTA_EXCEEDED', `pool ${pool.name} already holds its maximum of ${pool.maxDatabases} databases`, { details: { pool: pool.name } });
    }
    if (pool.storageQuotaBytes > 0 && this.host.poolUsedBytes(pool.name) + extraBytes > pool.storageQuotaBytes) {
      throw new GeodrError('QUOTA_EXCEEDED', `pool ${pool.name} has no room for ${extraBytes} more bytes under its ${pool.storageQuotaBytes}-byte quota`, { details: { pool: pool.name } });
    }
  }

  // Databases

  listDatabases(pool?: string): DatabaseView[] {
    if (pool !== undefined) this.requirePool(pool);
    return this.store.listDatabases(pool).map((d) => this.view(d));
  }

  getDatabase(name: string): DatabaseView {
    return this.view(this.requireDatabase(name));
  }

  requireDatabase(name: string): DatabaseRecord {
    validateName('database', name);
    const d = this.store.getDatabase(name);
    if (d === undefined) throw new GeodrError('NOT_FOUND', `database ${JSON.stringify(name)} does not exist`, { database: name });
    return d;
  }

  createDatabase(name: string, opts: CreateOptions): { view: DatabaseView; created: boolean } | { operation: OperationRecord } {
    validateName('database', name);
    const mode = opts.createMode ?? 'Default';
    if (!(CREATE_MODES as readonly string[]).includes(mode)) {
      throw new GeodrError('INVALID_ARGUMENT', `createMode ${JSON.stringify(mode)} is not one of ${CREATE_MODES.join(', ')}`, { database: name });
    }
    if (mode === 'Copy' || mode === 'Secondary') {
      if (this.replication === undefined) throw new GeodrError('UNSUPPORTED', `createMode ${mode} needs geo-replication, which this server does not run`, { database: name });
      return { operation: this.replication.createSecondary(name, { pool: opts.pool, sourceServer: opts.sourceServer, sourceDatabaseName: opts.sourceDatabaseName, copy: mode === 'Copy', linkId: opts.linkId }) };
    }
    if (mode !== 'Default') return { operation: this.submitRestore(name, mode as CreateMode, opts) };
    const existing = this.store.getDatabase(name);
    if (existing !== undefined) {
      // PUT is idempotent: repeating the same create (a retry after a lost response) succeeds.
      if (existing.pool === opts.pool && existing.createMode === mode) return { view: this.view(existing), created: false };
      throw new GeodrError('CONFLICT', `database ${name} already exists in pool ${existing.pool}; use PATCH to move it`, { database: name });
    }
    const pool = this.requirePool(opts.pool);
    this.checkRoom(pool, 0);
    const rec = this.newRecord(name, pool.name, mode);
    // Files first, then the record: a crash in between leaves an unreferenced directory,
    // never a record without files.
    const made = this.host.createFiles(rec);
    Object.assign(rec, { dbId: made.dbId, checksum: made.checksum, sizeBytes: made.sizeBytes });
    this.store.insertDatabase(rec);
    this.backup?.markConfigChanged();
    return { view: this.view(rec), created: true };
  }

  /** A new primary's record; its files get a fresh directory id. */
  newRecord(name: string, pool: string, createMode: string): DatabaseRecord {
    return {
      name,
      id: randomUUID(),
      pool,
      role: 'primary',
      createMode,
      createdAt: Date.now(),
      sizeBytes: 0,
      txid: 0,
      checksum: '',
      epoch: 1,
      lastWriteTime: 0,
      dbId: '',
      shippedTxid: 0,
      retentionDays: this.defaultRetentionDays,
      ltr: null,
      verifiedAt: 0,
      verifiedTxid: 0,
      verifiedError: null,
      epochs: [],
      fencedBy: null,
    };
  }

  /**
   * Restore modes create the database from backups, as a queued operation:
   * PointInTimeRestore (a database of this server, to a time or TXID in its window),
   * Restore (a deleted one), RestoreLongTermRetentionBackup, and Recovery (geo-restore:
   * a database of the paired region, from this region's copy of its backups).
   */
  private submitRestore(name: string, mode: CreateMode, opts: CreateOptions): OperationRecord {
    if (this.backup === undefined) throw new GeodrError('UNSUPPORTED', 'this server has no backup vault', { database: name });
    if (this.store.getDatabase(name) !== undefined) throw new GeodrError('CONFLICT', `database ${name} already exists`, { database: name });
    const pending = this.operations.list({ state: 'Pending' }).concat(this.operations.list({ state: 'InProgress' }));
    if (pending.some((o) => o.kind === 'restoreDatabase' && o.params.name === name)) {
      throw new GeodrError('CONFLICT', `a restore into ${name} is already under way`, { database: name });
    }
    const pool = this.requirePool(opts.pool);
    this.checkRoom(pool, 0);
    let sourceDbId: string;
    if (mode === 'PointInTimeRestore' && opts.bySourceId === true) {
      sourceDbId = opts.sourceDatabaseId!;
    } else if (mode === 'PointInTimeRestore' && opts.sourceDatabaseName === undefined && opts.sourceDatabaseId !== undefined) {
      // A database of another server of the region: its backups are in the shared vault.
      sourceDbId = opts.sourceDatabaseId;
      if (!/^[0-9a-f]{32}$/.test(sourceDbId)) throw new GeodrError('INVALID_ARGUMENT', `sourceDatabaseId ${JSON.stringify(sourceDbId)} is not a database id (32 hex digits)`, { database: name });
    } else if (mode === 'PointInTimeRestore') {
      if (opts.sourceDatabaseName === undefined) throw new GeodrError('INVALID_ARGUMENT', 'PointInTimeRestore needs sourceDatabaseName (a database of this server) or sourceDatabaseId (any database in the region vault)', { database: name });
      sourceDbId = this.requireDatabase(opts.sourceDatabaseName).dbId;
    } else {
      if (opts.sourceDatabaseId === undefined) throw new GeodrError('INVALID_ARGUMENT', `${mode} needs sourceDatabaseId (from restorableDroppedDatabases, recoverableDatabases or longTermRetentionBackups)`, { database: name });
      const dropped = this.store.listDropped().find((d) => d.id === opts.sourceDatabaseId || d.dbId === opts.sourceDatabaseId);
      if (mode === 'Restore' && dropped === undefined) throw new GeodrError('NOT_FOUND', `no dropped database ${opts.sourceDatabaseId}`, { database: name });
      sourceDbId = dropped?.dbId ?? opts.sourceDatabaseId;
      if (!/^[0-9a-f]{32}$/.test(sourceDbId)) throw new GeodrError('INVALID_ARGUMENT', `sourceDatabaseId ${JSON.stringify(sourceDbId)} is not a database id (32 hex digits)`, { database: name });
    }
    if (opts.restorePointInTime !== undefined && opts.restorePointTxid !== undefined) {
      throw new GeodrError('INVALID_ARGUMENT', 'give restorePointInTime or restorePointTxid, not both', { database: name });
    }
    let target: { txid: number } | { time: number } | 'latest' = 'latest';
    if (opts.restorePointTxid !== undefined) target = { txid: opts.restorePointTxid };
    if (opts.restorePointInTime !== undefined) {
      const t = Date.parse(opts.restorePointInTime);
      if (!Number.isFinite(t)) throw new GeodrError('INVALID_ARGUMENT', `restorePointInTime ${JSON.stringify(opts.restorePointInTime)} is not an ISO-8601 time`, { database: name });
      target = { time: t };
    }
    if (mode === 'PointInTimeRestore' && target === 'latest') target = { time: Date.now() };
    if (mode === 'RestoreLongTermRetentionBackup' && opts.restorePointTxid === undefined) {
      throw new GeodrError('INVALID_ARGUMENT', 'RestoreLongTermRetentionBackup needs restorePointTxid (a long-term backup)', { database: name });
    }
    return this.operations.submit({
      kind: 'restoreDatabase',
      database: name,
      pool: pool.name,
      params: { name, pool: pool.name, createMode: mode, sourceDbId, target, useLtr: mode === 'RestoreLongTermRetentionBackup' },
    });
  }

  private async runRestoreOp(ctx: OperationContext): Promise<Record<string, unknown>> {
    const params = ctx.op.params as { name: string; pool: string; createMode: string };
    const done = this.store.getDatabase(params.name);
    if (done !== undefined && done.createMode === params.createMode) return { database: params.name, alreadyRestored: true };
    return this.backup!.runRestore(ctx, async (file, summary) => {
      if (this.store.getDatabase(params.name) !== undefined) throw new GeodrError('CONFLICT', `database ${params.name} was created meanwhile`, { database: params.name });
      const pool = this.requirePool(params.pool);
      this.checkRoom(pool, fs.statSync(file).size);
      const rec = this.newRecord(params.name, pool.name, params.createMode);
      const made = this.host.adoptFile(rec, file);
      Object.assign(rec, { dbId: made.dbId, checksum: made.checksum, sizeBytes: made.sizeBytes });
      this.store.insertDatabase(rec);
      this.host.noteSize(rec.name, pool.name, rec.sizeBytes);
      this.backup?.markConfigChanged();
      return { ...summary, database: rec.name, dbId: rec.dbId };
    });
  }

  async deleteDatabase(name: string): Promise<DroppedRecord> {
    const rec = this.requireDatabase(name);
    await this.replication?.beforeRemoval(name, 'delete');
    return this.host.withExclusive(name, () => {
      const p = this.host.paths(rec.id);
      const dropped = path.join(this.dataDir, 'dropped', rec.id);
      fs.mkdirSync(path.dirname(dropped), { recursive: true });
      // A secondary whose seeding never finished has no files yet.
      fs.mkdirSync(p.dir, { recursive: true });
      fs.renameSync(p.dir, dropped);
      return this.recordDrop(this.store.getDatabase(name) ?? rec, dropped);
    });
  }

  private recordDrop(rec: DatabaseRecord, location: string): DroppedRecord {
    const d: DroppedRecord = {
      id: rec.id,
      name: rec.name,
      pool: rec.pool,
      createdAt: rec.createdAt,
      droppedAt: Date.now(),
      location: path.relative(this.dataDir, location),
      txid: rec.txid,
      dbId: rec.dbId,
      retentionDays: rec.retentionDays,
    };
    void this.backup?.describe(rec, d.droppedAt);
    this.store.transaction(() => {
      this.store.insertDropped(d);
      this.store.deleteDatabase(rec.name);
    });
    this.host.retrack(rec.name, rec.pool, undefined);
    return d;
  }

  listDropped(): DroppedRecord[] {
    return this.store.listDropped();
  }

  async renameDatabase(name: string, newName: string): Promise<DatabaseView> {
    const rec = this.requireDatabase(name);
    validateName('database', newName);
    if (this.store.getDatabase(newName) !== undefined) throw new GeodrError('CONFLICT', `database ${newName} already exists`, { database: newName });
    await this.replication?.beforeRemoval(name, 'rename');
    await this.host.withExclusive(name, () => {
      this.store.renameDatabase(name, newName);
      this.host.retrack(name, rec.pool, rec.pool, newName);
    });
    void this.backup?.describe(this.requireDatabase(newName));
    return this.getDatabase(newName);
  }

  async moveDatabase(name: string, poolName: string): Promise<DatabaseView> {
    const rec = this.requireDatabase(name);
    const pool = this.requirePool(poolName);
    if (rec.pool === pool.name) return this.view(rec);
    this.checkRoom(pool, this.host.sizeOf(name));
    await this.host.withExclusive(name, () => {
      this.store.setDatabasePool(name, pool.name);
      this.host.retrack(name, rec.pool, pool.name);
    });
    void this.backup?.describe(this.requireDatabase(name));
    return this.getDatabase(name);
  }

  getRetention(name: string): { retentionDays: number; ltr: LtrPolicy | null } {
    const rec = this.requireDatabase(name);
    return { retentionDays: rec.retentionDays, ltr: rec.ltr };
  }

  setShortTermRetention(name: string, retentionDays: number): { retentionDays: number } {
    const rec = this.requireDatabase(name);
    if (!Number.isInteger(retentionDays) || retentionDays < 1 || retentionDays > 35) {
      throw new GeodrError('INVALID_ARGUMENT', `retentionDays must be an integer from 1 to 35, got ${retentionDays}`, { database: name });
    }
    this.store.setRetention(name, retentionDays, rec.ltr);
    void this.backup?.describe(this.requireDatabase(name));
    return { retentionDays };
  }

  setLongTermRetention(name: string, ltr: LtrPolicy | null): LtrPolicy | null {
    const rec = this.requireDatabase(name);
    if (ltr !== null) {
      for (const v of [ltr.weekly, ltr.monthly, ltr.yearly]) if (v !== null) durationMs(v);
      if (!Number.isInteger(ltr.weekOfYear) || ltr.weekOfYear < 1 || ltr.weekOfYear > 52) {
        throw new GeodrError('INVALID_ARGUMENT', `weekOfYear must be from 1 to 52, got ${ltr.weekOfYear}`, { database: name });
      }
      const years = ltr.yearly === null ? 0 : durationMs(ltr.yearly) / (365 * 86_400_000);
      if (years > 10) throw new GeodrError('INVALID_ARGUMENT', 'long-term retention is at most 10 years (P10Y)', { database: name });
    }
    this.store.setRetention(name, rec.retentionDays, ltr);
    void this.backup?.describe(this.requireDatabase(name));
    return ltr;
  }

  verifyBackup(name: string): OperationRecord {
    const rec = this.requireDatabase(name);
    if (this.backup === undefined) throw new GeodrError('UNSUPPORTED', 'this server has no backup vault', { database: name });
    return this.operations.submit({ kind: 'verifyBackup', database: name, pool: rec.pool });
  }

  /** Restores every database of a restore point to its TXID, as `<name><suffix>`. */
  async restoreRestorePoint(pointName: string, suffix: string, pool: string | undefined): Promise<OperationRecord[]> {
    validateName('restore point', pointName);
    const point = await this.backup!.getRestorePoint(pointName);
    const plans = point.databases.map((d) => {
      const target = `${d.name}${suffix}`;
      validateName('database', target);
      if (this.store.getDatabase(target) !== undefined) throw new GeodrError('CONFLICT', `database ${target} already exists`, { database: target });
      return { d, target };
    });
    return plans.map(({ d, target }) =>
      this.submitRestore(target, 'PointInTimeRestore', { pool: pool ?? this.store.getDatabase(d.name)?.pool ?? 'default', sourceDatabaseId: d.dbId, restorePointTxid: d.txid, bySourceId: true }),
    );
  }

  verifyDatabase(name: string): OperationRecord {
    const rec = this.requireDatabase(name);
    return this.operations.submit({ kind: 'verifyDatabase', database: name, pool: rec.pool });
  }

  private async runVerify(op: OperationRecord, progress: (p: number) => void, checkCancelled: () => void): Promise<Record<string, unknown>> {
    const name = op.database!;
    const replica = this.replication?.replica(name);
    if (replica !== undefined) {
      // A geo-secondary: its file against its applied position, then SQLite's own check.
      progress(5);
      const checksum = replica.verify();
      progress(50);
      integrityCheck(replica.file, name, replica.txid);
      return { txid: replica.txid, checksum: checksumHex(checksum), integrity: 'ok', role: 'secondary' };
    }
    return this.host.use(name, async (t) => {
      progress(5);
      checkCancelled();
      const checksum = t.db.verify();
      progress(50);
      await new Promise((r) => setImmediate(r));
      checkCancelled();
      integrityCheck(t.db.file, name, t.db.txid);
      progress(95);
      return { txid: t.db.txid, checksum: checksumHex(checksum), integrity: 'ok' };
    });
  }

  view(d: DatabaseRecord): DatabaseView {
    let live = { sizeBytes: d.sizeBytes, txid: d.txid, checksum: d.checksum, epoch: d.epoch, lastWriteTime: d.lastWriteTime };
    const open = this.host.peek(d.name);
    const replica = this.replication?.replica(d.name);
    if (open !== undefined) {
      const st = open.db.status();
      live = { sizeBytes: st.pageCount * st.pageSize, txid: st.txid, checksum: st.checksum, epoch: st.epoch, lastWriteTime: st.lastWriteTime };
    } else if (replica !== undefined) {
      const pos = replica.position;
      live = { sizeBytes: pos.pageCount * replica.pageSize, txid: pos.txid, checksum: checksumHex(pos.checksum), epoch: pos.epoch, lastWriteTime: pos.timestamp };
    }
    return {
      name: d.name,
      id: d.id,
      dbId: d.dbId,
      pool: d.pool,
      role: d.role,
      status: d.role === 'secondary' && replica === undefined ? 'Seeding' : d.fencedBy !== null ? 'Fenced' : 'Online',
      createMode: d.createMode,
      createdAt: new Date(d.createdAt).toISOString(),
      sizeBytes: live.sizeBytes,
      txid: live.txid,
      checksum: live.checksum,
      epoch: live.epoch,
      lastWriteTime: live.lastWriteTime > 0 ? new Date(live.lastWriteTime).toISOString() : null,
      retentionDays: d.retentionDays,
      lastVerifiedRestore: d.verifiedAt > 0 ? { time: new Date(d.verifiedAt).toISOString(), txid: d.verifiedTxid, error: d.verifiedError } : null,
    };
  }
}
