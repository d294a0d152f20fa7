/**
 * Continuous backup: every open primary's durable records are shipped to the region's
 * vault as batch objects at most `intervalMs` after they commit, plus full snapshots on a
 * schedule. Only records already fsynced in the local log leave the server, so the vault
 * never holds a TXID the server could later reuse for another transaction.
 *
 * A vault outage costs nothing but lag: records stay in the local log (the queue) and are
 * shipped when the vault answers again; databases with unshipped records are kept open.
 * After a crash, shipping resumes from the last batch the vault holds.
 */
import * as fs from 'node:fs';
import { GeodrError, isGeodrError } from '../errors.js';
import { takeSnapshot, type PrimaryDatabase } from '../engine/index.js';
import { decodeHeader } from '../engine/record.js';
import { fullSnapshotName } from '../engine/snapshot.js';
import * as path from 'node:path';
import { encodeBatch } from './batch.js';
import { batchKey, metaKey, parseBatchKey, parseSnapshotKey, recordsPrefix, snapshotKey, snapshotsPrefix, type DatabaseDescriptor } from './layout.js';
import type { Vault } from './vault.js';

export interface ShipperOptions {
  vault: Vault;
  /** Ship at most this long after a commit (default 1000 ms). */
  intervalMs?: number;
  /** Take and ship a full snapshot after this many records (default 10,000). */
  snapshotEveryRecords?: number;
  /** ... or after this long with new records (default 6 h; 0 = by count only). */
  snapshotIntervalMs?: number;
  /** Wait for a due snapshot inside ship() instead of shipping it in the background (tests). */
  awaitSnapshots?: boolean;
  /** Largest batch object (default 16 MiB). */
  maxBatchBytes?: number;
  /** Called after each object lands in the vault (geo-copy listens here). */
  onPut?: (key: string) => void;
  /** Failures nobody else hears of (vault outage, divergence). */
  onError?: (e: unknown, dbId: string) => void;
  clock?: () => number;
}

/** What the shipper knows of one database. */
export interface ShipState {
  dbId: string;
  /** Last TXID in the vault. */
  shippedTxid: number;
  /** When that batch landed. */
  shippedAt: number;
  /** Commit time of the last TXID shipped. */
  shippedCommitTime: number;
  snapshotTxid: number;
  snapshotAt: number;
  /** Set when shipping for this database stopped because the vault holds another history. */
  halted?: string;
  failures: number;
  retryAt: number;
}

export class Shipper {
  private readonly states = new Map<string, ShipState>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly snapshotting = new Map<string, Promise<void>>();
  private readonly intervalMs: number;
  private readonly clock: () => number;

  constructor(private readonly opts: ShipperOptions) {
    this.intervalMs = opts.intervalMs ?? 1000;
    this.clock = opts.clock ?? Date.now;
  }

  get vault(): Vault {
    return this.opts.vault;
  }

  get interval(): number {
    return this.intervalMs;
  }

  state(dbId: string): ShipState | undefined {
    return this.states.get(dbId);
  }

  /** True when the database has durable records the vault lacks (it must stay open). */
  hasUnshipped(db: PrimaryDatabase): boolean {
    const s = this.states.get(db.dbId);
    return s === undefined ? db.durableTxid > 0 : s.halted === undefined && db.durableTxid > s.shippedTxid;
  }

  /**
   * Ships what this database has that the vault lacks. Concurrent calls for one database
   * share the same run. Resolves once done; throws only on programming errors — vault
   * failures are recorded in the state and retried by the next call after a backoff.
   */
  ship(db: PrimaryDatabase, descriptor: () => DatabaseDescriptor): Promise<void> {
    const running = this.inFlight.get(db.dbId);
    if (running !== undefined) return running;
    const p = this.shipOnce(db, descriptor).finally(() => this.inFlight.delete(db.dbId));
    this.inFlight.set(db.dbId, p);
    return p;
  }

  private async shipOnce(db: PrimaryDatabase, descriptor: () => DatabaseDescriptor): Promise<void> {
    const now = this.clock();
    let s = this.states.get(db.dbId);
    if (s !== undefined && (s.halted !== undefined || now < s.retryAt)) return;
    try {
      s ??= await this.discover(db, descriptor);
      const durable = db.durableTxid;
      const firstLocal = db.txLog.firstTxid ?? db.txid + 1;
      if (s.shippedTxid + 1 < firstLocal && s.shippedTxid < durable) {
        // The records after the vault's last one are no longer (or never were) in the local
        // log — a promoted replica, a log pruned while the vault was behind. A snapshot at or
        // after the log's start bridges the hole; shipping continues after it.
        if (s.snapshotTxid < firstLocal - 1) await this.shipSnapshot(db, s);
        s.shippedTxid = Math.max(s.shippedTxid, Math.min(s.snapshotTxid, durable));
      }
      while (s.shippedTxid < durable) {
        const from = s.shippedTxid + 1;
        const recs = [];
        let bytes = 0;
        for (const r of db.records(from, durable)) {
          recs.push(r);
          bytes += r.pages.length * (r.pageSize + 4) + 100;
          if (bytes >= (this.opts.maxBatchBytes ?? 16 << 20)) break;
        }
        if (recs.length === 0) break;
        const last = recs[recs.length - 1]!;
        const key = batchKey(db.dbId, from, last.txid, last.timestamp);
        await this.putImmutable(key, encodeBatch(recs));
        s.shippedTxid = last.txid;
        s.shippedCommitTime = last.timestamp;
        s.shippedAt = this.clock();
      }
      const every = this.opts.snapshotEveryRecords ?? 10_000;
      const interval = this.opts.snapshotIntervalMs ?? 6 * 3600_000;
      const due = s.shippedTxid - s.snapshotTxid >= every || (interval > 0 && s.shippedTxid > s.snapshotTxid && this.clock() - s.snapshotAt >= interval);
      s.failures = 0;
      s.retryAt = 0;
      // Snapshots ship beside the records, never in front of them: a big database's
      // snapshot takes seconds to encode and upload, and records must not queue behind it.
      if (due && !this.snapshotting.has(db.dbId)) {
        const state = s;
        const run = this.shipSnapshot(db, state)
          .then(() => undefined)
          .catch((e: unknown) => {
            state.failures++;
            state.retryAt = this.clock() + Math.min(60_000, this.intervalMs * 2 ** Math.min(6, state.failures));
            this.opts.onError?.(e, db.dbId);
          })
          .finally(() => this.snapshotting.delete(db.dbId));
        this.snapshotting.set(db.dbId, run);
        if (this.opts.awaitSnapshots === true) await run;
      }
    } catch (e) {
      const state = s ?? this.blankState(db.dbId);
      this.states.set(db.dbId, state);
      if (isGeodrError(e, 'VAULT_CORRUPT')) state.halted = e.message;
      state.failures++;
      // Back off to at most a minute while the vault is failing.
      state.retryAt = this.clock() + Math.min(60_000, this.intervalMs * 2 ** Math.min(6, state.failures));
      this.opts.onError?.(e, db.dbId);
    }
  }

  private blankState(dbId: string): ShipState {
    return { dbId, shippedTxid: 0, shippedAt: 0, shippedCommitTime: 0, snapshotTxid: -1, snapshotAt: 0, failures: 0, retryAt: 0 };
  }

  /** Learns from the vault where this database's backup stands, seeding it if new. */
  private async discover(db: PrimaryDatabase, descriptor: () => DatabaseDescriptor): Promise<ShipState> {
    const s = this.blankState(db.dbId);
    for await (const o of this.opts.vault.list(recordsPrefix(db.dbId))) {
      const b = parseBatchKey(o.key);
      if (b !== undefined && b.last > s.shippedTxid) {
        s.shippedTxid = b.last;
        s.shippedCommitTime = b.lastTime;
      }
    }
    for await (const o of this.opts.vault.list(snapshotsPrefix(db.dbId))) {
      const snap = parseSnapshotKey(o.key);
      if (snap !== undefined && snap.txid >= s.snapshotTxid) {
        s.snapshotTxid = snap.txid;
        s.snapshotAt = snap.time;
      }
    }
    if (s.shippedTxid > db.durableTxid) {
      throw new GeodrError('VAULT_CORRUPT', `the vault holds records up to TXID ${s.shippedTxid} but the database is at ${db.durableTxid}: another history is shipped under this id`, {
        database: db.name,
        object: recordsPrefix(db.dbId),
      });
    }
    if (s.snapshotTxid < 0) {
      await this.putDescriptor(db.dbId, descriptor());
      // The first snapshot: the base the local log starts from, if it is still there.
      const base = db.base;
      const local = path.join(db.stateDir, 'snapshots', fullSnapshotName(base.txid));
      if (s.shippedTxid === 0 && base.txid === 0 && fs.existsSync(local)) {
        await this.putImmutable(snapshotKey(db.dbId, 0, base.timestamp), await fs.promises.readFile(local));
        s.snapshotTxid = 0;
        s.snapshotAt = base.timestamp;
      } else {
        await this.shipSnapshot(db, s);
      }
    }
    s.shippedAt = this.clock();
    this.states.set(db.dbId, s);
    return s;
  }

  /**
   * Ships what is due, then takes and ships a full snapshot of the current state (a
   * long-term backup copies it). Throws when the vault cannot take it.
   */
  async snapshotNow(db: PrimaryDatabase, descriptor: () => DatabaseDescriptor): Promise<{ key: string; txid: number; time: number }> {
    await this.ship(db, descriptor);
    const s = this.states.get(db.dbId);
    if (s === undefined || s.halted !== undefined || s.failures > 0) {
      throw new GeodrError('VAULT_UNAVAILABLE', `shipping to the vault is not healthy for this database${s?.halted !== undefined ? `: ${s.halted}` : ''}`, { database: db.name });
    }
    return this.shipSnapshot(db, s);
  }

  private async shipSnapshot(db: PrimaryDatabase, s: ShipState): Promise<{ key: string; txid: number; time: number }> {
    const ref = await takeSnapshot(db);
    const bytes = await fs.promises.readFile(ref.file);
    const h = decodeHeader(bytes, { object: ref.file, dbId: db.dbId });
    const key = snapshotKey(db.dbId, h.txid, h.timestamp);
    await this.putImmutable(key, bytes);
    // The vault now holds it; the local copy is only needed by local restores of the base.
    if (h.txid !== 0) await fs.promises.rm(ref.file, { force: true });
    s.snapshotTxid = h.txid;
    s.snapshotAt = this.clock();
    // A snapshot ahead of the shipped records (taken after more commits) is fine: restores
    // to TXIDs before it use older snapshots and the records.
    return { key, txid: h.txid, time: h.timestamp };
  }

  /** Writes a new descriptor version (rename, pool move, drop, policy change). */
  async putDescriptor(dbId: string, d: DatabaseDescriptor): Promise<void> {
    await this.putImmutable(metaKey(dbId, this.clock()), Buffer.from(JSON.stringify(d, null, 2)));
  }

  /**
   * put() that treats "already there with the same bytes" as success: a put whose
   * response was lost and is retried finds its own object.
   */
  async putImmutable(key: string, body: Buffer): Promise<void> {
    try {
      await this.opts.vault.put(key, body);
    } catch (e) {
      if (!isGeodrError(e, 'CONFLICT')) throw e;
      const existing = await this.opts.vault.get(key);
      if (!existing.equals(body)) throw new GeodrError('VAULT_CORRUPT', 'the vault already holds different bytes under this name', { object: key }, { cause: e });
    }
    this.opts.onPut?.(key);
  }

  /** Resolves when no snapshot is being shipped (before closing a database, at shutdown). */
  async idle(dbId?: string): Promise<void> {
    const runs = dbId === undefined ? [...this.snapshotting.values()] : [this.snapshotting.get(dbId)].filter((p) => p !== undefined);
    await Promise.all(runs);
  }

  /** True while a snapshot of this database is being taken or uploaded. */
  isSnapshotting(dbId: string): boolean {
    return this.snapshotting.has(dbId);
  }

  /** Forgets a database (deleted or closed for good). */
  forget(dbId: string): void {
    this.states.delete(dbId);
  }
}
