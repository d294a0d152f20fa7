/**
 * Role changes in the engine: a replica promoted at TXID M, and the old primary turned
 * back into a replica — after a planned failover at the same TXID, and after a forced
 * one where both wrote on their own past M (the old primary rewinds only its own pages
 * plus the new primary's, from one incremental unit). A fault injected at every step of
 * the conversion is finished by resumeConversion.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { checksumHex } from './checksum.js';
import { FaultFs, NodeFs } from './fs.js';
import { PrimaryDatabase } from './primary.js';
import { ReplicaDatabase } from './replica.js';
import { takeDiffUnit, takeIncrementalSnapshot } from './snapshot.js';
import { dumpHash, integrity, prng, tempDir } from './testing/helpers.js';

function writeRows(db: PrimaryDatabase, rand: () => number, n: number, tag: string): void {
  for (let i = 0; i < n; i++) {
    db.write((c) => {
      const k = Math.floor(rand() * 400);
      if (rand() < 0.2) c.prepare('delete from t where k = ?').run(k);
      else c.prepare('insert or replace into t(k, v, pad) values (?, ?, ?)').run(k, `${tag}${i}`, Buffer.alloc(Math.floor(rand() * 900), i % 256));
    });
  }
}

function seeded(dir: string, rand: () => number, rows: number): { a: PrimaryDatabase; b: ReplicaDatabase } {
  const a = PrimaryDatabase.open({ file: path.join(dir, 'a.db'), checkpointFrames: 50 });
  a.write((c) => c.exec('create table t(k integer primary key, v text, pad blob)'));
  const b = ReplicaDatabase.create({ file: path.join(dir, 'b.db') }, path.join(a.stateDir, 'snapshots', '0000000000000000.full'), a.dbId);
  writeRows(a, rand, rows, 'base');
  b.apply([...a.records(1)]);
  return { a, b };
}

function pagesWritten(db: PrimaryDatabase, from: number, to: number): number[] {
  const s = new Set<number>();
  for (const r of db.records(from, to)) for (const [p] of r.pages) s.add(p);
  return [...s];
}

test('planned: the old primary becomes a replica at its own TXID and follows the new primary', () => {
  const { dir, cleanup } = tempDir();
  try {
    const rand = prng(7);
    const { a, b } = seeded(dir, rand, 60);
    const n = a.txid;
    const position = { txid: a.txid, epoch: a.epoch, pageCount: a.status().pageCount, checksum: a.checksum, timestamp: a.status().lastWriteTime };
    a.close();
    const np = b.promote();
    assert.equal(np.epoch, 2);
    const old = ReplicaDatabase.convertFromPrimary({ file: path.join(dir, 'a.db') }, { position, epoch: np.epoch });
    assert.equal(old.txid, n);
    assert.equal(old.position.epoch, 2);
    writeRows(np, rand, 40, 'new');
    old.apply([...np.records(n + 1)]);
    assert.equal(checksumHex(old.checksum), checksumHex(np.checksum));
    assert.equal(old.read(dumpHash), np.read(dumpHash));
    assert.equal(old.read(integrity), 'ok');
    assert.equal(fs.existsSync(path.join(dir, 'a.db-wal')), false);
    assert.deepEqual(fs.readdirSync(old.stateDir).sort(), ['meta.json', 'redo.journal', 'replica.state']);
    old.close();
    np.close();
  } finally {
    cleanup();
  }
});

test('forced: both sides wrote past M; one unit rewinds the old primary onto the new history', async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 2 ** 31 }), fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 30 }), async (seed, lost, gained) => {
      const { dir, cleanup } = tempDir();
      try {
        const rand = prng(seed);
        const { a, b } = seeded(dir, rand, 40);
        const m = a.txid;
        writeRows(a, rand, lost, 'lost');
        const n = a.txid;
        const own = pagesWritten(a, m + 1, n);
        const position = { txid: a.txid, epoch: a.epoch, pageCount: a.status().pageCount, checksum: a.checksum, timestamp: a.status().lastWriteTime };
        a.close();
        const np = b.promote();
        writeRows(np, rand, gained, 'new');
        const unit = await takeIncrementalSnapshot(np, m, { dir: a.stateDir, extraPages: own, sinceChecksum: np.base.checksum });
        const old = ReplicaDatabase.convertFromPrimary({ file: path.join(dir, 'a.db') }, { position, epoch: np.epoch, unitFile: unit?.file });
        assert.equal(old.txid, np.txid, `seed ${seed}`);
        assert.equal(checksumHex(old.checksum), checksumHex(np.checksum));
        assert.equal(old.read(dumpHash), np.read(dumpHash));
        assert.equal(old.read(integrity), 'ok');
        const k = np.txid;
        writeRows(np, rand, 5, 'after');
        old.apply([...np.records(k + 1)]);
        assert.equal(old.read(dumpHash), np.read(dumpHash));
        old.close();
        np.close();
      } finally {
        cleanup();
      }
    }),
    { numRuns: 12 },
  );
});

test('a bad unit leaves the primary untouched; a fault at any conversion step is finished at resume', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const rand = prng(11);
    const { a, b } = seeded(dir, rand, 30);
    const m = a.txid;
    writeRows(a, rand, 10, 'lost');
    const own = pagesWritten(a, m + 1, a.txid);
    const position = { txid: a.txid, epoch: a.epoch, pageCount: a.status().pageCount, checksum: a.checksum, timestamp: a.status().lastWriteTime };
    a.close();
    const np = b.promote();
    writeRows(np, rand, 10, 'new');
    const aFile = path.join(dir, 'a.db');
    const stateDir = `${aFile}.geodr`;

    // Corrupt unit: refused before anything is written.
    const bad = await takeIncrementalSnapshot(np, m, { dir: stateDir, extraPages: own });
    const bytes = fs.readFileSync(bad!.file);
    bytes[bytes.length - 10]! ^= 0xff;
    fs.writeFileSync(bad!.file, bytes);
    const before = fs.readFileSync(aFile);
    assert.throws(() => ReplicaDatabase.convertFromPrimary({ file: aFile }, { position, epoch: np.epoch, unitFile: bad!.file }), /RECORD_CORRUPT/);
    assert.deepEqual(fs.readFileSync(aFile), before);
    fs.rmSync(bad!.file);

    // Copies of the old primary for every fault point.
    const template = path.join(dir, 'template');
    fs.cpSync(stateDir, `${template}.geodr`, { recursive: true });
    fs.copyFileSync(aFile, template);
    const labels = ['replica.convert.write', 'replica.convert.sync', 'replica.state.write', 'replica.state.sync', 'meta.write', 'replica.convert.cleanup', 'replica.convert.done'];
    for (const label of labels) {
      const f = path.join(dir, `c-${label}.db`);
      fs.cpSync(`${template}.geodr`, `${f}.geodr`, { recursive: true });
      fs.copyFileSync(template, f);
      const unit = await takeIncrementalSnapshot(np, m, { dir: `${f}.geodr`, extraPages: own });
      let armed = true;
      const efs = new FaultFs(new NodeFs(), (op) => (armed && op.startsWith(label) ? ((armed = false), 'fail') : undefined));
      try {
        ReplicaDatabase.convertFromPrimary({ file: f, efs }, { position, epoch: np.epoch, unitFile: unit!.file }).close();
      } catch {
        // the fault fired part-way
      }
      assert.equal(armed, false, `fault at ${label} fired`);
      const r = ReplicaDatabase.resumeConversion({ file: f }) ?? ReplicaDatabase.open({ file: f });
      assert.equal(checksumHex(r.checksum), checksumHex(np.checksum), `after a fault at ${label}`);
      assert.equal(r.read(dumpHash), np.read(dumpHash));
      r.close();
    }
    np.close();
  } finally {
    cleanup();
  }
});

test('resync: a diff unit brings a copy behind, or on a lineage that diverged, to the primary exactly', async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 2 ** 31 }), fc.integer({ min: 0, max: 25 }), fc.integer({ min: 1, max: 25 }), async (seed, lost, gained) => {
      const { dir, cleanup } = tempDir();
      try {
        const rand = prng(seed);
        const { a, b } = seeded(dir, rand, 30);
        // A copy that fell behind: seeded at the start, never applied anything.
        const behind = ReplicaDatabase.create({ file: path.join(dir, 'behind.db') }, path.join(a.stateDir, 'snapshots', '0000000000000000.full'), a.dbId);
        // A diverged copy: the old primary wrote alone past M and became a replica at its own state.
        writeRows(a, rand, lost, 'lost');
        const position = { txid: a.txid, epoch: a.epoch, pageCount: a.status().pageCount, checksum: a.checksum, timestamp: a.status().lastWriteTime };
        a.close();
        const np = b.promote();
        writeRows(np, rand, gained, 'new');
        const diverged = ReplicaDatabase.convertFromPrimary({ file: path.join(dir, 'a.db') }, { position, epoch: position.epoch });
        for (const copy of [behind, diverged]) {
          const unit = await takeDiffUnit(np, { table: copy.pageHashTable(), checksum: copy.checksum }, path.join(dir, 'units'));
          const pos = copy.resync(unit.file);
          assert.equal(pos.txid, np.txid, `seed ${seed}`);
          assert.equal(checksumHex(copy.checksum), checksumHex(np.checksum));
          assert.equal(copy.read(dumpHash), np.read(dumpHash));
          assert.equal(copy.read(integrity), 'ok');
          assert.ok(unit.pages <= np.status().pageCount);
        }
        // And they follow with ordinary records afterwards.
        const k = np.txid;
        writeRows(np, rand, 3, 'after');
        for (const copy of [behind, diverged]) {
          copy.apply([...np.records(k + 1)]);
          assert.equal(checksumHex(copy.checksum), checksumHex(np.checksum));
          copy.close();
        }
        // A reopen verifies the file against the position by a full rehash.
        const again = ReplicaDatabase.open({ file: path.join(dir, 'behind.db') });
        assert.equal(checksumHex(again.checksum), checksumHex(np.checksum));
        again.close();
        np.close();
      } finally {
        cleanup();
      }
    }),
    { numRuns: 10 },
  );
});
