/**
 * A replica: a rollback-journal-mode copy of a primary that applies transaction
 * records while reader connections in this process keep reading it.
 *
 * Each apply is atomic through a redo journal: the merged page images are written
 * and fsynced to `redo.journal` before the database file is touched, then written
 * to the file, then the applied position is recorded, then the journal is cleared.
 * A crash at any step is repaired at open by replaying a complete journal (or
 * dropping a torn one, which never reached the file).
 *
 * Readers see whole transactions only: applies run synchronously between reads on
 * this thread, wait for open read transactions to end, and bump the header's
 * change counter so every reader connection drops its page cache at its next read.
 * The writer's descriptor stays open for the replica's lifetime: closing any
 * descriptor of a file drops every POSIX lock this process holds on it, including
 * SQLite's.
 */
import * as path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { crc32 } from 'node:zlib';
import { GeodrError } from '../errors.js';
import { checksumEquals, checksumFromHex, checksumHex, PageHashes, type Checksum } from './checksum.js';
import { NodeFs, readWholeFile, writeFileAtomic, type EngineFs } from './fs.js';
import { readMeta, writeMeta, type DatabaseMeta } from './meta.js';
import { hashLogicalDb, lockBytePage, prepareRollbackPageOne, writePages } from './pagefile.js';
import { PrimaryDatabase, type PrimaryOptions } from './primary.js';
import { decodeRecord, encodeRecord, streamUnit, streamUnitSteps, type TxRecord } from './record.js';
import { writeFullSnapshot } from './snapshot.js';
import { openConnection, type Connection } from './sqlite.js';

export interface ReplicaOptions {
  file: string;
  stateDir?: string;
  efs?: EngineFs;
  name?: string;
  /** fsync the journal, file and state at every apply (default true). */
  fsync?: boolean;
  /** Rehash the whole file after every apply (tests). */
  strict?: boolean;
}

export interface ReplicaPosition {
  txid: number;
  epoch: number;
  pageCount: number;
  checksum: Checksum;
  timestamp: number;
}

const STATE_MAGIC = 0x47445254; // "GDRT"
const STATE_SLOT = 64;

function encodeState(dbId: string, seq: number, s: ReplicaPosition): Buffer {
  const b = Buffer.alloc(STATE_SLOT);
  b.writeUInt32BE(STATE_MAGIC, 0);
  b.writeUInt32BE(seq >>> 0, 4);
  b.writeUInt32BE(Math.floor(s.txid / 0x100000000), 8);
  b.writeUInt32BE(s.txid >>> 0, 12);
  b.writeUInt32BE(s.epoch, 16);
  b.writeUInt32BE(s.pageCount, 20);
  b.writeUInt32BE(s.checksum.hi, 24);
  b.writeUInt32BE(s.checksum.lo, 28);
  b.writeUInt32BE(Math.floor(s.timestamp / 0x100000000), 32);
  b.writeUInt32BE(s.timestamp >>> 0, 36);
  Buffer.from(dbId, 'hex').copy(b, 40);
  b.writeUInt32BE(crc32(b.subarray(0, 56)), 56);
  return b;
}

function decodeState(b: Buffer, dbId: string): { seq: number; pos: ReplicaPosition } | undefined {
  if (b.length < STATE_SLOT || b.readUInt32BE(0) !== STATE_MAGIC || b.readUInt32BE(56) !== crc32(b.subarray(0, 56))) return undefined;
  if (b.subarray(40, 56).toString('hex') !== dbId) return undefined;
  return {
    seq: b.readUInt32BE(4),
    pos: {
      txid: b.readUInt32BE(8) * 0x100000000 + b.readUInt32BE(12),
      epoch: b.readUInt32BE(16),
      pageCount: b.readUInt32BE(20),
      checksum: { hi: b.readUInt32BE(24), lo: b.readUInt32BE(28) },
      timestamp: b.readUInt32BE(32) * 0x100000000 + b.readUInt32BE(36),
    },
  };
}

/** How {@link ReplicaDatabase.convertFromPrimary} turns a primary into a replica. */
export interface ConversionPlan {
  /** The primary's state when it closed (its last TXID, checksum, page count). */
  position: ReplicaPosition;
  /** The epoch of the primary this copy now follows. */
  epoch: number;
  /** An incremental unit from the new primary, inside the state directory. */
  unitFile?: string;
}

const CONVERT_FILE = 'convert.json';

export interface ReadTransaction {
  conn: Connection;
  end(): void;
}

export class ReplicaDatabase {
  readonly file: string;
  readonly stateDir: string;
  readonly name: string;
  private readonly efs: EngineFs;
  private readonly fsync: boolean;
  private meta!: DatabaseMeta;
  private fd = -1;
  private stateFd = -1;
  private journalFd = -1;
  private seq = 0;
  private pos!: ReplicaPosition;
  private hashes!: PageHashes;
  private reader: Connection | undefined;
  private failure: unknown;
  private closed = false;
  private activeReads = 0;
  private applyWaiting = 0;
  private idleWaiters: Array<() => void> = [];
  private readWaiters: Array<() => void> = [];
  /** Number of applies done since open. */
  applies = 0;

  private constructor(private readonly opts: ReplicaOptions) {
    this.file = path.resolve(opts.file);
    this.stateDir = opts.stateDir ?? `${this.file}.geodr`;
    this.efs = opts.efs ?? new NodeFs();
    this.name = opts.name ?? path.basename(this.file);
    this.fsync = opts.fsync ?? true;
  }

  /**
   * Creates a replica from a full snapshot file (seeding). The file is built under a
   * temp name, verified against the snapshot's checksum, and renamed into place.
   */
  static create(opts: ReplicaOptions, snapshotFile: string, expectDbId?: string): ReplicaDatabase {
    const steps = ReplicaDatabase.createSteps(opts, snapshotFile, expectDbId);
    for (let r = steps.next(); ; r = steps.next()) if (r.done === true) return r.value;
  }

  /**
   * {@link create} that lets other work run between chunks of pages: a server seeding a
   * big secondary keeps serving its other databases meanwhile.
   */
  static async createAsync(opts: ReplicaOptions, snapshotFile: string, expectDbId?: string): Promise<ReplicaDatabase> {
    const steps = ReplicaDatabase.createSteps(opts, snapshotFile, expectDbId);
    for (let r = steps.next(); ; r = steps.next()) {
      if (r.done === true) return r.value;
      await yieldToLoop();
    }
  }

  private static *createSteps(opts: ReplicaOptions, snapshotFile: string, expectDbId?: string): Generator<void, ReplicaDatabase> {
    const r = new ReplicaDatabase(opts);
    const efs = r.efs;
    if (readMeta(efs, r.stateDir) !== undefined) throw new GeodrError('INVALID_ARGUMENT', 'a database already exists here', { database: r.name, object: r.stateDir });
    const tmp = `${r.file}.seeding`;
    const fd = efs.open(tmp, 'w+', 'replica.seed');
    let meta: DatabaseMeta | undefined;
    let pos: ReplicaPosition | undefined;
    let seededHashes: PageHashes | undefined;
    try {
      const sfd = efs.open(snapshotFile, 'r', 'replica.seed');
      try {
        let pageSize = 0;
        let lock = 0;
        let hashes: PageHashes | undefined;
        const h = yield* streamUnitSteps(
          efs,
          sfd,
          0,
          { object: snapshotFile, dbId: expectDbId },
          (pages) => {
            writePages(efs, fd, pageSize, pages, 'replica.seed.write');
            for (const [p, img] of pages) if (p !== lock) hashes!.setPage(p, img);
          },
          'replica.seed.read',
          (hdr) => {
            if (!hdr.full) throw new GeodrError('INVALID_ARGUMENT', 'seeding needs a full snapshot', { object: snapshotFile, txid: hdr.txid });
            pageSize = hdr.pageSize;
            lock = lockBytePage(pageSize);
            hashes = new PageHashes(hdr.commitSize);
          },
        );
        hashes!.truncate(h.commitSize);
        seededHashes = hashes;
        if (!checksumEquals(hashes!.sum, h.post)) {
          throw new GeodrError('SNAPSHOT_CORRUPT', `snapshot pages hash to ${checksumHex(hashes!.sum)}, header says ${checksumHex(h.post)}`, { object: snapshotFile, txid: h.txid });
        }
        const p1 = Buffer.alloc(pageSize);
        efs.read(fd, p1, 0, pageSize, 0, 'replica.seed');
        prepareRollbackPageOne(p1, 0, h.commitSize);
        efs.write(fd, p1, 0, 'replica.seed.write');
        efs.truncate(fd, h.commitSize * pageSize, 'replica.seed.write');
        efs.sync(fd, 'replica.seed.sync');
        meta = { dbId: h.dbId, role: 'replica', epoch: h.epoch, pageSize, base: { txid: h.txid, checksum: h.post, timestamp: h.timestamp } };
        pos = { txid: h.txid, epoch: h.epoch, pageCount: h.commitSize, checksum: h.post, timestamp: h.timestamp };
      } finally {
        efs.close(sfd, 'replica.seed');
      }
    } catch (e) {
      efs.close(fd, 'replica.seed');
      efs.unlink(tmp, 'replica.seed.abort');
      throw e;
    }
    efs.close(fd, 'replica.seed');
    efs.mkdir(r.stateDir, 'replica.seed');
    // State before meta: meta is what makes the replica exist.
    const stateFile = path.join(r.stateDir, 'replica.state');
    const sfd2 = efs.open(stateFile, 'w+', 'replica.state.write');
    // Slot (seq % 2): seq 1 lives in the second slot, so the first apply (seq 2) never overwrites the only valid one.
    efs.write(sfd2, encodeState(meta.dbId, 1, pos), STATE_SLOT, 'replica.state.write');
    efs.sync(sfd2, 'replica.state.sync');
    efs.close(sfd2, 'replica.state.write');
    efs.rename(tmp, r.file, 'replica.seed.publish');
    efs.unlink(`${r.file}-wal`, 'replica.seed.publish');
    efs.unlink(`${r.file}-journal`, 'replica.seed.publish');
    efs.syncDir(path.dirname(r.file), 'replica.seed.publish');
    writeMeta(efs, r.stateDir, meta);
    // The pages were hashed as they were written (and matched the snapshot): no second read.
    r.start(seededHashes);
    return r;
  }

  /**
   * Turns a closed primary into a replica in place: the old primary of a failover
   * rejoining its new primary. With `unitFile` (an incremental unit from the new
   * primary, starting at the TXID where the two histories part) the pages it names are
   * written first, which both rewinds what this copy wrote on its own and brings it up
   * to the unit's TXID; without one (a planned failover, nothing diverged) the copy
   * stays at `position`. The plan is written to `convert.json` first, so a crash at any
   * later step is finished by {@link resumeConversion}; the unit file must therefore
   * live inside the state directory. The result is verified by a full rehash at open.
   */
  static convertFromPrimary(opts: ReplicaOptions, plan: ConversionPlan): ReplicaDatabase {
    const r = new ReplicaDatabase(opts);
    const efs = r.efs;
    const meta = readMeta(efs, r.stateDir);
    if (meta === undefined) throw new GeodrError('INVALID_ARGUMENT', 'no database here (missing meta)', { database: r.name, object: r.stateDir });
    if (meta.role !== 'primary') throw new GeodrError('INVALID_ARGUMENT', 'only a primary is converted into a replica', { database: r.name });
    if (plan.unitFile !== undefined && path.dirname(path.resolve(plan.unitFile)) !== r.stateDir) {
      throw new GeodrError('INVALID_ARGUMENT', 'the catch-up unit must be inside the state directory (it is needed again after a crash)', { database: r.name, object: plan.unitFile });
    }
    if (plan.unitFile !== undefined) {
      // Checked whole before the file is touched: a bad unit must leave the primary as it was.
      const fd = efs.open(plan.unitFile, 'r', 'replica.convert.check');
      try {
        streamUnit(efs, fd, 0, { object: plan.unitFile, dbId: meta.dbId }, () => undefined, 'replica.convert.check');
      } finally {
        efs.close(fd, 'replica.convert.check');
      }
    }
    writeFileAtomic(efs, path.join(r.stateDir, CONVERT_FILE), Buffer.from(JSON.stringify({ ...plan, position: { ...plan.position, checksum: checksumHex(plan.position.checksum) } })), 'replica.convert.plan');
    r.finishConversion(meta);
    return r;
  }

  /** Finishes a conversion a crash interrupted; undefined when none is pending. */
  static resumeConversion(opts: ReplicaOptions): ReplicaDatabase | undefined {
    const r = new ReplicaDatabase(opts);
    const meta = readMeta(r.efs, r.stateDir);
    if (meta === undefined || readWholeFile(r.efs, path.join(r.stateDir, CONVERT_FILE), 'replica.convert.read') === undefined) return undefined;
    r.finishConversion(meta);
    return r;
  }

  private finishConversion(meta: DatabaseMeta): void {
    const efs = this.efs;
    const planFile = path.join(this.stateDir, CONVERT_FILE);
    const raw = JSON.parse(readWholeFile(efs, planFile, 'replica.convert.read')!.toString('utf8')) as { unitFile?: string; epoch: number; position: Omit<ReplicaPosition, 'checksum'> & { checksum: string } };
    let pos: ReplicaPosition = { ...raw.position, checksum: checksumFromHex(raw.position.checksum), epoch: Math.max(raw.epoch, raw.position.epoch) };
    if (meta.role === 'primary') {
      // Every step below is idempotent: a resumed conversion simply does them all again.
      efs.unlink(`${this.file}-wal`, 'replica.convert');
      efs.unlink(`${this.file}-shm`, 'replica.convert');
      const fd = efs.open(this.file, 'r+', 'replica.convert');
      try {
        if (raw.unitFile !== undefined) {
          const ufd = efs.open(raw.unitFile, 'r', 'replica.convert.read');
          try {
            const h = streamUnit(efs, ufd, 0, { object: raw.unitFile, dbId: meta.dbId }, (pages) => writePages(efs, fd, meta.pageSize, pages, 'replica.convert.write'), 'replica.convert.read');
            pos = { txid: h.txid, epoch: Math.max(raw.epoch, h.epoch), pageCount: h.commitSize, checksum: h.post, timestamp: h.timestamp };
          } finally {
            efs.close(ufd, 'replica.convert.read');
          }
        }
        efs.truncate(fd, pos.pageCount * meta.pageSize, 'replica.convert.write');
        const p1 = Buffer.alloc(meta.pageSize);
        efs.read(fd, p1, 0, meta.pageSize, 0, 'replica.convert.read');
        prepareRollbackPageOne(p1, 0, pos.pageCount);
        efs.write(fd, p1, 0, 'replica.convert.write');
        efs.sync(fd, 'replica.convert.sync');
      } finally {
        efs.close(fd, 'replica.convert');
      }
      const stateFile = path.join(this.stateDir, 'replica.state');
      const sfd = efs.open(stateFile, 'w+', 'replica.state.write');
      efs.write(sfd, encodeState(meta.dbId, 1, pos), STATE_SLOT, 'replica.state.write');
      efs.sync(sfd, 'replica.state.sync');
      efs.close(sfd, 'replica.state.write');
      efs.unlink(path.join(this.stateDir, 'redo.journal'), 'replica.convert');
      writeMeta(efs, this.stateDir, { dbId: meta.dbId, role: 'replica', epoch: pos.epoch, pageSize: meta.pageSize, base: { txid: pos.txid, checksum: pos.checksum, timestamp: pos.timestamp } });
    }
    // The primary's history now describes a lineage this copy left; the caller kept what it needs.
    for (const sub of ['log', 'levels', 'snapshots', 'scratch']) efs.unlink(path.join(this.stateDir, sub), 'replica.convert.cleanup');
    if (raw.unitFile !== undefined) efs.unlink(raw.unitFile, 'replica.convert.cleanup');
    efs.unlink(planFile, 'replica.convert.done');
    this.start();
  }

  /** Opens an existing replica, repairing an interrupted apply. */
  static open(opts: ReplicaOptions): ReplicaDatabase {
    const r = new ReplicaDatabase(opts);
    r.start();
    return r;
  }

  private start(knownHashes?: PageHashes): void {
    const efs = this.efs;
    const meta = readMeta(efs, this.stateDir);
    if (meta === undefined) throw new GeodrError('INVALID_ARGUMENT', 'no replica here (missing meta)', { database: this.name, object: this.stateDir });
    if (meta.role !== 'replica') throw new GeodrError('INVALID_ARGUMENT', `this database is a ${meta.role}, not a replica`, { database: this.name });
    this.meta = meta;
    this.fd = efs.open(this.file, 'r+', 'replica.open');
    this.stateFd = efs.open(path.join(this.stateDir, 'replica.state'), 'rw', 'replica.open');
    this.journalFd = efs.open(path.join(this.stateDir, 'redo.journal'), 'rw', 'replica.open');
    const slots = Buffer.alloc(STATE_SLOT * 2);
    efs.read(this.stateFd, slots, 0, slots.length, 0, 'replica.state.read');
    const a = decodeState(slots.subarray(0, STATE_SLOT), meta.dbId);
    const b = decodeState(slots.subarray(STATE_SLOT), meta.dbId);
    const best = a === undefined ? b : b === undefined ? a : a.seq >= b.seq ? a : b;
    if (best === undefined) throw new GeodrError('DATABASE_DIVERGED', 'replica state file is unreadable', { database: this.name, object: 'replica.state' });
    this.seq = best.seq;
    this.pos = best.pos;
    this.recoverJournal();
    this.hashes = knownHashes ?? hashLogicalDb({ efs, dbFd: this.fd, pageSize: meta.pageSize, pageCount: this.pos.pageCount }, 'replica.open');
    if (!checksumEquals(this.hashes.sum, this.pos.checksum)) {
      throw new GeodrError('REPLICA_DIVERGED', `replica file hashes to ${checksumHex(this.hashes.sum)}, its state says ${checksumHex(this.pos.checksum)}`, {
        database: this.name,
        txid: this.pos.txid,
        details: { actual: checksumHex(this.hashes.sum), expected: checksumHex(this.pos.checksum) },
      });
    }
  }

  private recoverJournal(): void {
    const efs = this.efs;
    const size = efs.size(this.journalFd);
    if (size === 0) return;
    const buf = Buffer.allocUnsafe(size);
    efs.read(this.journalFd, buf, 0, size, 0, 'replica.recover');
    let unit: TxRecord | undefined;
    try {
      unit = decodeRecord(buf, { object: 'redo.journal', dbId: this.meta.dbId });
    } catch {
      // Torn: the crash came before the journal was complete, so the file was never touched.
      unit = undefined;
    }
    // Not applied yet (an apply moves forward; a resync may move to any TXID): do it again.
    if (unit !== undefined && (unit.txid !== this.pos.txid || !checksumEquals(unit.post, this.pos.checksum))) this.writeUnit(unit);
    efs.truncate(this.journalFd, 0, 'replica.journal.clear');
    efs.sync(this.journalFd, 'replica.journal.clear');
  }

  /** Writes an already journalled unit's pages to the file and records the position. Idempotent. */
  private writeUnit(unit: TxRecord): void {
    const efs = this.efs;
    writePages(efs, this.fd, this.meta.pageSize, unit.pages, 'replica.apply.write');
    if (unit.commitSize < this.pos.pageCount || efs.size(this.fd) > unit.commitSize * this.meta.pageSize) {
      efs.truncate(this.fd, unit.commitSize * this.meta.pageSize, 'replica.apply.truncate');
    }
    if (this.fsync) efs.sync(this.fd, 'replica.apply.sync');
    const next: ReplicaPosition = { txid: unit.txid, epoch: Math.max(this.pos.epoch, unit.epoch), pageCount: unit.commitSize, checksum: unit.post, timestamp: unit.timestamp };
    this.seq++;
    efs.write(this.stateFd, encodeState(this.meta.dbId, this.seq, next), (this.seq % 2) * STATE_SLOT, 'replica.state.write');
    if (this.fsync) efs.sync(this.stateFd, 'replica.state.sync');
    this.pos = next;
  }

  private ensureOpen(): void {
    if (this.closed || this.failure !== undefined) {
      throw new GeodrError('DATABASE_CLOSED', this.failure !== undefined ? 'replica stopped after a failure' : 'closed', { database: this.name, txid: this.pos?.txid }, { cause: this.failure });
    }
  }

  /**
   * Applies consecutive records atomically as one step. Identity and order are
   * checked first (a foreign, stale or out-of-order record is refused and nothing
   * changes); then the checksum chain is walked, and any mismatch stops the replica
   * with REPLICA_DIVERGED before the file is touched. Throws BUSY while a read
   * transaction is open; {@link applyWhenIdle} waits instead.
   */
  apply(records: TxRecord[]): ReplicaPosition {
    this.ensureOpen();
    if (records.length === 0) return this.pos;
    if (this.activeReads > 0) throw new GeodrError('BUSY', `${this.activeReads} read transaction(s) open`, { database: this.name });
    let expect = this.pos.txid;
    let epoch = this.pos.epoch;
    for (const r of records) {
      const ctx = { database: this.name, txid: r.txid };
      if (r.dbId !== this.meta.dbId) throw new GeodrError('RECORD_FOREIGN', `record of database ${r.dbId}, replica of ${this.meta.dbId}`, ctx);
      if (r.full) throw new GeodrError('INVALID_ARGUMENT', 'a full unit re-seeds a replica; it is not applied', ctx);
      if (r.pageSize !== this.meta.pageSize) throw new GeodrError('RECORD_CORRUPT', `page size ${r.pageSize}, replica has ${this.meta.pageSize}`, ctx);
      if (r.epoch < epoch) throw new GeodrError('STALE_EPOCH', `record epoch ${r.epoch} is older than ${epoch}`, ctx);
      if (r.baseTxid !== expect) throw new GeodrError('RECORD_OUT_OF_ORDER', `record applies on TXID ${r.baseTxid}, replica is at ${expect}`, ctx);
      expect = r.txid;
      epoch = r.epoch;
    }
    const lock = lockBytePage(this.meta.pageSize);
    const merged = new Map<number, Uint8Array>();
    let commitSize = this.pos.pageCount;
    for (const r of records) {
      const ctx = { database: this.name, txid: r.txid };
      if (!checksumEquals(r.pre, this.hashes.sum)) {
        return this.diverged(`record starts from ${checksumHex(r.pre)}, replica is at ${checksumHex(this.hashes.sum)}`, ctx, r.pre);
      }
      for (const [p, img] of r.pages) {
        if (p !== lock) this.hashes.setPage(p, img);
        merged.set(p, img);
      }
      this.hashes.truncate(r.commitSize);
      if (r.commitSize < commitSize) for (const p of merged.keys()) if (p > r.commitSize) merged.delete(p);
      commitSize = r.commitSize;
      if (!checksumEquals(r.post, this.hashes.sum)) {
        return this.diverged(`record ends on ${checksumHex(this.hashes.sum)} after apply, it states ${checksumHex(r.post)}`, ctx, r.post);
      }
    }
    const first = records[0]!;
    const last = records[records.length - 1]!;
    return this.commitUnit({
      dbId: this.meta.dbId,
      epoch: last.epoch,
      baseTxid: first.baseTxid,
      txid: last.txid,
      full: false,
      timestamp: last.timestamp,
      timestamps: [],
      pageSize: this.meta.pageSize,
      commitSize,
      pre: first.pre,
      post: last.post,
      pages: [],
    }, merged);
  }

  /**
   * Writes verified pages as one atomic step: page 1 prepared for rollback mode (its
   * change counter is how readers notice), the whole unit fsynced in the redo journal,
   * then the file, then the position. Shared by apply and resync.
   */
  private commitUnit(header: TxRecord, merged: Map<number, Uint8Array>): ReplicaPosition {
    const efs = this.efs;
    const p1 = Buffer.alloc(this.meta.pageSize);
    const own = merged.get(1);
    if (own !== undefined) p1.set(own);
    else efs.read(this.fd, p1, 0, this.meta.pageSize, 0, 'replica.apply.read');
    const cur = Buffer.alloc(4);
    efs.read(this.fd, cur, 0, 4, 24, 'replica.apply.read');
    prepareRollbackPageOne(p1, cur.readUInt32BE(0), header.commitSize);
    merged.set(1, p1);
    const unit: TxRecord = { ...header, pages: [...merged.entries()].sort((a, b) => a[0] - b[0]) };
    try {
      const enc = encodeRecord(unit);
      efs.truncate(this.journalFd, 0, 'replica.journal.reset');
      efs.write(this.journalFd, enc, 0, 'replica.journal.write');
      if (this.fsync) efs.sync(this.journalFd, 'replica.journal.sync');
      this.writeUnit(unit);
      efs.truncate(this.journalFd, 0, 'replica.journal.clear');
    } catch (e) {
      // The file may be half written; the journal (if complete) repairs it at the next open.
      this.failure = e;
      throw e;
    }
    this.applies++;
    if (this.opts.strict === true) this.verify();
    return this.pos;
  }

  private diverged(msg: string, ctx: { database: string; txid: number }, expected: Checksum): never {
    const e = new GeodrError('REPLICA_DIVERGED', msg, { ...ctx, details: { expected: checksumHex(expected), actual: checksumHex(this.hashes.sum) } });
    this.failure = e;
    throw e;
  }

  /** Applies once no read transaction is open, holding new ones back meanwhile. */
  applyWhenIdle(records: TxRecord[]): Promise<ReplicaPosition> {
    return this.whenIdle(() => this.apply(records));
  }

  /**
   * Runs a change to the file once no read transaction is open. New reads wait while it
   * is pending, so replay is held up by at most the reads already running.
   */
  private async whenIdle<T>(change: () => T): Promise<T> {
    if (this.activeReads > 0) {
      this.applyWaiting++;
      try {
        await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      } finally {
        this.applyWaiting--;
      }
    }
    try {
      return change();
    } finally {
      if (this.applyWaiting === 0) for (const w of this.readWaiters.splice(0)) w();
    }
  }

  /**
   * Makes this copy equal to another copy of the database from a diff unit (see
   * takeDiffUnit): whatever TXID or lineage it was at, it ends at the unit's TXID with
   * its checksum. Journalled like an apply, so a crash is finished at the next open.
   * Throws REPLICA_DIVERGED (and stops) if the result does not hash to the unit's `post`.
   */
  resync(unitFile: string): ReplicaPosition {
    this.ensureOpen();
    if (this.activeReads > 0) throw new GeodrError('BUSY', `${this.activeReads} read transaction(s) open`, { database: this.name });
    const efs = this.efs;
    const buf = readWholeFile(efs, unitFile, 'replica.resync.read');
    if (buf === undefined) throw new GeodrError('INVALID_ARGUMENT', 'no resync unit', { database: this.name, object: unitFile });
    const unit = decodeRecord(buf, { object: unitFile, dbId: this.meta.dbId });
    const ctx = { database: this.name, txid: unit.txid };
    if (unit.pageSize !== this.meta.pageSize) throw new GeodrError('RECORD_CORRUPT', `page size ${unit.pageSize}, replica has ${this.meta.pageSize}`, ctx);
    if (!checksumEquals(unit.pre, this.hashes.sum)) {
      throw new GeodrError('REPLICA_DIVERGED', `the resync unit was made for ${checksumHex(unit.pre)}; this copy is at ${checksumHex(this.hashes.sum)}`, ctx);
    }
    const lock = lockBytePage(this.meta.pageSize);
    for (const [p, img] of unit.pages) if (p !== lock) this.hashes.setPage(p, img);
    this.hashes.truncate(unit.commitSize);
    if (!checksumEquals(unit.post, this.hashes.sum)) {
      return this.diverged(`resync ends on ${checksumHex(this.hashes.sum)}, the unit states ${checksumHex(unit.post)}`, ctx, unit.post);
    }
    return this.commitUnit({ ...unit, timestamps: [] }, new Map(unit.pages));
  }

  /** {@link resync} once no read transaction is open. */
  resyncWhenIdle(unitFile: string): Promise<ReplicaPosition> {
    return this.whenIdle(() => this.resync(unitFile));
  }

  /** Per-page hashes of this copy (see PageHashes.table), for a resync. */
  pageHashTable(): Uint32Array {
    return this.hashes.table();
  }

  /** Rehashes the whole file and compares with the applied position. */
  verify(): Checksum {
    const full = hashLogicalDb({ efs: this.efs, dbFd: this.fd, pageSize: this.meta.pageSize, pageCount: this.pos.pageCount }, 'replica.verify');
    if (!checksumEquals(full.sum, this.pos.checksum)) {
      const e = new GeodrError('REPLICA_DIVERGED', `file hashes to ${checksumHex(full.sum)}, position says ${checksumHex(this.pos.checksum)}`, { database: this.name, txid: this.pos.txid });
      this.failure = e;
      throw e;
    }
    return full.checksum();
  }

  private readerConn(): Connection {
    this.reader ??= openConnection(this.file, { readonly: true, fileMustExist: true });
    return this.reader;
  }

  /** Runs `fn` with a read-only connection; it sees whole transactions only. */
  read<T>(fn: (conn: Connection) => T): T {
    this.ensureOpen();
    try {
      return fn(this.readerConn());
    } catch (e) {
      if ((e as { code?: string }).code?.startsWith('SQLITE_READONLY') === true) {
        throw new GeodrError('READ_ONLY', 'a replica is read-only; write to its primary', { database: this.name, txid: this.pos.txid }, { cause: e });
      }
      throw e;
    }
  }

  /**
   * Opens a read transaction that may span awaits. Applies wait for it to end (and
   * new ones wait while an apply is pending, so replay is held up by at most the
   * reads already running).
   */
  async beginRead(): Promise<ReadTransaction> {
    this.ensureOpen();
    while (this.applyWaiting > 0) await new Promise<void>((resolve) => this.readWaiters.push(resolve));
    const conn = openConnection(this.file, { readonly: true, fileMustExist: true });
    conn.exec('BEGIN');
    conn.prepare('select count(*) from sqlite_master').get();
    this.activeReads++;
    let ended = false;
    return {
      conn,
      end: () => {
        if (ended) return;
        ended = true;
        conn.exec('COMMIT');
        conn.close();
        this.activeReads--;
        if (this.activeReads === 0) for (const w of this.idleWaiters.splice(0)) w();
      },
    };
  }

  /** False once closed or stopped after a failure (a diverged apply). */
  get isOpen(): boolean {
    return !this.closed && this.failure === undefined;
  }

  get position(): ReplicaPosition {
    return { ...this.pos };
  }

  get txid(): number {
    return this.pos.txid;
  }

  get checksum(): Checksum {
    return { ...this.pos.checksum };
  }

  get dbId(): string {
    return this.meta.dbId;
  }

  get pageSize(): number {
    return this.meta.pageSize;
  }

  /**
   * Turns this replica into a primary at its TXID: the epoch rises, a base snapshot
   * is written, and the database switches to WAL mode with capture on.
   */
  promote(options: Omit<PrimaryOptions, 'file' | 'stateDir' | 'efs'> & { epoch?: number } = {}): PrimaryDatabase {
    this.ensureOpen();
    if (this.activeReads > 0) throw new GeodrError('BUSY', 'read transactions are open', { database: this.name });
    const efs = this.efs;
    // A caller that knows of newer epochs (another failover it heard of) asks for one above them all.
    const epoch = Math.max(this.pos.epoch + 1, options.epoch ?? 0);
    const pos = this.pos;
    writeFullSnapshot(efs, path.join(this.stateDir, 'snapshots'), { efs, dbFd: this.fd, pageSize: this.meta.pageSize, pageCount: pos.pageCount }, {
      dbId: this.meta.dbId,
      epoch,
      txid: pos.txid,
      timestamp: pos.timestamp,
      checksum: pos.checksum,
    });
    efs.unlink(path.join(this.stateDir, 'log'), 'replica.promote');
    writeMeta(efs, this.stateDir, { dbId: this.meta.dbId, role: 'primary', epoch, pageSize: this.meta.pageSize, base: { txid: pos.txid, checksum: pos.checksum, timestamp: pos.timestamp } });
    this.close();
    efs.unlink(path.join(this.stateDir, 'replica.state'), 'replica.promote');
    efs.unlink(path.join(this.stateDir, 'redo.journal'), 'replica.promote');
    const { epoch: _epoch, ...primaryOptions } = options;
    return PrimaryDatabase.open({ ...primaryOptions, file: this.file, stateDir: this.stateDir, efs });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reader?.close();
    this.reader = undefined;
    if (this.fd >= 0) this.efs.close(this.fd, 'replica.close');
    if (this.stateFd >= 0) this.efs.close(this.stateFd, 'replica.close');
    if (this.journalFd >= 0) this.efs.close(this.journalFd, 'replica.close');
    this.fd = this.stateFd = this.journalFd = -1;
  }
}
