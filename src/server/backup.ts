/**
 * The server's side of continuous backup: ships every open primary's records to the
 * region's vault (src/vault/shipper.ts), keeps databases with unshipped records open,
 * catches up after a restart, copies shipped objects to the paired region's vault (GRS),
 * applies short- and long-term retention, backs up the server configuration, and runs
 * restores (point in time, dropped, long-term, geo) as operations.
 *
 * Geo-replication: a database whose record says `role: 'secondary'` is backed up by its
 * primary's server, never here (no shipping, catch-up, verification, retention or long-term
 * copies). A promotion calls {@link BackupService.beginEpoch}, which writes the new epoch's
 * marker and starts the new lineage; a primary that finds a newer epoch in its vault stops
 * shipping and tells {@link BackupService.onStaleEpoch} listeners.
 */

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { GeodrError, isGeodrError } from '../errors.js';
import { checksumHex } from '../engine/index.js';
import { AzureVault } from '../vault/azure.js';
import { CodecVault } from '../vault/codec.js';
import { FsVault } from '../vault/fs.js';
import { GeoCopier, gapFreeRecordsTxid } from '../vault/geo.js';
import { loadKeyring } from '../vault/keys.js';
import { configKey, ltrKey, restorePointKey, type DatabaseDescriptor } from '../vault/layout.js';
import { chooseLineage } from '../vault/lineage.js';
import { readDescriptor, readHistory, restoreFromVault, restorePoints, type RestorePoints, type VaultTarget } from '../vault/restore.js';
import { planRetention } from '../vault/retention.js';
import { Shipper } from '../vault/shipper.js';
import type { Vault } from '../vault/vault.js';
import type { ServerConfig, VaultSpec } from './config.js';
import type { DatabaseHost, Tenant } from './host.js';
import type { OperationContext } from './operations.js';
import type { DatabaseRecord, LtrPolicy, MetaStore } from './store.js';

/** Called when this server's primary of a database is deposed: the vault holds a newer epoch. */
export type StaleEpochListener = (database: string, newerEpoch: number) => void;

export async function openRawVault(spec: VaultSpec): Promise<Vault> {
  if (spec.type === 'fs') {
    fs.mkdirSync(spec.path, { recursive: true });
    return new FsVault(spec.path);
  }
  return AzureVault.open({ connectionString: spec.connectionString, container: spec.container, createContainer: true });
}

export interface RestorePointRecord {
  format: 1;
  name: string;
  takenAt: string;
  server: string;
  databases: Array<{ name: string; dbId: string; txid: number }>;
}

export interface BackupStatus {
  vault: string;
  shippedTxid: number;
  /** Records committed locally that the vault does not hold yet. */
  unshippedRecords: number;
  /** Commit time of the last record in the vault. */
  lastShippedCommitTime: string | null;
  /** Estimated loss if the region were lost now: time since the oldest unshipped commit, or 0. */
  estimatedDataLossSeconds: number;
  geo: { vault: string; lastCopiedKey: string | null; lastCopiedAt: string | null; pending: number; copiedTxid: number } | null;
  failures: number;
  halted: string | null;
}

export class BackupService {
  readonly shipper: Shipper;
  private copier: GeoCopier | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retentionTimer: NodeJS.Timeout | undefined;
  private verifyTimer: NodeJS.Timeout | undefined;
  private readonly catchUp = new Set<string>();
  private readonly staleListeners = new Set<StaleEpochListener>();
  /** Engine id → database name, learnt at every shipment (fencing is reported by id). */
  private readonly names = new Map<string, string>();
  private ticking = false;
  private configDirty = true;

  private constructor(
    private readonly config: ServerConfig,
    private readonly store: MetaStore,
    private readonly host: DatabaseHost,
    private readonly logger: Logger,
    /** The region's vault as stored bytes (for geo-copy) and decoded (for everything else). */
    readonly rawVault: Vault,
    readonly vault: Vault,
    readonly pairedRawVault: Vault | undefined,
  ) {
    this.shipper = new Shipper({
      vault,
      intervalMs: config.backup.shipIntervalMs,
      snapshotEveryRecords: config.backup.snapshotEveryRecords,
      snapshotIntervalMs: config.backup.snapshotIntervalMs,
      onPut: (key) => this.copier?.notify(key),
      onError: (e, dbId) => this.logger.warn({ err: e, dbId }, 'backup shipping failed; will retry'),
      origin: { server: config.name, region: config.region },
      onFenced: (dbId, epoch) => this.fenced(dbId, epoch),
    });
    if (pairedRawVault !== undefined) {
      // Everything the region's vault holds is copied: data, descriptors, configuration, restore points.
      this.copier = new GeoCopier({ source: rawVault, target: pairedRawVault, prefix: '', onError: (e: unknown, key: string) => this.logger.warn({ err: e, key }, 'geo-copy failed; will retry') });
    }
  }

  static async open(config: ServerConfig, store: MetaStore, host: DatabaseHost, logger: Logger): Promise<BackupService> {
    const raw = await openRawVault(config.vault ?? { type: 'fs', path: path.join(config.dataDir, 'vault') });
    const keyring = loadKeyring({ file: config.backup.keyFile, env: process.env });
    const vault = new CodecVault(raw, { compression: config.backup.compression, keyring });
    const paired = config.pairedVault === undefined ? undefined : await openRawVault(config.pairedVault);
    return new BackupService(config, store, host, logger, raw, vault, paired);
  }

  start(): void {
    for (const d of this.store.listDatabases()) if (d.role !== 'secondary' && (d.txid > d.shippedTxid || d.shippedTxid === 0)) this.catchUp.add(d.name);
    this.copier?.start();
    this.timer = setInterval(() => void this.tick(), Math.max(25, Math.floor(this.config.backup.shipIntervalMs / 2)));
    this.timer.unref();
    this.retentionTimer = setInterval(() => void this.applyRetention().catch((e: unknown) => this.logger.warn({ err: e }, 'retention pass failed')), this.config.backup.retentionEveryMs);
    this.retentionTimer.unref();
    if (this.config.backup.verifyEveryMs > 0) {
      this.verifyTimer = setInterval(() => void this.verifyNext().catch((e: unknown) => this.logger.warn({ err: e }, 'backup verification failed to run')), this.config.backup.verifyEveryMs);
      this.verifyTimer.unref();
    }
  }

  /** True while the database must stay open: its durable records are not all in the vault. */
  mustStayOpen(t: Tenant): boolean {
    if (t.record.role === 'secondary' || t.record.fencedBy != null) return this.shipper.isSnapshotting(t.db.dbId);
    return this.shipper.hasUnshipped(t.db) || this.shipper.isSnapshotting(t.db.dbId);
  }

  /**
   * Registers a listener for deposed primaries: called with the database's name and the newer
   * epoch when shipping finds the vault holds one (after which nothing more is shipped for
   * it). Listeners must not throw (a throw is logged). Returns an unsubscribe function.
   */
  onStaleEpoch(listener: StaleEpochListener): () => void {
    this.staleListeners.add(listener);
    return () => this.staleListeners.delete(listener);
  }

  private fenced(dbId: string, epoch: number): void {
    const name = this.names.get(dbId) ?? this.store.listDatabases().find((d) => d.dbId === dbId)?.name;
    this.logger.warn({ dbId, database: name, newerEpoch: epoch }, 'backup shipping stopped: the vault holds a newer epoch of this database (this primary was deposed)');
    if (name === undefined) return;
    this.catchUp.delete(name);
    for (const l of this.staleListeners) {
      try {
        l(name, epoch);
      } catch (e) {
        this.logger.error({ err: e, database: name }, 'a stale-epoch listener failed');
      }
    }
  }

  /**
   * Called right after a database of this server became primary at a new epoch (promotion):
   * writes the epoch's marker to this server's vault — from then on every older primary's
   * shipping stops as soon as it sees it — and makes the next shipment start the new lineage
   * with the promotion snapshot, then the new records. Idempotent: a call repeated after a
   * crash finds the same marker. STALE_EPOCH when the vault holds a newer epoch or another
   * server began this one; INVALID_ARGUMENT for a database at epoch 1; NOT_FOUND for an
   * unknown name.
   */
  async beginEpoch(name: string): Promise<void> {
    const rec = this.store.getDatabase(name);
    if (rec === undefined) throw new GeodrError('NOT_FOUND', `database ${JSON.stringify(name)} does not exist`, { database: name });
    const marker = await this.host.use(name, async (t) => {
      this.names.set(t.db.dbId, name);
      return this.shipper.beginEpoch(t.db);
    });
    this.logger.info({ database: name, epoch: marker.epoch, startTxid: marker.startTxid }, 'epoch begun in the vault');
    // Shipped at the next tick even if the database closes before it.
    this.catchUp.add(name);
    await this.describe(this.store.getDatabase(name) ?? rec);
  }

  /**
   * True when this server must not ship the database: the store (which replication keeps
   * current; an open tenant's record may be older) says it is a secondary, or a primary
   * that replication already knows was deposed.
   */
  private notShipped(name: string): boolean {
    const rec = this.store.getDatabase(name);
    return rec === undefined || rec.role === 'secondary' || rec.fencedBy != null;
  }

  private geoSecondary(rec: Pick<DatabaseRecord, 'name'>, what: string): GeodrError {
    return new GeodrError('CONFLICT', `database ${JSON.stringify(rec.name)} is a geo-secondary: ${what} are its primary's; the primary's server holds the backups`, { database: rec.name });
  }

  /** Ships one open database unless it is a secondary; the role is read from the store only when there is something to ship. */
  private async shipTenant(t: Tenant): Promise<void> {
    if (!t.db.isOpen || t.record.role === 'secondary') return;
    if (this.shipper.hasUnshipped(t.db) && this.notShipped(t.name)) return;
    this.names.set(t.db.dbId, t.name);
    await this.shipper.ship(t.db, () => this.descriptor(t.record));
  }

  markConfigChanged(): void {
    this.configDirty = true;
  }

  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      const shipped: Array<[string, number]> = [];
      const tenants = this.host.openTenants();
      await Promise.all(
        tenants.map(async (t) => {
          if (!t.db.isOpen || t.record.role === 'secondary') return;
          await this.shipTenant(t);
          const st = this.shipper.state(t.db.dbId);
          if (st === undefined || st.epoch !== t.db.epoch) return;
          if (st.shippedTxid > t.record.shippedTxid) shipped.push([t.name, st.shippedTxid]);
          if (t.db.durableTxid <= st.shippedTxid || st.halted !== undefined) this.catchUp.delete(t.name);
        }),
      );
      if (shipped.length > 0) {
        this.store.transaction(() => {
          for (const [name, txid] of shipped) this.store.setShippedTxid(name, txid);
        });
        for (const t of tenants) {
          const st = this.shipper.state(t.db.dbId);
          if (st !== undefined) t.record.shippedTxid = Math.max(t.record.shippedTxid, st.shippedTxid);
        }
      }
      // Databases closed with records the vault lacks (a crash, a vault outage): open a few per tick.
      for (const name of [...this.catchUp].slice(0, 8)) {
        const rec = this.store.getDatabase(name);
        if (rec === undefined || rec.role === 'secondary' || rec.fencedBy != null) {
          this.catchUp.delete(name);
          continue;
        }
        try {
          await this.host.use(name, async (t) => {
            await this.shipTenant(t);
            if (this.shipper.state(t.db.dbId)?.halted !== undefined) this.catchUp.delete(name);
          });
        } catch (e) {
          if (!isGeodrError(e, 'UNAVAILABLE')) this.logger.warn({ err: e, database: name }, 'backup catch-up failed');
        }
      }
      if (this.configDirty) await this.backupConfig();
    } catch (e) {
      this.logger.warn({ err: e }, 'backup pass failed');
    } finally {
      this.ticking = false;
    }
  }

  /** Ships everything it can before shutdown, waiting at most `timeoutMs`. */
  async flush(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const t of this.host.openTenants()) {
      if (Date.now() > deadline) break;
      let timer: NodeJS.Timeout | undefined;
      // The timer is cleared, not left to fire: a pending one would hold the process up to `timeoutMs` after shutdown.
      await Promise.race([this.shipTenant(t), new Promise((r) => (timer = setTimeout(r, Math.max(0, deadline - Date.now()))))]).finally(() => clearTimeout(timer));
    }
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.retentionTimer !== undefined) clearInterval(this.retentionTimer);
    if (this.verifyTimer !== undefined) clearInterval(this.verifyTimer);
    await this.flush(5000);
    await this.shipper.idle();
    await this.copier?.stop();
  }

  descriptor(rec: DatabaseRecord, droppedAt?: number): DatabaseDescriptor {
    return {
      format: 1,
      dbId: rec.dbId,
      name: rec.name,
      server: this.config.name,
      region: this.config.region,
      pool: rec.pool,
      pageSize: 4096,
      createdAt: rec.createdAt,
      ...(droppedAt !== undefined ? { droppedAt } : {}),
      retentionDays: rec.retentionDays,
      ltr: rec.ltr,
    };
  }

  /** Records a change of name, pool, policy or a drop in the vault. */
  async describe(rec: DatabaseRecord, droppedAt?: number): Promise<void> {
    this.configDirty = true;
    // A secondary's descriptor is its primary's to write; a deposed primary's would name the wrong server.
    if (rec.role === 'secondary' || this.shipper.state(rec.dbId)?.fencedBy !== undefined) return;
    try {
      await this.shipper.putDescriptor(rec.dbId, this.descriptor(rec, droppedAt));
    } catch (e) {
      this.logger.warn({ err: e, database: rec.name }, 'could not write the database descriptor to the vault');
    }
  }

  /** The server configuration (pools, databases and their settings) as of now, in the vault. */
  private async backupConfig(): Promise<void> {
    this.configDirty = false;
    const snapshot = {
      format: 1,
      server: this.config.name,
      region: this.config.region,
      takenAt: new Date().toISOString(),
      pools: this.store.listPools(),
      databases: this.store.listDatabases().map((d) => ({ name: d.name, dbId: d.dbId, pool: d.pool, role: d.role, retentionDays: d.retentionDays, ltr: d.ltr, createdAt: d.createdAt })),
      limits: this.config.limits,
      backup: { ...this.config.backup, keyFile: this.config.backup.keyFile === undefined ? undefined : '(set)' },
    };
    try {
      await this.shipper.putImmutable(configKey(this.config.name, Date.now()), Buffer.from(JSON.stringify(snapshot, null, 2)));
    } catch (e) {
      this.configDirty = true;
      throw e;
    }
  }

  /**
   * The restore window of a database in this vault (the winning lineage only). Refused
   * (CONFLICT) for a geo-secondary of this server: its backups are its primary's.
   */
  async restorePointsOf(dbId: string): Promise<RestorePoints> {
    const secondary = this.store.listDatabases().find((d) => d.dbId === dbId && d.role === 'secondary');
    if (secondary !== undefined) throw this.geoSecondary(secondary, 'restore points');
    return this.windowOf(dbId);
  }

  private async windowOf(dbId: string): Promise<RestorePoints> {
    return restorePoints(await readHistory(this.vault, dbId));
  }

  status(t: { dbId: string; txid: number }): BackupStatus {
    const st = this.shipper.state(t.dbId);
    const shipped = st?.shippedTxid ?? 0;
    const geo = this.copier?.status().get(`databases/${t.dbId}`);
    const unshipped = Math.max(0, t.txid - shipped);
    return {
      vault: this.vault.name,
      shippedTxid: shipped,
      unshippedRecords: unshipped,
      lastShippedCommitTime: st !== undefined && st.shippedCommitTime > 0 ? new Date(st.shippedCommitTime).toISOString() : null,
      estimatedDataLossSeconds: unshipped > 0 && st !== undefined ? Math.max(0, (Date.now() - st.shippedAt) / 1000) : 0,
      geo:
        this.copier === undefined
          ? null
          : {
              vault: this.pairedRawVault!.name,
              lastCopiedKey: geo?.lastKey ?? null,
              lastCopiedAt: geo !== undefined && geo.lastCopiedAt > 0 ? new Date(geo.lastCopiedAt).toISOString() : null,
              pending: geo?.pending ?? 0,
              copiedTxid: gapFreeRecordsTxid(geo),
            },
      failures: st?.failures ?? 0,
      halted: st?.halted ?? null,
    };
  }

  /** Databases whose backups this region's vault holds although they live elsewhere (geo copies). */
  async recoverableDatabases(): Promise<Array<DatabaseDescriptor & { restorePoints: RestorePoints; estimatedDataLossSeconds: number | null }>> {
    const out = [];
    const seen = new Set<string>();
    for await (const o of this.vault.list('databases/')) {
      const dbId = o.key.split('/')[1]!;
      if (seen.has(dbId)) continue;
      seen.add(dbId);
      const d = await readDescriptor(this.vault, dbId);
      if (d === undefined || d.region === this.config.region) continue;
      const points = await this.windowOf(dbId);
      out.push({ ...d, restorePoints: points, estimatedDataLossSeconds: points.latest === undefined ? null : Math.max(0, (Date.now() - points.latest.time) / 1000) });
    }
    return out;
  }

  /** Long-term backups of a database in this vault. */
  async longTermBackups(dbId: string): Promise<Array<{ txid: number; time: string; kind: string; key: string }>> {
    const h = chooseLineage(await readHistory(this.vault, dbId)).history;
    return h.ltr.map((s) => ({ txid: s.txid, time: new Date(s.time).toISOString(), kind: s.ltr === 'W' ? 'weekly' : s.ltr === 'M' ? 'monthly' : 'yearly', key: s.key }));
  }

  /**
   * Restore operation: builds the database from the vault into a scratch file, verifies
   * it (checksum of the TXID it ends on, integrity_check), then adopts it as a new primary
   * under the requested name. Idempotent: a resumed run starts the download again.
   */
  async runRestore(ctx: OperationContext, finish: (file: string, result: Record<string, unknown>) => Promise<Record<string, unknown>>): Promise<Record<string, unknown>> {
    const p = ctx.op.params as { sourceDbId: string; target: { txid?: number; time?: number } | 'latest'; useLtr?: boolean };
    const scratch = path.join(this.config.dataDir, 'restoring');
    fs.mkdirSync(scratch, { recursive: true });
    const out = path.join(scratch, `${ctx.op.id}.sqlite`);
    for (const f of [out, `${out}.restoring`]) fs.rmSync(f, { force: true });
    const target: VaultTarget = p.target === 'latest' ? 'latest' : p.target.txid !== undefined ? { txid: p.target.txid } : { time: p.target.time! };
    const r = await restoreFromVault({
      vault: this.vault,
      dbId: p.sourceDbId,
      target,
      out,
      scratchDir: scratch,
      useLtr: p.useLtr === true,
      signal: ctx.signal,
      onProgress: (f) => ctx.progress(f * 90),
    });
    ctx.checkCancelled();
    const summary = {
      sourceDbId: p.sourceDbId,
      restoredTxid: r.txid,
      restoredTime: new Date(r.time).toISOString(),
      checksum: checksumHex(r.checksum),
      snapshot: r.snapshotKey,
      batchesRead: r.batchesRead,
      // For geo-restores: how far the restored state lags behind now (the data loss bound).
      restoredStateAgeSeconds: Math.max(0, (Date.now() - r.time) / 1000),
    };
    try {
      return await finish(out, summary);
    } finally {
      fs.rmSync(out, { force: true });
    }
  }

  /**
   * Backup verification: restores the latest backup of one database (the one untested
   * longest) into scratch space — which checks every record's checksum, the final one and
   * integrity_check — and records the outcome on the database.
   */
  async verifyNext(): Promise<{ database: string; txid: number; error: string | null } | undefined> {
    const candidates = this.store.listDatabases().filter((d) => d.dbId !== '' && d.shippedTxid > 0 && d.role !== 'secondary' && d.fencedBy == null);
    candidates.sort((a, b) => a.verifiedAt - b.verifiedAt);
    const d = candidates[0];
    if (d === undefined) return undefined;
    return this.verifyDatabaseBackup(d);
  }

  async verifyDatabaseBackup(d: DatabaseRecord, signal?: AbortSignal, onProgress?: (f: number) => void): Promise<{ database: string; txid: number; error: string | null }> {
    if (d.role === 'secondary' || this.store.getDatabase(d.name)?.role === 'secondary') throw this.geoSecondary(d, 'backup verifications');
    const scratch = path.join(this.config.dataDir, 'restoring');
    fs.mkdirSync(scratch, { recursive: true });
    const out = path.join(scratch, `verify-${d.dbId}-${Date.now()}.sqlite`);
    let txid = 0;
    let error: string | null = null;
    try {
      const r = await restoreFromVault({ vault: this.vault, dbId: d.dbId, target: 'latest', out, scratchDir: scratch, signal, onProgress });
      txid = r.txid;
    } catch (e) {
      if (isGeodrError(e, 'CANCELLED') || isGeodrError(e, 'UNAVAILABLE')) throw e;
      error = e instanceof Error ? e.message : String(e);
      this.logger.error({ err: e, database: d.name }, 'backup verification failed: the latest backup does not restore');
    } finally {
      fs.rmSync(out, { force: true });
    }
    this.store.setVerified(d.name, Date.now(), txid, error);
    return { database: d.name, txid, error };
  }

  /**
   * A named restore point across several databases, taken at one instant: the TXIDs are
   * read in one synchronous step, so no write lands between two of them, and written to
   * the vault. Restoring the set brings every database back to its TXID.
   */
  async createRestorePoint(name: string, databases: string[]): Promise<RestorePointRecord> {
    const recs = databases.map((n) => {
      const r = this.store.getDatabase(n);
      if (r === undefined) throw new GeodrError('NOT_FOUND', `database ${JSON.stringify(n)} does not exist`, { database: n });
      return r;
    });
    // Leases first (opening can throw); then one synchronous pass reads every TXID.
    const tenants = recs.map((r) => this.host.acquire(r.name));
    let point: RestorePointRecord;
    try {
      const takenAt = Date.now();
      point = { format: 1, name, takenAt: new Date(takenAt).toISOString(), server: this.config.name, databases: tenants.map((t) => ({ name: t.name, dbId: t.db.dbId, txid: t.db.txid })) };
      await Promise.all(tenants.map((t) => t.db.waitDurable()));
    } finally {
      for (const t of tenants) this.host.release(t);
    }
    await this.shipper.putImmutable(restorePointKey(name, Date.parse(point.takenAt)), Buffer.from(JSON.stringify(point, null, 2)));
    return point;
  }

  async listRestorePoints(): Promise<RestorePointRecord[]> {
    const out: RestorePointRecord[] = [];
    for await (const o of this.vault.list('restorepoints/')) {
      try {
        out.push(JSON.parse((await this.vault.get(o.key)).toString('utf8')) as RestorePointRecord);
      } catch (e) {
        throw new GeodrError('VAULT_CORRUPT', 'a restore point is not valid JSON', { object: o.key }, { cause: e });
      }
    }
    return out;
  }

  async getRestorePoint(name: string): Promise<RestorePointRecord> {
    let last: string | undefined;
    for await (const o of this.vault.list(`restorepoints/${name}/`)) last = o.key;
    if (last === undefined) throw new GeodrError('NOT_FOUND', `restore point ${JSON.stringify(name)} does not exist`);
    return JSON.parse((await this.vault.get(last)).toString('utf8')) as RestorePointRecord;
  }

  /**
   * Retention: for each database, keep the newest snapshot older than the window (the
   * base every restore point in the window needs) and everything after it; delete what
   * is older. Long-term copies are taken from new snapshots by policy and expire by it.
   */
  async applyRetention(now = Date.now()): Promise<{ deleted: number; ltrTaken: number }> {
    let deleted = 0;
    let ltrTaken = 0;
    const targets: Array<{ dbId: string; name?: string; retentionDays: number; ltr: LtrPolicy | null; droppedAt?: number }> = [
      // A secondary's objects in this vault are its primary's geo copies, and a deposed primary's
      // are the new primary's history now: the primary's server applies retention to them.
      ...this.store
        .listDatabases()
        .filter((d) => d.role !== 'secondary' && d.fencedBy == null && this.shipper.state(d.dbId)?.fencedBy === undefined)
        .map((d) => ({ dbId: d.dbId, name: d.name, retentionDays: d.retentionDays, ltr: d.ltr })),
      ...this.store.listDropped().map((d) => ({ dbId: d.dbId, retentionDays: d.retentionDays, ltr: null, droppedAt: d.droppedAt })),
    ];
    for (const t of targets) {
      if (t.dbId === '') continue;
      const h = await readHistory(this.vault, t.dbId);
      const windowStart = now - t.retentionDays * 86_400_000;
      if (t.droppedAt !== undefined && t.droppedAt + t.retentionDays * 86_400_000 < now) {
        // A dropped database past its retention: its short-term backups go.
        for (const s of h.snapshots) deleted += await this.del(s.key);
        for (const b of h.batches) deleted += await this.del(b.key);
        continue;
      }
      if (t.ltr !== null && t.name !== undefined) ltrTaken += await this.takeLongTerm(t.name, t.dbId, h.ltr, t.ltr, now);
      for (const key of planRetention(h, windowStart)) deleted += await this.del(key);
      if (t.ltr !== null) {
        for (const s of h.ltr) {
          const keep = s.ltr === 'W' ? t.ltr.weekly : s.ltr === 'M' ? t.ltr.monthly : t.ltr.yearly;
          if (keep === null || s.time + durationMs(keep) < now) deleted += await this.del(s.key);
        }
      }
    }
    return { deleted, ltrTaken };
  }

  private async del(key: string): Promise<number> {
    await this.vault.delete(key);
    // Retention deletes on both sides: the copier never propagates deletes.
    await this.pairedRawVault?.delete(key).catch(() => undefined);
    return 1;
  }

  /** Long-term backups due by policy are copies of a snapshot of the database as it is now. */
  private async takeLongTerm(name: string, dbId: string, ltr: Array<{ time: number; ltr?: 'W' | 'M' | 'Y' }>, policy: LtrPolicy, now: number): Promise<number> {
    const last = (kind: 'W' | 'M' | 'Y'): number => Math.max(0, ...ltr.filter((l) => l.ltr === kind).map((l) => l.time));
    const due = (
      [
        ['W', policy.weekly !== null && now - last('W') >= 7 * 86_400_000],
        ['M', policy.monthly !== null && now - last('M') >= 28 * 86_400_000],
        ['Y', policy.yearly !== null && weekOfYear(new Date(now)) === policy.weekOfYear && now - last('Y') >= 300 * 86_400_000],
      ] as Array<['W' | 'M' | 'Y', boolean]>
    )
      .filter(([, d]) => d)
      .map(([k]) => k);
    if (due.length === 0) return 0;
    const snap = await this.host.use(name, (t) => this.shipper.snapshotNow(t.db, () => this.descriptor(t.record)));
    const bytes = await this.vault.get(snap.key);
    for (const kind of due) await this.shipper.putImmutable(ltrKey(dbId, snap.txid, snap.time, kind, snap.epoch), bytes);
    return due.length;
  }
}

/** ISO-8601 durations of the forms PnD, PnW, PnM, PnY (what retention policies use). */
export function durationMs(iso: string): number {
  const m = /^P(\d+)([DWMY])$/.exec(iso);
  if (m === null) throw new GeodrError('INVALID_ARGUMENT', `retention ${JSON.stringify(iso)} must be an ISO-8601 duration like P12W, P6M or P10Y`);
  const n = Number(m[1]);
  const day = 86_400_000;
  return n * (m[2] === 'D' ? day : m[2] === 'W' ? 7 * day : m[2] === 'M' ? 30 * day : 365 * day);
}

export function weekOfYear(d: Date): number {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const yearStart = new Date(Date.UTC(t.getUTCFullYear(), 0, 1));
  return Math.ceil(((t.getTime() - yearStart.getTime()) / 86_400_000 + 1) / 7);
}

