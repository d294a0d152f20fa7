/**
 * Crash test: a child process (testing/crash-child.ts) writes, captures,
 * checkpoints, applies to a replica, compacts and snapshots, and is SIGKILLed at a
 * random labelled engine step (sometimes mid-write, leaving a torn write). After
 * every run this process recovers the primary and the replica and checks that no
 * acknowledged transaction is missing, nothing partial or phantom is visible,
 * TXIDs never go backwards, the replica catches up to the same checksum, a restore
 * at a random TXID works, and integrity_check is ok everywhere.
 *
 * Most runs are checked on a copy of the crashed files, so the next child has to
 * recover the real crash itself, under faults (a kill can land in recovery); the
 * other runs are checked in place.
 *
 * Replay a failure with GEODR_CRASH_SEED=<seed>; GEODR_CRASH_KEEP=1 keeps the work dir.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LocalChain } from './chain.js';
import { checksumHex } from './checksum.js';
import { NodeFs } from './fs.js';
import { materialize } from './materialize.js';
import { PrimaryDatabase } from './primary.js';
import { ReplicaDatabase } from './replica.js';
import { openConnection, type Connection } from './sqlite.js';
import { integrity, prng, tempDir } from './testing/helpers.js';

const CHILD = fileURLToPath(new URL('./testing/crash-child.js', import.meta.url));
/** Must match the child's options, so recovery here runs the same engine configuration. */
const PRIMARY_OPTIONS = { durability: 'commit', checkpointFrames: 20, segmentBytes: 256 << 10 } as const;
const MIN_RUNS = 55;
const MIN_CRASHES = 50;
const MAX_RUNS = 90;
const MIN_LABELS = 8;
const ITERATIONS = 250;

interface ChildRun {
  crashed: string | undefined;
  /** The kill came before recovery had finished. */
  inRecovery: boolean;
  calls: number | undefined;
  /** Labelled calls recovery made, when it finished. */
  recoveryCalls: number | undefined;
  /** Ids the child attempted to insert (present or not, both are fine). */
  tried: Set<number>;
  /** Acknowledged inserts: id → TXID. */
  acked: Map<number, number>;
  /** Ids of attempted deletes: each may or may not be gone. */
  deleting: Set<number>;
  /** Ids of acknowledged deletes: must be gone. */
  deleted: Set<number>;
  maxAckTxid: number;
  /** TXIDs the child's acknowledged writes reported, in order; `changes` when the write surely changed a page. */
  txids: Array<{ txid: number; changes: boolean }>;
}

/** What earlier runs established; every run's recovered state must agree with it. */
interface Model {
  /** Ids present after the previous recovery: durable, so they stay unless deleted. */
  seen: Set<number>;
  /** Ids once present and later deleted: they must never come back. */
  gone: Set<number>;
  txid: number;
  replicaTxid: number;
}

/** Runs one child to its end; asynchronous so the test's own timeout can still fire. */
async function runChild(dir: string, seed: number, crashAt: number): Promise<ChildRun> {
  const child = spawn(process.execPath, [CHILD, dir, String(seed), String(crashAt), String(ITERATIONS)], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000, killSignal: 'SIGKILL' });
  const r = { stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (d: string) => (r.stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (r.stderr += d));
  // once() rejects if the spawn itself fails.
  const [status, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  const run: ChildRun = { crashed: undefined, inRecovery: true, calls: undefined, recoveryCalls: undefined, tried: new Set(), acked: new Map(), deleting: new Set(), deleted: new Set(), maxAckTxid: 0, txids: [] };
  for (const line of r.stderr.split('\n')) {
    const m = /^(CRASH|CALLS) (\S+)$/.exec(line);
    if (m?.[1] === 'CRASH') run.crashed = m[2];
    else if (m?.[1] === 'CALLS') run.calls = Number(m[2]);
  }
  if (run.crashed !== undefined) {
    assert.equal(signal, 'SIGKILL', `child announced a crash at ${run.crashed} but ended with ${signal ?? status}`);
  } else if (status !== 0 || run.calls === undefined) {
    assert.fail(`child seed ${seed} crashAt ${crashAt} failed (status ${status}, signal ${signal}):\n${r.stderr}`);
  }
  let pendingDelete: number[] = [];
  for (const line of r.stdout.split('\n')) {
    const [kind, a, b] = line.split(' ');
    if (kind === 'OPEN') {
      run.inRecovery = false;
      run.recoveryCalls = Number(a);
    }
    else if (kind === 'TRY') run.tried.add(Number(a));
    else if (kind === 'ACK') {
      run.acked.set(Number(a), Number(b));
      run.txids.push({ txid: Number(b), changes: true });
    } else if (kind === 'TRYDEL') {
      pendingDelete = a!.split(',').map(Number);
      for (const id of pendingDelete) run.deleting.add(id);
    } else if (kind === 'DELACK') {
      for (const id of pendingDelete) run.deleted.add(id);
      run.txids.push({ txid: Number(a), changes: true });
    } else if (kind === 'TX') run.txids.push({ txid: Number(a), changes: false });
  }
  run.maxAckTxid = Math.max(0, ...run.txids.map((x) => x.txid));
  return run;
}

/**
 * Copies the work dir for checking. Published segments, snapshots and units are never
 * written in place (new ones are renamed in), so they are hard-linked; the newest two
 * segments (recovery cuts and appends there) and everything else are copied.
 */
function cloneWorkDir(src: string, dst: string): void {
  fs.rmSync(dst, { recursive: true, force: true });
  const logDir = path.join(src, 'p.db.geodr', 'log');
  const mutable = new Set(
    fs
      .readdirSync(logDir)
      .filter((n) => n.endsWith('.seg'))
      .sort()
      .slice(-2)
      .map((n) => path.join(logDir, n)),
  );
  const walk = (from: string, to: string): void => {
    fs.mkdirSync(to);
    for (const e of fs.readdirSync(from, { withFileTypes: true })) {
      const a = path.join(from, e.name);
      const b = path.join(to, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'scratch') walk(a, b);
      } else if (e.name.endsWith('-shm')) {
        // SQLite rebuilds the WAL index from the WAL.
      } else if (/\.(seg|full|incr|unit)$/.test(e.name) && !mutable.has(a)) fs.linkSync(a, b);
      else fs.copyFileSync(a, b);
    }
  };
  walk(src, dst);
}

function ids(conn: Connection, table: 'a' | 'b'): number[] {
  return (conn.prepare(`select id from ${table} order by id`).raw().all() as number[][]).map((r) => r[0]!);
}

/** Rows of b whose blob is not the length recorded with it (a torn row). */
function badRows(conn: Connection): number {
  return (conn.prepare('select count(*) as n from b where length(payload) != len').get() as { n: number }).n;
}

/** Recovers the primary and replica in `root`, checks them against the model and the run, and updates the model. */
function verify(root: string, onCopy: boolean, run: ChildRun, model: Model, rand: () => number): void {
  const pFile = path.join(root, 'p.db');
  const primary = PrimaryDatabase.open({ file: pFile, ...PRIMARY_OPTIONS });
  let replica: ReplicaDatabase | undefined;
  let present: Set<number>;
  try {
    // Every insert or delete the child made got a new TXID past what it recovered; an
    // update or VACUUM that left every page as it was keeps the TXID.
    run.txids.forEach(({ txid, changes }, i) => {
      const before = i === 0 ? model.txid : run.txids[i - 1]!.txid;
      assert.ok(changes ? txid > before : txid >= before, `the child acknowledged TXID ${txid} after TXID ${before}`);
    });
    const a = primary.read((c) => ids(c, 'a'));
    const b = primary.read((c) => ids(c, 'b'));
    assert.deepEqual(a, b, 'tables a and b hold different ids: a transaction is partly visible');
    present = new Set(a);
    for (const [id, txid] of run.acked) if (!run.deleting.has(id)) assert.ok(present.has(id), `acknowledged insert of id ${id} (TXID ${txid}) is missing`);
    for (const id of model.seen) if (!run.deleting.has(id)) assert.ok(present.has(id), `id ${id}, present after the previous run, is missing`);
    for (const id of run.deleted) assert.ok(!present.has(id), `acknowledged delete of id ${id} is undone`);
    for (const id of model.gone) assert.ok(!present.has(id), `deleted id ${id} came back`);
    for (const id of a) assert.ok(model.seen.has(id) || run.tried.has(id), `id ${id} was never inserted`);
    assert.equal(primary.read(badRows), 0, 'a row of b has a payload of the wrong length');
    assert.ok(primary.txid >= run.maxAckTxid, `primary is at TXID ${primary.txid}, but TXID ${run.maxAckTxid} was acknowledged`);
    assert.ok(primary.txid >= model.txid, `TXID went back from ${model.txid} to ${primary.txid}`);
    assert.equal(primary.read(integrity), 'ok');

    // The replica repairs an interrupted apply at open and verifies its checksum.
    replica = ReplicaDatabase.open({ file: path.join(root, 'r.db') });
    assert.ok(replica.txid >= model.replicaTxid, `replica TXID went back from ${model.replicaTxid} to ${replica.txid}`);
    assert.ok(replica.txid <= primary.txid, `replica at TXID ${replica.txid} is ahead of its primary at ${primary.txid}`);
    const replicaAtOpen = replica.txid;
    replica.apply([...primary.records(replica.txid + 1)]);
    assert.equal(replica.txid, primary.txid);
    assert.equal(checksumHex(replica.checksum), checksumHex(primary.checksum), 'replica checksum differs from the primary');
    assert.equal(checksumHex(replica.verify()), checksumHex(primary.checksum));
    assert.deepEqual(replica.read((c) => ids(c, 'a')), a, 'replica rows differ from the primary');
    assert.deepEqual(replica.read((c) => ids(c, 'b')), a, 'replica rows differ from the primary');
    assert.equal(replica.read(integrity), 'ok');

    for (const id of model.seen) if (!present.has(id)) model.gone.add(id);
    model.seen = present;
    model.txid = primary.txid;
    // Checked on a copy, the real replica stays where it was at open.
    model.replicaTxid = onCopy ? replicaAtOpen : replica.txid;
  } finally {
    replica?.close();
    primary.close();
  }

  // A restore at a random TXID of the history (materialize checks the chain and integrity).
  const target = Math.floor(rand() * (model.txid + 1));
  const out = path.join(root, 'restore.db');
  const restored = materialize({ source: new LocalChain(new NodeFs(), `${pFile}.geodr`), target: { txid: target }, out });
  assert.equal(restored.txid, target);
  const conn = openConnection(out, { readonly: true, fileMustExist: true });
  try {
    // TXID 0 is the empty base, before the tables were created.
    if (target > 0) {
      assert.deepEqual(ids(conn, 'a'), ids(conn, 'b'), `restore at TXID ${target} shows a transaction partly`);
      assert.equal(badRows(conn), 0, `restore at TXID ${target} has a torn row`);
    }
  } finally {
    conn.close();
  }
  fs.rmSync(out);
}

// Fixed work, not a time budget: 37 s alone, over 100 s on a loaded single core; the timeout only catches a hang.
test('crash: SIGKILL at random labelled steps loses no acknowledged transaction', { timeout: 600_000 }, async (t) => {
  const seed = Number(process.env.GEODR_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
  console.log(`crash test seed ${seed} (replay with GEODR_CRASH_SEED=${seed})`);
  const rand = prng(seed);
  const { dir, cleanup } = tempDir('geodr-crash-');
  const work = path.join(dir, 'work');
  const check = path.join(dir, 'check');
  const started = Date.now();
  try {
    // First-run setup without faults: schema, and a replica seeded from the base snapshot.
    fs.mkdirSync(work);
    const pFile = path.join(work, 'p.db');
    // Small pages keep records, and so the log, small (and make deeper b-trees).
    const setup = PrimaryDatabase.open({ file: pFile, pageSize: 1024, ...PRIMARY_OPTIONS });
    setup.write((c) => c.exec('create table a(id integer primary key); create table b(id integer primary key, len integer not null, payload blob not null)'));
    setup.close();
    ReplicaDatabase.create({ file: path.join(work, 'r.db') }, path.join(`${pFile}.geodr`, 'snapshots', '0000000000000000.full')).close();

    const model: Model = { seen: new Set(), gone: new Set(), txid: 0, replicaTxid: 0 };
    let callRange = 0;
    let recoveryRange = 0;
    let crashes = 0;
    let recoveryCrashes = 0;
    let inPlace = 0;
    const labels = new Map<string, number>();
    let runs = 0;
    while ((runs < MIN_RUNS || crashes < MIN_CRASHES) && runs < MAX_RUNS) {
      const childSeed = Math.floor(rand() * 2 ** 31);
      // The first run never crashes: it measures how many labelled calls a run makes. Some
      // runs aim at recovery, which is only a small share of the calls.
      const range = rand() < 0.2 && recoveryRange > 0 ? recoveryRange : callRange * 1.05;
      const crashAt = callRange === 0 ? Number.MAX_SAFE_INTEGER : 1 + Math.floor(rand() * range);
      const onCopy = rand() < 0.7;
      runs++;
      const run = await runChild(work, childSeed, crashAt);
      if (run.calls !== undefined) callRange = Math.max(callRange, run.calls);
      if (run.recoveryCalls !== undefined) recoveryRange = run.recoveryCalls;
      if (run.crashed !== undefined) {
        crashes++;
        if (run.inRecovery) recoveryCrashes++;
        labels.set(run.crashed, (labels.get(run.crashed) ?? 0) + 1);
      }
      try {
        if (onCopy) {
          cloneWorkDir(work, check);
          verify(check, true, run, model, rand);
          fs.rmSync(check, { recursive: true });
        } else {
          inPlace++;
          verify(work, false, run, model, rand);
        }
      } catch (e) {
        if (e instanceof Error) {
          e.message = `run ${runs} (seed ${seed}, child seed ${childSeed}, crashAt ${crashAt}, ${onCopy ? 'on a copy' : 'in place'}), crashed at ${run.crashed ?? 'nothing'}${run.inRecovery ? ' in recovery' : ''}: ${e.message}`;
        }
        throw e;
      }
    }

    const histogram = [...labels.entries()].sort((x, y) => y[1] - x[1]);
    const distinct = new Set(histogram.map(([l]) => l.replace(/#torn$/, '')));
    const summary =
      `${runs} runs (${inPlace} checked in place), ${crashes} crashes (${recoveryCrashes} in recovery) at ${distinct.size} distinct labels, ` +
      `${callRange} labelled calls per full run, final TXID ${model.txid}, ${((Date.now() - started) / 1000).toFixed(1)} s`;
    console.log(summary);
    console.log(histogram.map(([l, n]) => `  ${String(n).padStart(3)} ${l}`).join('\n'));
    t.diagnostic(summary);
    assert.ok(crashes >= MIN_CRASHES, `only ${crashes} runs crashed`);
    assert.ok(distinct.size >= MIN_LABELS, `crashes landed at only ${distinct.size} distinct labels`);
  } finally {
    if (process.env.GEODR_CRASH_KEEP === '1') console.log(`work dir kept: ${dir}`);
    else cleanup();
  }
});
