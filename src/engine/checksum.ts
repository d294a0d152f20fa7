/**
 * Database checksums. A page's hash is CRC-32 of its bytes mixed non-linearly
 * with its page number into 64 bits; the database checksum is the XOR of the
 * hashes of all its pages, so one changed page updates it in O(1).
 *
 * Why not XOR of CRC-64s (LiteFS): CRC is affine, so an XOR of CRCs is too, and
 * two pages swapping their contents leave such a sum unchanged. The mix makes
 * the per-page hash non-linear, so a swap, a page written to the wrong place,
 * or a torn page all change the sum.
 *
 * Header bytes that legitimately differ between a WAL-mode primary and a
 * rollback-mode replica of the same content are zeroed on page 1 before
 * hashing: 18-19 (file format versions), 24-31 (change counter and in-header
 * size, which a replica writes itself) and 92-99 (version-valid-for, SQLite
 * version number).
 */
import { crc32 } from 'node:zlib';

/** A 64-bit checksum as two unsigned 32-bit halves. */
export interface Checksum {
  hi: number;
  lo: number;
}

export const ZERO_CHECKSUM: Readonly<Checksum> = Object.freeze({ hi: 0, lo: 0 });

const scratch = Buffer.alloc(65536);

function normalisedPageOne(page: Uint8Array): Uint8Array {
  const copy = scratch.subarray(0, page.length);
  copy.set(page);
  copy.fill(0, 18, 20);
  copy.fill(0, 24, 32);
  copy.fill(0, 92, 100);
  return copy;
}

function fmix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Writes the 64-bit hash of page `pgno` into `out[2*idx]`, `out[2*idx+1]`. */
export function hashPageInto(pgno: number, page: Uint8Array, out: Uint32Array, idx: number): void {
  const bytes = pgno === 1 ? normalisedPageOne(page) : page;
  const c = crc32(bytes);
  const a = fmix(c ^ Math.imul(pgno, 0x9e3779b1));
  const b = fmix((c + a) ^ Math.imul(pgno ^ 0x27d4eb2f, 0x165667b1));
  out[2 * idx] = a;
  out[2 * idx + 1] = b;
}

const one = new Uint32Array(2);
/** The 64-bit hash of one page. */
export function hashPage(pgno: number, page: Uint8Array): Checksum {
  hashPageInto(pgno, page, one, 0);
  return { hi: one[0]!, lo: one[1]! };
}

export function checksumHex(c: Checksum): string {
  return c.hi.toString(16).padStart(8, '0') + c.lo.toString(16).padStart(8, '0');
}

export function checksumFromHex(s: string): Checksum {
  if (!/^[0-9a-f]{16}$/.test(s)) throw new TypeError(`not a checksum: ${s}`);
  return { hi: parseInt(s.slice(0, 8), 16) >>> 0, lo: parseInt(s.slice(8), 16) >>> 0 };
}

export function checksumEquals(a: Checksum, b: Checksum): boolean {
  return a.hi === b.hi && a.lo === b.lo;
}

/**
 * The page hashes of one database plus their running XOR. Page numbers start at 1.
 * Kept in memory for every open database: 8 bytes a page (2 MiB for 1 GiB of 4 KiB pages).
 */
export class PageHashes {
  private hashes: Uint32Array;
  private pages = 0;
  sum: Checksum = { hi: 0, lo: 0 };

  constructor(initialPages = 16) {
    this.hashes = new Uint32Array(2 * (Math.max(initialPages, 1) + 1));
  }

  get pageCount(): number {
    return this.pages;
  }

  private ensure(pgno: number): void {
    if (2 * (pgno + 1) <= this.hashes.length) return;
    let n = this.hashes.length;
    while (n < 2 * (pgno + 1)) n *= 2;
    const next = new Uint32Array(n);
    next.set(this.hashes);
    this.hashes = next;
  }

  /**
   * The hashes of pages 1..pageCount, two words a page: what another copy compares its own
   * with to find the pages that differ (a resync sends only those).
   */
  table(): Uint32Array {
    return this.hashes.slice(2, 2 * (this.pages + 1));
  }

  /** Sets page `pgno` to `page`, updating the sum. Grows the page count if needed. */
  setPage(pgno: number, page: Uint8Array): void {
    this.ensure(pgno);
    const h = this.hashes;
    if (pgno <= this.pages) {
      this.sum.hi = (this.sum.hi ^ h[2 * pgno]!) >>> 0;
      this.sum.lo = (this.sum.lo ^ h[2 * pgno + 1]!) >>> 0;
    } else {
      // Pages between the old end and pgno that were never written read as zeros in a file;
      // a well-formed record never leaves such a hole, so they are simply counted as absent.
      this.pages = pgno;
    }
    hashPageInto(pgno, page, h, pgno);
    this.sum.hi = (this.sum.hi ^ h[2 * pgno]!) >>> 0;
    this.sum.lo = (this.sum.lo ^ h[2 * pgno + 1]!) >>> 0;
  }

  /** Drops every page above `pageCount` (a database that shrank). */
  truncate(pageCount: number): void {
    const h = this.hashes;
    for (let p = pageCount + 1; p <= this.pages; p++) {
      this.sum.hi = (this.sum.hi ^ h[2 * p]!) >>> 0;
      this.sum.lo = (this.sum.lo ^ h[2 * p + 1]!) >>> 0;
      h[2 * p] = 0;
      h[2 * p + 1] = 0;
    }
    if (pageCount < this.pages) this.pages = pageCount;
  }

  /** A copy of the current sum. */
  checksum(): Checksum {
    return { hi: this.sum.hi, lo: this.sum.lo };
  }

  clone(): PageHashes {
    const c = new PageHashes(1);
    c.hashes = this.hashes.slice();
    c.pages = this.pages;
    c.sum = this.checksum();
    return c;
  }
}
