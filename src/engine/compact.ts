/**
 * Compaction: merges consecutive records into units that keep only each page's
 * last image, in levels of aligned TXID windows (level 1: `spans[0]` records,
 * level 2: `spans[1]`, ...), and rolls a new full snapshot at the end of every
 * top-level window. A restore then needs one snapshot plus at most a bounded
 * number of units and records, so its cost follows the database's size rather
 * than the length of its history.
 */
import * as path from 'node:path';
import { GeodrError } from '../errors.js';
import { compactedName, type LocalChain, type UnitRef } from './chain.js';
import { checksumEquals, checksumHex } from './checksum.js';
import { writeFileAtomic, type EngineFs } from './fs.js';
import { materialize } from './materialize.js';
import { encodeRecord, type TxRecord } from './record.js';
import { fullSnapshotName, writeFullSnapshot } from './snapshot.js';

export const DEFAULT_SPANS = [1_000, 100_000];

/**
 * Merges consecutive units (records or compacted units) into one: pages keep their
 * last image, pages above a shrunken size are dropped, and the checksum chain
 * must be unbroken.
 */
export function mergeUnits(units: Iterable<TxRecord>): TxRecord {
  let out: TxRecord | undefined;
  const pages = new Map<number, Uint8Array>();
  for (const u of units) {
    if (out === undefined) {
      out = { ...u, timestamps: [], pages: [] };
    } else {
      if (u.dbId !== out.dbId) throw new GeodrError('RECORD_FOREIGN', `unit of ${u.dbId} in a chain of ${out.dbId}`, { txid: u.txid });
      if (u.baseTxid !== out.txid) throw new GeodrError('LOG_GAP', `unit starts at TXID ${u.baseTxid}, chain is at ${out.txid}`, { database: out.dbId, txid: u.txid });
      if (u.full) throw new GeodrError('INVALID_ARGUMENT', 'a full unit can only start a merge', { txid: u.txid });
      if (!checksumEquals(u.pre, out.post)) {
        throw new GeodrError('LOG_GAP', `unit starts from ${checksumHex(u.pre)}, chain is at ${checksumHex(out.post)}`, { database: out.dbId, txid: u.txid });
      }
      out.txid = u.txid;
      out.post = u.post;
      out.epoch = Math.max(out.epoch, u.epoch);
      out.timestamp = u.timestamp;
      out.commitSize = u.commitSize;
    }
    if (!u.full) out.timestamps.push(...(u.timestamps.length > 0 ? u.timestamps : [u.timestamp]));
    // Copy: the images may be views into a buffer that is reused.
    for (const [p, img] of u.pages) pages.set(p, Buffer.from(img));
    for (const p of pages.keys()) if (p > u.commitSize) pages.delete(p);
  }
  if (out === undefined) throw new GeodrError('INVALID_ARGUMENT', 'nothing to merge');
  out.pages = [...pages.entries()].sort((a, b) => a[0] - b[0]);
  if (out.full) out.timestamps = [];
  return out;
}

export interface CompactOptions {
  spans?: number[];
  /** Roll a full snapshot at the end of each top-level window (default true). */
  rollSnapshots?: boolean;
  /**
   * Scratch directory for rolling snapshots (default: `<stateDir>/scratch`, swept at the
   * start of every compaction so a crash mid-roll leaves nothing behind for long).
   */
  scratchDir?: string;
}

export interface CompactResult {
  created: UnitRef[];
  snapshots: number[];
}

function readUnit(chain: LocalChain, ref: UnitRef): TxRecord {
  let header: TxRecord | undefined;
  const pages: Array<[number, Uint8Array]> = [];
  let timestamps: number[] = [];
  chain.streamUnit(
    ref,
    (h) => {
      header = { ...h, timestamps: [], pages: [] };
    },
    (batch) => {
      for (const [p, img] of batch) pages.push([p, Buffer.from(img)]);
    },
    (ts) => {
      timestamps = ts;
    },
  );
  return { ...header!, timestamps, pages };
}

/**
 * Compacts what the chain holds into levels and rolls snapshots. Idempotent: a unit
 * that exists is not rebuilt, and units are published by atomic rename.
 */
export function compact(efs: EngineFs, chain: LocalChain, opts: CompactOptions = {}): CompactResult {
  const spans = opts.spans ?? DEFAULT_SPANS;
  for (let i = 0; i < spans.length; i++) {
    const s = spans[i]!;
    if (!Number.isSafeInteger(s) || s < 2 || (i > 0 && s % spans[i - 1]! !== 0)) {
      throw new GeodrError('INVALID_ARGUMENT', `compaction spans must be integers ≥ 2, each a multiple of the one before; got ${spans.join(',')}`);
    }
  }
  const created: UnitRef[] = [];
  const snapshots: number[] = [];
  const range = chain.recordRange();
  if (range === undefined) return { created, snapshots };
  // One listing, kept up to date as units are written: looking units up by listing the
  // directories again for every window made compaction quadratic in the history.
  const key = (kind: UnitRef['kind'], level: number, base: number, txid: number): string => `${kind}:${level}:${base}:${txid}`;
  const units = new Map(chain.units().map((u) => [key(u.kind, u.level, u.baseTxid, u.txid), u]));
  for (let level = 1; level <= spans.length; level++) {
    const span = spans[level - 1]!;
    const dir = path.join(chain.stateDir, 'levels', `L${level}`);
    const firstWindow = Math.ceil((range.first - 1) / span);
    const lastWindow = Math.floor(range.last / span) - 1;
    for (let w = firstWindow; w <= lastWindow; w++) {
      const base = w * span;
      const end = base + span;
      if (units.has(key('compacted', level, base, end))) continue;
      let merged: TxRecord;
      if (level === 1) {
        merged = mergeUnits(chain.records(base + 1, end));
      } else {
        const sub = spans[level - 2]!;
        const parts: UnitRef[] = [];
        for (let b = base; b < end; b += sub) {
          const ref = units.get(key('compacted', level - 1, b, b + sub));
          if (ref === undefined) break;
          parts.push(ref);
        }
        if (parts.length !== span / sub) continue;
        merged = mergeUnits(parts.map((p) => readUnit(chain, p)));
      }
      efs.mkdir(dir, 'compact.mkdir');
      const file = path.join(dir, compactedName(base, end));
      writeFileAtomic(efs, file, encodeRecord(merged), 'compact.write');
      const ref: UnitRef = { kind: 'compacted', level, baseTxid: base, txid: end, object: file };
      units.set(key('compacted', level, base, end), ref);
      created.push(ref);
    }
  }
  if (opts.rollSnapshots !== false) {
    const scratch = opts.scratchDir ?? path.join(chain.stateDir, 'scratch');
    efs.mkdir(scratch, 'compact.scratch');
    for (const name of efs.readdir(scratch)) if (name.startsWith('geodr-roll-')) efs.unlink(path.join(scratch, name), 'compact.sweep');
    const top = spans[spans.length - 1]!;
    const tops = [...units.values()].filter((u) => u.kind === 'compacted' && u.level === spans.length && u.txid % top === 0).sort((a, b) => a.txid - b.txid);
    for (const u of tops) {
      if (units.has(key('full', 0, u.txid, u.txid))) continue;
      rollSnapshot(efs, chain, u.txid, scratch);
      units.set(key('full', 0, u.txid, u.txid), { kind: 'full', level: 0, baseTxid: u.txid, txid: u.txid, object: path.join(chain.stateDir, 'snapshots', fullSnapshotName(u.txid)) });
      snapshots.push(u.txid);
    }
  }
  return { created, snapshots };
}

/** Writes a full snapshot at `txid` by materializing the chain there (verified) and copying the file. */
export function rollSnapshot(efs: EngineFs, chain: LocalChain, txid: number, scratchDir: string): void {
  const scratch = path.join(scratchDir, `geodr-roll-${chain.dbId}-${txid}-${process.pid}.db`);
  efs.unlink(scratch, 'compact.roll');
  const r = materialize({ source: chain, target: { txid }, out: scratch, efs, integrityCheck: false });
  const fd = efs.open(scratch, 'r', 'compact.roll');
  try {
    writeFullSnapshot(efs, path.join(chain.stateDir, 'snapshots'), { efs, dbFd: fd, pageSize: r.pageSize, pageCount: r.pageCount }, {
      dbId: chain.dbId,
      epoch: r.epoch,
      txid,
      timestamp: r.timestamp ?? Date.now(),
      checksum: r.checksum,
    });
  } finally {
    efs.close(fd, 'compact.roll');
    efs.unlink(scratch, 'compact.roll');
  }
}
