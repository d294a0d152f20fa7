/**
 * Page-level access to database files: reading the logical content of a WAL-mode
 * database (file pages overlaid with committed WAL frames), hashing a whole file,
 * and the header edits that make a rollback-mode file see a new version.
 */
import { GeodrError } from '../errors.js';
import { PageHashes } from './checksum.js';
import type { EngineFs } from './fs.js';
import { WAL_FRAME_HEADER_SIZE, walFrameOffset } from './wal.js';

/** The page that holds byte 2^30 is never used by SQLite; it is left out of checksums. */
export function lockBytePage(pageSize: number): number {
  return Math.floor(0x40000000 / pageSize) + 1;
}

/** Page size from a database header (bytes 16-17; 1 means 65536). */
export function headerPageSize(page1: Uint8Array): number {
  const v = (page1[16]! << 8) | page1[17]!;
  return v === 1 ? 65536 : v;
}

/** A page source: the database file, with some pages taken from WAL frames instead. */
export interface LogicalDb {
  efs: EngineFs;
  dbFd: number;
  walFd?: number | undefined;
  pageSize: number;
  pageCount: number;
  /** Page number → WAL frame number holding its latest committed image. */
  walIndex?: ReadonlyMap<number, number> | undefined;
  /** Pages known from elsewhere (e.g. a WAL scan buffer) that win over both. */
  overrides?: ReadonlyMap<number, Uint8Array> | undefined;
}

/** Reads page `pgno` of a logical database into `buf`. Pages past the file's end read as zeros. */
export function readLogicalPage(db: LogicalDb, pgno: number, buf: Buffer, op: string): void {
  const o = db.overrides?.get(pgno);
  if (o !== undefined) {
    buf.set(o);
    return;
  }
  const frame = db.walIndex?.get(pgno);
  let n: number;
  if (frame !== undefined && db.walFd !== undefined) {
    n = db.efs.read(db.walFd, buf, 0, db.pageSize, walFrameOffset(frame, db.pageSize) + WAL_FRAME_HEADER_SIZE, op);
    if (n !== db.pageSize) throw new GeodrError('IO_FAILED', `WAL frame ${frame} for page ${pgno} is short`, { operation: op });
    return;
  }
  n = db.efs.read(db.dbFd, buf, 0, db.pageSize, (pgno - 1) * db.pageSize, op);
  if (n < db.pageSize) buf.fill(0, n);
}

/** Hashes every page of a logical database. */
export function hashLogicalDb(db: LogicalDb, op: string): PageHashes {
  const hashes = new PageHashes(db.pageCount);
  const lock = lockBytePage(db.pageSize);
  const chunkPages = Math.max(1, Math.floor((4 << 20) / db.pageSize));
  const chunk = Buffer.allocUnsafe(chunkPages * db.pageSize);
  const one = Buffer.allocUnsafe(db.pageSize);
  for (let first = 1; first <= db.pageCount; first += chunkPages) {
    const count = Math.min(chunkPages, db.pageCount - first + 1);
    const got = db.efs.read(db.dbFd, chunk, 0, count * db.pageSize, (first - 1) * db.pageSize, op);
    if (got < count * db.pageSize) chunk.fill(0, got, count * db.pageSize);
    for (let i = 0; i < count; i++) {
      const pgno = first + i;
      if (pgno === lock) continue;
      let page: Uint8Array = chunk.subarray(i * db.pageSize, (i + 1) * db.pageSize);
      if (db.overrides?.has(pgno) === true || db.walIndex?.has(pgno) === true) {
        readLogicalPage(db, pgno, one, op);
        page = one;
      }
      hashes.setPage(pgno, page);
    }
  }
  hashes.truncate(db.pageCount);
  return hashes;
}

/**
 * Makes page 1 right for a rollback-mode copy: format versions 1/1 (bytes 18-19),
 * change counter bumped (24-27) and copied to version-valid-for (92-95), and the
 * in-header size (28-31) set. A reader connection notices the new counter at its
 * next read transaction and drops its page cache.
 */
export function prepareRollbackPageOne(page1: Uint8Array, previousCounter: number, pageCount: number): void {
  const dv = new DataView(page1.buffer, page1.byteOffset, 100);
  page1[18] = 1;
  page1[19] = 1;
  const counter = (Math.max(previousCounter, dv.getUint32(24)) + 1) >>> 0;
  dv.setUint32(24, counter);
  dv.setUint32(92, counter);
  dv.setUint32(28, pageCount);
}

/** Writes pages into a file, coalescing runs of consecutive page numbers into one write. */
export function writePages(efs: EngineFs, fd: number, pageSize: number, pages: Array<[number, Uint8Array]>, op: string): void {
  let i = 0;
  while (i < pages.length) {
    let j = i + 1;
    while (j < pages.length && pages[j]![0] === pages[j - 1]![0] + 1 && j - i < 256) j++;
    if (j - i === 1) {
      efs.write(fd, pages[i]![1], (pages[i]![0] - 1) * pageSize, op);
    } else {
      const buf = Buffer.allocUnsafe((j - i) * pageSize);
      for (let k = i; k < j; k++) buf.set(pages[k]![1], (k - i) * pageSize);
      efs.write(fd, buf, (pages[i]![0] - 1) * pageSize, op);
    }
    i = j;
  }
}
