/**
 * The local durable log of one database: segment files of consecutive transaction
 * records, each entry preceded by the WAL position it ends at (used at start-up to
 * tell which WAL frames are already logged). Appends go to the newest segment;
 * `sync()` makes everything appended so far durable.
 *
 * At open the newest segment is scanned and a torn tail (a short or failing entry
 * at its end, left by a crash mid-append) is cut off; it was never acknowledged.
 * Damage anywhere else is LOG_CORRUPT: a crash cannot have caused it.
 */
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { GeodrError } from '../errors.js';
import type { Checksum } from './checksum.js';
import type { EngineFs } from './fs.js';
import { RECORD_HEADER_SIZE, RECORD_MAGIC, dbIdBytes, decodeHeader, decodeRecord, encodedLength, encodeRecordInto, type TxRecord } from './record.js';
import type { WalPosition } from './wal.js';

const SEGMENT_MAGIC = 0x4744524c; // "GDRL"
const PREALLOCATE_BYTES = 1 << 20;
const ARENA_MIN_BYTES = 64 << 10;
const ARENA_MAX_BYTES = 1 << 20;

let zeroBuf = Buffer.alloc(0);
function zeros(n: number): Buffer {
  if (zeroBuf.length < n) zeroBuf = Buffer.alloc(Math.max(n, PREALLOCATE_BYTES));
  return zeroBuf.subarray(0, n);
}

function isZeros(buf: Buffer, from: number): boolean {
  for (let i = from; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}
const SEGMENT_VERSION = 1;
export const SEGMENT_HEADER_SIZE = 40;
/** WAL position (5 × u32) + its CRC. */
export const ENTRY_PREFIX_SIZE = 24;

export interface LoggedTx {
  txid: number;
  timestamp: number;
  post: Checksum;
  epoch: number;
  wal: WalPosition | undefined;
}

interface Segment {
  file: string;
  /** Bytes the file holds, zero-filled past `size` (preallocated). -1 until loaded. */
  allocated: number;
  /** False for an older segment indexed from its header only; see ensureLoaded(). */
  loaded: boolean;
  /** TXID of its first record. */
  first: number;
  /** TXID of its last record (first - 1 when empty). */
  last: number;
  /** Byte offset of each record's entry, index = txid - first. */
  offsets: number[];
  timestamps: number[];
  size: number;
}

export interface TxLogOptions {
  /** Start a new segment once the current one reaches this size. */
  segmentBytes?: number;
  /**
   * Extend segments with zeros ahead of the data (default true). Worth it when every
   * commit is fsynced; with group commit the extra bytes cost more than they save.
   */
  preallocate?: boolean;
}

function segmentName(first: number): string {
  return `${first.toString(16).padStart(16, '0')}.seg`;
}

function encodeWalPos(w: WalPosition | undefined, b: Buffer = Buffer.alloc(ENTRY_PREFIX_SIZE)): Buffer {
  b.fill(0, 0, ENTRY_PREFIX_SIZE);
  if (w !== undefined) {
    b.writeUInt32BE(w.salt1, 0);
    b.writeUInt32BE(w.salt2, 4);
    b.writeUInt32BE(w.frame, 8);
    b.writeUInt32BE(w.cksum1, 12);
    b.writeUInt32BE(w.cksum2, 16);
  }
  b.writeUInt32BE(crc32(b.subarray(0, 20)), 20);
  return b;
}

function decodeWalPos(b: Uint8Array): WalPosition | undefined | 'bad' {
  const buf = Buffer.from(b.buffer, b.byteOffset, ENTRY_PREFIX_SIZE);
  if (buf.readUInt32BE(20) !== crc32(buf.subarray(0, 20))) return 'bad';
  const frame = buf.readUInt32BE(8);
  if (frame === 0) return undefined;
  return { salt1: buf.readUInt32BE(0), salt2: buf.readUInt32BE(4), frame, cksum1: buf.readUInt32BE(12), cksum2: buf.readUInt32BE(16) };
}

export class TxLog {
  private segments: Segment[] = [];
  private fd: number | undefined;
  private unsynced = false;
  /**
   * Entries appended but not yet written, encoded straight into this buffer: they are
   * written in one call at sync(), at rotation, before a read, or when it is full.
   * Losing them in a crash loses nothing, because the WAL still holds those commits
   * (checkpoints sync the log first) and they are captured again at open. It starts
   * empty and grows with use up to 1 MiB, so thousands of mostly idle open databases do
   * not each hold a megabyte.
   */
  private arena = Buffer.alloc(0);
  private arenaUsed = 0;
  private pendingAt = 0;
  private lastTx: LoggedTx | undefined;
  private readonly segmentBytes: number;
  private readonly preallocate: boolean;
  /** Bytes cut from a torn tail at open (0 when the log was clean). */
  tornBytesCut = 0;

  private constructor(
    private readonly efs: EngineFs,
    readonly dir: string,
    readonly dbId: string,
    opts: TxLogOptions,
  ) {
    this.segmentBytes = opts.segmentBytes ?? 16 << 20;
    this.preallocate = opts.preallocate ?? true;
  }

  /**
   * Opens (creating if needed) the log in `dir`. Only the newest segment is read whole
   * (its torn tail, if any, is cut); older ones are indexed from their headers and read
   * when a record in them is first needed, so opening costs the same for 10 thousand
   * or 10 million records. Damage in an older segment is found when it is read.
   */
  static open(efs: EngineFs, dir: string, dbId: string, opts: TxLogOptions = {}): TxLog {
    const log = new TxLog(efs, dir, dbId, opts);
    efs.mkdir(dir, 'log.mkdir');
    const names = efs.readdir(dir).filter((n) => /^[0-9a-f]{16}\.seg$/.test(n)).sort();
    for (let i = 0; i < names.length - 1; i++) {
      log.segments.push(log.probeSegment(path.join(dir, names[i]!), parseInt(names[i + 1]!.slice(0, 16), 16) - 1));
    }
    if (names.length > 0) {
      const newest = log.loadSegment(path.join(dir, names[names.length - 1]!), true);
      if (newest !== undefined) log.segments.push(newest);

    }
    // A newest segment with no record yet (a crash right after rotation): the last
    // record is the previous segment's.
    for (let i = log.segments.length - 1; log.lastTx === undefined && i >= 0; i--) log.ensureLoaded(log.segments[i]!);
    return log;
  }

  /** TXID of the oldest record kept, or undefined when the log is empty. */
  get firstTxid(): number | undefined {
    const s = this.segments.find((x) => x.last >= x.first);
    return s?.first;
  }

  get lastTxid(): number | undefined {
    return this.lastTx?.txid;
  }

  /** Facts about the newest record (from memory). */
  get last(): LoggedTx | undefined {
    return this.lastTx;
  }

  /** Checks a segment header; returns its first TXID. */
  private checkHeader(buf: Buffer, object: string): number {
    if (buf.length < SEGMENT_HEADER_SIZE || buf.readUInt32BE(0) !== SEGMENT_MAGIC || buf.readUInt32BE(36) !== crc32(buf.subarray(0, 36))) {
      throw new GeodrError('LOG_CORRUPT', 'bad segment header', { object, database: this.dbId });
    }
    if (buf.readUInt16BE(4) !== SEGMENT_VERSION) throw new GeodrError('FORMAT_UNSUPPORTED', `segment version ${buf.readUInt16BE(4)}`, { object });
    const segDb = buf.subarray(8, 24).toString('hex');
    if (segDb !== this.dbId) throw new GeodrError('RECORD_FOREIGN', `segment belongs to database ${segDb}`, { object, database: this.dbId });
    const first = buf.readUInt32BE(24) * 0x100000000 + buf.readUInt32BE(28);
    if (segmentName(first) !== object) throw new GeodrError('LOG_CORRUPT', `segment named ${object} starts at TXID ${first}`, { object, database: this.dbId });
    return first;
  }

  /** Indexes an older segment from its header and first record, without reading it. */
  private probeSegment(file: string, last: number): Segment {
    const object = path.basename(file);
    const fd = this.efs.open(file, 'r', 'log.open');
    try {
      const buf = Buffer.alloc(SEGMENT_HEADER_SIZE + ENTRY_PREFIX_SIZE + RECORD_HEADER_SIZE);
      const n = this.efs.read(fd, buf, 0, buf.length, 0, 'log.scan');
      const first = this.checkHeader(buf.subarray(0, n), object);
      if (last < first) throw new GeodrError('LOG_CORRUPT', `segment ${object} holds no record but is not the newest`, { object, database: this.dbId, txid: first });
      let firstTs: number;
      try {
        firstTs = decodeHeader(buf.subarray(SEGMENT_HEADER_SIZE + ENTRY_PREFIX_SIZE, n), { object, dbId: this.dbId }).timestamp;
      } catch (e) {
        throw new GeodrError('LOG_CORRUPT', 'damaged first record in an older segment', { object, database: this.dbId, txid: first }, { cause: e });
      }
      return { file, allocated: -1, first, last, offsets: [], timestamps: [firstTs], size: -1, loaded: false };
    } finally {
      this.efs.close(fd, 'log.close');
    }
  }

  /** Reads an older segment's entries (once), checking each record's header. */
  private ensureLoaded(seg: Segment): void {
    if (seg.loaded) return;
    const loaded = this.loadSegment(seg.file, false);
    if (loaded === undefined || loaded.last !== seg.last) {
      throw new GeodrError('LOG_GAP', `segment ${path.basename(seg.file)} ends at TXID ${loaded?.last ?? '?'}, the next starts at ${seg.last + 1}`, {
        object: path.basename(seg.file),
        database: this.dbId,
        txid: (loaded?.last ?? seg.first - 1) + 1,
      });
    }
    Object.assign(seg, loaded);
  }

  /**
   * Reads a segment whole. For the newest, a torn tail is cut and the newest record
   * remembered; returns undefined when the newest segment is a torn creation (deleted).
   */
  private loadSegment(file: string, isLast: boolean): Segment | undefined {
    const efs = this.efs;
    const fd = efs.open(file, isLast ? 'r+' : 'r', 'log.open');
    let open = true;
    try {
      const size = efs.size(fd);
      const buf = Buffer.allocUnsafe(size);
      efs.read(fd, buf, 0, size, 0, 'log.scan');
      const object = path.basename(file);
      if (isLast && size <= SEGMENT_HEADER_SIZE && (size < SEGMENT_HEADER_SIZE || buf.readUInt32BE(36) !== crc32(buf.subarray(0, 36)))) {
        // A crash while creating the segment: it never held a record.
        efs.close(fd, 'log.close');
        open = false;
        efs.unlink(file, 'log.cut');
        return undefined;
      }
      const first = this.checkHeader(buf, object);
      const seg: Segment = { file, allocated: size, first, last: first - 1, offsets: [], timestamps: [], size: SEGMENT_HEADER_SIZE, loaded: true };
      let off = SEGMENT_HEADER_SIZE;
      let expectTxid = first;
      let lastEntry: LoggedTx | undefined;
      while (off < size) {
        let bad: string | undefined;
        let rec: TxRecord | undefined;
        let wal: WalPosition | undefined;
        let len = 0;
        if (size - off < ENTRY_PREFIX_SIZE + RECORD_HEADER_SIZE) bad = 'short entry';
        else {
          const w = decodeWalPos(buf.subarray(off, off + ENTRY_PREFIX_SIZE));
          if (w === 'bad') bad = 'bad entry prefix';
          else {
            wal = w;
            try {
              const h = decodeHeader(buf.subarray(off + ENTRY_PREFIX_SIZE), { object, dbId: this.dbId });
              len = h.totalLength;
              if (off + ENTRY_PREFIX_SIZE + len > size) bad = 'short record';
              else if (h.txid !== expectTxid || h.baseTxid !== expectTxid - 1) bad = `TXID ${h.txid} where ${expectTxid} was expected`;
              else if (isLast) rec = decodeRecord(buf.subarray(off + ENTRY_PREFIX_SIZE, off + ENTRY_PREFIX_SIZE + len), { object, dbId: this.dbId });
              else rec = { ...h, timestamps: [], pages: [] };
            } catch (e) {
              // Only damage can be a torn tail; a foreign or newer-format record is an error as it is.
              if (!(e instanceof GeodrError && e.code === 'RECORD_CORRUPT')) throw e;
              bad = e.message;
            }
          }
        }
        if ((bad !== undefined || rec === undefined) && isZeros(buf, off)) {
          // Preallocated space: the data ends here.
          break;
        }
        if (bad !== undefined || rec === undefined) {
          // A crash tears only the end of the file. Damage with a whole, valid entry after
          // it is something else, and cutting there would drop acknowledged records.
          if (!isLast || this.validEntryAfter(buf, off, object)) {
            throw new GeodrError('LOG_CORRUPT', `damaged entry before the tail: ${bad ?? 'unreadable'}`, { object, database: this.dbId, txid: expectTxid });
          }
          // A torn tail from a crash mid-append: never acknowledged, so cut it.
          this.tornBytesCut = size - off;
          efs.truncate(fd, off, 'log.cut');
          efs.sync(fd, 'log.cut');
          seg.allocated = off;
          break;
        }
        seg.offsets.push(off);
        seg.timestamps.push(rec.timestamp);
        seg.last = rec.txid;
        lastEntry = { txid: rec.txid, timestamp: rec.timestamp, post: rec.post, epoch: rec.epoch, wal };
        expectTxid++;
        off += ENTRY_PREFIX_SIZE + len;
      }
      seg.size = off;
      // The newest record is remembered from the newest segment, or from the one before it
      // when the newest holds none yet.
      if (lastEntry !== undefined && (isLast || this.lastTx === undefined)) this.lastTx = lastEntry;
      return seg;
    } finally {
      if (open) efs.close(fd, 'log.close');
    }
  }

  /** True when a complete, valid record starts somewhere after the entry at `off`. */
  private validEntryAfter(buf: Buffer, off: number, object: string): boolean {
    const magic = Buffer.alloc(4);
    magic.writeUInt32BE(RECORD_MAGIC, 0);
    for (let i = buf.indexOf(magic, off + ENTRY_PREFIX_SIZE + 1); i >= 0; i = buf.indexOf(magic, i + 1)) {
      try {
        const h = decodeHeader(buf.subarray(i), { object, dbId: this.dbId });
        if (i + h.totalLength <= buf.length) {
          decodeRecord(buf.subarray(i, i + h.totalLength), { object, dbId: this.dbId });
          return true;
        }
      } catch {
        // Not a record: keep looking.
      }
    }
    return false;
  }

  private newSegment(first: number): void {
    this.writePending();
    if (this.fd !== undefined) {
      // Later syncs reach only the newest segment: what went into this one must be durable
      // before it is left behind.
      if (this.unsynced) this.efs.sync(this.fd, 'log.sync');
      this.efs.close(this.fd, 'log.rotate');
    }
    const file = path.join(this.dir, segmentName(first));
    const h = Buffer.alloc(SEGMENT_HEADER_SIZE);
    h.writeUInt32BE(SEGMENT_MAGIC, 0);
    h.writeUInt16BE(SEGMENT_VERSION, 4);
    dbIdBytes(this.dbId).copy(h, 8);
    h.writeUInt32BE(Math.floor(first / 0x100000000), 24);
    h.writeUInt32BE(first >>> 0, 28);
    h.writeUInt32BE(crc32(h.subarray(0, 36)), 36);
    const fd = this.efs.open(file, 'w+', 'log.create');
    this.efs.write(fd, h, 0, 'log.create');
    this.efs.sync(fd, 'log.create');
    this.efs.syncDir(this.dir, 'log.create');
    this.fd = fd;
    this.segments.push({ file, allocated: SEGMENT_HEADER_SIZE, first, last: first - 1, offsets: [], timestamps: [], size: SEGMENT_HEADER_SIZE, loaded: true });
  }

  private currentFd(nextTxid: number): number {
    const seg = this.segments[this.segments.length - 1];
    if (seg === undefined || seg.size >= this.segmentBytes) {
      this.newSegment(nextTxid);
      return this.fd!;
    }
    if (this.fd === undefined) this.fd = this.efs.open(seg.file, 'r+', 'log.open');
    return this.fd;
  }

  /**
   * Appends one record (not yet durable; call sync()) and returns its encoding.
   */
  append(rec: TxRecord, wal: WalPosition | undefined): Buffer {
    const expect = this.lastTx === undefined ? undefined : this.lastTx.txid + 1;
    if ((expect !== undefined && rec.txid !== expect) || rec.baseTxid !== rec.txid - 1) {
      throw new GeodrError('RECORD_OUT_OF_ORDER', `append of TXID ${rec.txid} after ${this.lastTx?.txid ?? 'nothing'}`, { database: this.dbId, txid: rec.txid });
    }
    this.currentFd(rec.txid);
    const seg = this.segments[this.segments.length - 1]!;
    const need = ENTRY_PREFIX_SIZE + encodedLength(rec) + (rec.timestamps.length > 0 ? 10 * rec.timestamps.length : 0);
    if (this.arenaUsed + need > this.arena.length) {
      if (this.arena.length < ARENA_MAX_BYTES && this.arenaUsed + need <= ARENA_MAX_BYTES) {
        // Grow, keeping what is buffered.
        let size = Math.max(this.arena.length, ARENA_MIN_BYTES);
        while (size < this.arenaUsed + need) size *= 2;
        const grown = Buffer.allocUnsafe(Math.min(size, ARENA_MAX_BYTES));
        this.arena.copy(grown, 0, 0, this.arenaUsed);
        this.arena = grown;
      } else {
        this.writePending();
        if (need > this.arena.length) this.arena = Buffer.allocUnsafe(need);
      }
    }
    if (this.arenaUsed === 0) this.pendingAt = seg.size;
    const at = this.arena.subarray(this.arenaUsed);
    const length = ENTRY_PREFIX_SIZE + encodeRecordInto(rec, at.subarray(ENTRY_PREFIX_SIZE));
    encodeWalPos(wal, at);
    this.arenaUsed += length;
    seg.offsets.push(seg.size);
    seg.timestamps.push(rec.timestamp);
    seg.size += length;
    seg.last = rec.txid;
    this.lastTx = { txid: rec.txid, timestamp: rec.timestamp, post: rec.post, epoch: rec.epoch, wal };
    this.unsynced = true;
    // A view valid until the next append: callers that keep it must copy it.
    return at.subarray(ENTRY_PREFIX_SIZE, length);
  }

  /**
   * Writes buffered entries to the segment file (not yet fsynced), first extending the
   * file with zeros in 1 MiB steps: fdatasync of an overwrite inside allocated space
   * need not commit a new file size or block map, so each commit's fsync is cheaper.
   */
  private writePending(): void {
    if (this.arenaUsed === 0 || this.fd === undefined) return;
    const seg = this.segments[this.segments.length - 1]!;
    const end = this.pendingAt + this.arenaUsed;
    if (this.preallocate && end > seg.allocated) {
      const target = Math.min(Math.max(end, seg.allocated + PREALLOCATE_BYTES), Math.max(end, this.segmentBytes));
      this.efs.write(this.fd, zeros(target - seg.allocated), seg.allocated, 'log.preallocate');
      seg.allocated = target;
    }
    const buf = this.arena.subarray(0, this.arenaUsed);
    this.arenaUsed = 0;
    this.efs.write(this.fd, buf, this.pendingAt, 'log.append');
  }

  /** Makes every appended record durable. */
  sync(): void {
    if (!this.unsynced || this.fd === undefined) return;
    this.writePending();
    this.efs.sync(this.fd, 'log.sync');
    this.unsynced = false;
  }

  /**
   * Writes pending entries now and fsyncs them on the thread pool. Resolves once every
   * record appended before the call is durable (older segments were synced at rotation).
   */
  async syncAsync(): Promise<void> {
    if (!this.unsynced || this.fd === undefined) return;
    this.writePending();
    this.unsynced = false;
    const file = this.segments[this.segments.length - 1]!.file;
    try {
      await this.efs.syncFile(file, 'log.sync');
    } catch (e) {
      this.unsynced = true;
      throw e;
    }
  }

  get hasUnsynced(): boolean {
    return this.unsynced;
  }

  private locate(txid: number): { seg: Segment; idx: number } | undefined {
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = this.segments[mid]!;
      if (txid < s.first) hi = mid - 1;
      else if (txid > s.last) lo = mid + 1;
      else {
        this.ensureLoaded(s);
        return { seg: s, idx: txid - s.first };
      }
    }
    return undefined;
  }

  /** Reads and verifies records with from ≤ TXID ≤ to. Throws LOG_GAP if any is missing. */
  *records(from: number, to: number): Generator<TxRecord> {
    this.writePending();
    let txid = from;
    while (txid <= to) {
      const loc = this.locate(txid);
      if (loc === undefined) throw new GeodrError('LOG_GAP', `TXID ${txid} is not in the local log`, { database: this.dbId, txid });
      const { seg } = loc;
      const fd = this.efs.open(seg.file, 'r', 'log.read');
      try {
        const end = Math.min(to, seg.last);
        const startOff = seg.offsets[txid - seg.first]!;
        const endOff = end === seg.last ? seg.size : seg.offsets[end - seg.first + 1]!;
        const buf = Buffer.allocUnsafe(endOff - startOff);
        this.efs.read(fd, buf, 0, buf.length, startOff, 'log.read');
        const object = path.basename(seg.file);
        for (let t = txid; t <= end; t++) {
          const a = seg.offsets[t - seg.first]! - startOff + ENTRY_PREFIX_SIZE;
          const b = (t === seg.last ? seg.size : seg.offsets[t - seg.first + 1]!) - startOff;
          const rec = decodeRecord(buf.subarray(a, b), { object, dbId: this.dbId });
          if (rec.txid !== t) throw new GeodrError('LOG_CORRUPT', `found TXID ${rec.txid} where ${t} belongs`, { object, database: this.dbId, txid: t });
          yield rec;
        }
        txid = end + 1;
      } finally {
        this.efs.close(fd, 'log.read');
      }
    }
  }

  /** The newest TXID committed at or before `time` (ms), or undefined if none is kept. */
  txidAtTime(time: number): number | undefined {
    // Segments are in time order and each knows its first timestamp: find the last one
    // that starts at or before `time`, then search inside it.
    let seg: Segment | undefined;
    for (const s of this.segments) {
      if (s.last < s.first || s.timestamps[0]! > time) break;
      seg = s;
    }
    if (seg === undefined) return undefined;
    this.ensureLoaded(seg);
    let lo = 0;
    let hi = seg.timestamps.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (seg.timestamps[mid]! <= time) lo = mid;
      else hi = mid - 1;
    }
    return seg.first + lo;
  }

  /** Timestamp of a kept TXID. */
  timestampOf(txid: number): number | undefined {
    const loc = this.locate(txid);
    return loc === undefined ? undefined : loc.seg.timestamps[loc.idx];
  }

  /** Deletes whole segments whose records are all ≤ txid, keeping the newest segment. */
  truncateBefore(txid: number): number {
    let removed = 0;
    while (this.segments.length > 1 && this.segments[0]!.last <= txid) {
      const s = this.segments.shift()!;
      this.efs.unlink(s.file, 'log.prune');
      removed++;
    }
    if (removed > 0) this.efs.syncDir(this.dir, 'log.prune');
    return removed;
  }

  /** Closes the log; with `sync` false (after a failure) nothing more is written. */
  close(sync = true): void {
    if (sync) this.writePending();
    if (this.fd !== undefined) {
      if (sync) this.sync();
      this.efs.close(this.fd, 'log.close');
      this.fd = undefined;
    }
  }
}
