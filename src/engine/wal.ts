/**
 * Reading SQLite's write-ahead log. See https://sqlite.org/fileformat2.html#walformat.
 *
 * Only frames up to the last commit frame of an unbroken chain are accepted: every
 * frame must carry the header's salts and a cumulative checksum that matches the
 * running one (byte order from the header magic). After a restart SQLite reuses the
 * file, so frames of an older generation sit past the new ones; they fail the salt
 * test and end the chain. Frames after the last commit belong to a transaction still
 * in progress (possibly spilled and rewritten in place later) and are never used.
 */
import type { EngineFs } from './fs.js';

export const WAL_HEADER_SIZE = 32;
export const WAL_FRAME_HEADER_SIZE = 24;
const MAGIC_LE = 0x377f0682;
const MAGIC_BE = 0x377f0683;

export interface WalHeader {
  bigEndianChecksums: boolean;
  pageSize: number;
  checkpointSeq: number;
  salt1: number;
  salt2: number;
  /** Cumulative checksum after the header; the first frame continues from it. */
  cksum1: number;
  cksum2: number;
}

/** Continues SQLite's WAL checksum over `data` (length a multiple of 8). */
export function walChecksum(data: Uint8Array, bigEndian: boolean, s1: number, s2: number): [number, number] {
  const n = data.length >>> 2;
  if (!bigEndian && (data.byteOffset & 3) === 0) {
    const w = new Uint32Array(data.buffer, data.byteOffset, n);
    for (let i = 0; i < n; i += 2) {
      s1 = (s1 + w[i]! + s2) | 0;
      s2 = (s2 + w[i + 1]! + s1) | 0;
    }
  } else {
    const dv = new DataView(data.buffer, data.byteOffset, data.length);
    const le = !bigEndian;
    for (let i = 0; i < n; i += 2) {
      s1 = (s1 + dv.getUint32(i * 4, le) + s2) | 0;
      s2 = (s2 + dv.getUint32(i * 4 + 4, le) + s1) | 0;
    }
  }
  return [s1 >>> 0, s2 >>> 0];
}

/** Parses and verifies a WAL header; undefined when absent or invalid (SQLite ignores such a WAL). */
export function parseWalHeader(buf: Uint8Array): WalHeader | undefined {
  if (buf.length < WAL_HEADER_SIZE) return undefined;
  const dv = new DataView(buf.buffer, buf.byteOffset, WAL_HEADER_SIZE);
  const magic = dv.getUint32(0);
  if (magic !== MAGIC_LE && magic !== MAGIC_BE) return undefined;
  const bigEndian = magic === MAGIC_BE;
  const pageSize = dv.getUint32(8);
  if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) return undefined;
  const aligned = Buffer.from(buf.subarray(0, 24));
  const [c1, c2] = walChecksum(aligned, bigEndian, 0, 0);
  if (c1 !== dv.getUint32(24) || c2 !== dv.getUint32(28)) return undefined;
  return {
    bigEndianChecksums: bigEndian,
    pageSize,
    checkpointSeq: dv.getUint32(12),
    salt1: dv.getUint32(16),
    salt2: dv.getUint32(20),
    cksum1: c1,
    cksum2: c2,
  };
}

/** Where capture stands in one WAL generation: after frame `frame` (0 = before the first). */
export interface WalPosition {
  salt1: number;
  salt2: number;
  frame: number;
  cksum1: number;
  cksum2: number;
}

/** One committed transaction found in the WAL. */
export interface WalCommit {
  /** Final image of every page the transaction wrote, page number → image (a view into the read buffer). */
  pages: Map<number, Uint8Array>;
  /** Page number → WAL frame number of that final image. */
  frames: Map<number, number>;
  /** Database size in pages after the commit. */
  commitSize: number;
  /** Position after this transaction's last frame (its commit frame or its padding copies). */
  end: WalPosition;
}

export interface WalScan {
  header: WalHeader | undefined;
  /** Committed transactions after the starting position, in order. */
  commits: WalCommit[];
  /** True when a whole frame was found that failed the salt or checksum test. */
  stoppedOnInvalidFrame: boolean;
}

export function walFrameOffset(frame: number, pageSize: number): number {
  return WAL_HEADER_SIZE + (frame - 1) * (WAL_FRAME_HEADER_SIZE + pageSize);
}

/** Reads and verifies the WAL header; undefined when there is no valid one. */
export function readWalHeader(efs: EngineFs, fd: number, op = 'wal.read'): WalHeader | undefined {
  const headBuf = Buffer.alloc(WAL_HEADER_SIZE);
  const got = efs.read(fd, headBuf, 0, WAL_HEADER_SIZE, 0, op);
  return got === WAL_HEADER_SIZE ? parseWalHeader(headBuf) : undefined;
}

const CHUNK_BYTES = 256 * 1024;

/**
 * Reads the committed transactions of the current WAL generation that lie after `from`.
 * When `from` belongs to another generation (different salts) or is absent, scanning
 * starts at the first frame. A caller that knows the header (nothing restarted the WAL
 * since it read it) may pass it to save a read.
 */
export function scanWal(efs: EngineFs, fd: number, from: WalPosition | undefined, op = 'wal.read', knownHeader?: WalHeader): WalScan {
  const header = knownHeader ?? readWalHeader(efs, fd, op);
  if (header === undefined) return { header, commits: [], stoppedOnInvalidFrame: false };
  const sameGeneration = from !== undefined && from.salt1 === header.salt1 && from.salt2 === header.salt2;
  const pos: WalPosition = sameGeneration
    ? { ...from }
    : { salt1: header.salt1, salt2: header.salt2, frame: 0, cksum1: header.cksum1, cksum2: header.cksum2 };

  const frameSize = WAL_FRAME_HEADER_SIZE + header.pageSize;
  // Start small (most captures find one short transaction) and grow for long tails.
  const maxChunkFrames = Math.max(4, Math.floor(CHUNK_BYTES / frameSize));
  let chunkFrames = 4;
  const commits: WalCommit[] = [];
  let s1 = pos.cksum1;
  let s2 = pos.cksum2;
  let pending = new Map<number, Uint8Array>();
  let pendingFrames = new Map<number, number>();
  let prevCommit: { pgno: number; commitSize: number; page: Uint8Array } | undefined;
  let frameNo = pos.frame;
  let stoppedOnInvalidFrame = false;
  // Read in chunks until a short read: no fstat needed, and big tails are not one allocation.
  for (;;) {
    const buf = Buffer.allocUnsafe(chunkFrames * frameSize);
    const n = efs.read(fd, buf, 0, buf.length, walFrameOffset(frameNo + 1, header.pageSize), op);
    const frames = Math.floor(n / frameSize);
    let valid = true;
    for (let i = 0; i < frames; i++) {
      const off = i * frameSize;
      const fh = buf.subarray(off, off + WAL_FRAME_HEADER_SIZE);
      const dv = new DataView(fh.buffer, fh.byteOffset, WAL_FRAME_HEADER_SIZE);
      const pgno = dv.getUint32(0);
      const commitSize = dv.getUint32(4);
      if (pgno === 0 || dv.getUint32(8) !== header.salt1 || dv.getUint32(12) !== header.salt2) {
        valid = false;
        break;
      }
      const page = buf.subarray(off + WAL_FRAME_HEADER_SIZE, off + frameSize);
      [s1, s2] = walChecksum(fh.subarray(0, 8), header.bigEndianChecksums, s1, s2);
      [s1, s2] = walChecksum(page, header.bigEndianChecksums, s1, s2);
      if (s1 !== dv.getUint32(16) || s2 !== dv.getUint32(20)) {
        valid = false;
        break;
      }
      frameNo++;
      pending.set(pgno, page);
      pendingFrames.set(pgno, frameNo);
      if (commitSize === 0) continue;
      const end: WalPosition = { salt1: header.salt1, salt2: header.salt2, frame: frameNo, cksum1: s1, cksum2: s2 };
      // With synchronous=FULL and no power-safe overwrite SQLite pads to a sector boundary
      // by writing the commit frame again; such a copy is not a new transaction.
      const isPadding =
        pending.size === 1 &&
        prevCommit !== undefined &&
        prevCommit.pgno === pgno &&
        prevCommit.commitSize === commitSize &&
        Buffer.compare(prevCommit.page, page) === 0 &&
        commits.length > 0 &&
        commits[commits.length - 1]!.end.frame === frameNo - 1;
      if (isPadding) {
        commits[commits.length - 1]!.end = end;
      } else {
        for (const p of pending.keys()) {
          if (p > commitSize) {
            pending.delete(p);
            pendingFrames.delete(p);
          }
        }
        commits.push({ pages: pending, frames: pendingFrames, commitSize, end });
      }
      prevCommit = { pgno, commitSize, page };
      pending = new Map();
      pendingFrames = new Map();
    }
    if (!valid) {
      stoppedOnInvalidFrame = true;
      break;
    }
    if (n < buf.length) break;
    chunkFrames = Math.min(maxChunkFrames, chunkFrames * 4);
    // Frames of a transaction still open at the end of a chunk continue in the next one;
    // their images stay valid because every chunk is a fresh buffer.
  }
  return { header, commits, stoppedOnInvalidFrame };
}
