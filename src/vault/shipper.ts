/**
 * Continuous backup: every open primary's durable records are shipped to the region's
 * vault as batch objects at most `intervalMs` after they commit, plus full snapshots on a
 * schedule. Only records already fsynced in the local log leave the server, so the vault
 * never holds a TXID the server could later reuse for another transaction.
 *
 * A vault outage costs nothing but lag: records stay in the local log (the queue) and are
 * shipped when the vault answers again; databases with unshipped records are kept open.
 * After a crash, shipping resumes from the last batch the vault holds.
 *
 * Epochs (src/vault/lineage.ts): a primary at epoch > 1 (a promoted secondary) writes its
 * epoch's marker before its first object, then ships its promotion snapshot and its records;
 * every object's key carries its epoch. A primary is fenced as soon as it sees a marker of a
 * newer epoch: it lists the markers before its first upload for a database and again before
 * an upload whenever the last look is older than `fenceCheckMs`, stops shipping that database
 * for good (until it has a newer epoch itself) and reports it through `onFenced`. What a
 * deposed primary uploaded before it noticed is not history by the lineage rule.
 */
import * as fs from 'node:fs';
import { GeodrError, isGeodrError } from '../errors.js';
import { checksumHex, takeSnapshot, type PrimaryDatabase } from '../engine/index.js';
import { decodeHeader } from '../engine/record.js';
import { fullSnapshotName } from '../engine/snapshot.js';
import * as path from 'node:path';
import { encodeBatch } from './batch.js';
import { batchKey, metaKey, recordsPrefix, snapshotKey, type DatabaseDescriptor } from './layout.js';
import { chooseLineage, listMarkerEpochs, putMarker, type EpochMarker } from './lineage.js';
import { readHistory } from './restore.js';
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
  /** Server and region named in the epoch markers this shipper writes. */
  origin?: { server: string; region: string };
  /**
   * Before an upload, list the database's epoch markers if the last look is older than this
   * (default 2000 ms): a newer epoch stops shipping within this long. 0 looks before every upload.
   */
  fenceCheckMs?: number;
  /**
   * Shipping for a database stopped because the vault holds a marker of a newer epoch (or
   * another server began this database's epoch). Called once per fencing; must not throw.
   */
  onFenced?: (dbId: string, newerEpoch: number) => void;
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
  /** Epoch of the lineage shipped: the database's epoch when its shipping began. */
  epoch: number;
  /** Newest epoch among the records shipped so far; records older than it are never shipped. */
  shippedEpoch: number;
  /** Set when the vault holds an epoch that deposes this one: nothing more is shipped. */
  fencedBy?: number;
  /** When the vault's epoch markers were last listed (clock ms). */
  fenceCheckedAt: number;
  /**
   * False until the vault's position for the database is known. A state left by a failed
   * discovery only carries the backoff: shipping from it would skip the base snapshot and
   * re-ship from TXID 1.
   */
  discovered: boolean;
}

export class Shipper {
  private readonly states = new Map<string, ShipState>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly snapshotting = new Map<string, Promise<void>>();
  private readonly intervalMs: number;
  private readonly fenceCheckMs: number;
  private readonly clock: () => number;

  constructor(private readonly opts: ShipperOptions) {
    this.intervalMs = opts.intervalMs ?? 1000;
    this.fenceCheckMs = opts.fenceCheckMs ?? 2000;
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
    if (s === undefined || s.epoch < db.epoch) return db.durableTxid > 0 || db.epoch > 1;
    return s.halted === undefined && db.durableTxid > s.shippedTxid;
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

  /**
   * True when the state no longer describes this database object: it was promoted (a new
   * epoch, a new lineage) or its files were replaced by something behind what was shipped.
   */
  private outdated(s: ShipState, db: PrimaryDatabase): boolean {
    if (db.epoch > s.epoch) return true;
    return s.fencedBy === undefined && db.epoch === s.epoch && db.durableTxid < s.shippedTxid;
  }

  private async shipOnce(db: PrimaryDatabase, descriptor: () => DatabaseDescriptor): Promise<void> {
    const now = this.clock();
    let s = this.states.get(db.dbId);
    if (s !== undefined && this.outdated(s, db)) {
      await this.snapshotting.get(db.dbId);
      this.states.delete(db.dbId);
      s = undefined;
    }
    if (s !== undefined && (s.halted !== undefined || now < s.retryAt)) return;
    try {
      if (s === undefined || !s.discovered) {
        s = await this.discover(db, descriptor);
        if (s.halted !== undefined) return;
      }
      if (db.epoch < s.epoch) {
        throw new GeodrError('STALE_EPOCH', `the database is at epoch ${db.epoch}; epoch ${s.epoch} was shipped for it already`, { database: db.name });
      }
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
          if (r.epoch < s.shippedEpoch || r.epoch > s.epoch) {
            throw new GeodrError('STALE_EPOCH', `record ${r.txid} has epoch ${r.epoch}; this database ships epoch ${s.epoch} and has shipped epoch ${s.shippedEpoch} records`, {
              database: db.name,
              txid: r.txid,
            });
          }
          recs.push(r);
          bytes += r.pages.length * (r.pageSize + 4) + 100;
          if (bytes >= (this.opts.maxBatchBytes ?? 16 << 20)) break;
        }
        if (recs.length === 0) break;
        const last = recs[recs.length - 1]!;
        const key = batchKey(db.dbId, from, last.txid, last.timestamp, last.epoch);
        await this.upload(s, key, encodeBatch(recs));
        s.shippedTxid = last.txid;
        s.shippedCommitTime = last.timestamp;
        s.shippedEpoch = Math.max(s.shippedEpoch, last.epoch);
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
            if (state.fencedBy !== undefined) return; // reported through onFenced
            state.failures++;
            state.retryAt = this.clock() + Math.min(60_000, this.intervalMs * 2 ** Math.min(6, state.failures));
            this.opts.onError?.(e, db.dbId);
          })
          .finally(() => this.snapshotting.delete(db.dbId));
        this.snapshotting.set(db.dbId, run);
        if (this.opts.awaitSnapshots === true) await run;
      }
    } catch (e) {
      const state = s ?? this.blankState(db.dbId, db.epoch);
      this.states.set(db.dbId, state);
      if (state.fencedBy !== undefined) return; // reported through onFenced
      if (isGeodrError(e, 'VAULT_CORRUPT') || (isGeodrError(e, 'STALE_EPOCH') && s !== undefined && db.epoch >= s.epoch)) state.halted = e.message;
      state.failures++;
      // Back off to at most a minute while the vault is failing.
      state.retryAt = this.clock() + Math.min(60_000, this.intervalMs * 2 ** Math.min(6, state.failures));
      this.opts.onError?.(e, db.dbId);
    }
  }

  private blankState(dbId: string, epoch: number): ShipState {
    return { dbId, shippedTxid: 0, shippedAt: 0, shippedCommitTime: 0, snapshotTxid: -1, snapshotAt: 0, failures: 0, retryAt: 0, epoch, shippedEpoch: 0, fenceCheckedAt: Number.NEGATIVE_INFINITY, discovered: false };
  }

  private fence(s: ShipState, newer: number): void {
    if (s.fencedBy !== undefined) return;
    s.fencedBy = newer;
    s.halted =
      newer > s.epoch
        ? `fenced: the vault holds epoch ${newer} of this database, which deposes this server's epoch ${s.epoch}`
        : `fenced: another server began epoch ${newer} of this database first`;
    try {
      this.opts.onFenced?.(s.dbId, newer);
    } catch {
      // A listener's failure must not turn the fence into a shipping failure that is retried.
    }
  }

  /**
   * Lists the markers when the last look is older than `fenceCheckMs`; fences the state and
   * throws STALE_EPOCH when a newer epoch is there. Called before every data upload.
   */
  private async guard(s: ShipState): Promise<void> {
    if (s.fencedBy === undefined && this.clock() - s.fenceCheckedAt >= this.fenceCheckMs) {
      const newest = Math.max(0, ...(await listMarkerEpochs(this.opts.vault, s.dbId)));
      s.fenceCheckedAt = this.clock();
      if (newest > s.epoch) this.fence(s, newest);
    }
    if (s.fencedBy !== undefined) throw new GeodrError('STALE_EPOCH', s.halted ?? 'fenced', { details: { epoch: s.epoch, newerEpoch: s.fencedBy } });
  }

  /** A data object (batch or snapshot) of the state's lineage: fenced first, then put. */
  private async upload(s: ShipState, key: string, body: Buffer): Promise<void> {
    await this.guard(s);
    await this.putImmutable(key, body);
  }

  /** The marker of the database's epoch as this server would write it: the epoch starts at its base. */
  private markerOf(db: PrimaryDatabase): EpochMarker {
    const base = db.base;
    return {
      format: 1,
      dbId: db.dbId,
      epoch: db.epoch,
      startTxid: base.txid,
      checksum: checksumHex(base.checksum),
      startTime: base.timestamp,
      server: this.opts.origin?.server ?? '',
      region: this.opts.origin?.region ?? '',
      time: this.clock(),
    };
  }

  /**
   * Begins the database's new epoch in the vault (after a promotion): writes the marker, which
   * fences every older primary's shipping, and makes the next shipment start the new lineage
   * with the promotion snapshot. Idempotent; STALE_EPOCH when the vault holds a newer epoch or
   * another server began this one. INVALID_ARGUMENT at epoch 1 (nothing was promoted).
   */
  async beginEpoch(db: PrimaryDatabase): Promise<EpochMarker> {
    if (db.epoch <= 1) throw new GeodrError('INVALID_ARGUMENT', 'the database is at epoch 1: only a promoted database begins an epoch', { database: db.name });
    await this.inFlight.get(db.dbId);
    const newest = Math.max(0, ...(await listMarkerEpochs(this.opts.vault, db.dbId)));
    if (newest > db.epoch) {
      const s = this.states.get(db.dbId) ?? this.blankState(db.dbId, db.epoch);
      s.discovered = true;
      this.states.set(db.dbId, s);
      if (s.epoch <= db.epoch) this.fence(s, newest);
      throw new GeodrError('STALE_EPOCH', `the vault already holds epoch ${newest}; this database is at ${db.epoch}`, { database: db.name, details: { epoch: db.epoch, newerEpoch: newest } });
    }
    const marker = await putMarker(this.opts.vault, this.markerOf(db), this.opts.onPut);
    const s = this.states.get(db.dbId);
    if (s !== undefined && s.epoch < db.epoch) {
      await this.snapshotting.get(db.dbId);
      this.states.delete(db.dbId);
    }
    return marker;
  }

  /** Learns from the vault where this database's backup stands, seeding it if new. */
  private async discover(db: PrimaryDatabase, descriptor: () => DatabaseDescriptor): Promise<ShipState> {
    const s = this.blankState(db.dbId, db.epoch);
    // Only a fenced state is final before the end; any other early exit throws and leaves discovery to the next call.
    const fenced = (newer: number): ShipState => {
      s.discovered = true;
      this.states.set(db.dbId, s);
      this.fence(s, newer);
      return s;
    };
    // Markers first: a newer epoch fences before anything is written.
    const newest = Math.max(0, ...(await listMarkerEpochs(this.opts.vault, db.dbId)));
    s.fenceCheckedAt = this.clock();
    if (newest > db.epoch) return fenced(newest);
    if (db.epoch > 1) {
      // Before any object of the epoch: a marker missing here (beginEpoch failed, or was not
      // called) is written now, from the base the promotion left.
      try {
        await putMarker(this.opts.vault, this.markerOf(db), this.opts.onPut);
      } catch (e) {
        if (!isGeodrError(e, 'STALE_EPOCH')) throw e;
        return fenced(db.epoch);
      }
    }
    const all = await readHistory(this.opts.vault, db.dbId);
    // Objects of a newer epoch whose marker has not reached this vault depose this primary too.
    const newestObject = Math.max(0, ...all.batches.map((b) => b.epoch), ...all.snapshots.map((x) => x.epoch));
    if (newestObject > db.epoch) return fenced(newestObject);
    const history = chooseLineage(all).history;
    for (const b of history.batches) {
      if (b.last > s.shippedTxid) {
        s.shippedTxid = b.last;
        s.shippedCommitTime = b.lastTime;
      }
      s.shippedEpoch = Math.max(s.shippedEpoch, b.epoch);
    }
    let own = false;
    for (const snap of history.snapshots) {
      if (snap.txid >= s.snapshotTxid) {
        s.snapshotTxid = snap.txid;
        s.snapshotAt = snap.time;
      }
      s.shippedEpoch = Math.max(s.shippedEpoch, snap.epoch);
      if (snap.epoch === db.epoch) own = true;
    }
    if (s.shippedTxid > db.durableTxid) {
      throw new GeodrError('VAULT_CORRUPT', `the vault holds records up to TXID ${s.shippedTxid} but the database is at ${db.durableTxid}: another history is shipped under this id`, {
        database: db.name,
        object: recordsPrefix(db.dbId),
      });
    }
    // A new database, or a new lineage (a promoted secondary): its descriptor, then its base.
    if (db.epoch > 1 ? !own : s.snapshotTxid < 0) {
      await this.putDescriptor(db.dbId, descriptor());
      const base = db.base;
      const local = await readLocal(path.join(db.stateDir, 'snapshots', fullSnapshotName(base.txid)));
      const h = local === undefined ? undefined : decodeHeader(local, { object: fullSnapshotName(base.txid), dbId: db.dbId });
      const usable = h !== undefined && h.full && h.txid === base.txid && h.epoch === db.epoch && (db.epoch > 1 || (s.shippedTxid === 0 && base.txid === 0));
      if (usable) {
        // The promotion snapshot (or a new database's base): the exact state the epoch starts from.
        await this.upload(s, snapshotKey(db.dbId, base.txid, base.timestamp, h.epoch), local!);
        s.snapshotTxid = Math.max(s.snapshotTxid, base.txid);
        s.snapshotAt = base.timestamp;
        s.shippedEpoch = Math.max(s.shippedEpoch, h.epoch);
      } else {
        await this.shipSnapshot(db, s);
      }
    }
    s.shippedAt = this.clock();
    s.discovered = true;
    this.states.set(db.dbId, s);
    return s;
  }

  /**
   * Ships what is due, then takes and ships a full snapshot of the current state (a
   * long-term backup copies it). Throws when the vault cannot take it.
   */
  async snapshotNow(db: PrimaryDatabase, descriptor: () => DatabaseDescriptor): Promise<{ key: string; txid: number; time: number; epoch: number }> {
    await this.ship(db, descriptor);
    const s = this.states.get(db.dbId);
    if (s?.fencedBy !== undefined) throw new GeodrError('STALE_EPOCH', s.halted ?? 'fenced', { database: db.name });
    if (s === undefined || s.halted !== undefined || s.failures > 0) {
      throw new GeodrError('VAULT_UNAVAILABLE', `shipping to the vault is not healthy for this database${s?.halted !== undefined ? `: ${s.halted}` : ''}`, { database: db.name });
    }
    return this.shipSnapshot(db, s);
  }

  private async shipSnapshot(db: PrimaryDatabase, s: ShipState): Promise<{ key: string; txid: number; time: number; epoch: number }> {
    await this.guard(s);
    const ref = await takeSnapshot(db);
    const bytes = await fs.promises.readFile(ref.file);
    const h = decodeHeader(bytes, { object: ref.file, dbId: db.dbId });
    if (h.epoch < s.shippedEpoch || h.epoch > s.epoch) {
      throw new GeodrError('STALE_EPOCH', `a snapshot of epoch ${h.epoch} cannot follow epoch ${s.shippedEpoch} objects`, { database: db.name, txid: h.txid });
    }
    const key = snapshotKey(db.dbId, h.txid, h.timestamp, h.epoch);
    await this.upload(s, key, bytes);
    // The vault now holds it; the local copy is only needed by local restores of the base.
    if (h.txid !== db.base.txid) await fs.promises.rm(ref.file, { force: true });
    s.snapshotTxid = h.txid;
    s.snapshotAt = this.clock();
    s.shippedEpoch = Math.max(s.shippedEpoch, h.epoch);
    // A snapshot ahead of the shipped records (taken after more commits) is fine: restores
    // to TXIDs before it use older snapshots and the records.
    return { key, txid: h.txid, time: h.timestamp, epoch: h.epoch };
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

async function readLocal(file: string): Promise<Buffer | undefined> {
  try {
    return await fs.promises.readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
