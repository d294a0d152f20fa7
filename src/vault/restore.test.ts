// Continuous backup and restore, end to end on a real vault: random workloads shipped
// while they run, then restores to random TXIDs and times. Every restore must equal the
// primary as it was at that TXID (logical dump and checksum), or fail with a typed error.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { PrimaryDatabase } from '../engine/index.js';
import { dumpHash, prng, tempDir } from '../engine/testing/helpers.js';
import { GeodrError, isGeodrError } from '../errors.js';
import { CodecVault } from './codec.js';
import { FaultVault } from './fault.js';
import { FsVault } from './fs.js';
import { readHistory, restoreFromVault, restorePoints } from './restore.js';
import { planRetention } from './retention.js';
import { Shipper } from './shipper.js';
import { descriptor } from './testing/descriptor.js';
import type { Vault } from './vault.js';

interface Seen {
  txid: number;
  time: number;
  hash: string;
}

/** Runs a random workload, shipping as it goes; returns the state after every TXID. */
async function workload(db: PrimaryDatabase, shipper: Shipper, rand: () => number, n: number, clock: { now: number }): Promise<Seen[]> {
  const seen: Seen[] = [{ txid: db.txid, time: clock.now, hash: db.read((c) => dumpHash(c)) }];
  clock.now += 1;
  db.write((c) => c.exec('create table if not exists t(id integer primary key, v text, b blob)'));
  for (let i = 0; i < n; i++) {
    clock.now += 1 + Math.floor(rand() * 50);
    const r = rand();
    db.write((c) => {
      if (r < 0.6) c.prepare('insert into t(v, b) values (?, randomblob(?))').run(`v${i}`, Math.floor(rand() * 3000));
      else if (r < 0.8) c.prepare('update t set v = ? where id % 3 = ?').run(`u${i}`, i % 3);
      else c.prepare('delete from t where id % 7 = ?').run(i % 7);
    });
    await db.waitDurable();
    seen.push({ txid: db.txid, time: clock.now, hash: db.read((c) => dumpHash(c)) });
    if (rand() < 0.2) await shipper.ship(db, descriptor(db.dbId));
  }
  await shipper.ship(db, descriptor(db.dbId));
  return seen;
}

function restoredHash(file: string): string {
  const c = new Database(file, { readonly: true });
  try {
    return dumpHash(c);
  } finally {
    c.close();
  }
}

test('property: restores to random TXIDs and times equal the primary at that TXID', { timeout: 240_000 }, async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  let restores = 0;
  for (let run = 0; run < 5; run++) {
    const seed = Number(process.env.GEODR_SEED ?? 1000) + run;
    const rand = prng(seed);
    const clock = { now: 1_700_000_000_000 };
    const runDir = path.join(dir, `run${run}`);
    fs.mkdirSync(runDir);
    // Half the runs go through the compressing, encrypting codec.
    const raw = new FsVault(path.join(runDir, 'vault'));
    const vault: Vault = run % 2 === 0 ? raw : new CodecVault(raw, { compression: 'gzip', keyring: { active: 'k1', keys: new Map([['k1', Buffer.alloc(32, 7)]]) } });
    const shipper = new Shipper({ vault, awaitSnapshots: true, snapshotEveryRecords: 15 + Math.floor(rand() * 40), snapshotIntervalMs: 0, clock: () => clock.now, maxBatchBytes: 20_000 });
    const db = PrimaryDatabase.open({ file: path.join(runDir, 'db.sqlite'), durability: 'group', clock: () => clock.now });
    const seen = await workload(db, shipper, rand, 120, clock);
    const h = await readHistory(vault, db.dbId);
    const points = restorePoints(h);
    assert.equal(points.latest?.txid, db.txid, `seed ${seed}: everything durable was shipped`);
    assert.ok(h.snapshots.length >= 2, 'snapshots were taken along the way');
    db.close();
    const targets = [0, seen.length - 1, ...Array.from({ length: 198 }, () => Math.floor(rand() * seen.length))];
    for (const [i, idx] of targets.entries()) {
      const s = seen[idx]!;
      const out = path.join(runDir, `r${i}.sqlite`);
      const byTime = i % 3 === 2;
      const r = await restoreFromVault({ vault, dbId: h.dbId, target: byTime ? { time: s.time } : { txid: s.txid }, out, scratchDir: runDir });
      // Several TXIDs can share a time (clock steps of 1 ms or more, never 0), so by time the
      // restore lands on the newest TXID at or before it: exactly s.txid here.
      assert.equal(r.txid, s.txid, `seed ${seed}: target ${byTime ? `time ${s.time}` : `TXID ${s.txid}`}`);
      assert.equal(restoredHash(out), s.hash, `seed ${seed}: content at TXID ${s.txid}`);
      fs.rmSync(out);
      restores++;
    }
    await assert.rejects(restoreFromVault({ vault, dbId: h.dbId, target: { txid: db.txid + 1 }, out: path.join(runDir, 'x.sqlite'), scratchDir: runDir }), (e) => isGeodrError(e, 'TARGET_OUT_OF_RANGE'));
  }
  assert.ok(restores >= 1000, `${restores} restores`);
});

test('a hole in the vault chain is reported, never crossed; a corrupt object is named', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const clock = { now: 1_700_000_000_000 };
  const vault = new FsVault(path.join(dir, 'vault'));
  const shipper = new Shipper({ vault, snapshotEveryRecords: 1000, clock: () => clock.now });
  const db = PrimaryDatabase.open({ file: path.join(dir, 'db.sqlite'), durability: 'commit', clock: () => clock.now });
  db.write((c) => c.exec('create table t(x)'));
  for (let i = 0; i < 30; i++) {
    db.write((c) => c.prepare('insert into t values (?)').run(i));
    if (i % 10 === 9) await shipper.ship(db, descriptor(db.dbId));
  }
  const h = await readHistory(vault, db.dbId);
  assert.equal(h.batches.length, 3);
  const middle = h.batches[1]!;
  // Corrupt one byte of the middle batch: the restore names it.
  const file = path.join(dir, 'vault', ...middle.key.split('/'));
  const bytes = fs.readFileSync(file);
  bytes[200]! ^= 0xff;
  fs.chmodSync(file, 0o644);
  fs.writeFileSync(file, bytes);
  await assert.rejects(
    restoreFromVault({ vault, dbId: db.dbId, target: 'latest', out: path.join(dir, 'a.sqlite'), scratchDir: dir }),
    (e) => e instanceof GeodrError && e.context.object === middle.key,
  );
  // Remove it: the chain has a hole, and restores past it refuse with LOG_GAP.
  await vault.delete(middle.key);
  for (const target of ['latest', { txid: db.txid }] as const) {
    await assert.rejects(
      restoreFromVault({ vault, dbId: db.dbId, target, out: path.join(dir, 'b.sqlite'), scratchDir: dir }),
      (e) => isGeodrError(e, 'LOG_GAP') && e.message.includes(`${middle.first}..${middle.last}`),
    );
  }
  const points = restorePoints(await readHistory(vault, db.dbId));
  assert.equal(points.latest?.txid, h.batches[0]!.last, 'the window ends where the hole begins');
  assert.deepEqual(points.gap, { from: middle.first, to: middle.last });
  const ok = await restoreFromVault({ vault, dbId: db.dbId, target: { txid: h.batches[0]!.last }, out: path.join(dir, 'c.sqlite'), scratchDir: dir });
  assert.equal(ok.txid, h.batches[0]!.last);
  assert.ok(fs.existsSync(path.join(dir, 'c.sqlite')));
  assert.ok(!fs.existsSync(path.join(dir, 'a.sqlite')) && !fs.existsSync(path.join(dir, 'b.sqlite')), 'a failed restore leaves no file');
  db.close();
});

test('shipping survives a failing vault: nothing is lost, it catches up, and a restart resumes from the vault', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const clock = { now: 1_700_000_000_000 };
  const inner = new FsVault(path.join(dir, 'vault'));
  const vault = new FaultVault(inner, { failRate: 0.4, seed: 9 });
  let shipper = new Shipper({ vault, awaitSnapshots: true, intervalMs: 1, snapshotEveryRecords: 25, clock: () => clock.now });
  const file = path.join(dir, 'db.sqlite');
  let db = PrimaryDatabase.open({ file, durability: 'commit', clock: () => clock.now });
  db.write((c) => c.exec('create table t(x)'));
  for (let i = 0; i < 60; i++) {
    clock.now += 100_000; // past any backoff
    db.write((c) => c.prepare('insert into t values (?)').run(i));
    await shipper.ship(db, descriptor(db.dbId));
  }
  assert.ok(Object.values(vault.fired).reduce((a, b) => a + b, 0) > 0, 'faults really fired');
  vault.setUnavailable(true);
  for (let i = 0; i < 5; i++) db.write((c) => c.prepare('insert into t values (?)').run(100 + i));
  clock.now += 100_000;
  await shipper.ship(db, descriptor(db.dbId));
  assert.ok(shipper.hasUnshipped(db), 'while the vault is down the records wait');
  const expected = db.read((c) => dumpHash(c));
  const txid = db.txid;
  db.close();
  // "Restart": a new shipper learns from the vault where it stands and ships the rest.
  vault.setUnavailable(false);
  const healthy = new FsVault(path.join(dir, 'vault'));
  shipper = new Shipper({ vault: healthy, awaitSnapshots: true, snapshotEveryRecords: 25, clock: () => clock.now });
  db = PrimaryDatabase.open({ file, durability: 'commit', clock: () => clock.now });
  await shipper.ship(db, descriptor(db.dbId));
  assert.equal(shipper.hasUnshipped(db), false);
  const out = path.join(dir, 'r.sqlite');
  const r = await restoreFromVault({ vault: healthy, dbId: db.dbId, target: 'latest', out, scratchDir: dir });
  assert.equal(r.txid, txid);
  assert.equal(restoredHash(out), expected);
  db.close();
});

test('retention keeps every point of the window restorable and deletes only what is older', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const rand = prng(77);
  const clock = { now: 1_700_000_000_000 };
  const vault = new FsVault(path.join(dir, 'vault'));
  const shipper = new Shipper({ vault, awaitSnapshots: true, snapshotEveryRecords: 10, snapshotIntervalMs: 0, clock: () => clock.now, maxBatchBytes: 8000 });
  const db = PrimaryDatabase.open({ file: path.join(dir, 'db.sqlite'), durability: 'group', clock: () => clock.now });
  const seen = await workload(db, shipper, rand, 150, clock);
  db.close();
  for (const fraction of [0.2, 0.5, 0.8]) {
    const windowStart = seen[0]!.time + Math.floor((clock.now - seen[0]!.time) * fraction);
    const before = await readHistory(vault, db.dbId);
    const plan = planRetention(before, windowStart);
    // A retention pass killed part-way has deleted some of the plan, in any order: the window
    // must already hold then, and the next pass finishes the job.
    const shuffled = [...plan].sort(() => rand() - 0.5);
    const cut = Math.floor(rand() * shuffled.length);
    for (const key of shuffled.slice(0, cut)) await vault.delete(key);
    const partial = restorePoints(await readHistory(vault, db.dbId));
    assert.ok(partial.earliest!.time <= windowStart && partial.gap === undefined, 'an interrupted pass leaves the window restorable');
    for (const key of planRetention(await readHistory(vault, db.dbId), windowStart)) await vault.delete(key);
    const after = await readHistory(vault, db.dbId);
    assert.ok(after.batches.length < before.batches.length || fraction === 0.2, 'something old was deleted');
    const points = restorePoints(after);
    assert.ok(points.earliest!.time <= windowStart, 'the window is still covered from its start');
    assert.equal(points.gap, undefined);
    // Every TXID committed inside the window restores to exactly its content.
    const inWindow = seen.filter((s) => s.time >= windowStart);
    for (const s of [inWindow[0]!, ...inWindow.filter(() => rand() < 0.15), inWindow[inWindow.length - 1]!]) {
      const out = path.join(dir, `ret-${s.txid}-${fraction}.sqlite`);
      const r = await restoreFromVault({ vault, dbId: db.dbId, target: { txid: s.txid }, out, scratchDir: dir });
      assert.equal(r.txid, s.txid);
      assert.equal(restoredHash(out), s.hash);
      fs.rmSync(out);
    }
  }
});

test('a database whose local log starts after the vault ends is bridged by a snapshot, not stuck on LOG_GAP', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const clock = { now: 1_700_000_000_000 };
  const vault = new FsVault(path.join(dir, 'vault'));
  const db = PrimaryDatabase.open({ file: path.join(dir, 'db.sqlite'), durability: 'commit', clock: () => clock.now });
  db.write((c) => c.exec('create table t(x)'));
  for (let i = 0; i < 20; i++) db.write((c) => c.prepare('insert into t values (?)').run(i));
  db.checkpoint();
  db.txLog.truncateBefore(15); // records 1..14 are gone from the local log
  const shipper = new Shipper({ vault, awaitSnapshots: true, clock: () => clock.now });
  await shipper.ship(db, descriptor(db.dbId));
  for (let i = 0; i < 5; i++) db.write((c) => c.prepare('insert into t values (?)').run(100 + i));
  clock.now += 10;
  await shipper.ship(db, descriptor(db.dbId));
  assert.equal(shipper.state(db.dbId)?.failures, 0);
  assert.equal(shipper.hasUnshipped(db), false);
  const out = path.join(dir, 'r.sqlite');
  const r = await restoreFromVault({ vault, dbId: db.dbId, target: 'latest', out, scratchDir: dir });
  assert.equal(r.txid, db.txid);
  assert.equal(restoredHash(out), db.read((c) => dumpHash(c)));
  db.close();
});
