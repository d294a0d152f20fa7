/**
 * Start-up reconciliation and role changes: commits the log missed are captured,
 * a log ahead of a database that lost its WAL tail is redone, a database changed
 * behind geodr's back is refused, a promoted replica fences the old lineage, and
 * snapshots, incremental snapshots and time targets restore what they promise.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { isGeodrError } from '../errors.js';
import { LocalChain } from './chain.js';
import { checksumHex } from './checksum.js';
import { compact } from './compact.js';
import { FaultFs, NodeFs } from './fs.js';
import { materialize, planRestore } from './materialize.js';
import { PrimaryDatabase } from './primary.js';
import { ReplicaDatabase } from './replica.js';
import { takeIncrementalSnapshot, takeSnapshot } from './snapshot.js';
import { dumpHash, tempDir } from './testing/helpers.js';
import { scanWal } from './wal.js';

const efs = new NodeFs();
const engineIndex = path.join(path.dirname(fileURLToPath(import.meta.url)), 'index.js');

/** Runs ES module code in a child process that ends by killing itself with SIGKILL. */
function childThenKill(code: string): void {
  const src = `import * as E from ${JSON.stringify(engineIndex)};\n${code}\nprocess.kill(process.pid, 'SIGKILL');`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], { encoding: 'utf8' });
  assert.equal(r.signal, 'SIGKILL', `child did not crash as planned: ${r.stderr}`);
}

function count(p: PrimaryDatabase): number {
  return p.read((c) => (c.prepare('select count(*) as n from t').get() as { n: number }).n);
}

test('a commit that reached the WAL but not the log is captured at the next open', () => {
  const { dir, cleanup } = tempDir();
  const file = path.join(dir, 'p.db');
  try {
    childThenKill(`
      let crash = false;
      const fs = new E.FaultFs(new E.NodeFs(), (op) => (crash && op === 'log.append' ? 'crash' : undefined));
      const p = E.PrimaryDatabase.open({ file: ${JSON.stringify(file)}, efs: fs });
      p.write((c) => c.exec('create table t(v)'));
      for (let i = 0; i < 5; i++) p.write((c) => c.prepare('insert into t values (?)').run(i));
      crash = true;
      p.write((c) => c.prepare('insert into t values (?)').run(99));
    `);
    const p = PrimaryDatabase.open({ file, strict: true });
    assert.equal(p.txid, 7, 'the sixth insert was captured at open');
    assert.equal(count(p), 6);
    const r = [...p.records(7, 7)][0]!;
    assert.equal(checksumHex(r.post), checksumHex(p.checksum));
    p.close();
  } finally {
    cleanup();
  }
});

// Regression: with an empty newest segment the log took the *first* record of the segment
// before it as its end, and the next open called the database diverged.
test('a crash right after a segment rotation leaves the log ending at its true last record', () => {
  const { dir, cleanup } = tempDir();
  const file = path.join(dir, 'p.db');
  try {
    childThenKill(`
      let creates = 0;
      // Four labelled calls create a segment (open, header write, sync, directory sync):
      // crash at the sync of the second one, after its header was written.
      const fs = new E.FaultFs(new E.NodeFs(), (op) => (op === 'log.create' && ++creates === 7 ? 'crash' : undefined));
      const p = E.PrimaryDatabase.open({ file: ${JSON.stringify(file)}, efs: fs, segmentBytes: 65536, checkpointFrames: 1 });
      p.write((c) => c.exec('create table t(v)'));
      for (let i = 0; i < 50; i++) p.write((c) => c.prepare('insert into t values (?)').run(i));
    `);
    const segs = fs.readdirSync(path.join(`${file}.geodr`, 'log')).sort();
    assert.equal(segs.length, 2);
    assert.equal(fs.statSync(path.join(`${file}.geodr`, 'log', segs[1]!)).size, 40, 'the new segment holds only its header');
    const p = PrimaryDatabase.open({ file, strict: true });
    const rows = count(p);
    assert.equal(p.txid, rows + 1, 'every committed insert is captured, none twice');
    p.write((c) => c.prepare('insert into t values (?)').run(-1));
    p.close();
  } finally {
    cleanup();
  }
});

test('a WAL that lost its tail (power failure) is redone from the log', () => {
  const { dir, cleanup } = tempDir();
  const file = path.join(dir, 'p.db');
  try {
    childThenKill(`
      const p = E.PrimaryDatabase.open({ file: ${JSON.stringify(file)}, checkpointFrames: 0 });
      p.write((c) => c.exec('create table t(v)'));
      for (let i = 0; i < 10; i++) p.write((c) => c.prepare('insert into t values (?)').run(i));
    `);
    // With synchronous=NORMAL the last WAL writes may never reach the disk; the log's
    // fsync did. Cut the WAL back three commits to model that.
    const fd = efs.open(`${file}-wal`, 'r+', 'test');
    const scan = scanWal(efs, fd, undefined);
    assert.equal(scan.commits.length, 11);
    const keep = scan.commits[7]!.end.frame;
    efs.truncate(fd, 32 + keep * (24 + 4096), 'test');
    efs.close(fd, 'test');
    const p = PrimaryDatabase.open({ file, strict: true });
    assert.equal(p.txid, 11);
    assert.equal(count(p), 10);
    p.verify();
    p.write((c) => c.prepare('insert into t values (?)').run(11));
    assert.equal(p.txid, 12);
    p.close();
  } finally {
    cleanup();
  }
});

test('a database written behind geodr\'s back is refused as diverged', () => {
  const { dir, cleanup } = tempDir();
  const file = path.join(dir, 'p.db');
  try {
    const p = PrimaryDatabase.open({ file });
    p.write((c) => c.exec('create table t(v)'));
    p.close();
    const raw = new Database(file);
    raw.exec('insert into t values (1)');
    raw.close();
    assert.throws(() => PrimaryDatabase.open({ file }), (e) => isGeodrError(e, 'DATABASE_DIVERGED') && e.context.txid === 1);
  } finally {
    cleanup();
  }
});

test('a state directory with history but no meta.json is refused, not wiped', () => {
  const { dir, cleanup } = tempDir();
  const file = path.join(dir, 'p.db');
  try {
    const p = PrimaryDatabase.open({ file });
    p.write((c) => c.exec('create table t(v)'));
    p.close();
    fs.rmSync(path.join(`${file}.geodr`, 'meta.json'));
    assert.throws(() => PrimaryDatabase.open({ file }), (e) => isGeodrError(e, 'DATABASE_DIVERGED') && e.message.includes('meta.json'));
    assert.ok(fs.readdirSync(path.join(`${file}.geodr`, 'log')).length > 0, 'the log is still there');
  } finally {
    cleanup();
  }
});

test('after a failed capture the database stops, and reopening recovers the commit', () => {
  const { dir, cleanup } = tempDir();
  const file = path.join(dir, 'p.db');
  try {
    let failing = false;
    const faulty = new FaultFs(new NodeFs(), (op) => (failing && op === 'log.append' ? 'fail' : undefined));
    const p = PrimaryDatabase.open({ file, efs: faulty });
    p.write((c) => c.exec('create table t(v)'));
    failing = true;
    assert.throws(() => p.write((c) => c.prepare('insert into t values (1)').run()), (e) => isGeodrError(e, 'IO_FAILED') && e.context.operation === 'log.append');
    assert.equal(faulty.fired, 1);
    assert.throws(() => p.write((c) => c.prepare('insert into t values (2)').run()), (e) => isGeodrError(e, 'DATABASE_CLOSED'));
    p.close();
    // The guard connection kept SQLite from checkpointing the unlogged commit on close.
    const q = PrimaryDatabase.open({ file, strict: true });
    assert.equal(q.txid, 2);
    assert.equal(count(q), 1);
    q.close();
  } finally {
    cleanup();
  }
});

test('a promoted replica raises the epoch and fences records of the old primary', () => {
  const { dir, cleanup } = tempDir();
  const old = PrimaryDatabase.open({ file: path.join(dir, 'p.db') });
  try {
    old.write((c) => c.exec('create table t(v)'));
    for (let i = 0; i < 4; i++) old.write((c) => c.prepare('insert into t values (?)').run(i));
    const snap = path.join(old.stateDir, 'snapshots', '0000000000000000.full');
    const r1 = ReplicaDatabase.create({ file: path.join(dir, 'r1.db') }, snap, old.dbId);
    const r2 = ReplicaDatabase.create({ file: path.join(dir, 'r2.db') }, snap, old.dbId);
    r1.apply([...old.records(1)]);
    r2.apply([...old.records(1)]);
    const promoted = r1.promote({ strict: true });
    assert.equal(promoted.epoch, 2);
    assert.equal(promoted.txid, 5);
    promoted.write((c) => c.prepare('insert into t values (?)').run('new'));
    const fresh = [...promoted.records(6)];
    assert.equal(fresh[0]!.epoch, 2);
    r2.apply(fresh);
    assert.equal(checksumHex(r2.checksum), checksumHex(promoted.checksum));
    // The deposed primary goes on writing on its own: its records are stale.
    old.write((c) => c.prepare('insert into t values (?)').run('lost 1'));
    old.write((c) => c.prepare('insert into t values (?)').run('lost 2'));
    const stale = [...old.records(7, 7)];
    assert.throws(() => r2.apply(stale), (e) => isGeodrError(e, 'STALE_EPOCH') && e.context.txid === 7);
    assert.equal(r2.txid, 6);
    // The promoted lineage restores from its own chain, starting at its base snapshot.
    const out = path.join(dir, 'm.db');
    const m = materialize({ source: new LocalChain(efs, promoted.stateDir, promoted.txLog), target: 'latest', out });
    assert.equal(m.txid, 6);
    assert.equal(checksumHex(m.checksum), checksumHex(promoted.checksum));
    r2.close();
    promoted.close();
  } finally {
    old.close();
    cleanup();
  }
});

/** NodeFs that holds each background fsync until the test releases it. */
class GatedSyncFs extends NodeFs {
  completed = 0;
  private gates: Array<() => void> = [];
  started = 0;
  override async syncFile(file: string, op: string): Promise<void> {
    this.started++;
    await new Promise<void>((resolve) => this.gates.push(resolve));
    await super.syncFile(file, op);
    this.completed++;
  }
  release(): void {
    for (const g of this.gates.splice(0)) g();
  }
}

test('group commit acknowledges a write only after the fsync that covers it completes', async () => {
  const { dir, cleanup } = tempDir();
  const efs = new GatedSyncFs();
  const p = PrimaryDatabase.open({ file: path.join(dir, 'p.db'), efs, durability: 'group', groupCommitMs: 5 });
  const delivered: number[] = [];
  p.onRecord((r) => delivered.push(r.txid));
  try {
    p.write((c) => c.exec('create table t(v)'));
    const { txid } = p.write((c) => c.prepare('insert into t values (1)').run());
    let acknowledged = false;
    const ack = p.waitDurable(txid).then(() => {
      acknowledged = true;
    });
    // The timer starts the fsync; writes go on while it runs.
    while (efs.started === 0) await new Promise((r) => setTimeout(r, 2));
    const later = p.write((c) => c.prepare('insert into t values (2)').run()).txid;
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(acknowledged, false, 'not acknowledged while its fsync is still running');
    assert.equal(delivered.length, 0, 'listeners see nothing that is not durable');
    efs.release();
    await ack;
    assert.equal(efs.completed >= 1, true);
    assert.ok(delivered.includes(txid) && !delivered.includes(later), `only what that fsync covered is delivered (${delivered.join(',')})`);
    // The write made during the fsync needs one of its own.
    const done = p.waitDurable(later);
    while (efs.started < 2) await new Promise((r) => setTimeout(r, 2));
    efs.release();
    await done;
    assert.deepEqual(delivered, [1, txid, later]);
  } finally {
    p.close();
    cleanup();
  }
});

test('a snapshot taken during writes restores the state at its TXID; checkpoints wait for it', async () => {
  const { dir, cleanup } = tempDir();
  const p = PrimaryDatabase.open({ file: path.join(dir, 'p.db'), checkpointFrames: 0 });
  try {
    p.write((c) => c.exec('create table t(id integer primary key, v blob)'));
    for (let i = 0; i < 300; i++) p.write((c) => c.prepare('insert into t(v) values (?)').run(Buffer.alloc(2000, i % 250)));
    const atStart = { txid: p.txid, content: p.read(dumpHash), sum: checksumHex(p.checksum) };
    const snapshot = takeSnapshot(p);
    // Writers and checkpoints go on while the snapshot copies pages.
    let checkpointed = true;
    for (let i = 0; i < 50; i++) {
      p.write((c) => c.prepare('update t set v = ? where id = ?').run(Buffer.alloc(2000, 7), i + 1));
      checkpointed &&= p.checkpoint();
      await new Promise((r) => setImmediate(r));
    }
    const ref = await snapshot;
    assert.equal(checkpointed, false, 'no checkpoint ran while the snapshot was pinned');
    assert.equal(ref.txid, atStart.txid);
    assert.equal(p.checkpoint(), true);
    fs.renameSync(path.join(p.stateDir, 'snapshots', '0000000000000000.full'), path.join(dir, 'base.hidden'));
    const out = path.join(dir, 'm.db');
    const m = materialize({ source: new LocalChain(efs, p.stateDir, p.txLog), target: { txid: atStart.txid }, out });
    assert.equal(m.recordsApplied, 0, 'restored from the new snapshot alone');
    assert.equal(checksumHex(m.checksum), atStart.sum);
    const c = new Database(out, { readonly: true });
    assert.equal(dumpHash(c), atStart.content);
    c.close();
    // An incremental snapshot covers what changed since.
    const inc = await takeIncrementalSnapshot(p, atStart.txid);
    assert.ok(inc !== undefined);
    const out2 = path.join(dir, 'm2.db');
    const m2 = materialize({ source: new LocalChain(efs, p.stateDir, p.txLog), target: 'latest', out: out2 });
    assert.equal(m2.unitsApplied, 1);
    assert.equal(m2.recordsApplied, 0);
    assert.equal(checksumHex(m2.checksum), checksumHex(p.checksum));
  } finally {
    p.close();
    cleanup();
  }
});

test('a time target restores the last transaction committed at or before it', () => {
  const { dir, cleanup } = tempDir();
  let now = 1_700_000_000_000;
  const p = PrimaryDatabase.open({ file: path.join(dir, 'p.db'), clock: () => now });
  try {
    p.write((c) => c.exec('create table t(v)'));
    const sums = new Map<number, string>();
    for (let i = 0; i < 20; i++) {
      now += 1000;
      p.write((c) => c.prepare('insert into t values (?)').run(i));
      sums.set(now, checksumHex(p.checksum));
    }
    const chain = new LocalChain(efs, p.stateDir, p.txLog);
    const t = 1_700_000_000_000 + 7500; // between the 7th and 8th insert
    const m = materialize({ source: chain, target: { time: t }, out: path.join(dir, 'a.db') });
    assert.equal(m.txid, 8);
    assert.equal(m.timestamp, 1_700_000_000_000 + 7000);
    assert.equal(checksumHex(m.checksum), sums.get(1_700_000_000_000 + 7000));
    assert.throws(() => materialize({ source: chain, target: { time: now + 1e9 + Number.NaN }, out: path.join(dir, 'b.db') }), (e) => isGeodrError(e, 'INVALID_ARGUMENT'));
  } finally {
    p.close();
    cleanup();
  }
});

test('after compaction a restore needs a bounded number of steps whatever the history length', () => {
  const { dir, cleanup } = tempDir();
  const p = PrimaryDatabase.open({ file: path.join(dir, 'p.db'), durability: 'group' });
  try {
    p.write((c) => c.exec('create table t(id integer primary key, v int)'));
    p.write((c) => {
      for (let i = 0; i < 50; i++) c.prepare('insert into t(v) values (0)').run();
    });
    for (let i = 0; i < 1200; i++) p.write((c) => c.prepare('update t set v = v + 1 where id = ?').run((i % 50) + 1));
    const chain = new LocalChain(efs, p.stateDir, p.txLog);
    const first = compact(efs, chain, { spans: [10, 100], scratchDir: dir });
    assert.ok(first.created.length > 100);
    assert.ok(first.snapshots.length >= 11);
    assert.deepEqual(compact(efs, chain, { spans: [10, 100], scratchDir: dir }).created, [], 'compaction is idempotent');
    for (const target of [1, 57, 99, 100, 101, 555, 999, 1111, p.txid]) {
      const plan = planRestore(chain, target);
      // One snapshot, at most 9 level-1 units, then at most one run of records.
      assert.ok(plan.steps.length <= 10, `TXID ${target}: ${plan.steps.length} steps`);
    }
    const m = materialize({ source: chain, target: 'latest', out: path.join(dir, 'm.db') });
    assert.equal(checksumHex(m.checksum), checksumHex(p.checksum));
  } finally {
    p.close();
    cleanup();
  }
});
