/**
 * The transaction record codec (format version 1; byte layout in docs/FORMATS.md).
 *
 * One shape serves four uses: a single transaction (baseTxid = txid - 1), a
 * compacted unit of many transactions (baseTxid < txid - 1, each page's last
 * image only), an incremental snapshot (the same thing, read from the database),
 * and a full snapshot (flag FULL: applies to an empty file). Every unit carries
 * the database id, its epoch, the checksum of the database before and after it,
 * and a CRC-32 over all its bytes, so corrupt, truncated, reordered or foreign
 * bytes are rejected before anything is applied.
 */
import { crc32 } from 'node:zlib';
import { GeodrError } from '../errors.js';
import type { Checksum } from './checksum.js';
import type { EngineFs } from './fs.js';

export const RECORD_MAGIC = 0x47445252; // "GDRR"
export const RECORD_VERSION = 1;
export const RECORD_HEADER_SIZE = 96;
export const FLAG_FULL = 1;

export interface TxRecord {
  /** 32 hex characters: the database's lineage id. */
  dbId: string;
  /** Role generation of the primary that wrote it. */
  epoch: number;
  /** The TXID this unit applies on top of. For a FULL unit: equal to txid. */
  baseTxid: number;
  /** The TXID the database is at after applying it. */
  txid: number;
  /** True when the unit holds every page and applies to an empty file. */
  full: boolean;
  /** Commit time (ms since epoch) of the last transaction in the unit. */
  timestamp: number;
  /** Commit time of each transaction baseTxid+1..txid (compacted units); empty otherwise. */
  timestamps: number[];
  pageSize: number;
  /** Database size in pages after the unit. */
  commitSize: number;
  pre: Checksum;
  post: Checksum;
  /** Page images, ascending page number, none above commitSize. */
  pages: Array<[number, Uint8Array]>;
}

function writeU64(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, Math.floor(v / 0x100000000));
  dv.setUint32(off + 4, v >>> 0);
}
function readU64(dv: DataView, off: number): number {
  return dv.getUint32(off) * 0x100000000 + dv.getUint32(off + 4);
}

export function dbIdBytes(dbId: string): Buffer {
  if (!/^[0-9a-f]{32}$/.test(dbId)) throw new GeodrError('INVALID_ARGUMENT', `database id must be 32 lowercase hex characters, got ${JSON.stringify(dbId)}`);
  return Buffer.from(dbId, 'hex');
}

function encodeVarints(values: number[]): Buffer {
  const out: number[] = [];
  let prev = 0;
  for (const v of values) {
    // Timestamps are monotonic per database; a step backwards is clamped to zero so the
    // decoder, which adds deltas, reproduces exactly what is stored.
    let d = Math.max(0, v - prev);
    prev += d;
    while (d >= 0x80) {
      out.push((d % 0x80) | 0x80);
      d = Math.floor(d / 0x80);
    }
    out.push(d);
  }
  return Buffer.from(out);
}

function decodeVarints(buf: Uint8Array, count: number): number[] | undefined {
  const out: number[] = [];
  let prev = 0;
  let i = 0;
  for (let k = 0; k < count; k++) {
    let v = 0;
    let mul = 1;
    for (;;) {
      if (i >= buf.length) return undefined;
      const b = buf[i++]!;
      v += (b & 0x7f) * mul;
      mul *= 0x80;
      if ((b & 0x80) === 0) break;
    }
    prev += v;
    out.push(prev);
  }
  return i === buf.length ? out : undefined;
}

/** The fixed-size header, with its own CRC so a reader can trust lengths before reading on. */
export function encodeHeader(r: Omit<TxRecord, 'pages'>, pageCount: number, tsBytes: number, totalLength: number, into?: Buffer): Buffer {
  const h = into === undefined ? Buffer.alloc(RECORD_HEADER_SIZE) : into.subarray(0, RECORD_HEADER_SIZE);
  const dv = new DataView(h.buffer, h.byteOffset, RECORD_HEADER_SIZE);
  dv.setUint32(0, RECORD_MAGIC);
  dv.setUint16(4, RECORD_VERSION);
  dv.setUint16(6, r.full ? FLAG_FULL : 0);
  writeU64(dv, 8, totalLength);
  dbIdBytes(r.dbId).copy(h, 16);
  dv.setUint32(32, r.epoch);
  dv.setUint32(36, r.pageSize);
  writeU64(dv, 40, r.baseTxid);
  writeU64(dv, 48, r.txid);
  writeU64(dv, 56, r.timestamp);
  dv.setUint32(64, r.commitSize);
  dv.setUint32(68, pageCount);
  dv.setUint32(72, r.pre.hi);
  dv.setUint32(76, r.pre.lo);
  dv.setUint32(80, r.post.hi);
  dv.setUint32(84, r.post.lo);
  dv.setUint32(88, tsBytes);
  dv.setUint32(92, crc32(h.subarray(0, 92)));
  return h;
}

export interface RecordHeader extends Omit<TxRecord, 'pages' | 'timestamps'> {
  totalLength: number;
  pageCount: number;
  tsBytes: number;
}

export interface DecodeExpectations {
  /** File or object name, for error messages. */
  object: string;
  /** Reject bytes of any other database. */
  dbId?: string | undefined;
}

/** Parses and verifies a record header. Throws a GeodrError naming the object (and the TXID when readable). */
export function decodeHeader(h: Uint8Array, expect: DecodeExpectations): RecordHeader {
  const { object } = expect;
  if (h.length < RECORD_HEADER_SIZE) throw new GeodrError('RECORD_CORRUPT', `truncated header: ${h.length} of ${RECORD_HEADER_SIZE} bytes`, { object });
  const dv = new DataView(h.buffer, h.byteOffset, RECORD_HEADER_SIZE);
  if (dv.getUint32(0) !== RECORD_MAGIC) throw new GeodrError('RECORD_CORRUPT', 'bad magic: not a geodr transaction record', { object });
  const version = dv.getUint16(4);
  // CRC first: a flipped version byte is corruption, not a format from the future.
  if (dv.getUint32(92) !== crc32(h.subarray(0, 92))) {
    throw new GeodrError('RECORD_CORRUPT', version === RECORD_VERSION ? 'header checksum mismatch' : `header checksum mismatch (version field reads ${version})`, { object });
  }
  if (version !== RECORD_VERSION) throw new GeodrError('FORMAT_UNSUPPORTED', `record format version ${version}; this build reads ${RECORD_VERSION}`, { object });
  const txid = readU64(dv, 48);
  const dbId = Buffer.from(h.subarray(16, 32)).toString('hex');
  if (expect.dbId !== undefined && dbId !== expect.dbId) {
    throw new GeodrError('RECORD_FOREIGN', `record belongs to database ${dbId}, expected ${expect.dbId}`, { object, txid, database: expect.dbId });
  }
  const pageSize = dv.getUint32(36);
  const header: RecordHeader = {
    dbId,
    epoch: dv.getUint32(32),
    full: (dv.getUint16(6) & FLAG_FULL) !== 0,
    totalLength: readU64(dv, 8),
    pageSize,
    baseTxid: readU64(dv, 40),
    txid,
    timestamp: readU64(dv, 56),
    commitSize: dv.getUint32(64),
    pageCount: dv.getUint32(68),
    pre: { hi: dv.getUint32(72), lo: dv.getUint32(76) },
    post: { hi: dv.getUint32(80), lo: dv.getUint32(84) },
    tsBytes: dv.getUint32(88),
  };
  const expectedLength = RECORD_HEADER_SIZE + header.tsBytes + header.pageCount * (4 + pageSize) + 4;
  if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0 || header.totalLength !== expectedLength || header.baseTxid > header.txid) {
    throw new GeodrError('RECORD_CORRUPT', 'inconsistent header fields', { object, txid });
  }
  return header;
}

/** Bytes {@link encodeRecord} produces for `r` (timestamps section aside). */
export function encodedLength(r: TxRecord): number {
  return RECORD_HEADER_SIZE + r.pages.length * (4 + r.pageSize) + 4;
}

/** Encodes a unit into one new buffer. */
export function encodeRecord(r: TxRecord): Buffer {
  const ts = r.timestamps.length > 0 ? encodeVarints(r.timestamps) : undefined;
  const buf = Buffer.allocUnsafe(encodedLength(r) + (ts?.length ?? 0));
  encodeRecordInto(r, buf, ts);
  return buf;
}

/**
 * Encodes a unit at the start of `buf` (which must be large enough) and returns its
 * length. The log encodes straight into its write buffer this way, with no allocation.
 */
export function encodeRecordInto(r: TxRecord, buf: Buffer, ts: Buffer | undefined = r.timestamps.length > 0 ? encodeVarints(r.timestamps) : undefined): number {
  const tsLen = ts?.length ?? 0;
  const entry = 4 + r.pageSize;
  const total = RECORD_HEADER_SIZE + tsLen + r.pages.length * entry + 4;
  encodeHeader(r, r.pages.length, tsLen, total, buf);
  if (ts !== undefined) ts.copy(buf, RECORD_HEADER_SIZE);
  let off = RECORD_HEADER_SIZE + tsLen;
  for (const [pgno, image] of r.pages) {
    if (image.length !== r.pageSize) throw new GeodrError('INVALID_ARGUMENT', `page ${pgno} is ${image.length} bytes, page size is ${r.pageSize}`, { txid: r.txid });
    buf.writeUInt32BE(pgno, off);
    buf.set(image, off + 4);
    off += entry;
  }
  buf.writeUInt32BE(crc32(buf.subarray(0, off)), off);
  return total;
}

/**
 * Decodes and fully verifies one unit. Page images are views into `buf`.
 * Checks: magic, version, header CRC, database id, lengths, whole-unit CRC,
 * ascending page numbers within the commit size.
 */
export function decodeRecord(buf: Uint8Array, expect: DecodeExpectations): TxRecord {
  const h = decodeHeader(buf, expect);
  const { object } = expect;
  const txid = h.txid;
  if (buf.length < h.totalLength) throw new GeodrError('RECORD_CORRUPT', `truncated: ${buf.length} of ${h.totalLength} bytes`, { object, txid });
  const body = buf.subarray(0, h.totalLength - 4);
  const stored = new DataView(buf.buffer, buf.byteOffset + h.totalLength - 4, 4).getUint32(0);
  if (crc32(body) !== stored) throw new GeodrError('RECORD_CORRUPT', 'checksum mismatch over the record bytes', { object, txid });
  let off = RECORD_HEADER_SIZE;
  let timestamps: number[] = [];
  if (h.tsBytes > 0) {
    const count = h.txid - h.baseTxid;
    const decoded = decodeVarints(buf.subarray(off, off + h.tsBytes), count);
    if (decoded === undefined) throw new GeodrError('RECORD_CORRUPT', 'bad timestamp section', { object, txid });
    timestamps = decoded;
    off += h.tsBytes;
  }
  const pages: Array<[number, Uint8Array]> = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, h.totalLength);
  let prev = 0;
  for (let i = 0; i < h.pageCount; i++) {
    const pgno = dv.getUint32(off);
    if (pgno <= prev || pgno > h.commitSize) throw new GeodrError('RECORD_CORRUPT', `page number ${pgno} out of order or above commit size ${h.commitSize}`, { object, txid });
    prev = pgno;
    pages.push([pgno, buf.subarray(off + 4, off + 4 + h.pageSize)]);
    off += 4 + h.pageSize;
  }
  if (h.full && h.pageCount !== h.commitSize) throw new GeodrError('RECORD_CORRUPT', `full unit holds ${h.pageCount} pages, commit size ${h.commitSize}`, { object, txid });
  const { totalLength: _t, pageCount: _p, tsBytes: _s, ...rest } = h;
  return { ...rest, timestamps, pages };
}

/**
 * Streams a large unit (a full snapshot) to a file without holding it in memory:
 * header first, pages as they come, CRC last.
 */
export class UnitWriter {
  private crc = 0;
  private off = 0;
  private written = 0;

  constructor(
    private readonly efs: EngineFs,
    private readonly fd: number,
    private readonly meta: Omit<TxRecord, 'pages' | 'timestamps'>,
    private readonly pageCount: number,
    private readonly op: string,
    timestamps: number[] = [],
  ) {
    const ts = timestamps.length > 0 ? encodeVarints(timestamps) : Buffer.alloc(0);
    const total = RECORD_HEADER_SIZE + ts.length + pageCount * (4 + meta.pageSize) + 4;
    this.put(encodeHeader({ ...meta, timestamps }, pageCount, ts.length, total));
    if (ts.length > 0) this.put(ts);
  }

  private put(b: Uint8Array): void {
    this.efs.write(this.fd, b, this.off, this.op);
    this.crc = crc32(b, this.crc);
    this.off += b.length;
  }

  /** Adds a batch of pages (ascending). */
  addPages(pages: Array<[number, Uint8Array]>): void {
    const entry = 4 + this.meta.pageSize;
    const buf = Buffer.allocUnsafe(pages.length * entry);
    let o = 0;
    for (const [pgno, image] of pages) {
      buf.writeUInt32BE(pgno, o);
      buf.set(image, o + 4);
      o += entry;
    }
    this.written += pages.length;
    this.put(buf);
  }

  /** Writes the trailing CRC; returns the unit's length in bytes. */
  finish(): number {
    if (this.written !== this.pageCount) throw new GeodrError('INVALID_ARGUMENT', `unit announced ${this.pageCount} pages, got ${this.written}`, { txid: this.meta.txid });
    const t = Buffer.alloc(4);
    t.writeUInt32BE(this.crc >>> 0);
    this.efs.write(this.fd, t, this.off, this.op);
    this.off += 4;
    return this.off;
  }
}

/**
 * Reads a unit from a file in chunks, handing batches of pages to `onPages` as it goes,
 * and verifies the CRC at the end. A caller writing pages somewhere must treat that
 * place as scratch until this returns.
 */
export function streamUnit(...args: Parameters<typeof streamUnitSteps>): RecordHeader {
  const steps = streamUnitSteps(...args);
  for (let r = steps.next(); ; r = steps.next()) if (r.done === true) return r.value;
}

/**
 * {@link streamUnit} as steps: it pauses after each chunk of pages (about 8 MiB), so an
 * async caller can let other work run between chunks of a big unit.
 */
export function* streamUnitSteps(
  efs: EngineFs,
  fd: number,
  position: number,
  expect: DecodeExpectations,
  onPages: (pages: Array<[number, Uint8Array]>) => void,
  op = 'unit.read',
  onHeader?: (h: RecordHeader) => void,
  onTimestamps?: (ts: number[]) => void,
): Generator<void, RecordHeader> {
  const hb = Buffer.alloc(RECORD_HEADER_SIZE);
  const got = efs.read(fd, hb, 0, RECORD_HEADER_SIZE, position, op);
  const h = decodeHeader(hb.subarray(0, got), expect);
  onHeader?.(h);
  const { object } = expect;
  let crc = crc32(hb);
  let off = position + RECORD_HEADER_SIZE;
  if (h.tsBytes > 0) {
    const ts = Buffer.alloc(h.tsBytes);
    if (efs.read(fd, ts, 0, h.tsBytes, off, op) !== h.tsBytes) throw new GeodrError('RECORD_CORRUPT', 'truncated timestamp section', { object, txid: h.txid });
    crc = crc32(ts, crc);
    off += h.tsBytes;
    if (onTimestamps !== undefined) {
      const decoded = decodeVarints(ts, h.txid - h.baseTxid);
      if (decoded === undefined) throw new GeodrError('RECORD_CORRUPT', 'bad timestamp section', { object, txid: h.txid });
      onTimestamps(decoded);
    }
  }
  const entry = 4 + h.pageSize;
  const perChunk = Math.max(1, Math.floor((8 << 20) / entry));
  const chunk = Buffer.allocUnsafe(perChunk * entry);
  let left = h.pageCount;
  let prev = 0;
  while (left > 0) {
    const n = Math.min(left, perChunk);
    const want = n * entry;
    if (efs.read(fd, chunk, 0, want, off, op) !== want) throw new GeodrError('RECORD_CORRUPT', 'truncated page section', { object, txid: h.txid });
    const view = chunk.subarray(0, want);
    crc = crc32(view, crc);
    const pages: Array<[number, Uint8Array]> = [];
    for (let i = 0; i < n; i++) {
      const pgno = view.readUInt32BE(i * entry);
      if (pgno <= prev || pgno > h.commitSize) throw new GeodrError('RECORD_CORRUPT', `page number ${pgno} out of order or above commit size`, { object, txid: h.txid });
      prev = pgno;
      pages.push([pgno, view.subarray(i * entry + 4, (i + 1) * entry)]);
    }
    onPages(pages);
    off += want;
    left -= n;
    if (left > 0) yield;
  }
  const t = Buffer.alloc(4);
  if (efs.read(fd, t, 0, 4, off, op) !== 4) throw new GeodrError('RECORD_CORRUPT', 'truncated: missing trailing checksum', { object, txid: h.txid });
  if (t.readUInt32BE(0) !== crc >>> 0) throw new GeodrError('RECORD_CORRUPT', 'checksum mismatch over the unit bytes', { object, txid: h.txid });
  return h;
}
