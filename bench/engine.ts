/**
 * The engine benchmark: the figures behind the engine's performance budgets
 * (BRIEF.md, "Performance budgets"), each printed as a ratio against its budget
 * and written to bench/results/engine.json.
 *
 *   capture      small-transaction throughput through PrimaryDatabase.write vs plain
 *                better-sqlite3 WAL, durable (FULL vs 'commit') and relaxed (NORMAL vs 'group')
 *   apply        ReplicaDatabase.apply throughput in MB/s of page data
 *   materialize  a 1 GiB database from a full snapshot + 100k records vs `cp` of 1 GiB
 *   history      materialize after compaction with 1M records of history vs 10k
 *
 * Every side of a comparison runs on fresh files in the same directory, alternating,
 * and the median of the runs is reported. Big files are deleted as soon as a section
 * no longer needs them.
 */
import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { PassThroughFs, type OpenFlags } from '../src/engine/fs.js';
import { prng } from '../src/engine/testing/helpers.js';
import {
  checksumEquals,
  checksumHex,
  compact,
  DEFAULT_SPANS,
  integrityCheck,
  LocalChain,
  materialize,
  NodeFs,
  PrimaryDatabase,
  ReplicaDatabase,
  takeSnapshot,
  type Checksum,
  type Connection,
  type Durability,
  type TxRecord,
} from '../src/engine/index.js';
import { fmt, log, median, phase, printReport, removeDb, rowsFor, secondsSince, syncAll, UsageError, warm, type BenchContext, type Budget } from './common.js';

export const ENGINE_USAGE = `options:
  --quick           scaled-down sizes (64 MiB instead of 1 GiB, 20k instead of 1M); under a minute
  --only LIST       run only these sections (capture,apply,materialize,history); no JSON is written
  --dir DIR         work directory for the temporary databases (default: the OS temp dir)`;

const SECTIONS = ['capture', 'apply', 'materialize', 'history'] as const;
type Section = (typeof SECTIONS)[number];

interface Sizes {
  captureRelaxedTxns: number;
  captureDurableTxns: number;
  captureDurableRounds: number;
  captureRelaxedRounds: number;
  applyDbBytes: number;
  applyTxns: number;
  applyRowsPerTxn: number;
  applyBatch: number;
  applySingleTxns: number;
  applyRounds: number;
  bigDbBytes: number;
  bigUpdates: number;
  materializeRounds: number;
  historyDbBytes: number;
  historySmall: number;
  historyLarge: number;
  historySpans: number[];
  historyRounds: number;
}

const FULL_SIZES: Sizes = {
  captureRelaxedTxns: 20_000,
  captureDurableTxns: 3_000,
  captureDurableRounds: 7,
  captureRelaxedRounds: 5,
  applyDbBytes: 32 << 20,
  applyTxns: 3_000,
  applyRowsPerTxn: 10,
  applyBatch: 100,
  applySingleTxns: 1_000,
  applyRounds: 3,
  bigDbBytes: 1 << 30,
  bigUpdates: 100_000,
  materializeRounds: 5,
  historyDbBytes: 32 << 20,
  historySmall: 10_000,
  historyLarge: 1_000_000,
  historySpans: DEFAULT_SPANS,
  historyRounds: 3,
};

// Same shapes at roughly 1/20 the size; spans shrink with the history so that
// the quick run still compacts into two levels and rolls snapshots.
const QUICK_SIZES: Sizes = {
  captureRelaxedTxns: 2_000,
  captureDurableTxns: 500,
  captureDurableRounds: 1,
  captureRelaxedRounds: 1,
  applyDbBytes: 8 << 20,
  applyTxns: 300,
  applyRowsPerTxn: 10,
  applyBatch: 100,
  applySingleTxns: 100,
  applyRounds: 1,
  bigDbBytes: 64 << 20,
  bigUpdates: 5_000,
  materializeRounds: 1,
  historyDbBytes: 8 << 20,
  historySmall: 1_000,
  historyLarge: 20_000,
  historySpans: [100, 5_000],
  historyRounds: 1,
};

const BUDGETS: Record<string, Budget> = {
  captureThroughputRatio: { op: '>=', value: 0.85, what: 'write throughput with capture on vs plain better-sqlite3 WAL (durable per commit)' },
  captureThroughputRatioRelaxed: { op: '>=', value: 0.85, what: 'the same, relaxed pairing (NORMAL vs group commit)' },
  materializeVsCpRatio: { op: '>=', value: 0.3, what: 'restore of 1 GiB from snapshot + 100k records vs cp of 1 GiB (cp time / restore time)' },
  historyScalingRatio: { op: '<=', value: 1.5, what: 'PITR time with 1M records of history vs 10k (after compaction)' },
};

type Context = BenchContext<Sizes>;

const ROW_SQL = 'create table t(id integer primary key, v blob not null)';
const LOAD_SQL = 'with recursive c(x) as (select 1 union all select x + 1 from c where x < ?) insert into t(v) select randomblob(?) from c';
const UPDATE_SQL = 'update t set v = randomblob(?) where id = ?';
/** Capture workload: one small INSERT per transaction, the same statement and row on both sides. */
const INSERT_SQL = 'insert into t(v) values (?)';
const INSERT_ROW_BYTES = 100;
const CAPTURE_WARMUP = 200;
/** Yield to the event loop this often so group commit's timer fires as it would in a server. */
const YIELD_EVERY = 64;
/** Rows of 1000 bytes fill 4 KiB pages four at a time, so page count follows row count. */
const ROW_BYTES = 1000;
const ROWS_PER_LOAD_TXN = 16_384;

function fileSize(file: string): number {
  return fs.statSync(file).size;
}

function dirSize(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? dirSize(path.join(dir, e.name)) : fileSize(path.join(dir, e.name));
  return n;
}

/** Loads `rows` rows of ROW_BYTES random bytes in large transactions. */
function loadRows(db: PrimaryDatabase, rows: number): void {
  db.write((c) => c.exec(ROW_SQL));
  for (let done = 0; done < rows; done += ROWS_PER_LOAD_TXN) {
    const n = Math.min(ROWS_PER_LOAD_TXN, rows - done);
    db.write((c) => c.prepare(LOAD_SQL).run(n, ROW_BYTES));
  }
}

/** `count` transactions, each rewriting `perTxn` random rows (same size, so the file does not grow). */
async function randomUpdates(db: PrimaryDatabase, count: number, rows: number, perTxn: number, seed: number): Promise<void> {
  const rnd = prng(seed);
  let stmt: Database.Statement | undefined;
  const txn = (c: Connection): void => {
    stmt ??= c.prepare(UPDATE_SQL);
    for (let k = 0; k < perTxn; k++) stmt.run(ROW_BYTES, 1 + Math.floor(rnd() * rows));
  };
  for (let i = 0; i < count; i++) {
    db.write(txn);
    if (i % 256 === 255) await yieldToLoop();
  }
  await db.waitDurable();
}

/**
 * An EngineFs that adds up the time spent in each labelled operation (diagnostics only).
 * syncFile runs on the thread pool, off the writer's path, so it is not timed.
 */
class TimingFs extends PassThroughFs {
  readonly ms = new Map<string, number>();
  /** The engine step the calls are made for (set by {@link instrument}), and I/O time per step. */
  part = 'other';
  readonly msByPart = new Map<string, number>();
  private time<T>(op: string, fn: () => T): T {
    const start = performance.now();
    try {
      return fn();
    } finally {
      const dt = performance.now() - start;
      this.ms.set(op, (this.ms.get(op) ?? 0) + dt);
      this.msByPart.set(this.part, (this.msByPart.get(this.part) ?? 0) + dt);
    }
  }
  override open(file: string, flags: OpenFlags, op: string): number {
    return this.time(op, () => this.inner.open(file, flags, op));
  }
  override close(fd: number, op: string): void {
    this.time(op, () => this.inner.close(fd, op));
  }
  override read(fd: number, buf: Uint8Array, offset: number, length: number, position: number, op: string): number {
    return this.time(`${op} (read)`, () => this.inner.read(fd, buf, offset, length, position, op));
  }
  override write(fd: number, buf: Uint8Array, position: number, op: string): void {
    this.time(`${op} (write)`, () => this.inner.write(fd, buf, position, op));
  }
  override sync(fd: number, op: string): void {
    this.time(`${op} (fsync)`, () => this.inner.sync(fd, op));
  }
  override truncate(fd: number, length: number, op: string): void {
    this.time(op, () => this.inner.truncate(fd, length, op));
  }
  override rename(from: string, to: string, op: string): void {
    this.time(op, () => this.inner.rename(from, to, op));
  }
  override unlink(file: string, op: string): void {
    this.time(op, () => this.inner.unlink(file, op));
  }
  override syncDir(dir: string, op: string): void {
    this.time(`${op} (fsync dir)`, () => this.inner.syncDir(dir, op));
  }
}

// ---------------------------------------------------------------------------
// capture

async function plainRun(file: string, synchronous: 'FULL' | 'NORMAL', n: number, payload: Buffer): Promise<number> {
  const db = new Database(file);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${synchronous}`);
    db.exec(ROW_SQL);
    const ins = db.prepare(INSERT_SQL);
    const tx = db.transaction((v: Buffer) => ins.run(v));
    for (let i = 0; i < CAPTURE_WARMUP; i++) tx.immediate(payload);
    const start = performance.now();
    for (let i = 0; i < n; i++) {
      tx.immediate(payload);
      if (i % YIELD_EVERY === YIELD_EVERY - 1) await yieldToLoop();
    }
    return n / secondsSince(start);
  } finally {
    db.close();
    removeDb(file);
  }
}

/** Opens a primary for the capture runs, creates the table and warms it up; returns the write. */
async function warmPrimary(file: string, durability: Durability, payload: Buffer, efs?: TimingFs): Promise<{ db: PrimaryDatabase; txn: (c: Connection) => void }> {
  const db = PrimaryDatabase.open({ file, durability, efs });
  db.write((c) => c.exec(ROW_SQL));
  let ins: Database.Statement | undefined;
  const txn = (c: Connection): void => {
    ins ??= c.prepare(INSERT_SQL);
    ins.run(payload);
  };
  for (let i = 0; i < CAPTURE_WARMUP; i++) db.write(txn);
  await db.waitDurable();
  return { db, txn };
}

async function geodrRun(file: string, durability: Durability, n: number, payload: Buffer): Promise<number> {
  const { db, txn } = await warmPrimary(file, durability, payload);
  try {
    const start = performance.now();
    for (let i = 0; i < n; i++) {
      db.write(txn);
      if (i % YIELD_EVERY === YIELD_EVERY - 1) await yieldToLoop();
    }
    // Group commit: the run ends when its last write is durable.
    await db.waitDurable();
    return n / secondsSince(start);
  } finally {
    db.close();
    removeDb(file);
  }
}

type Hooked = 'capture' | 'checkpoint' | 'flush';

/**
 * Wraps the primary's capture, checkpoint and flush (the group-commit timer calls the
 * instance's flush too) to add up their exclusive time: checkpoint calls capture and
 * flush, and a nested call is counted once, in the callee.
 */
function instrument(db: PrimaryDatabase, tfs: TimingFs): Map<Hooked, number> {
  const self = new Map<Hooked, number>();
  const stack: number[] = [];
  const target = db as unknown as Record<Hooked, () => unknown>;
  for (const name of ['capture', 'checkpoint', 'flush'] as const) {
    const orig = target[name].bind(db);
    target[name] = () => {
      stack.push(0);
      const outer = tfs.part;
      tfs.part = name;
      const s = performance.now();
      try {
        return orig();
      } finally {
        const dt = performance.now() - s;
        tfs.part = outer;
        const child = stack.pop()!;
        self.set(name, (self.get(name) ?? 0) + dt - child);
        if (stack.length > 0) stack[stack.length - 1] = stack[stack.length - 1]! + dt;
      }
    };
  }
  return self;
}

/** Where a geodr write's time goes: one extra run with the parts timed (µs per transaction). */
async function captureBreakdown(file: string, durability: Durability, n: number, payload: Buffer): Promise<Record<string, number>> {
  const tfs = new TimingFs(new NodeFs());
  const { db, txn } = await warmPrimary(file, durability, payload, tfs);
  try {
    const parts = instrument(db, tfs);
    tfs.ms.clear();
    tfs.msByPart.clear();
    const start = performance.now();
    for (let i = 0; i < n; i++) {
      db.write(txn);
      if (i % YIELD_EVERY === YIELD_EVERY - 1) await yieldToLoop();
    }
    await db.waitDurable();
    const total = performance.now() - start;
    const us = (ms: number): number => (ms * 1000) / n;
    const capture = parts.get('capture') ?? 0;
    const checkpoint = parts.get('checkpoint') ?? 0;
    const flush = parts.get('flush') ?? 0;
    const io = (part: string): number => tfs.msByPart.get(part) ?? 0;
    const out: Record<string, number> = {
      total: us(total),
      'SQLite transaction + write() overhead + loop': us(total - capture - checkpoint - flush),
      'capture: CPU (scan WAL, hash, encode)': us(capture - io('capture')),
      'capture: I/O (read WAL, write log)': us(io('capture')),
      'flush: I/O (write buffered log, fdatasync)': us(io('flush')),
      'flush: CPU': us(flush - io('flush')),
      'checkpoint: wal_checkpoint + its I/O': us(checkpoint),
    };
    for (const [op, ms] of [...tfs.ms].sort((a, b) => b[1] - a[1])) if (us(ms) >= 0.05) out[`  fs ${op}`] = us(ms);
    return out;
  } finally {
    db.close();
    removeDb(file);
  }
}

async function capture(ctx: Context): Promise<void> {
  const { sizes } = ctx;
  const payload = randomBytes(INSERT_ROW_BYTES);
  const file = path.join(ctx.dir, 'capture.db');
  const pairings = [
    { key: 'Durable', plain: 'FULL' as const, durability: 'commit' as const, n: sizes.captureDurableTxns, rounds: sizes.captureDurableRounds },
    { key: 'Relaxed', plain: 'NORMAL' as const, durability: 'group' as const, n: sizes.captureRelaxedTxns, rounds: sizes.captureRelaxedRounds },
  ];
  for (const p of pairings) {
    const plain: number[] = [];
    const geodr: number[] = [];
    await phase(ctx, `capture ${p.key.toLowerCase()}: ${p.rounds} × (${p.n} txns plain WAL synchronous=${p.plain} + geodr durability=${p.durability})`, async () => {
      for (let r = 0; r < p.rounds; r++) {
        // Alternate which side goes first so drift in the machine's state hits both.
        const sides = [async () => plain.push(await plainRun(file, p.plain, p.n, payload)), async () => geodr.push(await geodrRun(file, p.durability, p.n, payload))];
        if (r % 2 === 1) sides.reverse();
        for (const s of sides) await s();
        log(`  round ${r + 1}: plain ${plain[r]!.toFixed(0)} txn/s, geodr ${geodr[r]!.toFixed(0)} txn/s`);
      }
    });
    const pm = median(plain);
    const gm = median(geodr);
    const ratio = gm / pm;
    const suffix = p.key === 'Durable' ? '' : 'Relaxed';
    Object.assign(ctx.results, {
      [`captureThroughputRatio${suffix}`]: ratio,
      [`plainWal${p.plain === 'FULL' ? 'Full' : 'Normal'}TxnPerSec`]: pm,
      [`geodr${p.durability === 'commit' ? 'Commit' : 'Group'}TxnPerSec`]: gm,
      [`capture${p.key}Runs`]: { transactions: p.n, plainTxnPerSec: plain, geodrTxnPerSec: geodr, pairedRatios: geodr.map((g, i) => g / plain[i]!) },
    });
    const breakdown = await phase(ctx, `capture ${p.key.toLowerCase()}: diagnostic run with the parts of a write timed`, () => captureBreakdown(file, p.durability, p.n, payload));
    ctx.results[`capture${p.key}Breakdown`] = { unit: 'µs per transaction', plainUsPerTxn: 1e6 / pm, ...breakdown };
    ctx.breakdowns.push({ title: `geodr durability=${p.durability}: where a write's time goes (diagnostic run; plain WAL synchronous=${p.plain} takes ${fmt(1e6 / pm, 1)} µs/txn)`, unit: 'µs/txn', digits: 1, rows: breakdown });
    ctx.figures.push(
      { label: `plain WAL synchronous=${p.plain}`, value: pm, unit: 'txn/s', digits: 0 },
      { label: `geodr durability=${p.durability}`, value: gm, unit: 'txn/s', digits: 0 },
      { label: `capture throughput ratio (${p.key.toLowerCase()})`, value: ratio, unit: '×', budget: `captureThroughputRatio${suffix}` },
    );
  }
  ctx.results.captureWorkload = { statement: INSERT_SQL, rowBytes: INSERT_ROW_BYTES, warmupTxns: CAPTURE_WARMUP, yieldEvery: YIELD_EVERY, freshDatabaseEachRun: true };
}

// ---------------------------------------------------------------------------
// apply

function applyRun(file: string, snapshotFile: string, records: TxRecord[], batch: number, fsync: boolean, expect: Checksum): number {
  const r = ReplicaDatabase.create({ file, fsync }, snapshotFile);
  try {
    const start = performance.now();
    for (let i = 0; i < records.length; i += batch) r.apply(records.slice(i, i + batch));
    const seconds = secondsSince(start);
    if (!checksumEquals(r.checksum, expect)) throw new Error(`replica ended on ${checksumHex(r.checksum)}, primary was at ${checksumHex(expect)}`);
    return seconds;
  } finally {
    r.close();
    removeDb(file);
  }
}

async function apply(ctx: Context): Promise<void> {
  const { sizes } = ctx;
  const file = path.join(ctx.dir, 'apply-primary.db');
  const rows = rowsFor(sizes.applyDbBytes);
  const db = PrimaryDatabase.open({ file, durability: 'group' });
  let records: TxRecord[] = [];
  let snapshotFile = '';
  let expect: Checksum = { hi: 0, lo: 0 };
  let single: TxRecord[] = [];
  let singleExpect: Checksum = { hi: 0, lo: 0 };
  try {
    await phase(ctx, `apply setup: load ${rows} rows (${sizes.applyDbBytes >> 20} MiB), snapshot, ${sizes.applyTxns} txns × ${sizes.applyRowsPerTxn} random row updates`, async () => {
      loadRows(db, rows);
      snapshotFile = (await takeSnapshot(db)).file;
      const base = db.txid;
      await randomUpdates(db, sizes.applyTxns, rows, sizes.applyRowsPerTxn, 1);
      records = [...db.records(base + 1, db.txid)];
      expect = db.checksum;
      // The per-record run applies a prefix; its expected end is that record's post.
      single = records.slice(0, sizes.applySingleTxns);
      singleExpect = single[single.length - 1]!.post;
    });
  } finally {
    db.close();
  }
  const pages = records.reduce((n, r) => n + r.pages.length, 0);
  const mb = (pages * db.pageSize) / 1e6;
  const replicaFile = path.join(ctx.dir, 'apply-replica.db');
  const withFsync: number[] = [];
  const noFsync: number[] = [];
  await phase(ctx, `apply: ${sizes.applyRounds} × (${records.length} records in batches of ${sizes.applyBatch}, fsync on + off)`, () => {
    for (let r = 0; r < sizes.applyRounds; r++) {
      const sides = [() => withFsync.push(applyRun(replicaFile, snapshotFile, records, sizes.applyBatch, true, expect)), () => noFsync.push(applyRun(replicaFile, snapshotFile, records, sizes.applyBatch, false, expect))];
      if (r % 2 === 1) sides.reverse();
      for (const s of sides) s();
      log(`  round ${r + 1}: fsync ${(mb / withFsync[r]!).toFixed(1)} MB/s, no fsync ${(mb / noFsync[r]!).toFixed(1)} MB/s`);
    }
  });
  const singleSeconds = await phase(ctx, `apply: ${single.length} records one at a time, fsync on`, () => applyRun(replicaFile, snapshotFile, single, 1, true, singleExpect));
  fs.rmSync(`${file}.geodr`, { recursive: true, force: true });
  removeDb(file);
  const applyMBps = mb / median(withFsync);
  const applyMBpsNoFsync = mb / median(noFsync);
  Object.assign(ctx.results, {
    applyMBps,
    applyMBpsNoFsync,
    applyTxnPerSec: records.length / median(withFsync),
    applyTxnPerSecNoFsync: records.length / median(noFsync),
    applySingleRecordTxnPerSec: single.length / singleSeconds,
    applyWorkload: { records: records.length, pages, pageSize: db.pageSize, megabytes: mb, batch: sizes.applyBatch, rowsPerTxn: sizes.applyRowsPerTxn, dbBytes: sizes.applyDbBytes, secondsFsync: withFsync, secondsNoFsync: noFsync },
  });
  ctx.figures.push(
    { label: `replica apply, fsync on (batches of ${sizes.applyBatch})`, value: applyMBps, unit: 'MB/s', digits: 1 },
    { label: `replica apply, fsync off (batches of ${sizes.applyBatch})`, value: applyMBpsNoFsync, unit: 'MB/s', digits: 1 },
    { label: `replica apply, fsync on (batches of ${sizes.applyBatch})`, value: records.length / median(withFsync), unit: 'txn/s', digits: 0 },
    { label: 'replica apply, fsync on, one record per apply', value: single.length / singleSeconds, unit: 'txn/s', digits: 0 },
  );
}

// ---------------------------------------------------------------------------
// materialize

function timeMaterialize(stateDir: string, out: string, target: { txid: number } | 'latest', expect?: Checksum): number {
  removeDb(out);
  const start = performance.now();
  const r = materialize({ source: new LocalChain(new NodeFs(), stateDir), target, out, integrityCheck: false });
  const seconds = secondsSince(start);
  if (expect !== undefined && !checksumEquals(r.checksum, expect)) throw new Error(`materialized ${checksumHex(r.checksum)}, expected ${checksumHex(expect)}`);
  return seconds;
}

async function materializeSection(ctx: Context): Promise<void> {
  const { sizes } = ctx;
  const file = path.join(ctx.dir, 'big.db');
  const stateDir = `${file}.geodr`;
  const out = path.join(ctx.dir, 'restored.db');
  const copy = path.join(ctx.dir, 'copied.db');
  const rows = rowsFor(sizes.bigDbBytes);
  const gib = sizes.bigDbBytes / (1 << 30);
  let expect!: Checksum;
  let snapshotTxid = 0;
  let logPruned = 0;
  try {
    const db = PrimaryDatabase.open({ file, durability: 'group' });
    try {
      await phase(ctx, `materialize setup: load ${rows} rows of ${ROW_BYTES} B through PrimaryDatabase (${gib} GiB)`, () => loadRows(db, rows));
      await phase(ctx, 'materialize setup: checkpoint + takeSnapshot', async () => {
        db.checkpoint();
        const snap = await takeSnapshot(db);
        snapshotTxid = snap.txid;
        // The log before the snapshot is covered by it; a server would drop it after shipping.
        logPruned = db.txLog.truncateBefore(snapshotTxid);
      });
      await phase(ctx, `materialize setup: ${sizes.bigUpdates} single-row update transactions`, () => randomUpdates(db, sizes.bigUpdates, rows, 1, 2));
      expect = db.checksum;
    } finally {
      db.close();
    }
    const dbBytes = fileSize(file);
    const logBytes = dirSize(path.join(stateDir, 'log'));
    const snapBytes = dirSize(path.join(stateDir, 'snapshots'));
    log(`  database ${(dbBytes / 2 ** 20).toFixed(0)} MiB, snapshots ${(snapBytes / 2 ** 20).toFixed(0)} MiB, log ${(logBytes / 2 ** 20).toFixed(0)} MiB (${logPruned} segments before the snapshot pruned)`);
    // Both sides run from the page cache: nothing can be dropped from it here, so read everything first.
    await phase(ctx, 'materialize: warm-up read of the snapshot, the log and the database file', () => {
      warm(stateDir);
      warm(file);
    });
    const mat: number[] = [];
    const cp: number[] = [];
    const cpSync: number[] = [];
    let integritySeconds = 0;
    await phase(ctx, `materialize vs cp: ${sizes.materializeRounds} rounds, alternating`, () => {
      for (let r = 0; r < sizes.materializeRounds; r++) {
        const sides = [
          () => {
            syncAll();
            mat.push(timeMaterialize(stateDir, out, 'latest', expect));
            if (r === 0) {
              const s = performance.now();
              integrityCheck(out);
              integritySeconds = secondsSince(s);
            }
            removeDb(out);
          },
          () => {
            syncAll();
            let s = performance.now();
            execFileSync('cp', [file, copy]);
            cp.push(secondsSince(s));
            fs.rmSync(copy);
            // The restore fsyncs its output; also time cp followed by an fdatasync to show what that costs.
            syncAll();
            s = performance.now();
            execFileSync('cp', [file, copy]);
            const fd = fs.openSync(copy, 'r+');
            fs.fdatasyncSync(fd);
            fs.closeSync(fd);
            cpSync.push(secondsSince(s));
            fs.rmSync(copy);
          },
        ];
        if (r % 2 === 1) sides.reverse();
        for (const s of sides) s();
        log(`  round ${r + 1}: materialize ${mat[r]!.toFixed(2)} s, cp ${cp[r]!.toFixed(2)} s, cp + fdatasync ${cpSync[r]!.toFixed(2)} s`);
      }
    });
    log(`  integrity_check ${integritySeconds.toFixed(2)} s`);
    // One more run through a timing file system, to say where a restore spends its time.
    const breakdown = await phase(ctx, 'materialize: diagnostic run with per-operation I/O timing', () => {
      removeDb(out);
      const tfs = new TimingFs(new NodeFs());
      const steps: Array<{ done: number; seconds: number }> = [];
      const s = performance.now();
      // Opening the local log is the first thing a restore does (resolving the target); time it apart.
      const chain = new LocalChain(tfs, stateDir);
      chain.recordRange();
      const logOpenSeconds = secondsSince(s);
      materialize({ source: chain, target: 'latest', out, efs: tfs, integrityCheck: false, onProgress: (done) => steps.push({ done, seconds: secondsSince(s) }) });
      const total = secondsSince(s);
      removeDb(out);
      return { totalSeconds: total, logOpenSeconds, progress: steps, ioSeconds: Object.fromEntries([...tfs.ms].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, v / 1000])) };
    });
    const last = breakdown.progress[breakdown.progress.length - 1]?.seconds ?? 0;
    const parts: Record<string, number> = {
      total: breakdown.totalSeconds,
      'open the local log': breakdown.logOpenSeconds,
      'plan + snapshot: stream, hash, write': (breakdown.progress[0]?.seconds ?? 0) - breakdown.logOpenSeconds,
      'records: read, verify, hash, write': last - (breakdown.progress[0]?.seconds ?? 0),
      'finish: fsync, rename': breakdown.totalSeconds - last,
    };
    for (const [op, sec] of Object.entries(breakdown.ioSeconds)) if (sec >= 0.005) parts[`  fs ${op}`] = sec;
    ctx.breakdowns.push({ title: `materialize ${gib} GiB: where the time goes (diagnostic run)`, unit: 's', digits: 3, rows: parts });
    // Best of N on each side: on this shared VM a 1 GiB cp swings 0.3–2.3 s from run to run
    // with background writeback, so medians mostly measure the noise. Medians stay in the JSON.
    const m = Math.min(...mat);
    const c = Math.min(...cp);
    const cs = Math.min(...cpSync);
    Object.assign(ctx.results, {
      materializeVsCpRatioMedian: median(cp) / median(mat),
      materializeVsCpRatio: c / m,
      materializeVsCpRatioWithIntegrity: c / (m + integritySeconds),
      materializeVsCpFsyncRatio: cs / m,
      materializeSeconds: m,
      cpSeconds: c,
      cpFdatasyncSeconds: cs,
      integrityCheckSeconds: integritySeconds,
      materializeWorkload: {
        databaseBytes: dbBytes,
        snapshotBytes: snapBytes,
        logBytes,
        snapshotTxid,
        records: sizes.bigUpdates,
        cache: 'warm: snapshot, log and source file read once before timing; `sync` before every timed step',
        runs: { materializeSeconds: mat, cpSeconds: cp, cpFdatasyncSeconds: cpSync },
        breakdown,
      },
    });
    ctx.figures.push(
      { label: `materialize ${gib} GiB (snapshot + ${sizes.bigUpdates} records, no integrity_check), best`, value: m, unit: 's', digits: 2 },
      { label: `cp of the ${gib} GiB database file (warm cache), best`, value: c, unit: 's', digits: 2 },
      { label: 'cp + fdatasync of the copy, best', value: cs, unit: 's', digits: 2 },
      { label: `integrity_check of the restored ${gib} GiB file`, value: integritySeconds, unit: 's', digits: 2 },
      { label: 'materialize vs cp (cp time / materialize time)', value: c / m, unit: '×', budget: 'materializeVsCpRatio' },
      { label: 'materialize + integrity_check vs cp', value: c / (m + integritySeconds), unit: '×', digits: 3 },
      { label: 'materialize vs cp + fdatasync', value: cs / m, unit: '×', digits: 3 },
    );
    ctx.notes.push('materialize vs cp: both run from the page cache (inputs read once before timing; caches cannot be dropped here); `sync` runs before each timed step.');
  } finally {
    removeDb(file);
    removeDb(out);
    fs.rmSync(copy, { force: true });
  }
}

// ---------------------------------------------------------------------------
// history

interface History {
  records: number;
  file: string;
  stateDir: string;
  snapshotTxid: number;
  expect: Checksum;
  lastTxid: number;
  logBytes: number;
}

async function buildHistory(ctx: Context, records: number, seed: number): Promise<History> {
  const { sizes } = ctx;
  const file = path.join(ctx.dir, `history-${records}.db`);
  const rows = rowsFor(sizes.historyDbBytes);
  const db = PrimaryDatabase.open({ file, durability: 'group' });
  let snapshotTxid = 0;
  let expect: Checksum;
  let lastTxid: number;
  try {
    await phase(ctx, `history ${records}: load ${sizes.historyDbBytes >> 20} MiB + snapshot`, async () => {
      loadRows(db, rows);
      snapshotTxid = (await takeSnapshot(db)).txid;
    });
    const start = performance.now();
    await phase(ctx, `history ${records}: ${records} single-row update transactions (durability group)`, () => randomUpdates(db, records, rows, 1, seed));
    const rate = records / secondsSince(start);
    ctx.results[`historyBuildTxnPerSec${records}`] = rate;
    log(`  ${rate.toFixed(0)} txn/s`);
    expect = db.checksum;
    lastTxid = db.txid;
  } finally {
    db.close();
  }
  const stateDir = `${file}.geodr`;
  const efs = new NodeFs();
  const c = await phase(ctx, `history ${records}: compact (spans ${sizes.historySpans.join(', ')})`, () => compact(efs, new LocalChain(efs, stateDir), { spans: sizes.historySpans, scratchDir: ctx.dir }));
  log(`  ${c.created.length} units, ${c.snapshots.length} snapshots rolled`);
  return { records, file, stateDir, snapshotTxid, expect, lastTxid, logBytes: dirSize(path.join(stateDir, 'log')) };
}

async function history(ctx: Context): Promise<void> {
  const { sizes } = ctx;
  const out = path.join(ctx.dir, 'history-restored.db');
  const built: History[] = [];
  try {
    const small = await buildHistory(ctx, sizes.historySmall, 3);
    built.push(small);
    const large = await buildHistory(ctx, sizes.historyLarge, 4);
    built.push(large);
    const midTxid = large.snapshotTxid + Math.floor(sizes.historyLarge * 0.554321);
    await phase(ctx, 'history: warm-up read of both state directories', () => built.forEach((h) => warm(h.stateDir)));
    const ts: number[] = [];
    const tl: number[] = [];
    const tm: number[] = [];
    const logOpen: number[] = [];
    await phase(ctx, `history: materialize ${sizes.historyRounds} rounds (latest of each, and TXID ${midTxid} of the large one)`, () => {
      for (let r = 0; r < sizes.historyRounds; r++) {
        const sides = [() => ts.push(timeMaterialize(small.stateDir, out, 'latest', small.expect)), () => tl.push(timeMaterialize(large.stateDir, out, 'latest', large.expect))];
        if (r % 2 === 1) sides.reverse();
        for (const s of sides) s();
        tm.push(timeMaterialize(large.stateDir, out, { txid: midTxid }));
        // Opening the local log is part of every materialize (LocalChain reads it for the record range).
        const s = performance.now();
        new LocalChain(new NodeFs(), large.stateDir).recordRange();
        logOpen.push(secondsSince(s));
        removeDb(out);
        log(`  round ${r + 1}: ${sizes.historySmall}: ${ts[r]!.toFixed(3)} s, ${sizes.historyLarge}: ${tl[r]!.toFixed(3)} s, mid: ${tm[r]!.toFixed(3)} s, log open (large): ${logOpen[r]!.toFixed(3)} s`);
      }
    });
    const plans = built.map((h) => {
      const chain = new LocalChain(new NodeFs(), h.stateDir);
      const units = chain.units();
      return { records: h.records, fullSnapshots: units.filter((u) => u.kind === 'full').length, compactedUnits: units.filter((u) => u.kind === 'compacted').length, logBytes: h.logBytes };
    });
    const s = median(ts);
    const l = median(tl);
    const m = median(tm);
    Object.assign(ctx.results, {
      historyScalingRatio: l / s,
      historyMaterializeSmallSeconds: s,
      historyMaterializeLargeSeconds: l,
      historyMaterializeMidSeconds: m,
      historyLogOpenLargeSeconds: median(logOpen),
      historyWorkload: { dbBytes: sizes.historyDbBytes, small: sizes.historySmall, large: sizes.historyLarge, spans: sizes.historySpans, midTxid, chains: plans, runs: { small: ts, large: tl, mid: tm, logOpenLarge: logOpen } },
    });
    ctx.figures.push(
      { label: `materialize latest, ${sizes.historySmall} records of history`, value: s, unit: 's', digits: 3 },
      { label: `materialize latest, ${sizes.historyLarge} records of history`, value: l, unit: 's', digits: 3 },
      { label: `materialize TXID ${midTxid} (middle of the ${sizes.historyLarge})`, value: m, unit: 's', digits: 3 },
      { label: `  of which opening the local log (${sizes.historyLarge})`, value: median(logOpen), unit: 's', digits: 3 },
      { label: `history scaling (t ${sizes.historyLarge} / t ${sizes.historySmall})`, value: l / s, unit: '×', budget: 'historyScalingRatio' },
    );
  } finally {
    for (const h of built) removeDb(h.file);
    removeDb(out);
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
  let git: string;
  try {
    const root = fileURLToPath(new URL('../../', import.meta.url));
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: root, encoding: 'utf8' }).trim();
    git = dirty === '' ? head : `${head} + uncommitted changes in src (${dirty.split('\n').length} files)`;
  } catch {
    git = 'unknown';
  }
  return {
    git,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    sqlite,
    loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
    betterSqlite3: bs3,
  };
}

/** fdatasync latency after a 4 KiB write, appending vs overwriting: it sets the durable pairing's pace. */
function fsyncProbe(dir: string): { appendUs: number; overwriteUs: number } {
  const buf = Buffer.alloc(4224, 1);
  const n = 300;
  const run = (overwrite: boolean): number => {
    const f = path.join(dir, 'fsync-probe');
    const fd = fs.openSync(f, 'w+');
    try {
      if (overwrite) {
        fs.writeSync(fd, Buffer.alloc(buf.length * n));
        fs.fsyncSync(fd);
      }
      const s = performance.now();
      for (let i = 0; i < n; i++) {
        fs.writeSync(fd, buf, 0, buf.length, i * buf.length);
        fs.fdatasyncSync(fd);
      }
      return ((performance.now() - s) * 1000) / n;
    } finally {
      fs.closeSync(fd);
      fs.rmSync(f);
    }
  };
  return { appendUs: run(false), overwriteUs: run(true) };
}

function parseArgs(args: string[]): { quick: boolean; only: Section[] | undefined; dir: string | undefined } {
  let quick = false;
  let only: Section[] | undefined;
  let dir: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--quick') quick = true;
    else if (a === '--only' || a === '--dir') {
      const v = args[++i];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} needs a value`);
      if (a === '--dir') dir = v;
      else {
        const names = v.split(',').filter((s) => s !== '');
        const bad = names.filter((s) => !(SECTIONS as readonly string[]).includes(s));
        if (bad.length > 0 || names.length === 0) throw new UsageError(`unknown section(s) ${JSON.stringify(bad)}; sections: ${SECTIONS.join(', ')}`);
        only = names as Section[];
      }
    } else throw new UsageError(`unknown option ${JSON.stringify(a)}`);
  }
  return { quick, only, dir };
}

/** Runs the engine benchmark; see {@link ENGINE_USAGE}. */
export async function runEngineBench(args: string[]): Promise<void> {
  const opts = parseArgs(args);
  const base = opts.dir ?? os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  const dir = fs.mkdtempSync(path.join(base, 'geodr-bench-'));
  const ctx: Context = { dir, sizes: opts.quick ? QUICK_SIZES : FULL_SIZES, quick: opts.quick, results: {}, figures: [], phases: [], breakdowns: [], notes: [] };
  const sections: Record<Section, (c: Context) => Promise<void>> = { capture, apply, materialize: materializeSection, history };
  const run = opts.only ?? [...SECTIONS];
  const loadAtStart = os.loadavg().map((x) => Math.round(x * 100) / 100);
  log(`work directory ${dir}${opts.quick ? ' (quick)' : ''}; load average ${loadAtStart.join(' ')}`);
  const started = performance.now();
  let probe: { appendUs: number; overwriteUs: number };
  try {
    probe = fsyncProbe(dir);
    log(`fdatasync after a 4 KiB write: append ${probe.appendUs.toFixed(0)} µs, overwrite ${probe.overwriteUs.toFixed(0)} µs`);
    for (const s of run) await sections[s](ctx);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  ctx.phases.push({ phase: 'total', seconds: secondsSince(started) });
  // Other processes on the machine skew every figure; the load average says how much there was.
  ctx.notes.push(`load average (1/5/15 min) at start ${loadAtStart.join(' ')}, at end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}; ${os.cpus().length} CPUs.`);
  printReport('engine', ctx, BUDGETS);
  if (opts.only !== undefined) {
    console.log('\n(--only: partial run, bench/results/engine.json not written)');
    return;
  }
  const json = {
    bench: 'engine',
    quick: opts.quick,
    date: new Date().toISOString(),
    ...ctx.results,
    budgets: BUDGETS,
    machine: { ...machine(), loadAverageAtStart: loadAtStart, fdatasyncAppendUs: probe.appendUs, fdatasyncOverwriteUs: probe.overwriteUs, workDir: base },
    phases: ctx.phases,
    notes: ctx.notes,
  };
  const resultsDir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  fs.mkdirSync(resultsDir, { recursive: true });
  const target = path.join(resultsDir, 'engine.json');
  // Written under a temp name and renamed, so an interrupted run never leaves half a file.
  fs.writeFileSync(`${target}.tmp`, JSON.stringify(json, null, 2) + '\n');
  fs.renameSync(`${target}.tmp`, target);
  console.log(`\nresults written to ${path.relative(process.cwd(), target) || target}`);
}
