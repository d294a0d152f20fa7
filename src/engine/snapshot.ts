/**
 * Snapshots. A full snapshot is a FULL unit (every page, applies to an empty file);
 * an incremental snapshot is a unit holding the pages changed since an earlier
 * snapshot. Both are taken from a pinned view of the primary: checkpoints wait, so
 * the database file and the pinned WAL frames stay put while writers go on.
 */
import * as path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { GeodrError } from '../errors.js';
import { checksumEquals, checksumHex, PageHashes, ZERO_CHECKSUM, type Checksum } from './checksum.js';
import type { EngineFs } from './fs.js';
import { lockBytePage, readLogicalPage, type LogicalDb } from './pagefile.js';
import type { PinnedView, PrimaryDatabase } from './primary.js';
import { UnitWriter } from './record.js';

export function hex16(n: number): string {
  return n.toString(16).padStart(16, '0');
}

export function fullSnapshotName(txid: number): string {
  return `${hex16(txid)}.full`;
}

export function incrementalSnapshotName(baseTxid: number, txid: number): string {
  return `${hex16(baseTxid)}-${hex16(txid)}.incr`;
}

export interface SnapshotRef {
  kind: 'full' | 'incremental';
  baseTxid: number;
  txid: number;
  file: string;
}

/** Lists the snapshots in a directory (by name; contents are verified when read). */
export function listSnapshots(efs: EngineFs, dir: string): SnapshotRef[] {
  const out: SnapshotRef[] = [];
  for (const name of efs.readdir(dir)) {
    let m = /^([0-9a-f]{16})\.full$/.exec(name);
    if (m !== null) {
      const txid = parseInt(m[1]!, 16);
      out.push({ kind: 'full', baseTxid: txid, txid, file: path.join(dir, name) });
      continue;
    }
    m = /^([0-9a-f]{16})-([0-9a-f]{16})\.incr$/.exec(name);
    if (m !== null) out.push({ kind: 'incremental', baseTxid: parseInt(m[1]!, 16), txid: parseInt(m[2]!, 16), file: path.join(dir, name) });
  }
  return out.sort((a, b) => a.txid - b.txid || a.baseTxid - b.baseTxid);
}

export interface SnapshotMeta {
  dbId: string;
  epoch: number;
  txid: number;
  timestamp: number;
  checksum: Checksum;
}

const BATCH_PAGES = 256;

/**
 * Writes a full snapshot of `source` (which must be at `meta.txid`), verifying as it
 * reads that the pages hash to `meta.checksum`. Written to a temp name and renamed,
 * so a crash never leaves a partial snapshot under a real name.
 */
export function writeFullSnapshot(efs: EngineFs, dir: string, source: LogicalDb, meta: SnapshotMeta): SnapshotRef {
  const gen = fullSnapshotSteps(efs, dir, source, meta);
  for (let r = gen.next(); ; r = gen.next()) if (r.done === true) return r.value;
}

function* fullSnapshotSteps(efs: EngineFs, dir: string, source: LogicalDb, meta: SnapshotMeta, durable = true): Generator<void, SnapshotRef> {
  efs.mkdir(dir, 'snapshot.mkdir');
  const file = path.join(dir, fullSnapshotName(meta.txid));
  const tmp = `${file}.tmp`;
  const fd = efs.open(tmp, 'w+', 'snapshot.create');
  try {
    const w = new UnitWriter(
      efs,
      fd,
      { dbId: meta.dbId, epoch: meta.epoch, baseTxid: meta.txid, txid: meta.txid, full: true, timestamp: meta.timestamp, pageSize: source.pageSize, commitSize: source.pageCount, pre: ZERO_CHECKSUM, post: meta.checksum },
      source.pageCount,
      'snapshot.write',
    );
    const hashes = new PageHashes(source.pageCount);
    const lock = lockBytePage(source.pageSize);
    for (let first = 1; first <= source.pageCount; first += BATCH_PAGES) {
      const batch: Array<[number, Uint8Array]> = [];
      for (let p = first; p < first + BATCH_PAGES && p <= source.pageCount; p++) {
        const buf = Buffer.allocUnsafe(source.pageSize);
        readLogicalPage(source, p, buf, 'snapshot.read');
        if (p !== lock) hashes.setPage(p, buf);
        batch.push([p, buf]);
      }
      w.addPages(batch);
      yield;
    }
    hashes.truncate(source.pageCount);
    if (!checksumEquals(hashes.sum, meta.checksum)) {
      throw new GeodrError('DATABASE_DIVERGED', `pages read for the snapshot hash to ${checksumHex(hashes.sum)}, expected ${checksumHex(meta.checksum)}`, { database: meta.dbId, txid: meta.txid, object: file });
    }
    w.finish();
    if (durable) efs.sync(fd, 'snapshot.sync');
  } catch (e) {
    efs.close(fd, 'snapshot.close');
    efs.unlink(tmp, 'snapshot.abort');
    throw e;
  }
  efs.close(fd, 'snapshot.close');
  efs.rename(tmp, file, 'snapshot.publish');
  if (durable) efs.syncDir(dir, 'snapshot.publish');
  return { kind: 'full', baseTxid: meta.txid, txid: meta.txid, file };
}

/** Adds the pinned view's images of `pages` (ascending) to a unit and finishes it, yielding between batches. */
async function writeViewPages(w: UnitWriter, view: PinnedView, pages: number[]): Promise<void> {
  const src = viewSource(view);
  for (let i = 0; i < pages.length; i += BATCH_PAGES) {
    const batch: Array<[number, Uint8Array]> = [];
    for (const p of pages.slice(i, i + BATCH_PAGES)) {
      const buf = Buffer.allocUnsafe(view.pageSize);
      readLogicalPage(src, p, buf, 'snapshot.read');
      batch.push([p, buf]);
    }
    w.addPages(batch);
    await yieldToLoop();
  }
  w.finish();
}

function viewSource(v: PinnedView): LogicalDb {
  return { efs: v.efs, dbFd: v.dbFd, walFd: v.walFd, pageSize: v.pageSize, pageCount: v.pageCount, walIndex: v.walIndex };
}

/**
 * Takes a full snapshot of a live primary. Writers are held up only for the
 * capture that pins the view; the copy yields to the event loop between batches.
 */
export async function takeSnapshot(db: PrimaryDatabase, dir = path.join(db.stateDir, 'snapshots'), opts: { durable?: boolean } = {}): Promise<SnapshotRef> {
  const view = db.pin();
  try {
    // Not durable: a scratch copy (seeding a secondary) that nothing needs after a crash.
    const gen = fullSnapshotSteps(view.efs, dir, viewSource(view), view, opts.durable ?? true);
    for (let r = gen.next(); ; r = gen.next()) {
      if (r.done === true) return r.value;
      await yieldToLoop();
    }
  } finally {
    view.release();
  }
}

export interface IncrementalOptions {
  /** Where the unit file goes (default: the database's snapshots directory). */
  dir?: string;
  /**
   * Pages to include whether or not they changed: a rejoining copy names the pages it
   * wrote on its own, so one unit both rewinds them and brings it forward.
   */
  extraPages?: Iterable<number>;
  /** The checksum at sinceTxid, needed when no record follows it (nothing changed since). */
  sinceChecksum?: Checksum;
}

/**
 * Takes an incremental snapshot: the current image of every page changed since
 * `sinceTxid` (found from the log), as one unit from sinceTxid to now. Returns
 * undefined when there is nothing to send.
 */
export async function takeIncrementalSnapshot(db: PrimaryDatabase, sinceTxid: number, options: IncrementalOptions = {}): Promise<SnapshotRef | undefined> {
  const view = db.pin();
  try {
    const extra = [...(options.extraPages ?? [])];
    if (sinceTxid > view.txid || (sinceTxid === view.txid && extra.length === 0)) return undefined;
    const changed = new Set<number>(extra);
    let pre: Checksum | undefined;
    for (const r of db.records(sinceTxid + 1, view.txid)) {
      pre ??= r.pre;
      for (const [p] of r.pages) changed.add(p);
    }
    pre ??= options.sinceChecksum ?? (sinceTxid === view.txid ? view.checksum : undefined);
    if (pre === undefined) throw new GeodrError('LOG_GAP', `no record after TXID ${sinceTxid} in the local log`, { database: view.dbId, txid: sinceTxid });
    const lock = lockBytePage(view.pageSize);
    const pages = [...changed].filter((p) => p >= 1 && p <= view.pageCount && p !== lock).sort((a, b) => a - b);
    const dir = options.dir ?? path.join(db.stateDir, 'snapshots');
    view.efs.mkdir(dir, 'snapshot.mkdir');
    const file = path.join(dir, incrementalSnapshotName(sinceTxid, view.txid));
    const tmp = `${file}.tmp`;
    const efs = view.efs;
    const fd = efs.open(tmp, 'w+', 'snapshot.create');
    try {
      const w = new UnitWriter(
        efs,
        fd,
        { dbId: view.dbId, epoch: view.epoch, baseTxid: sinceTxid, txid: view.txid, full: false, timestamp: view.timestamp, pageSize: view.pageSize, commitSize: view.pageCount, pre: pre, post: view.checksum },
        pages.length,
        'snapshot.write',
      );
      await writeViewPages(w, view, pages);
      efs.sync(fd, 'snapshot.sync');
    } catch (e) {
      efs.close(fd, 'snapshot.close');
      efs.unlink(tmp, 'snapshot.abort');
      throw e;
    }
    efs.close(fd, 'snapshot.close');
    efs.rename(tmp, file, 'snapshot.publish');
    efs.syncDir(dir, 'snapshot.publish');
    return { kind: 'incremental', baseTxid: sinceTxid, txid: view.txid, file };
  } finally {
    view.release();
  }
}

/**
 * A unit that turns another copy of this database — whatever TXID or lineage it is at —
 * into this one at its current TXID: the pages whose hashes differ from `remote` (the
 * other copy's PageHashes.table()), plus any it lacks, at a pinned view. Its `pre` is the
 * other copy's checksum and its `post` this one's, so applying it is verified end to end.
 * A resync moves only what differs, where a re-seed would move the whole database.
 */
export async function takeDiffUnit(db: PrimaryDatabase, remote: { table: Uint32Array; checksum: Checksum }, dir: string): Promise<SnapshotRef & { pages: number }> {
  const view = db.pin();
  // Same turn as the pin: no write can land between the two.
  const mine = db.pageHashTable();
  try {
    const lock = lockBytePage(view.pageSize);
    const remotePages = remote.table.length / 2;
    const pages: number[] = [];
    for (let p = 1; p <= view.pageCount; p++) {
      if (p === lock) continue;
      const i = 2 * (p - 1);
      if (p > remotePages || mine[i] !== remote.table[i] || mine[i + 1] !== remote.table[i + 1]) pages.push(p);
    }
    const efs = view.efs;
    efs.mkdir(dir, 'snapshot.mkdir');
    const file = path.join(dir, `${hex16(view.txid)}.diff`);
    const fd = efs.open(file, 'w+', 'snapshot.create');
    try {
      const w = new UnitWriter(
        efs,
        fd,
        { dbId: view.dbId, epoch: view.epoch, baseTxid: view.txid, txid: view.txid, full: false, timestamp: view.timestamp, pageSize: view.pageSize, commitSize: view.pageCount, pre: remote.checksum, post: view.checksum },
        pages.length,
        'snapshot.write',
      );
      await writeViewPages(w, view, pages);
    } finally {
      efs.close(fd, 'snapshot.close');
    }
    return { kind: 'incremental', baseTxid: view.txid, txid: view.txid, file, pages: pages.length };
  } finally {
    view.release();
  }
}
