/**
 * Crash test: a child process (testing/crash-child.ts) writes, captures,
 * checkpoints, applies to a replica, compacts and snapshots, and is SIGKILLed at a
 * random labelled engine step (sometimes mid-write, leaving a torn write). After
 * every run this process recovers the primary and the replica and checks that no
 * acknowledged transaction is missing, nothing partial or phantom is visible,
 * TXIDs never go backwards, the replica catches up to the same checksum, a restore
 * at a random TXID works, and integrity_check is ok everywhere.
 *
 * Replay a failure with GEODR_CRASH_SEED=<seed>; GEODR_CRASH_KEEP=1 keeps the work dir.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
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
const PRIMARY_OPTIONS = { durability: 'commit', checkpointFrames: 20, segmentBytes: 64 << 10 } as const;
const MIN_RUNS = 55;
const MIN_CRASHES = 50;
const MAX_RUNS = 90;
const MIN_LABELS = 8;
const ITERATIONS = 250;

interface ChildRun {
  crashed: string | undefined;
  calls: number | undefined;
  /** Ids the child attempted to insert (present or not, both are fine). */
  tried: Set<number>;
  /** Acknowledged inserts: id → TXID. */
  acked: Map<number, number>;
  /** Ids of attempted deletes: each may or may not be gone. */
  deleting: Set<number>;
  /** Ids of acknowledged deletes: must be gone. */
  deleted: Set<number>;
  maxAckTxid: number;
}

function runChild(dir: string, seed: number, crashAt: number): ChildRun {
  const r = spawnSync(process.execPath, [CHILD, dir, String(seed), String(crashAt), String(ITERATIONS)], { encoding: 'utf8', timeout: 120_000, maxBuffer: 16 << 20 });
  const run: ChildRun = { crashed: undefined, calls: undefined, tried: new Set(), acked: new Map(), deleting: new Set(), deleted: new Set(), maxAckTxid: 0 };
  for (const line of r.stderr.split('\n')) {
    const m = /^(CRASH|CALLS) (\S+)$/.exec(line);
    if (m?.[1] === 'CRASH') run.crashed = m[2];
    else if (m?.[1] === 'CALLS') run.calls = Number(m[2]);
  }
  if (run.crashed !== undefined) {
    assert.equal(r.signal, 'SIGKILL', `child announced a crash at ${run.crashed} but ended with ${r.signal ?? r.status}`);
  } else if (r.status !== 0 || run.calls === undefined) {
    assert.fail(`child failed (status ${r.status}, signal ${r.signal}, error ${String(r.error)}):\n${r.stderr}`);
  }
  let pendingDelete: number[] = [];
  for (const line of r.stdout.split('\n')) {
    const [kind, a, b] = line.split(' ');
    if (kind === 'TRY') run.tried.add(Number(a));
    else if (kind === 'ACK') {
      run.acked.set(Number(a), Number(b));
      run.maxAckTxid = Math.max(run.maxAckTxid, Number(b));
    } else if (kind === 'TRYDEL') {
      pendingDelete = a!.split(',').map(Number);
      for (const id of pendingDelete) run.deleting.add(id);
    } else if (kind === 'DELACK') {
      for (const id of pendingDelete) run.deleted.add(id);
      run.maxAckTxid = Math.max(run.maxAckTxid, Number(a));
    } else if (kind === 'TX') run.maxAckTxid = Math.max(run.maxAckTxid, Number(a));
  }
  return run;
}

function ids(conn: Connection, table: 'a' | 'b'): number[] {
  return (conn.prepare(`select id from ${table} order by id`).raw().all() as number[][]).map((r) => r[0]!);
}

/** Rows of b whose blob is not the length recorded with it (a torn row). */
function badRows(conn: Connection): number {
  return (conn.prepare('select count(*) as n from b where length(payload) != len').get() as { n: number }).n;
}

test('crash: SIGKILL at random labelled steps loses no acknowledged transaction', { timeout: 300_000 }, (t) => {
  const seed = Number(process.env.GEODR_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
  console.log(`crash test seed ${seed} (replay with GEODR_CRASH_SEED=${seed})`);
  const rand = prng(seed);
  const { dir, cleanup } = tempDir('geodr-crash-');
  const pFile = path.join(dir, 'p.db');
  const rFile = path.join(dir, 'r.db');
  const stateDir = `${pFile}.geodr`;
  const started = Date.now();
  try {
    // First-run setup without faults: schema, and a replica seeded from the base snapshot.
    const setup = PrimaryDatabase.open({ file: pFile, ...PRIMARY_OPTIONS });
    setup.write((c) => c.exec('create table a(id integer primary key); create table b(id integer primary key, len integer not null, payload blob not null)'));
    setup.close();
    ReplicaDatabase.create({ file: rFile }, path.join(stateDir, 'snapshots', '0000000000000000.full')).close();

    let seen = new Set<number>();
    /** Ids once present and later deleted: they must never come back. */
    const gone = new Set<number>();
    let prevTxid = 0;
    let prevReplicaTxid = 0;
    let callRange = 0;
    let crashes = 0;
    const labels = new Map<string, number>();
    let runs = 0;
    while ((runs < MIN_RUNS || crashes < MIN_CRASHES) && runs < MAX_RUNS) {
      const childSeed = Math.floor(rand() * 2 ** 31);
      // The first run never crashes: it measures how many labelled calls a run makes.
      const crashAt = callRange === 0 ? Number.MAX_SAFE_INTEGER : 1 + Math.floor(rand() * callRange * 1.05);
      runs++;
      const ctx = `run ${runs} (seed ${seed}, child seed ${childSeed}, crashAt ${crashAt})`;
      const run = runChild(dir, childSeed, crashAt);
      if (run.calls !== undefined) callRange = Math.max(callRange, run.calls);
      if (run.crashed !== undefined) {
        crashes++;
        labels.set(run.crashed, (labels.get(run.crashed) ?? 0) + 1);
      }
      try {
        const primary = PrimaryDatabase.open({ file: pFile, ...PRIMARY_OPTIONS });
        let replica: ReplicaDatabase | undefined;
        try {
          const a = primary.read((c) => ids(c, 'a'));
          const b = primary.read((c) => ids(c, 'b'));
          assert.deepEqual(a, b, 'tables a and b hold different ids: a transaction is partly visible');
          const present = new Set(a);
          for (const [id, txid] of run.acked) if (!run.deleting.has(id)) assert.ok(present.has(id), `acknowledged insert of id ${id} (TXID ${txid}) is missing`);
          for (const id of seen) if (!run.deleting.has(id)) assert.ok(present.has(id), `id ${id}, present after the previous run, is missing`);
          for (const id of run.deleted) assert.ok(!present.has(id), `acknowledged delete of id ${id} is undone`);
          for (const id of gone) assert.ok(!present.has(id), `deleted id ${id} came back`);
          for (const id of a) assert.ok(seen.has(id) || run.tried.has(id), `id ${id} was never inserted`);
          assert.equal(primary.read(badRows), 0, 'a row of b has a payload of the wrong length');
          assert.ok(primary.txid >= run.maxAckTxid, `primary is at TXID ${primary.txid}, but TXID ${run.maxAckTxid} was acknowledged`);
          assert.ok(primary.txid >= prevTxid, `TXID went back from ${prevTxid} to ${primary.txid}`);
          assert.equal(primary.read(integrity), 'ok');

          // The replica repairs an interrupted apply at open and verifies its checksum.
          replica = ReplicaDatabase.open({ file: rFile });
          assert.ok(replica.txid >= prevReplicaTxid, `replica TXID went back from ${prevReplicaTxid} to ${replica.txid}`);
          assert.ok(replica.txid <= primary.txid, `replica at TXID ${replica.txid} is ahead of its primary at ${primary.txid}`);
          replica.apply([...primary.records(replica.txid + 1)]);
          assert.equal(replica.txid, primary.txid);
          assert.equal(checksumHex(replica.checksum), checksumHex(primary.checksum), 'replica checksum differs from the primary');
          assert.equal(checksumHex(replica.verify()), checksumHex(primary.checksum));
          assert.deepEqual(replica.read((c) => ids(c, 'a')), a, 'replica rows differ from the primary');
          assert.deepEqual(replica.read((c) => ids(c, 'b')), a, 'replica rows differ from the primary');
          assert.equal(replica.read(integrity), 'ok');

          for (const id of seen) if (!present.has(id)) gone.add(id);
          seen = present;
          prevTxid = primary.txid;
          prevReplicaTxid = replica.txid;
        } finally {
          replica?.close();
          primary.close();
        }

        // A restore at a random TXID of the history (materialize checks the chain and integrity).
        const target = Math.floor(rand() * (prevTxid + 1));
        const out = path.join(dir, 'restore.db');
        const restored = materialize({ source: new LocalChain(new NodeFs(), stateDir), target: { txid: target }, out });
        assert.equal(restored.txid, target);
        const conn = openConnection(out, { readonly: true, fileMustExist: true });
        try {
          if (target > 0) assert.deepEqual(ids(conn, 'a'), ids(conn, 'b'), `restore at TXID ${target} shows a transaction partly`);
          if (target > 0) assert.equal(badRows(conn), 0, `restore at TXID ${target} has a torn row`);
        } finally {
          conn.close();
        }
        fs.rmSync(out);
      } catch (e) {
        if (e instanceof Error) e.message = `${ctx}, crashed at ${run.crashed ?? 'nothing'}: ${e.message}`;
        throw e;
      }
    }

    const histogram = [...labels.entries()].sort((x, y) => y[1] - x[1]);
    const distinct = new Set(histogram.map(([l]) => l.replace(/#torn$/, '')));
    const summary = `${runs} runs, ${crashes} crashes at ${distinct.size} distinct labels, ${callRange} labelled calls per full run, final TXID ${prevTxid}, ${((Date.now() - started) / 1000).toFixed(1)} s`;
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
