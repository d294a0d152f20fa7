/**
 * Materialize: build a database file at a target TXID or time from a chain
 * (latest full snapshot at or before the target, then the largest units that fit,
 * then single records), verifying the checksum chain at every step, then the whole
 * file, then SQLite's integrity_check. The file is built under a temp name and
 * only renamed into place once every check passed.
 */
import * as path from 'node:path';
import { GeodrError } from '../errors.js';
import type { ChainSource, UnitRef } from './chain.js';
import { checksumEquals, checksumHex, PageHashes, type Checksum } from './checksum.js';
import { NodeFs, type EngineFs } from './fs.js';
import { hashLogicalDb, lockBytePage, prepareRollbackPageOne, writePages } from './pagefile.js';
import type { RecordHeader } from './record.js';
import { openConnection } from './sqlite.js';

export type RestoreTarget = { txid: number } | { time: number } | 'latest';

/** Memory for staging record pages before they are written (see the records step). */
const RECORD_STAGE_BYTES = 64 << 20;

export type PlanStep = { unit: UnitRef } | { records: { from: number; to: number } };

export interface RestorePlan {
  txid: number;
  snapshot: UnitRef;
  steps: PlanStep[];
}

/** Resolves a target to a TXID the chain can reach. */
export function resolveTarget(source: ChainSource, target: RestoreTarget): number {
  const range = source.recordRange();
  const units = source.units();
  const newest = Math.max(range?.last ?? -1, ...units.map((u) => u.txid));
  if (target === 'latest') {
    if (newest < 0) throw new GeodrError('NO_SNAPSHOT', 'the chain is empty', { database: source.dbId });
    return newest;
  }
  if ('txid' in target) {
    if (!Number.isSafeInteger(target.txid) || target.txid < 0) throw new GeodrError('INVALID_ARGUMENT', `TXID must be a non-negative integer, got ${target.txid}`, { database: source.dbId });
    if (target.txid > newest) throw new GeodrError('TARGET_OUT_OF_RANGE', `TXID ${target.txid} is past the newest kept (${newest})`, { database: source.dbId, txid: target.txid });
    return target.txid;
  }
  if (!Number.isFinite(target.time)) throw new GeodrError('INVALID_ARGUMENT', `time must be a number of ms, got ${target.time}`, { database: source.dbId });
  const t = source.txidAtTime(target.time);
  if (t !== undefined) return t;
  // Before the first kept record: a snapshot taken at or before that time may still do.
  const snaps = units.filter((u) => u.kind === 'full' && u.txid < (range?.first ?? Infinity));
  const best = snaps.length > 0 ? snaps[snaps.length - 1] : undefined;
  if (best !== undefined && range !== undefined && best.txid === range.first - 1) {
    // Times before the first record resolve to the state just before it only when that state is a snapshot.
    const first = source.timestampOf(range.first);
    if (first !== undefined && first > target.time) return best.txid;
  }
  throw new GeodrError('TARGET_OUT_OF_RANGE', `no kept state at or before ${new Date(target.time).toISOString()}`, { database: source.dbId });
}

/** Chooses the snapshot and the steps that reach `txid`, fewest first. */
export function planRestore(source: ChainSource, txid: number): RestorePlan {
  const units = source.units();
  const fulls = units.filter((u) => u.kind === 'full' && u.txid <= txid).sort((a, b) => b.txid - a.txid);
  const snapshot = fulls[0];
  if (snapshot === undefined) throw new GeodrError('NO_SNAPSHOT', `no full snapshot at or before TXID ${txid}`, { database: source.dbId, txid });
  const byBase = new Map<number, UnitRef[]>();
  for (const u of units) {
    if (u.kind === 'full' || u.txid > txid || u.baseTxid < snapshot.txid) continue;
    const list = byBase.get(u.baseTxid) ?? [];
    list.push(u);
    byBase.set(u.baseTxid, list);
  }
  const starts = [...byBase.keys()].sort((a, b) => a - b);
  const steps: PlanStep[] = [];
  let pos = snapshot.txid;
  while (pos < txid) {
    const cands = byBase.get(pos);
    if (cands !== undefined && cands.length > 0) {
      const best = cands.reduce((a, b) => (b.txid > a.txid ? b : a));
      steps.push({ unit: best });
      pos = best.txid;
      continue;
    }
    // Single records up to the next place a unit starts (or the target).
    const next = starts.find((s) => s > pos);
    const to = next === undefined ? txid : Math.min(next, txid);
    const range = source.recordRange();
    if (range === undefined || range.first > pos + 1 || range.last < to) {
      throw new GeodrError('LOG_GAP', `no unit or record covers TXID ${pos + 1} on the way to ${txid}`, { database: source.dbId, txid: pos + 1 });
    }
    steps.push({ records: { from: pos + 1, to } });
    pos = to;
  }
  return { txid, snapshot, steps };
}

export interface MaterializeOptions {
  source: ChainSource;
  target: RestoreTarget;
  /** The database file to create (must not exist). */
  out: string;
  efs?: EngineFs;
  /**
   * Read the finished file back and rehash it (default false). Every page is hashed from
   * the very buffer that was written and the checksum chain is checked at every step, and
   * integrity_check reads the whole file anyway; this extra pass guards only against the
   * disk returning other bytes than were written.
   */
  verifyFile?: boolean;
  /** Run PRAGMA integrity_check (default true). */
  integrityCheck?: boolean;
  /** Called after each step with (done, total) steps. */
  onProgress?: (done: number, total: number) => void;
  /** Checked between steps; throw to cancel. */
  signal?: AbortSignal;
}

export interface MaterializeResult {
  txid: number;
  /** Commit time of the target TXID, when known. */
  timestamp: number | undefined;
  epoch: number;
  checksum: Checksum;
  pageSize: number;
  pageCount: number;
  unitsApplied: number;
  recordsApplied: number;
  file: string;
}

/**
 * Builds `out` at the target and verifies it.
 *
 * @example
 * const r = materialize({ source: new LocalChain(fs, 'tenant.db.geodr'), target: { txid: 42 }, out: 'restored.db' })
 */
export function materialize(opts: MaterializeOptions): MaterializeResult {
  const efs = opts.efs ?? new NodeFs();
  const { source } = opts;
  const txid = resolveTarget(source, opts.target);
  const plan = planRestore(source, txid);
  const out = path.resolve(opts.out);
  if (efs.exists(out)) throw new GeodrError('INVALID_ARGUMENT', 'the output file already exists', { object: out });
  const tmp = `${out}.restoring`;
  efs.unlink(tmp, 'materialize.clean');
  const fd = efs.open(tmp, 'w+', 'materialize.create');
  let pageSize = 0;
  let lock = 0;
  let hashes = new PageHashes(1);
  let pageCount = 0;
  let epoch = 0;
  let timestamp: number | undefined;
  let unitsApplied = 0;
  let recordsApplied = 0;
  let closed = false;
  const total = plan.steps.length + 1;
  try {
    const checkPre = (pre: Checksum, object: string, t: number): void => {
      if (!checksumEquals(pre, hashes.sum)) {
        throw new GeodrError('LOG_GAP', `starts from ${checksumHex(pre)} but the database is at ${checksumHex(hashes.sum)}`, { database: source.dbId, object, txid: t });
      }
    };
    const checkPost = (post: Checksum, object: string, t: number): void => {
      if (!checksumEquals(post, hashes.sum)) {
        throw new GeodrError('RECORD_CORRUPT', `ends on ${checksumHex(hashes.sum)}, states ${checksumHex(post)}`, { database: source.dbId, object, txid: t });
      }
    };
    const applyPages = (pages: Array<[number, Uint8Array]>): void => {
      writePages(efs, fd, pageSize, pages, 'materialize.write');
      for (const [p, img] of pages) if (p !== lock) hashes.setPage(p, img);
    };
    const finishStep = (h: Pick<RecordHeader, 'commitSize' | 'post' | 'txid' | 'epoch' | 'timestamp'>, object: string): void => {
      hashes.truncate(h.commitSize);
      if (h.commitSize < pageCount) efs.truncate(fd, h.commitSize * pageSize, 'materialize.truncate');
      pageCount = h.commitSize;
      epoch = Math.max(epoch, h.epoch);
      timestamp = h.timestamp;
      checkPost(h.post, object, h.txid);
    };
    const snap = plan.snapshot;
    const sh = source.streamUnit(
      snap,
      (h) => {
        if (!h.full) throw new GeodrError('SNAPSHOT_CORRUPT', 'named as a full snapshot but is not one', { object: snap.object, txid: h.txid });
        pageSize = h.pageSize;
        lock = lockBytePage(pageSize);
        hashes = new PageHashes(h.commitSize);
      },
      applyPages,
    );
    try {
      finishStep(sh, snap.object);
    } catch (e) {
      throw new GeodrError('SNAPSHOT_CORRUPT', 'snapshot pages do not hash to its stated checksum', { object: snap.object, txid: sh.txid }, { cause: e });
    }
    opts.onProgress?.(1, total);
    let done = 1;
    for (const step of plan.steps) {
      if (opts.signal?.aborted === true) throw opts.signal.reason;
      if ('unit' in step) {
        const u = step.unit;
        const h = source.streamUnit(
          u,
          (hdr) => {
            if (hdr.pageSize !== pageSize) throw new GeodrError('RECORD_CORRUPT', `page size ${hdr.pageSize} differs from ${pageSize}`, { object: u.object, txid: hdr.txid });
            checkPre(hdr.pre, u.object, hdr.txid);
          },
          applyPages,
        );
        finishStep(h, u.object);
        unitsApplied++;
      } else {
        // Records are staged (last image wins, copied: a source may reuse its buffers) and
        // written sorted and coalesced: one small pwrite per record page was most of a restore.
        const cap = Math.max(1, Math.floor(RECORD_STAGE_BYTES / pageSize));
        const arena = Buffer.allocUnsafe(cap * pageSize);
        const slots = new Map<number, number>();
        let used = 0;
        const flushStaged = (): void => {
          const pages = [...slots.entries()].sort((a, b) => a[0] - b[0]).map(([p, i]): [number, Uint8Array] => [p, arena.subarray(i * pageSize, (i + 1) * pageSize)]);
          writePages(efs, fd, pageSize, pages, 'materialize.write');
          slots.clear();
          used = 0;
        };
        for (const r of source.records(step.records.from, step.records.to)) {
          const object = `record ${r.txid}`;
          checkPre(r.pre, object, r.txid);
          for (const [p, img] of r.pages) {
            if (p !== lock) hashes.setPage(p, img);
            let i = slots.get(p);
            if (i === undefined) {
              if (used === cap) flushStaged();
              i = used++;
              slots.set(p, i);
            }
            arena.set(img, i * pageSize);
          }
          // A shrink drops staged pages above the new size, as finishStep's truncate drops written ones.
          if (r.commitSize < pageCount) for (const p of slots.keys()) if (p > r.commitSize) slots.delete(p);
          finishStep(r, object);
          recordsApplied++;
        }
        flushStaged();
      }
      opts.onProgress?.(++done, total);
    }
    // A rollback-mode file: any SQLite can open it, and it can become a replica or a primary.
    const p1 = Buffer.alloc(pageSize);
    efs.read(fd, p1, 0, pageSize, 0, 'materialize.header');
    prepareRollbackPageOne(p1, 0, pageCount);
    efs.write(fd, p1, 0, 'materialize.header');
    efs.truncate(fd, pageCount * pageSize, 'materialize.truncate');
    efs.sync(fd, 'materialize.sync');
    if (opts.verifyFile === true) {
      const full = hashLogicalDb({ efs, dbFd: fd, pageSize, pageCount }, 'materialize.verify');
      if (!checksumEquals(full.sum, hashes.sum)) {
        throw new GeodrError('RECORD_CORRUPT', `written file hashes to ${checksumHex(full.sum)}, expected ${checksumHex(hashes.sum)}`, { database: source.dbId, txid, object: tmp });
      }
    }
    efs.close(fd, 'materialize.close');
    closed = true;
    if (opts.integrityCheck !== false) integrityCheck(tmp, source.dbId, txid);
    efs.rename(tmp, out, 'materialize.publish');
    efs.syncDir(path.dirname(out), 'materialize.publish');
  } catch (e) {
    if (!closed) efs.close(fd, 'materialize.close');
    efs.unlink(tmp, 'materialize.abort');
    throw e;
  }
  return { txid, timestamp: source.timestampOf(txid) ?? timestamp, epoch, checksum: hashes.checksum(), pageSize, pageCount, unitsApplied, recordsApplied, file: out };
}

/** Runs PRAGMA integrity_check on a file; throws INTEGRITY_CHECK_FAILED with SQLite's findings. */
export function integrityCheck(file: string, database?: string, txid?: number): void {
  const conn = openConnection(file, { readonly: true, fileMustExist: true });
  try {
    const rows = conn.pragma('integrity_check') as Array<{ integrity_check: string }>;
    const msgs = rows.map((r) => r.integrity_check);
    if (msgs.length !== 1 || msgs[0] !== 'ok') {
      throw new GeodrError('INTEGRITY_CHECK_FAILED', msgs.slice(0, 5).join('; '), { database, txid, object: file });
    }
  } finally {
    conn.close();
  }
}
