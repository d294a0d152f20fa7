/**
 * The backup benchmark: the figures behind the vault's performance budgets
 * (BRIEF.md, "Performance budgets"), each printed against its budget and written to
 * bench/results/backup.json. Everything runs in-process on FsVault vaults in the work
 * directory, with the server's defaults (Shipper intervalMs 1000 driven every
 * intervalMs/2, snapshots every 10,000 records, DEFAULT_COMPRESSION through CodecVault,
 * GeoCopier from the raw vault to the paired raw vault notified on every put).
 *
 *   lag       a primary written at a steady 1,000 small transactions/s while the
 *             shipper ships it: per-TXID lag from commit to "batch landed in the vault"
 *             (shipLagP99Ms) and to "batch landed in the paired vault" (grsLagP99Ms);
 *             then vault bytes per byte of page images for none / gzip / brotli; the
 *             same again on a 1 GiB database for 40 s (snapshots of that size ship inline)
 *   restore   a 1 GiB database shipped as a full snapshot + 100k records, restored with
 *             restoreFromVault (target latest) vs `cp` + fdatasync of the file
 *             (restoreVsCpRatio), with compression none and the default codec
 *   history   restore time with 1M records of history vs 10k, snapshots every 10,000
 *             records as the server takes them (pitrHistoryScalingRatio)
 *
 * Data: rows of 1000 ASCII bytes, a 340-character hex token (170 random bytes) plus a
 * 650-character window of fixed text, so pages compress about as the codec benchmark's
 * real SQLite pages do (brotli ~0.2-0.3) instead of being incompressible randomblob().
 */
import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { checksumEquals, checksumHex, integrityCheck, PrimaryDatabase, type Checksum, type Connection } from '../src/engine/index.js';
import { decodeHeader, RECORD_HEADER_SIZE } from '../src/engine/record.js';
import { prng } from '../src/engine/testing/helpers.js';
import { CodecVault, DEFAULT_COMPRESSION, DEFAULT_LEVELS, encodeObject, type Compression } from '../src/vault/codec.js';
import { FsVault } from '../src/vault/fs.js';
import { GeoCopier } from '../src/vault/geo.js';
import { dbPrefix, parseBatchKey, parseSnapshotKey, type DatabaseDescriptor } from '../src/vault/layout.js';
import { readHistory, restoreFromVault, type VaultTarget } from '../src/vault/restore.js';
import { Shipper } from '../src/vault/shipper.js';
import type { ListOptions, Vault, VaultObject } from '../src/vault/vault.js';
import { log, median, parseQuickDir, phase, printReport, removeDb, rowsFor, secondsSince, syncAll, warm, type BenchContext, type Budget } from './common.js';

export const BACKUP_USAGE = `options:
  --quick           scaled-down sizes (5 s / 12 s of writes, 64 MiB and 256 MiB instead of 1 GiB, 20k vs 2k records); about a minute
  --dir DIR         work directory for databases and vaults (default: the OS temp dir)`;

interface Sizes {
  /** lag: writes per second, seconds of writes, database size. */
  lagRate: number;
  lagSeconds: number;
  lagDbBytes: number;
  /** The second lag run, on a bigger database (0 = skipped). */
  lagBigDbBytes: number;
  lagBigSeconds: number;
  /** restore: database size, records after the snapshot, records per shipped batch, rounds. */
  bigDbBytes: number;
  bigUpdates: number;
  bigChunk: number;
  restoreRounds: number;
  /** history: database size, the two history lengths, snapshot cadence, records per ship. */
  historyDbBytes: number;
  historySmall: number;
  historyLarge: number;
  historySnapshotEvery: number;
  historyChunk: number;
  historyRounds: number;
}

const FULL_SIZES: Sizes = {
  lagRate: 1000,
  lagSeconds: 20,
  lagDbBytes: 64 << 20,
  lagBigDbBytes: 1 << 30,
  lagBigSeconds: 40,
  bigDbBytes: 1 << 30,
  bigUpdates: 100_000,
  bigChunk: 500,
  restoreRounds: 3,
  historyDbBytes: 32 << 20,
  historySmall: 10_000,
  historyLarge: 1_000_000,
  historySnapshotEvery: 10_000,
  historyChunk: 500,
  historyRounds: 9,
};

// The snapshot cadence shrinks with the history (1,000 instead of 10,000) so the quick
// run keeps the shape: several snapshots in the long history, one in the short one.
const QUICK_SIZES: Sizes = {
  lagRate: 1000,
  lagSeconds: 5,
  lagDbBytes: 16 << 20,
  lagBigDbBytes: 256 << 20,
  lagBigSeconds: 12,
  bigDbBytes: 64 << 20,
  bigUpdates: 5_000,
  bigChunk: 500,
  restoreRounds: 1,
  historyDbBytes: 8 << 20,
  historySmall: 2_000,
  historyLarge: 20_000,
  historySnapshotEvery: 1_000,
  historyChunk: 100,
  historyRounds: 3,
};

const BUDGETS: Record<string, Budget> = {
  shipLagP99Ms: { op: '<=', value: 5000, what: 'vault shipping lag at 1,000 small txn/s, commit to batch in the vault, p99 (geo-restore RPO)' },
  grsLagP99Ms: { op: '<=', value: 10_000, what: 'commit to batch in the paired region vault (GRS), p99' },
  restoreVsCpRatio: { op: '>=', value: 0.3, what: 'restore of 1 GiB from vault snapshot + 100k records vs cp + fdatasync of 1 GiB (cp time / restore time)' },
  pitrHistoryScalingRatio: { op: '<=', value: 1.5, what: 'restore time with 1M records of history vs 10k (snapshots every 10,000 records)' },
};

type Context = BenchContext<Sizes>;

// ---------------------------------------------------------------------------
// helpers

/** Nearest-rank percentile of an ascending array. */
function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

function dirSize(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? dirSize(path.join(dir, e.name)) : fs.statSync(path.join(dir, e.name)).size;
  return n;
}

const MiB = 2 ** 20;

// ---------------------------------------------------------------------------
// workload

const TEXT = (
  'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ' +
  'Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure ' +
  'dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non ' +
  'proident, sunt in culpa qui officia deserunt mollit anim id est laborum. '
).repeat(4);
/** 1000 ASCII bytes: 8-digit id, 340 hex characters of random bytes, 650 characters of text. */
const ROW_EXPR = (id: string): string => `printf('%08d|%s|%s', ${id}, hex(randomblob(170)), substr(?, 1 + abs(random() % 900), 650))`;
const ROW_BYTES = 1000;
const ROWS_PER_LOAD_TXN = 16_384;
const SCHEMA = 'create table t(id integer primary key, v text not null); create table ev(id integer primary key, ts integer not null, body text not null)';
const LOAD_SQL = `with recursive c(x) as (select 1 union all select x + 1 from c where x < ?) insert into t(v) select ${ROW_EXPR('x')} from c`;
const UPDATE_SQL = `update t set v = ${ROW_EXPR('id')} where id = ?`;
const EVENT_SQL = `insert into ev(ts, body) values (?, printf('{"user":%d,"action":"%s","items":%d,"token":"%s"}', ?, ?, ?, hex(randomblob(16))))`;
const ACTIONS = ['login', 'view', 'add-to-cart', 'checkout', 'logout', 'search'];

/**
 * Builds the database with plain better-sqlite3 (no capture) and adopts it as a primary:
 * the engine's base snapshot (TXID 0) then holds every page, and the shipper's first pass
 * ships it as the vault's first full snapshot.
 */
function buildPrimary(file: string, bytes: number): { db: PrimaryDatabase; rows: number } {
  removeDb(file);
  const rows = rowsFor(bytes);
  const conn = new Database(file);
  try {
    conn.pragma('journal_mode = OFF');
    conn.pragma('synchronous = OFF');
    conn.exec(SCHEMA);
    const load = conn.prepare(LOAD_SQL);
    for (let done = 0; done < rows; done += ROWS_PER_LOAD_TXN) {
      conn.transaction(() => load.run(Math.min(ROWS_PER_LOAD_TXN, rows - done), TEXT))();
    }
  } finally {
    conn.close();
  }
  return { db: PrimaryDatabase.open({ file, durability: 'group' }), rows };
}

/** One single-row update of a random row: the history and restore workloads. */
function updater(rows: number, seed: number): (c: Connection) => void {
  const rnd = prng(seed);
  let stmt: Database.Statement | undefined;
  return (c) => {
    stmt ??= c.prepare(UPDATE_SQL);
    stmt.run(TEXT, 1 + Math.floor(rnd() * rows));
  };
}

/** The lag workload's small transaction: update one random row, append one ~120-byte event. */
function smallTxn(rows: number, seed: number): (c: Connection) => void {
  const rnd = prng(seed);
  let upd: Database.Statement | undefined;
  let ins: Database.Statement | undefined;
  return (c) => {
    upd ??= c.prepare(UPDATE_SQL);
    ins ??= c.prepare(EVENT_SQL);
    upd.run(TEXT, 1 + Math.floor(rnd() * rows));
    ins.run(Date.now(), Math.floor(rnd() * 100_000), ACTIONS[Math.floor(rnd() * ACTIONS.length)]!, 1 + Math.floor(rnd() * 9));
  };
}

function descriptorFor(db: PrimaryDatabase): () => DatabaseDescriptor {
  const d: DatabaseDescriptor = { format: 1, dbId: db.dbId, name: db.name, server: 'bench', region: 'bench', pool: 'default', pageSize: db.pageSize, createdAt: Date.now(), retentionDays: 7, ltr: null };
  return () => d;
}

/** Page-image bytes in a plaintext vault object: a batch of records or a full snapshot unit. */
function pageBytesOf(body: Buffer, key: string): number {
  let n = 0;
  for (let off = 0; off + RECORD_HEADER_SIZE <= body.length; ) {
    const h = decodeHeader(body.subarray(off), { object: key });
    n += h.pageCount * h.pageSize;
    off += h.totalLength;
  }
  return n;
}

/** A vault that tells when each put has completed (the paired region, for GRS lag). */
class ObservedVault implements Vault {
  readonly name: string;
  constructor(
    private readonly inner: Vault,
    private readonly onPut: (key: string, at: number) => void,
  ) {
    this.name = inner.name;
  }
  async put(key: string, body: Uint8Array): Promise<void> {
    await this.inner.put(key, body);
    this.onPut(key, performance.now());
  }
  get(key: string): Promise<Buffer> {
    return this.inner.get(key);
  }
  head(key: string): Promise<VaultObject | undefined> {
    return this.inner.head(key);
  }
  list(prefix: string, opts?: ListOptions): AsyncIterable<VaultObject> {
    return this.inner.list(prefix, opts);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
}

/** A vault that adds up the time spent in get() (restore breakdown). */
class GetTimingVault extends ObservedVault {
  ms = 0;
  constructor(private readonly base: Vault) {
    super(base, () => undefined);
  }
  override async get(key: string): Promise<Buffer> {
    const s = performance.now();
    try {
      return await this.base.get(key);
    } finally {
      this.ms += performance.now() - s;
    }
  }
}

// ---------------------------------------------------------------------------
// lag

interface LagStats {
  p50: number;
  p99: number;
  max: number;
  mean: number;
  count: number;
}

function stats(lags: Float64Array): LagStats {
  const sorted = Float64Array.from(lags).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? NaN, mean: sum / sorted.length, count: sorted.length };
}

/**
 * The lag run. `big`: the same on a database of the restore section's size, for a while
 * longer, without the bytes analysis: it shows what inline snapshots do to the lag.
 */
async function lag(ctx: Context, big = false): Promise<void> {
  const { sizes } = ctx;
  const dbBytes = big ? sizes.lagBigDbBytes : sizes.lagDbBytes;
  const seconds = big ? sizes.lagBigSeconds : sizes.lagSeconds;
  const sizeLabel = dbBytes >= 2 ** 30 ? `${dbBytes / 2 ** 30} GiB` : `${dbBytes / MiB} MiB`;
  const name = big ? 'lag big' : 'lag';
  const file = path.join(ctx.dir, big ? 'lag-big.db' : 'lag.db');
  const rootA = path.join(ctx.dir, big ? 'vault-big-region-a' : 'vault-region-a');
  const rootB = path.join(ctx.dir, big ? 'vault-big-region-b' : 'vault-region-b');
  const rawA = new FsVault(rootA);
  const vault = new CodecVault(rawA, { compression: DEFAULT_COMPRESSION });
  const total = sizes.lagRate * seconds;
  // Commit time of each timed TXID (index txid - firstTxid), and when its batch landed in each vault.
  const committed = new Float64Array(total).fill(NaN);
  const landedA = new Float64Array(total).fill(NaN);
  const landedB = new Float64Array(total).fill(NaN);
  let firstTxid = Number.MAX_SAFE_INTEGER;
  const batchesA: Array<{ first: number; last: number; at: number }> = [];
  const snapshotsA: Array<{ key: string; at: number }> = [];
  let geoErrors = 0;
  let shipErrors = 0;
  const mark = (arr: Float64Array, key: string, at: number): void => {
    const b = parseBatchKey(key);
    if (b === undefined) return;
    for (let t = Math.max(b.first, firstTxid); t <= b.last && t - firstTxid < total; t++) arr[t - firstTxid] = at;
  };
  const rawB = new ObservedVault(new FsVault(rootB), (key, at) => mark(landedB, key, at));
  const copier = new GeoCopier({ source: rawA, target: rawB, prefix: '', onError: () => geoErrors++ });
  let copierStarted = false;
  const shipper = new Shipper({
    vault,
    intervalMs: 1000,
    onPut: (key) => {
      const at = performance.now();
      const b = parseBatchKey(key);
      if (b !== undefined) {
        batchesA.push({ first: b.first, last: b.last, at });
        mark(landedA, key, at);
      } else if (parseSnapshotKey(key) !== undefined) snapshotsA.push({ key, at });
      copier.notify(key);
    },
    onError: (e) => {
      shipErrors++;
      log(`  shipping failed: ${(e as Error).message}`);
    },
  });
  const { db, rows } = await phase(ctx, `${name} setup: ${sizeLabel} database, adopted as a primary (durability group)`, () => buildPrimary(file, dbBytes));
  const descriptor = descriptorFor(db);
  let timer: NodeJS.Timeout | undefined;
  const pacing = { maxBehindMs: 0, sumBehindMs: 0 };
  try {
    await phase(ctx, `${name} setup: first ship (descriptor + base snapshot) and its geo-copy`, async () => {
      copier.start();
      copierStarted = true;
      await shipper.ship(db, descriptor);
      await copier.syncOnce();
    });
    const snapsBefore = snapshotsA.length;
    // The server's backup tick: ship every open database every intervalMs / 2, one pass at a time.
    let ticking = false;
    const tick = async (): Promise<void> => {
      if (ticking) return;
      ticking = true;
      try {
        await shipper.ship(db, descriptor);
      } finally {
        ticking = false;
      }
    };
    timer = setInterval(() => void tick(), Math.max(25, Math.floor(shipper.interval / 2)));
    const txn = smallTxn(rows, 11);
    await phase(ctx, `${name}: ${sizes.lagRate} small txn/s for ${seconds} s on ${sizeLabel} (timer-paced), shipped every ${shipper.interval / 2} ms, geo-copied on notify`, async () => {
      const start = performance.now();
      const periodMs = 1000 / sizes.lagRate;
      let done = 0;
      while (done < total) {
        const due = Math.min(total, Math.floor((performance.now() - start) / periodMs));
        while (done < due) {
          const { txid } = db.write(txn);
          const now = performance.now();
          if (done === 0) firstTxid = txid;
          committed[txid - firstTxid] = now;
          const behind = now - (start + (done + 1) * periodMs);
          pacing.maxBehindMs = Math.max(pacing.maxBehindMs, behind);
          pacing.sumBehindMs += behind;
          done++;
        }
        await sleep(1);
      }
      log(`  ${done} transactions in ${secondsSince(start).toFixed(2)} s; writer at most ${pacing.maxBehindMs.toFixed(1)} ms behind its schedule`);
    });
    const lastTxid = firstTxid + total - 1;
    await phase(ctx, `${name}: drain (until the last timed TXID is in both vaults)`, async () => {
      const deadline = performance.now() + 180_000;
      while (performance.now() < deadline && (Number.isNaN(landedA[total - 1]!) || Number.isNaN(landedB[total - 1]!))) await sleep(20);
    });
    clearInterval(timer);
    timer = undefined;
    while (ticking) await sleep(5);
    const snaps = snapshotsA.slice(snapsBefore);
    const shipLags = new Float64Array(total);
    const geoLags = new Float64Array(total);
    let missing = 0;
    for (let i = 0; i < total; i++) {
      shipLags[i] = landedA[i]! - committed[i]!;
      geoLags[i] = landedB[i]! - committed[i]!;
      if (Number.isNaN(shipLags[i]!) || Number.isNaN(geoLags[i]!)) missing++;
    }
    if (missing > 0) throw new Error(`${missing} of ${total} timed TXIDs never landed in both vaults (ship errors ${shipErrors}, geo errors ${geoErrors})`);
    const ship = stats(shipLags);
    const geo = stats(geoLags);
    const timedBatches = batchesA.filter((b) => b.last >= firstTxid && b.first <= lastTxid);
    const recordsPerBatch = timedBatches.map((b) => b.last - b.first + 1);
    // Snapshots ship in the background, beside the records; records that became durable while
    // one was being taken are counted as "behind a snapshot" to show whether it held them up.
    const behind = new Uint8Array(total);
    const snapshotStalls = snaps.map((sn) => {
      const before = batchesA.filter((b) => b.at <= sn.at).pop();
      const after = batchesA.find((b) => b.at > sn.at);
      let worst = 0;
      if (after !== undefined) {
        for (let t = Math.max(after.first, firstTxid); t <= after.last && t - firstTxid < total; t++) {
          behind[t - firstTxid] = 1;
          worst = Math.max(worst, shipLags[t - firstTxid]!);
        }
      }
      return { key: sn.key, passMsAfterLastBatch: before === undefined ? NaN : sn.at - before.at, recordsBehind: after === undefined ? 0 : after.last - after.first + 1, worstLagBehindMs: worst };
    });
    const clear = shipLags.filter((_, i) => behind[i] === 0);
    const shipClear = stats(clear);
    const geoClear = stats(geoLags.filter((_, i) => behind[i] === 0));
    log(`  ship lag p50 ${ship.p50.toFixed(0)} ms, p99 ${ship.p99.toFixed(0)} ms, max ${ship.max.toFixed(0)} ms; GRS lag p50 ${geo.p50.toFixed(0)} ms, p99 ${geo.p99.toFixed(0)} ms, max ${geo.max.toFixed(0)} ms`);
    log(`  ${timedBatches.length} batches (median ${median(recordsPerBatch)} records), ${snaps.length} snapshots during the run; TXIDs not behind a snapshot: ship p99 ${shipClear.p99.toFixed(0)} ms, GRS p99 ${geoClear.p99.toFixed(0)} ms`);

    if (big) {
      Object.assign(ctx.results, {
        shipLagP99MsBigDb: ship.p99,
        grsLagP99MsBigDb: geo.p99,
        lagBigDbWorkload: {
          databaseBytes: dbBytes,
          transactions: total,
          seconds,
          compression: DEFAULT_COMPRESSION,
          snapshotEveryRecords: 10_000,
          firstTxid,
          lastTxid,
          writerBehindScheduleMs: { max: pacing.maxBehindMs, mean: pacing.sumBehindMs / total },
          batches: { count: timedBatches.length, recordsMedian: median(recordsPerBatch), recordsMax: Math.max(...recordsPerBatch) },
          snapshotsDuringRun: snaps.length,
          snapshotStalls,
          shipLag: ship,
          grsLag: geo,
          shipLagNotBehindSnapshot: shipClear,
          shipErrors,
          geoErrors,
        },
      });
      ctx.figures.push(
        { label: `ship lag p50, ${sizeLabel} database (same load, ${seconds} s)`, value: ship.p50, unit: 'ms', digits: 0 },
        { label: `ship lag p99, ${sizeLabel} database`, value: ship.p99, unit: 'ms', budget: 'shipLagP99Ms', digits: 0 },
        { label: `GRS lag p99, ${sizeLabel} database`, value: geo.p99, unit: 'ms', budget: 'grsLagP99Ms', digits: 0 },
      );
      ctx.notes.push(
        `lag, ${sizeLabel} database: ${snaps.length} full snapshot(s) shipped during the ${seconds} s run; ${snapshotStalls.map((x) => `${x.recordsBehind} TXIDs waited behind one, worst ${x.worstLagBehindMs.toFixed(0)} ms (the pass spent ${x.passMsAfterLastBatch.toFixed(0)} ms on it)`).join('; ')}. Snapshots are taken and uploaded in the background (src/vault/shipper.ts), so records keep shipping while a large snapshot is encoded.`,
      );
      return;
    }

    // Vault bytes per byte of page images: the very objects this run stored (batches of
    // the server's size and full snapshots), re-encoded with each codec.
    const bytes = await phase(ctx, 'lag: vault bytes per page byte (objects of this run re-encoded with none / gzip / brotli)', async () => {
      const sums = { objects: 0, pageBytes: 0, plaintextBytes: 0, recordPageBytes: 0, snapshotPageBytes: 0 };
      const stored: Record<Compression, { total: number; records: number; snapshots: number }> = {
        none: { total: 0, records: 0, snapshots: 0 },
        gzip: { total: 0, records: 0, snapshots: 0 },
        brotli: { total: 0, records: 0, snapshots: 0 },
        deflate: { total: 0, records: 0, snapshots: 0 },
      };
      for await (const o of rawA.list(dbPrefix(db.dbId))) {
        const isBatch = parseBatchKey(o.key) !== undefined;
        const isSnap = parseSnapshotKey(o.key) !== undefined;
        if (!isBatch && !isSnap) continue;
        const plain = await vault.get(o.key);
        const pb = pageBytesOf(plain, o.key);
        sums.objects++;
        sums.pageBytes += pb;
        sums.plaintextBytes += plain.length;
        if (isBatch) sums.recordPageBytes += pb;
        else sums.snapshotPageBytes += pb;
        for (const c of ['none', 'gzip', 'brotli'] as const) {
          // The default codec's size is what the run really stored; the others are re-encoded.
          const size = c === DEFAULT_COMPRESSION ? o.size : (await encodeObject(o.key, plain, { compression: c })).length;
          stored[c].total += size;
          stored[c][isBatch ? 'records' : 'snapshots'] += size;
        }
      }
      return { sums, stored };
    });
    const per = (c: Compression): number => bytes.stored[c].total / bytes.sums.pageBytes;
    const perRecords = (c: Compression): number => bytes.stored[c].records / bytes.sums.recordPageBytes;
    const perSnapshots = (c: Compression): number => bytes.stored[c].snapshots / bytes.sums.snapshotPageBytes;
    let pagesInTimed = 0;
    for (const r of db.records(firstTxid, lastTxid)) pagesInTimed += r.pages.length;

    Object.assign(ctx.results, {
      shipLagP99Ms: ship.p99,
      shipLagP50Ms: ship.p50,
      shipLagMaxMs: ship.max,
      shipLagMeanMs: ship.mean,
      shipLagP99NotBehindSnapshotMs: shipClear.p99,
      grsLagP99Ms: geo.p99,
      grsLagP50Ms: geo.p50,
      grsLagMaxMs: geo.max,
      grsLagMeanMs: geo.mean,
      grsLagP99NotBehindSnapshotMs: geoClear.p99,
      vaultBytesPerPageByte: per(DEFAULT_COMPRESSION),
      vaultBytesPerPageByteNone: per('none'),
      vaultBytesPerPageByteGzip: per('gzip'),
      vaultBytesPerPageByteBrotli: per('brotli'),
      lagWorkload: {
        transactions: total,
        ratePerSec: sizes.lagRate,
        seconds,
        statement: 'one random-row update (1000-byte row) + one ~120-byte event insert per transaction',
        databaseBytes: dbBytes,
        durability: 'group',
        compression: DEFAULT_COMPRESSION,
        shipIntervalMs: shipper.interval,
        shipTickMs: Math.max(25, Math.floor(shipper.interval / 2)),
        snapshotEveryRecords: 10_000,
        pagesPerTransaction: pagesInTimed / total,
        firstTxid,
        lastTxid,
        writerBehindScheduleMs: { max: pacing.maxBehindMs, mean: pacing.sumBehindMs / total },
        batches: { count: timedBatches.length, recordsMedian: median(recordsPerBatch), recordsMax: Math.max(...recordsPerBatch) },
        snapshotsDuringRun: snaps.length,
        snapshotStalls,
        shipLagNotBehindSnapshot: shipClear,
        grsLagNotBehindSnapshot: geoClear,
        shipLag: ship,
        grsLag: geo,
        shipErrors,
        geoErrors,
      },
      vaultBytesWorkload: {
        source: 'every batch and full snapshot object of the lag run, plaintext re-encoded per codec (the default codec figure is the bytes the run stored)',
        objects: bytes.sums.objects,
        pageBytes: bytes.sums.pageBytes,
        plaintextBytes: bytes.sums.plaintextBytes,
        levels: { gzip: DEFAULT_LEVELS.gzip, brotli: DEFAULT_LEVELS.brotli },
        storedBytes: bytes.stored,
        recordsOnly: { none: perRecords('none'), gzip: perRecords('gzip'), brotli: perRecords('brotli') },
        snapshotsOnly: { none: perSnapshots('none'), gzip: perSnapshots('gzip'), brotli: perSnapshots('brotli') },
      },
    });
    ctx.figures.push(
      { label: `ship lag p50 (${sizes.lagRate} txn/s, commit → batch in vault)`, value: ship.p50, unit: 'ms', digits: 0 },
      { label: 'ship lag p99', value: ship.p99, unit: 'ms', budget: 'shipLagP99Ms', digits: 0 },
      { label: 'ship lag max', value: ship.max, unit: 'ms', digits: 0 },
      { label: '  ship lag p99 of TXIDs not queued behind a snapshot', value: shipClear.p99, unit: 'ms', digits: 0 },
      { label: 'GRS lag p50 (commit → batch in paired vault)', value: geo.p50, unit: 'ms', digits: 0 },
      { label: 'GRS lag p99', value: geo.p99, unit: 'ms', budget: 'grsLagP99Ms', digits: 0 },
      { label: 'GRS lag max', value: geo.max, unit: 'ms', digits: 0 },
      { label: '  GRS lag p99 of TXIDs not queued behind a snapshot', value: geoClear.p99, unit: 'ms', digits: 0 },
      { label: 'vault bytes per page byte, none', value: per('none'), unit: '×', digits: 3 },
      { label: 'vault bytes per page byte, gzip (level 6)', value: per('gzip'), unit: '×', digits: 3 },
      { label: `vault bytes per page byte, brotli (quality 5)${DEFAULT_COMPRESSION === 'brotli' ? ', the default' : ''}`, value: per('brotli'), unit: '×', digits: 3 },
    );
    ctx.breakdowns.push({
      title: 'vault bytes per page byte by object kind (lag run)',
      unit: '×',
      digits: 3,
      rows: {
        'records, none': perRecords('none'),
        'records, gzip': perRecords('gzip'),
        'records, brotli': perRecords('brotli'),
        'snapshots, none': perSnapshots('none'),
        'snapshots, gzip': perSnapshots('gzip'),
        'snapshots, brotli': perSnapshots('brotli'),
      },
    });
    if (snaps.length > 0) {
      ctx.notes.push(
        `lag: ${snaps.length} full snapshot(s) of the ${sizeLabel} database were shipped during the timed run (every 10,000 records), in the background beside the records (src/vault/shipper.ts); TXIDs committed while one was taken: ${snapshotStalls.map((x) => `${x.recordsBehind} TXIDs waited, worst ${x.worstLagBehindMs.toFixed(0)} ms (the pass spent ${x.passMsAfterLastBatch.toFixed(0)} ms on the snapshot)`).join('; ')}. Without those TXIDs ship lag p99 is ${shipClear.p99.toFixed(0)} ms.`,
      );
    }
  } finally {
    if (timer !== undefined) clearInterval(timer);
    if (copierStarted) await copier.stop();
    db.close();
    removeDb(file);
    fs.rmSync(rootA, { recursive: true, force: true });
    fs.rmSync(rootB, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// restore

interface RestoreTiming {
  seconds: number;
  /** Snapshot fetched, decoded and written to scratch. */
  snapshotSeconds: number;
  /** Record batches fetched, decoded and appended to the scratch log. */
  recordsSeconds: number;
  /** materialize (snapshot + records into the file, checksums, integrity_check, fsync). */
  materializeSeconds: number;
  vaultGetSeconds: number;
}

async function timeRestore(vault: Vault, dbId: string, out: string, scratchDir: string, target: VaultTarget, expect: { txid: number; checksum: Checksum }): Promise<RestoreTiming> {
  removeDb(out);
  const timing = new GetTimingVault(vault);
  let snapAt = 0;
  let recordsAt = 0;
  const start = performance.now();
  const r = await restoreFromVault({
    vault: timing,
    dbId,
    target,
    out,
    scratchDir,
    onProgress: (f) => {
      const now = performance.now();
      if (snapAt === 0) snapAt = now;
      if (f <= 0.8) recordsAt = now;
    },
  });
  const end = performance.now();
  if (r.txid !== expect.txid || !checksumEquals(r.checksum, expect.checksum)) {
    throw new Error(`restore ended at TXID ${r.txid} ${checksumHex(r.checksum)}, expected TXID ${expect.txid} ${checksumHex(expect.checksum)}`);
  }
  return {
    seconds: (end - start) / 1000,
    snapshotSeconds: (snapAt - start) / 1000,
    recordsSeconds: (recordsAt - snapAt) / 1000,
    materializeSeconds: (end - recordsAt) / 1000,
    vaultGetSeconds: timing.ms / 1000,
  };
}

function timeCp(file: string, copy: string): { cp: number; cpSync: number } {
  syncAll();
  let s = performance.now();
  execFileSync('cp', [file, copy]);
  const cp = secondsSince(s);
  fs.rmSync(copy);
  syncAll();
  s = performance.now();
  execFileSync('cp', [file, copy]);
  const fd = fs.openSync(copy, 'r+');
  fs.fdatasyncSync(fd);
  fs.closeSync(fd);
  const cpSync = secondsSince(s);
  fs.rmSync(copy);
  return { cp, cpSync };
}

async function restoreSection(ctx: Context): Promise<void> {
  const { sizes } = ctx;
  const file = path.join(ctx.dir, 'big.db');
  const out = path.join(ctx.dir, 'big-restored.db');
  const copy = path.join(ctx.dir, 'big-copied.db');
  const codecs: Compression[] = DEFAULT_COMPRESSION === 'none' ? ['none'] : ['none', DEFAULT_COMPRESSION];
  const roots = new Map(codecs.map((c) => [c, path.join(ctx.dir, `vault-big-${c}`)]));
  const vaults = new Map(codecs.map((c) => [c, new CodecVault(new FsVault(roots.get(c)!), { compression: c })]));
  const gib = sizes.bigDbBytes / 2 ** 30;
  const label = gib >= 1 ? `${gib} GiB` : `${sizes.bigDbBytes / MiB} MiB`;
  let expect!: { txid: number; checksum: Checksum };
  let dbId = '';
  const shipSeconds: Record<string, { snapshot: number; records: number }> = {};
  let snapshotPageBytes = 0;
  let recordPageBytes = 0;
  try {
    const { db, rows } = await phase(ctx, `restore setup: ${label} database (${rowsFor(sizes.bigDbBytes)} rows of ${ROW_BYTES} B), adopted as a primary (base snapshot)`, () => buildPrimary(file, sizes.bigDbBytes));
    dbId = db.dbId;
    snapshotPageBytes = db.status().pageCount * db.pageSize;
    try {
      // The vault should hold exactly one full snapshot and the records after it, so the
      // periodic snapshots are off here (the history section runs them).
      const shippers = new Map(codecs.map((c) => [c, new Shipper({ vault: vaults.get(c)!, snapshotEveryRecords: Number.MAX_SAFE_INTEGER, snapshotIntervalMs: 0 })]));
      const descriptor = descriptorFor(db);
      for (const c of codecs) {
        const s = performance.now();
        await phase(ctx, `restore setup: ship the ${label} snapshot, compression ${c}`, () => shippers.get(c)!.ship(db, descriptor));
        shipSeconds[c] = { snapshot: secondsSince(s), records: 0 };
      }
      const txn = updater(rows, 2);
      await phase(ctx, `restore setup: ${sizes.bigUpdates} single-row updates, shipped every ${sizes.bigChunk} records to ${codecs.length} vault(s)`, async () => {
        for (let done = 0; done < sizes.bigUpdates; ) {
          const n = Math.min(sizes.bigChunk, sizes.bigUpdates - done);
          for (let i = 0; i < n; i++) db.write(txn);
          done += n;
          await db.waitDurable();
          for (const c of codecs) {
            const s = performance.now();
            await shippers.get(c)!.ship(db, descriptor);
            shipSeconds[c]!.records += secondsSince(s);
          }
        }
      });
      for (const c of codecs) {
        const st = shippers.get(c)!.state(db.dbId);
        if (st?.shippedTxid !== db.txid) throw new Error(`vault ${c} holds records up to ${st?.shippedTxid}, the database is at ${db.txid}`);
      }
      expect = { txid: db.txid, checksum: db.checksum };
      for (const r of db.records(1, db.txid)) recordPageBytes += r.pages.length * r.pageSize;
    } finally {
      db.close();
      fs.rmSync(`${file}.geodr`, { recursive: true, force: true });
    }
    const dbBytes = fs.statSync(file).size;
    const vaultBytes = Object.fromEntries(codecs.map((c) => [c, dirSize(roots.get(c)!)]));
    const pageBytes = snapshotPageBytes + recordPageBytes;
    const history = await readHistory(vaults.get('none')!, dbId);
    log(`  database ${(dbBytes / MiB).toFixed(0)} MiB; vault ${codecs.map((c) => `${c} ${(vaultBytes[c]! / MiB).toFixed(0)} MiB`).join(', ')}; ${history.snapshots.length} snapshot + ${history.batches.length} batches`);
    await phase(ctx, 'restore: warm-up read of the vaults and the database file', () => {
      for (const c of codecs) warm(roots.get(c)!);
      warm(file);
    });
    const runs: Record<string, RestoreTiming[]> = Object.fromEntries(codecs.map((c) => [c, []]));
    const cps: number[] = [];
    const cpSyncs: number[] = [];
    await phase(ctx, `restore vs cp: ${sizes.restoreRounds} round(s), alternating (restoreFromVault latest with ${codecs.join(' and ')}; cp + fdatasync)`, async () => {
      for (let r = 0; r < sizes.restoreRounds; r++) {
        const sides: Array<() => Promise<void>> = [
          ...codecs.map((c) => async () => {
            syncAll();
            runs[c]!.push(await timeRestore(vaults.get(c)!, dbId, out, ctx.dir, 'latest', expect));
            removeDb(out);
          }),
          async () => {
            const t = timeCp(file, copy);
            cps.push(t.cp);
            cpSyncs.push(t.cpSync);
          },
        ];
        if (r % 2 === 1) sides.reverse();
        for (const s of sides) await s();
        log(`  round ${r + 1}: ${codecs.map((c) => `restore ${c} ${runs[c]![r]!.seconds.toFixed(2)} s`).join(', ')}, cp ${cps[r]!.toFixed(2)} s, cp + fdatasync ${cpSyncs[r]!.toFixed(2)} s`);
      }
    });
    // integrity_check alone on a restored file, to say what part of a restore it is.
    const integritySeconds = await phase(ctx, 'restore: integrity_check of a restored file (once, for the breakdown)', async () => {
      await timeRestore(vaults.get('none')!, dbId, out, ctx.dir, 'latest', expect);
      const s = performance.now();
      integrityCheck(out);
      const sec = secondsSince(s);
      removeDb(out);
      return sec;
    });
    const best = (c: Compression): RestoreTiming => runs[c]!.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    const cpSync = Math.min(...cpSyncs);
    const cp = Math.min(...cps);
    const head = DEFAULT_COMPRESSION;
    const results: Record<string, unknown> = {
      restoreVsCpRatio: cpSync / best(head).seconds,
      restoreVsCpRatioNone: cpSync / best('none').seconds,
      restoreVsCpRatioMedian: median(cpSyncs) / median(runs[head]!.map((x) => x.seconds)),
      restoreVsPlainCpRatio: cp / best(head).seconds,
      restoreSeconds: best(head).seconds,
      restoreSecondsNone: best('none').seconds,
      cpFdatasyncSeconds: cpSync,
      cpSeconds: cp,
      restoreWorkload: {
        databaseBytes: dbBytes,
        records: sizes.bigUpdates,
        recordsPerBatch: sizes.bigChunk,
        batches: history.batches.length,
        snapshots: history.snapshots.length,
        vaultBytes,
        pageBytes: { snapshot: snapshotPageBytes, records: recordPageBytes },
        vaultBytesPerPageByte: Object.fromEntries(codecs.map((c) => [c, vaultBytes[c]! / pageBytes])),
        shipSeconds,
        integrityCheckSeconds: integritySeconds,
        cache: 'warm: vault objects and the source file read once before timing; `sync` before every timed step',
        headline: `compression ${head} (DEFAULT_COMPRESSION, the server default), best of ${sizes.restoreRounds} on each side`,
        runs: { ...runs, cpSeconds: cps, cpFdatasyncSeconds: cpSyncs },
      },
    };
    Object.assign(ctx.results, results);
    for (const c of codecs) {
      const b = best(c);
      ctx.breakdowns.push({
        title: `restoreFromVault ${label}, compression ${c}: where the time goes (best run)`,
        unit: 's',
        digits: 3,
        rows: {
          total: b.seconds,
          'list + snapshot: get, decode, write to scratch': b.snapshotSeconds,
          'records: get, decode batches, append to scratch log': b.recordsSeconds,
          'materialize: apply, checksums, integrity_check, fsync': b.materializeSeconds,
          '  of which vault get (read + decode), all steps': b.vaultGetSeconds,
          '  integrity_check alone (separate run)': integritySeconds,
        },
      });
    }
    for (const c of codecs) {
      ctx.figures.push({ label: `restore ${label} from vault (snapshot + ${sizes.bigUpdates} records), ${c}, best`, value: best(c).seconds, unit: 's', digits: 2 });
    }
    ctx.figures.push(
      { label: `cp of the ${label} file (warm cache), best`, value: cp, unit: 's', digits: 2 },
      { label: `cp + fdatasync of the ${label} file, best`, value: cpSync, unit: 's', digits: 2 },
    );
    for (const c of codecs) ctx.figures.push({ label: `vault bytes per page byte, ${c} (this workload: snapshot + random-row records)`, value: vaultBytes[c]! / pageBytes, unit: '×', digits: 3 });
    for (const c of codecs) ctx.figures.push({ label: `ship ${label} snapshot, then ${sizes.bigUpdates} records, ${c}`, value: shipSeconds[c]!.snapshot + shipSeconds[c]!.records, unit: 's', digits: 1 });
    if (head !== 'none') ctx.figures.push({ label: 'restore vs cp + fdatasync, none', value: cpSync / best('none').seconds, unit: '×', digits: 3 });
    ctx.figures.push({ label: `restore vs cp + fdatasync, ${head} (default)`, value: cpSync / best(head).seconds, unit: '×', budget: 'restoreVsCpRatio' });
    ctx.notes.push(
      `restore: the vault holds one full snapshot + ${sizes.bigUpdates} records in batches of ${sizes.bigChunk} (shipped as the server would, snapshotEveryRecords off so no later snapshot shortcuts the records). restoreFromVault always runs integrity_check (${integritySeconds.toFixed(2)} s here); the headline uses DEFAULT_COMPRESSION = ${DEFAULT_COMPRESSION}, the server's default (config backup.compression).`,
    );
  } finally {
    removeDb(file);
    removeDb(out);
    fs.rmSync(copy, { force: true });
    for (const r of roots.values()) fs.rmSync(r, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// history

interface BuiltHistory {
  records: number;
  dbId: string;
  root: string;
  vault: Vault;
  latest: { txid: number; checksum: Checksum };
  mid: { txid: number; checksum: Checksum };
  snapshots: number;
  batches: number;
  vaultBytes: number;
}

async function buildHistory(ctx: Context, records: number, seed: number, compression: Compression): Promise<BuiltHistory> {
  const { sizes } = ctx;
  const file = path.join(ctx.dir, `history-${records}.db`);
  const root = path.join(ctx.dir, `vault-history-${records}`);
  const vault = new CodecVault(new FsVault(root), { compression });
  const { db, rows } = await phase(ctx, `history ${records}: ${sizes.historyDbBytes / MiB} MiB database, adopted as a primary`, () => buildPrimary(file, sizes.historyDbBytes));
  try {
    const shipper = new Shipper({ vault, snapshotEveryRecords: sizes.historySnapshotEvery, snapshotIntervalMs: 0 });
    const descriptor = descriptorFor(db);
    await shipper.ship(db, descriptor);
    const midTxid = records - sizes.historySnapshotEvery / 2;
    let mid: { txid: number; checksum: Checksum } | undefined;
    const txn = updater(rows, seed);
    const start = performance.now();
    await phase(ctx, `history ${records}: ${records} single-row updates (durability group), shipped every ${sizes.historyChunk} records, snapshot every ${sizes.historySnapshotEvery}`, async () => {
      for (let done = 0; done < records; ) {
        const n = Math.min(sizes.historyChunk, records - done);
        for (let i = 0; i < n; i++) {
          db.write(txn);
          if (db.txid === midTxid) mid = { txid: midTxid, checksum: db.checksum };
        }
        done += n;
        await db.waitDurable();
        await shipper.ship(db, descriptor);
        if (done % (records / 10) === 0 && records >= 100_000) log(`  ${done} records, ${(done / secondsSince(start)).toFixed(0)} records/s`);
      }
    });
    const st = shipper.state(db.dbId);
    if (st?.shippedTxid !== db.txid) throw new Error(`history ${records}: shipped ${st?.shippedTxid}, database at ${db.txid}`);
    const h = await readHistory(vault, db.dbId);
    ctx.results[`historyBuildRecordsPerSec${records}`] = records / secondsSince(start);
    return {
      records,
      dbId: db.dbId,
      root,
      vault,
      latest: { txid: db.txid, checksum: db.checksum },
      mid: mid!,
      snapshots: h.snapshots.length,
      batches: h.batches.length,
      vaultBytes: dirSize(root),
    };
  } finally {
    db.close();
    removeDb(file);
  }
}

async function history(ctx: Context): Promise<void> {
  const { sizes } = ctx;
  const out = path.join(ctx.dir, 'history-restored.db');
  const built: BuiltHistory[] = [];
  // Restore time is what the budget is about; both sides use the same codec, so 'none'
  // keeps the 1M-record build (several GiB of page images) inside the run's time budget.
  const compression: Compression = 'none';
  try {
    const small = await buildHistory(ctx, sizes.historySmall, 3, compression);
    built.push(small);
    const large = await buildHistory(ctx, sizes.historyLarge, 4, compression);
    built.push(large);
    for (const h of built) log(`  ${h.records} records: ${h.snapshots} snapshots, ${h.batches} batches, vault ${(h.vaultBytes / MiB).toFixed(0)} MiB`);
    const series: Record<string, number[]> = { smallLatest: [], largeLatest: [], smallMid: [], largeMid: [], smallList: [], largeList: [] };
    // Where a 'latest' restore spends its time (listing + snapshot fetch vs materialize), per side.
    const parts: Record<'small' | 'large', RestoreTiming[]> = { small: [], large: [] };
    const latest = async (h: BuiltHistory, side: 'small' | 'large'): Promise<void> => {
      const t = await timeRestore(h.vault, h.dbId, out, ctx.dir, 'latest', h.latest);
      parts[side].push(t);
      series[side === 'small' ? 'smallLatest' : 'largeLatest']!.push(t.seconds);
    };
    await phase(ctx, 'history: warm-up restores (untimed)', async () => {
      for (const h of built) {
        await timeRestore(h.vault, h.dbId, out, ctx.dir, 'latest', h.latest);
        await timeRestore(h.vault, h.dbId, out, ctx.dir, { txid: h.mid.txid }, h.mid);
      }
      removeDb(out);
    });
    await phase(ctx, `history: ${sizes.historyRounds} rounds of restoreFromVault (latest, and ${sizes.historySnapshotEvery / 2} records past a snapshot) for both`, async () => {
      for (let r = 0; r < sizes.historyRounds; r++) {
        const sides: Array<() => Promise<void>> = [
          () => latest(small, 'small'),
          () => latest(large, 'large'),
          async () => void series.smallMid!.push((await timeRestore(small.vault, small.dbId, out, ctx.dir, { txid: small.mid.txid }, small.mid)).seconds),
          async () => void series.largeMid!.push((await timeRestore(large.vault, large.dbId, out, ctx.dir, { txid: large.mid.txid }, large.mid)).seconds),
        ];
        if (r % 2 === 1) sides.reverse();
        for (const s of sides) {
          await s();
          removeDb(out);
        }
        for (const h of [small, large]) {
          const s = performance.now();
          await readHistory(h.vault, h.dbId);
          series[h === small ? 'smallList' : 'largeList']!.push(secondsSince(s));
        }
        log(`  round ${r + 1}: latest ${series.smallLatest![r]!.toFixed(3)} / ${series.largeLatest![r]!.toFixed(3)} s, mid-interval ${series.smallMid![r]!.toFixed(3)} / ${series.largeMid![r]!.toFixed(3)} s, listing ${series.smallList![r]!.toFixed(3)} / ${series.largeList![r]!.toFixed(3)} s (${small.records} / ${large.records})`);
      }
    });
    const m = (k: string): number => median(series[k]!);
    const ratio = m('largeLatest') / m('smallLatest');
    const ratioMid = m('largeMid') / m('smallMid');
    Object.assign(ctx.results, {
      pitrHistoryScalingRatio: ratio,
      pitrHistoryScalingRatioMidInterval: ratioMid,
      historyRestoreSmallSeconds: m('smallLatest'),
      historyRestoreLargeSeconds: m('largeLatest'),
      historyRestoreSmallMidSeconds: m('smallMid'),
      historyRestoreLargeMidSeconds: m('largeMid'),
      historyListSmallSeconds: m('smallList'),
      historyListLargeSeconds: m('largeList'),
      historyWorkload: {
        databaseBytes: sizes.historyDbBytes,
        compression,
        snapshotEveryRecords: sizes.historySnapshotEvery,
        recordsPerBatch: sizes.historyChunk,
        sides: built.map((h) => ({ records: h.records, snapshots: h.snapshots, batches: h.batches, vaultBytes: h.vaultBytes, latestTxid: h.latest.txid, midTxid: h.mid.txid })),
        runs: series,
        latestBreakdownMedianSeconds: Object.fromEntries(
          (['small', 'large'] as const).map((side) => [
            side,
            {
              total: median(parts[side].map((t) => t.seconds)),
              listSnapshotGetAndScratchWrite: median(parts[side].map((t) => t.snapshotSeconds)),
              materialize: median(parts[side].map((t) => t.materializeSeconds)),
              vaultGet: median(parts[side].map((t) => t.vaultGetSeconds)),
            },
          ]),
        ),
      },
    });
    ctx.figures.push(
      { label: `restore latest, ${sizes.historySmall} records of history`, value: m('smallLatest'), unit: 's', digits: 3 },
      { label: `restore latest, ${sizes.historyLarge} records of history`, value: m('largeLatest'), unit: 's', digits: 3 },
      { label: `restore TXID ${small.mid.txid} (snapshot + ${sizes.historySnapshotEvery / 2} records), ${sizes.historySmall}`, value: m('smallMid'), unit: 's', digits: 3 },
      { label: `restore TXID ${large.mid.txid} (snapshot + ${sizes.historySnapshotEvery / 2} records), ${sizes.historyLarge}`, value: m('largeMid'), unit: 's', digits: 3 },
      { label: `  of which listing the vault (readHistory), ${sizes.historyLarge}`, value: m('largeList'), unit: 's', digits: 3 },
      { label: `history scaling, latest (t ${sizes.historyLarge} / t ${sizes.historySmall})`, value: ratio, unit: '×', budget: 'pitrHistoryScalingRatio' },
      { label: 'history scaling, mid-interval target', value: ratioMid, unit: '×', budget: 'pitrHistoryScalingRatio' },
    );
    ctx.breakdowns.push({
      title: `restore latest with ${sizes.historySmall} / ${sizes.historyLarge} records of history: where the time goes (medians)`,
      unit: 's',
      digits: 3,
      rows: Object.fromEntries(
        (['small', 'large'] as const).flatMap((side) => {
          const n = side === 'small' ? sizes.historySmall : sizes.historyLarge;
          return [
            [`${n}: total`, median(parts[side].map((t) => t.seconds))],
            [`${n}: list the vault + fetch the snapshot + write it to scratch`, median(parts[side].map((t) => t.snapshotSeconds))],
            [`${n}: materialize (integrity_check, fsync)`, median(parts[side].map((t) => t.materializeSeconds))],
            [`${n}: readHistory alone (separate call)`, median(series[side === 'small' ? 'smallList' : 'largeList']!)],
          ];
        }),
      ),
    });
    ctx.notes.push(
      `history: snapshots are taken by the Shipper every ${sizes.historySnapshotEvery} records and the records are shipped every ${sizes.historyChunk}, so 'latest' of both histories lands exactly on a snapshot (restore = that snapshot alone, plus listing the vault); the mid-interval target restores a snapshot + ${sizes.historySnapshotEvery / 2} records on both sides. Vault compression ${compression} here to keep the ${sizes.historyLarge}-record build in time; restore cost of the codec is measured in the restore section.`,
    );
  } finally {
    removeDb(out);
    for (const h of built) fs.rmSync(h.root, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// report

function machine(): Record<string, unknown> {
  const conn = new Database(':memory:');
  const sqlite = (conn.prepare('select sqlite_version() as v').get() as { v: string }).v;
  conn.close();
  const require = createRequire(import.meta.url);
  const bs3 = (require('better-sqlite3/package.json') as { version: string }).version;
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    sqlite,
    betterSqlite3: bs3,
    loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** Runs the backup benchmark; see {@link BACKUP_USAGE}. */
export async function runBackupBench(args: string[]): Promise<void> {
  const opts = parseQuickDir(args);
  const base = opts.dir ?? os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  const dir = fs.mkdtempSync(path.join(base, 'geodr-bench-backup-'));
  const ctx: Context = { dir, sizes: opts.quick ? QUICK_SIZES : FULL_SIZES, quick: opts.quick, results: {}, figures: [], phases: [], breakdowns: [], notes: [] };
  const loadAtStart = os.loadavg().map((x) => Math.round(x * 100) / 100);
  log(`work directory ${dir}${opts.quick ? ' (quick)' : ''}; load average ${loadAtStart.join(' ')}`);
  const started = performance.now();
  try {
    await lag(ctx);
    if (ctx.sizes.lagBigDbBytes > 0) await lag(ctx, true);
    await restoreSection(ctx);
    await history(ctx);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  ctx.phases.push({ phase: 'total', seconds: secondsSince(started) });
  const loadAtEnd = os.loadavg().map((x) => Math.round(x * 100) / 100);
  ctx.notes.push(`load average (1/5/15 min) at start ${loadAtStart.join(' ')}, at end ${loadAtEnd.join(' ')}; ${os.cpus().length} CPUs. Lag figures are wall-clock and include whatever else the machine ran.`);
  ctx.notes.push('restore vs cp: best of the rounds on each side (as the engine benchmark does: a 1 GiB cp swings several-fold with background writeback on this VM); medians are in the JSON.');
  printReport('backup', ctx, BUDGETS);
  const json = {
    bench: 'backup',
    quick: opts.quick,
    date: new Date().toISOString(),
    ...ctx.results,
    budgets: BUDGETS,
    machine: { ...machine(), loadAverageAtStart: loadAtStart, loadAverageAtEnd: loadAtEnd, workDir: base },
    phases: ctx.phases,
    notes: ctx.notes,
  };
  const resultsDir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  fs.mkdirSync(resultsDir, { recursive: true });
  const target = path.join(resultsDir, 'backup.json');
  // Written under a temp name and renamed, so an interrupted run never leaves half a file.
  fs.writeFileSync(`${target}.tmp`, JSON.stringify(json, null, 2) + '\n');
  fs.renameSync(`${target}.tmp`, target);
  console.log(`\nresults written to ${path.relative(process.cwd(), target) || target}`);
}
