/**
 * The management logic behind the API: elastic pools, databases, and operations.
 * HTTP handlers validate shapes and call in here; everything that changes state
 * checks its preconditions first, so a refused request changes nothing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GeodrError } from '../errors.js';
import { checksumHex, integrityCheck } from '../engine/index.js';
import { randomUUID } from 'node:crypto';
import { DatabaseHost } from './host.js';
import { validateName } from './names.js';
import { OperationManager } from './operations.js';
import type { DatabaseRecord, DroppedRecord, MetaStore, OperationRecord, PoolRecord } from './store.js';

export const CREATE_MODES = ['Default', 'Copy', 'Secondary', 'PointInTimeRestore', 'Restore', 'Recovery', 'RestoreLongTermRetentionBackup'] as const;
export type CreateMode = (typeof CREATE_MODES)[number];

export interface PoolSettings {
  maxDatabases?: number | undefined;
  maxConcurrentOperations?: number | undefined;
  storageQuotaBytes?: number | undefined;
}

export const POOL_DEFAULTS = { maxDatabases: 10_000, maxConcurrentOperations: 2, storageQuotaBytes: 0 };

export interface DatabaseView {
  name: string;
  id: string;
  pool: string;
  role: string;
  status: 'Online';
  createMode: string;
  createdAt: string;
  sizeBytes: number;
  txid: number;
  checksum: string;
  epoch: number;
  lastWriteTime: string | null;
}

export interface PoolView extends PoolRecord {
  databaseCount: number;
  usedBytes: number;
}

export class ServerService {
  constructor(
    readonly dataDir: string,
    readonly store: MetaStore,
    readonly host: DatabaseHost,
    readonly operations: OperationManager,
  ) {
    operations.register('verifyDatabase', async (ctx) => this.runVerify(ctx.op, (p) => ctx.progress(p), () => ctx.checkCancelled()));
  }

  /** Finishes drops a crash interrupted between moving the files and updating the store. */
  recover(): void {
    for (const d of this.store.listDatabases()) {
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

  private requirePool(name: string): PoolRecord {
    validateName('pool', name);
    const p = this.store.getPool(name);
    if (p === undefined) throw new GeodrError('NOT_FOUND', `elastic pool ${JSON.stringify(name)} does not exist`, { details: { pool: name } });
    return p;
  }

  private poolView(p: PoolRecord): PoolView {
    return { ...p, databaseCount: this.store.countDatabases(p.name), usedBytes: this.host.poolUsedBytes(p.name) };
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

  createDatabase(name: string, opts: { pool: string; createMode?: string | undefined }): { view: DatabaseView; created: boolean } {
    validateName('database', name);
    const mode = opts.createMode ?? 'Default';
    if (!(CREATE_MODES as readonly string[]).includes(mode)) {
      throw new GeodrError('INVALID_ARGUMENT', `createMode ${JSON.stringify(mode)} is not one of ${CREATE_MODES.join(', ')}`, { database: name });
    }
    if (mode !== 'Default') {
      throw new GeodrError('UNSUPPORTED', `createMode ${mode} is not available on this server yet; only Default is`, { database: name });
    }
    const existing = this.store.getDatabase(name);
    if (existing !== undefined) {
      // PUT is idempotent: repeating the same create (a retry after a lost response) succeeds.
      if (existing.pool === opts.pool && existing.createMode === mode) return { view: this.view(existing), created: false };
      throw new GeodrError('CONFLICT', `database ${name} already exists in pool ${existing.pool}; use PATCH to move it`, { database: name });
    }
    const pool = this.requirePool(opts.pool);
    this.checkRoom(pool, 0);
    const rec: DatabaseRecord = {
      name,
      id: randomUUID(),
      pool: pool.name,
      role: 'primary',
      createMode: mode,
      createdAt: Date.now(),
      sizeBytes: 0,
      txid: 0,
      checksum: '',
      epoch: 1,
      lastWriteTime: 0,
    };
    // Files first, then the record: a crash in between leaves an unreferenced directory,
    // never a record without files.
    this.host.createFiles(rec);
    this.store.insertDatabase(rec);
    return { view: this.view(rec), created: true };
  }

  async deleteDatabase(name: string): Promise<DroppedRecord> {
    const rec = this.requireDatabase(name);
    return this.host.withExclusive(name, () => {
      const p = this.host.paths(rec.id);
      const dropped = path.join(this.dataDir, 'dropped', rec.id);
      fs.mkdirSync(path.dirname(dropped), { recursive: true });
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
    };
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
    await this.host.withExclusive(name, () => {
      this.store.renameDatabase(name, newName);
      this.host.retrack(name, rec.pool, rec.pool, newName);
    });
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
    return this.getDatabase(name);
  }

  verifyDatabase(name: string): OperationRecord {
    const rec = this.requireDatabase(name);
    return this.operations.submit({ kind: 'verifyDatabase', database: name, pool: rec.pool });
  }

  private async runVerify(op: OperationRecord, progress: (p: number) => void, checkCancelled: () => void): Promise<Record<string, unknown>> {
    const name = op.database!;
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
    const open = this.host.openTenants().find((t) => t.name === d.name);
    if (open !== undefined) {
      const st = open.db.status();
      live = { sizeBytes: st.pageCount * st.pageSize, txid: st.txid, checksum: st.checksum, epoch: st.epoch, lastWriteTime: st.lastWriteTime };
    }
    return {
      name: d.name,
      id: d.id,
      pool: d.pool,
      role: d.role,
      status: 'Online',
      createMode: d.createMode,
      createdAt: new Date(d.createdAt).toISOString(),
      sizeBytes: live.sizeBytes,
      txid: live.txid,
      checksum: live.checksum,
      epoch: live.epoch,
      lastWriteTime: live.lastWriteTime > 0 ? new Date(live.lastWriteTime).toISOString() : null,
    };
  }
}
