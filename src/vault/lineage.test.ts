// Epochs in the vault: two real lineages of one database (a primary A that goes on writing
// after it was cut off, and a replica B of it promoted at TXID M) shipped by the real Shipper
// into one vault in random interleavings. The vault's history must be A's up to M and B's
// after it: A's shipper stops once it sees B's marker, nothing A wrote alone is a restore
// point or ever applied, and restores equal B (or the common past) exactly.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { checksumHex, PrimaryDatabase, ReplicaDatabase, takeSnapshot } from '../engine/index.js';
import { dumpHash, integrity, prng, tempDir } from '../engine/testing/helpers.js';
import { GeodrError, isGeodrError } from '../errors.js';
import { CodecVault } from './codec.js';
import { FaultVault } from './fault.js';
import { FsVault } from './fs.js';
import { GeoCopier } from './geo.js';
import { batchKey, epochKey, ltrKey, parseBatchKey, parseSnapshotKey, recordsPrefix, snapshotKey, snapshotsPrefix, type BatchRef, type SnapshotObjectRef } from './layout.js';
import { chooseLineage, encodeMarker, parseMarker, putMarker, readMarkers, type EpochMarker } from './lineage.js';
import { readHistory, restoreFromVault, restorePoints, type VaultHistory } from './restore.js';
import { planRetention } from './retention.js';
import { Shipper, type ShipperOptions } from './shipper.js';
import { MemVault } from './testing/memory.js';
import { descriptor } from './testing/descriptor.js';
import type { Vault } from './vault.js';

const DB = '0123456789abcdef0123456789abcdef';

test('golden keys: old keys (no epoch suffix) parse as epoch 1; epoch 1 keys are written exactly as before', () => {
  const t = 0x18bcfe56800;
  const oldBatch = `databases/${DB}/records/0000000000000001-0000000000000005-0000018bcfe56800.batch`;
  const oldSnap = `databases/${DB}/snapshots/0000000000000000-0000018bcfe56800.full`;
  const oldLtr = `databases/${DB}/ltr/0000000000000010-0000018bcfe56800-W.full`;
  assert.deepEqual(parseBatchKey(oldBatch), { key: oldBatch, first: 1, last: 5, lastTime: t, epoch: 1 });
  assert.deepEqual(parseSnapshotKey(oldSnap), { key: oldSnap, txid: 0, time: t, epoch: 1 });
  assert.deepEqual(parseSnapshotKey(oldLtr), { key: oldLtr, txid: 16, time: t, epoch: 1, ltr: 'W' });
  assert.equal(batchKey(DB, 1, 5, t), oldBatch);
  assert.equal(batchKey(DB, 1, 5, t, 1), oldBatch);
  assert.equal(snapshotKey(DB, 0, t, 1), oldSnap);
  assert.equal(ltrKey(DB, 16, t, 'W', 1), oldLtr);

  const newBatch = `databases/${DB}/records/0000000000000001-0000000000000005-0000018bcfe56800-e00000002.batch`;
  const newSnap = `databases/${DB}/snapshots/0000000000000007-0000018bcfe56800-e0000000a.full`;
  const newLtr = `databases/${DB}/ltr/0000000000000010-0000018bcfe56800-Y-e00000003.full`;
  assert.equal(batchKey(DB, 1, 5, t, 2), newBatch);
  assert.equal(snapshotKey(DB, 7, t, 10), newSnap);
  assert.equal(ltrKey(DB, 16, t, 'Y', 3), newLtr);
  assert.deepEqual(parseBatchKey(newBatch), { key: newBatch, first: 1, last: 5, lastTime: t, epoch: 2 });
  assert.deepEqual(parseSnapshotKey(newSnap), { key: newSnap, txid: 7, time: t, epoch: 10 });
  assert.deepEqual(parseSnapshotKey(newLtr), { key: newLtr, txid: 16, time: t, epoch: 3, ltr: 'Y' });
  assert.equal(epochKey(DB, 2), `databases/${DB}/epochs/00000002.json`);
  // Not keys of these kinds: bad suffixes are ignored by listings, not misread.
  for (const bad of ['-e2.batch', '-e0000000g.batch', '-E00000002.batch', '-e00000002-e00000003.batch']) {
    assert.equal(parseBatchKey(`databases/${DB}/records/0000000000000001-0000000000000005-0000018bcfe56800${bad}`), undefined, bad);
  }
  assert.throws(() => batchKey(DB, 1, 5, t, 2 ** 32), (e) => isGeodrError(e, 'INVALID_ARGUMENT'));
  assert.throws(() => snapshotKey(DB, 1, t, 1.5), (e) => isGeodrError(e, 'INVALID_ARGUMENT'));
});

test('property: keys with and without the epoch suffix sort by TXID and parse back to what was written', () => {
  const ref = fc.record({
    first: fc.integer({ min: 1, max: 2 ** 40 }),
    span: fc.integer({ min: 0, max: 1000 }),
    time: fc.integer({ min: 0, max: 2 ** 45 }),
    epoch: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 2 ** 32 - 1 })),
  });
  fc.assert(
    fc.property(fc.array(ref, { minLength: 1, maxLength: 30 }), (refs) => {
      const keys = refs.map((r) => batchKey(DB, r.first, r.first + r.span, r.time, r.epoch));
      for (const [i, k] of keys.entries()) {
        const p = parseBatchKey(k)!;
        assert.deepEqual([p.first, p.last, p.lastTime, p.epoch], [refs[i]!.first, refs[i]!.first + refs[i]!.span, refs[i]!.time, refs[i]!.epoch]);
        const s = parseSnapshotKey(snapshotKey(DB, refs[i]!.first, refs[i]!.time, refs[i]!.epoch))!;
        assert.deepEqual([s.txid, s.time, s.epoch], [refs[i]!.first, refs[i]!.time, refs[i]!.epoch]);
      }
      const sorted = [...keys].sort().map((k) => parseBatchKey(k)!);
      for (let i = 1; i < sorted.length; i++) {
        const a = sorted[i - 1]!;
        const b = sorted[i]!;
        assert.ok(a.first < b.first || (a.first === b.first && a.last <= b.last), 'a listing is in TXID order');
      }
    }),
    { numRuns: 300 },
  );
});

function marker(epoch: number, startTxid: number, over: Partial<EpochMarker> = {}): EpochMarker {
  return { format: 1, dbId: DB, epoch, startTxid, checksum: '00000000000000ab', startTime: 1000 + startTxid, server: 'b', region: 'westus', time: 5, ...over };
}

test('epoch markers: strict parsing, written once, a repeat is success, another beginning is STALE_EPOCH', async () => {
  const vault = new MemVault();
  const m = marker(2, 10);
  assert.deepEqual(parseMarker(epochKey(DB, 2), encodeMarker(m), DB), m);
  const bad: Array<[string, Buffer]> = [
    ['not json', Buffer.from('{')],
    ['format', encodeMarker({ ...m, format: 2 as 1 })],
    ['other database', encodeMarker({ ...m, dbId: 'f'.repeat(32) })],
    ['epoch differs from key', encodeMarker({ ...m, epoch: 3 })],
    ['bad checksum', encodeMarker({ ...m, checksum: 'xyz' })],
    ['negative start', encodeMarker({ ...m, startTxid: -1 })],
    ['array', Buffer.from('[]')],
    ['null', Buffer.from('null')],
  ];
  for (const [why, body] of bad) assert.throws(() => parseMarker(epochKey(DB, 2), body, DB), (e) => isGeodrError(e, 'VAULT_CORRUPT') && e.context.object === epochKey(DB, 2), why);

  const heard: string[] = [];
  await putMarker(vault, m, (k) => heard.push(k));
  // Retried after a crash: same beginning, later time.
  assert.deepEqual(await putMarker(vault, { ...m, time: 99 }, (k) => heard.push(k)), m);
  assert.deepEqual(heard, [epochKey(DB, 2), epochKey(DB, 2)]);
  for (const other of [{ startTxid: 11 }, { server: 'c' }, { checksum: '00000000000000ac' }]) {
    await assert.rejects(putMarker(vault, { ...m, ...other }), (e) => isGeodrError(e, 'STALE_EPOCH') && e.message.includes('already begun by server b'));
  }
  assert.deepEqual(await readMarkers(vault, DB), [m]);
  // A corrupt marker stops every reader rather than being ignored.
  await vault.put(epochKey(DB, 3), Buffer.from('{"format":1}'));
  await assert.rejects(readMarkers(vault, DB), (e) => isGeodrError(e, 'VAULT_CORRUPT'));
});

/** Random objects of several epochs; the lineage rule's invariants must hold whatever they are. */
test('property: lineage choice keeps exactly the objects the rule allows, cuts straddling batches, and is idempotent', () => {
  const arb = fc.record({
    markers: fc.uniqueArray(fc.record({ epoch: fc.integer({ min: 2, max: 6 }), start: fc.integer({ min: 0, max: 60 }) }), { selector: (m) => m.epoch, maxLength: 4 }),
    batches: fc.array(fc.record({ first: fc.integer({ min: 1, max: 80 }), span: fc.integer({ min: 0, max: 15 }), epoch: fc.integer({ min: 1, max: 7 }) }), { maxLength: 25 }),
    snaps: fc.array(fc.record({ txid: fc.integer({ min: 0, max: 80 }), epoch: fc.integer({ min: 1, max: 7 }) }), { maxLength: 8 }),
  });
  fc.assert(
    fc.property(arb, ({ markers, batches, snaps }) => {
      const h: VaultHistory = {
        dbId: DB,
        epochs: markers.map((m) => marker(m.epoch, m.start)).sort((a, b) => a.epoch - b.epoch),
        batches: batches
          .map((b): BatchRef => ({ key: batchKey(DB, b.first, b.first + b.span, 5000 + b.first + b.span, b.epoch), first: b.first, last: b.first + b.span, lastTime: 5000 + b.first + b.span, epoch: b.epoch }))
          .sort((a, b) => (a.key < b.key ? -1 : 1)),
        snapshots: snaps.map((s): SnapshotObjectRef => ({ key: snapshotKey(DB, s.txid, 5000 + s.txid, s.epoch), txid: s.txid, time: 5000 + s.txid, epoch: s.epoch })),
        ltr: [],
      };
      const lin = chooseLineage(h);
      const kept = new Set([...lin.history.batches.map((b) => b.key), ...lin.history.snapshots.map((s) => s.key)]);
      const orphaned = new Set(lin.orphans.map((o) => o.key));
      assert.equal(kept.size + orphaned.size, new Set([...h.batches.map((b) => b.key), ...h.snapshots.map((s) => s.key)]).size, 'every object is history or orphan');
      for (const k of kept) assert.ok(!orphaned.has(k));
      for (const b of lin.history.batches) {
        const whole = parseBatchKey(b.key)!;
        assert.ok(b.first <= b.last && b.last <= whole.last);
        for (let t = b.first; t <= b.last; t++) assert.ok(b.epoch >= lin.requiredEpoch(t), `TXID ${t} of a kept epoch-${b.epoch} batch needs epoch ${lin.requiredEpoch(t)}`);
        // Cut only where a newer epoch's start needed it.
        if (b.last < whole.last) assert.ok(whole.epoch < lin.requiredEpoch(b.last + 1));
      }
      for (const s of lin.history.snapshots) for (let t = 1; t <= s.txid; t++) assert.ok(s.epoch >= lin.requiredEpoch(t));
      for (const o of lin.orphans) {
        const whole = o.kind === 'batch' ? parseBatchKey(o.key)! : undefined;
        const firstNeeded = whole !== undefined ? whole.first : parseSnapshotKey(o.key)!.txid;
        const last = whole !== undefined ? whole.last : parseSnapshotKey(o.key)!.txid;
        let bad = false;
        for (let t = Math.max(1, firstNeeded); t <= last; t++) if (o.epoch < lin.requiredEpoch(t)) bad = true;
        assert.ok(bad || (whole !== undefined && whole.first <= 0), `${o.key} is an orphan although every TXID of it is allowed`);
      }
      const again = chooseLineage(lin.history);
      assert.deepEqual(again.history.batches, lin.history.batches);
      assert.deepEqual(again.history.snapshots, lin.history.snapshots);
      assert.equal(again.orphans.length, 0);
    }),
    { numRuns: 400 },
  );
});

interface Seen {
  hash: Map<number, string>;
  checksum: Map<number, string>;
  time: Map<number, number>;
}

/** One side of the story: a primary, and the content it had at every TXID. */
class Side {
  readonly seen: Seen = { hash: new Map(), checksum: new Map(), time: new Map() };
  private n = 0;
  constructor(
    readonly db: PrimaryDatabase,
    private readonly tag: string,
    private readonly clock: { now: number },
    private readonly rand: () => number,
  ) {
    this.note();
  }

  note(): void {
    const t = this.db.txid;
    if (this.seen.hash.has(t)) return; // an update that changed nothing commits no transaction
    this.seen.hash.set(t, this.db.read((c) => dumpHash(c)));
    this.seen.checksum.set(t, checksumHex(this.db.checksum));
    this.seen.time.set(t, this.clock.now);
  }

  write(): void {
    this.clock.now += 1 + Math.floor(this.rand() * 20);
    const r = this.rand();
    this.db.write((c) => {
      if (r < 0.75 || this.n === 0) c.prepare('insert into t(v, b) values (?, randomblob(?))').run(`${this.tag}${this.n}`, Math.floor(this.rand() * 3000));
      // Always changes a row, so every write is a transaction (one TXID).
      else c.prepare('update t set v = ? where id % 3 = ? or id = (select max(id) from t)').run(`${this.tag}u${this.n}`, this.n % 3);
    });
    this.n++;
    this.note();
  }
}

interface Story {
  a: Side;
  b: Side;
  m: number;
  close(): void;
}

/**
 * A writes up to M (shipping now and then through `shipA`); B is seeded from a full snapshot
 * of A at `seedAt`, applies A's records up to M and is promoted (epoch 2).
 */
async function story(dir: string, clock: { now: number }, rand: () => number, m: number, seedAt: number, shipA?: (a: Side) => Promise<void>): Promise<Story> {
  const a = new Side(PrimaryDatabase.open({ file: path.join(dir, 'a.sqlite'), durability: 'commit', clock: () => clock.now }), 'a', clock, rand);
  clock.now += 1;
  a.db.write((c) => c.exec('create table t(id integer primary key, v text, b blob)'));
  a.note();
  const seed = path.join(dir, 'seed.full');
  for (;;) {
    if (a.db.txid === seedAt) {
      const ref = await takeSnapshot(a.db);
      fs.copyFileSync(ref.file, seed);
      fs.rmSync(ref.file);
    }
    if (a.db.txid >= m) break;
    a.write();
    if (shipA !== undefined && rand() < 0.3) await shipA(a);
  }
  const replica = ReplicaDatabase.create({ file: path.join(dir, 'b.sqlite') }, seed, a.db.dbId);
  if (replica.txid < m) replica.apply([...a.db.records(replica.txid + 1, m)]);
  assert.equal(checksumHex(replica.checksum), a.seen.checksum.get(m), 'the replica is A at M');
  const promoted = replica.promote({ durability: 'commit', clock: () => clock.now });
  assert.equal(promoted.epoch, a.db.epoch + 1);
  const b = new Side(promoted, 'b', clock, rand);
  b.seen.time.set(m, a.seen.time.get(m)!); // M was committed on A
  assert.equal(b.seen.hash.get(m), a.seen.hash.get(m));
  return {
    a,
    b,
    m,
    close: () => {
      a.db.close();
      b.db.close();
    },
  };
}

function restoredHash(file: string): { hash: string; integrity: string } {
  const c = new Database(file, { readonly: true });
  try {
    return { hash: dumpHash(c), integrity: integrity(c) };
  } finally {
    c.close();
  }
}

/** Epoch-1 data objects in the vault: everything A ever uploaded (B's objects carry epoch 2). */
async function epochOneKeys(vault: Vault, dbId: string): Promise<string[]> {
  const out: string[] = [];
  for (const prefix of [recordsPrefix(dbId), snapshotsPrefix(dbId)]) {
    for await (const o of vault.list(prefix)) if ((parseBatchKey(o.key) ?? parseSnapshotKey(o.key))?.epoch === 1) out.push(o.key);
  }
  return out;
}

let restores = 0;

async function restoreTo(vault: Vault, dbId: string, dir: string, target: { txid: number } | { time: number } | 'latest'): Promise<{ txid: number; checksum: string; hash: string }> {
  const out = path.join(dir, `r${restores++}.sqlite`);
  const r = await restoreFromVault({ vault, dbId, target, out, scratchDir: dir });
  const got = restoredHash(out);
  fs.rmSync(out);
  assert.equal(got.integrity, 'ok');
  return { txid: r.txid, checksum: checksumHex(r.checksum), hash: got.hash };
}

/** What must hold of a vault that both lineages shipped into, once B shipped everything. */
async function checkVault(vault: Vault, s: Story, dir: string, rand: () => number): Promise<void> {
  const { a, b, m } = s;
  const dbId = a.db.dbId;
  const h = await readHistory(vault, dbId);
  const lin = chooseLineage(h);
  for (const x of lin.history.batches) if (x.epoch === 1) assert.ok(x.last <= m, `A's batch ${x.key} is history only up to M=${m}`);
  for (const x of lin.history.snapshots) if (x.epoch === 1) assert.ok(x.txid <= m, `A's snapshot ${x.key} is not history`);
  const points = restorePoints(h);
  assert.equal(points.gap, undefined);
  assert.equal(points.latest?.txid, b.db.txid, 'the window ends at B, never at a TXID A wrote alone');
  assert.equal(points.latest?.time, b.seen.time.get(b.db.txid));
  const latest = await restoreTo(vault, dbId, dir, 'latest');
  assert.deepEqual(latest, { txid: b.db.txid, checksum: checksumHex(b.db.checksum), hash: b.seen.hash.get(b.db.txid)! });
  const atM = await restoreTo(vault, dbId, dir, { txid: m });
  assert.equal(atM.hash, a.seen.hash.get(m), 'PITR to M is the common past');
  for (let i = 0; i < 2 && b.db.txid > m; i++) {
    const t = m + 1 + Math.floor(rand() * (b.db.txid - m));
    assert.equal((await restoreTo(vault, dbId, dir, { txid: t })).hash, b.seen.hash.get(t), `TXID ${t} is B's`);
    // By time, after the failover: the newest of B's TXIDs committed by then.
    const byTime = await restoreTo(vault, dbId, dir, { time: b.seen.time.get(t)! });
    assert.equal(byTime.txid, t);
    assert.equal(byTime.hash, b.seen.hash.get(t));
  }
  if (points.earliest!.txid < m) {
    const t = points.earliest!.txid + Math.floor(rand() * (m - points.earliest!.txid));
    // A's last records before M may never have reached this vault (A was cut off): the
    // promotion snapshot at M bridges that hole, and a restore into it is LOG_GAP, not a guess.
    const covered = lin.history.snapshots.some((x) => x.txid === t) || lin.history.batches.some((x) => x.first <= t && t <= x.last);
    if (covered) assert.equal((await restoreTo(vault, dbId, dir, { txid: t })).hash, a.seen.hash.get(t), `TXID ${t} <= M is the common past`);
    else await assert.rejects(restoreTo(vault, dbId, dir, { txid: t }), (e) => isGeodrError(e, 'LOG_GAP'));
  }
  if (a.db.txid > b.db.txid) {
    await assert.rejects(restoreFromVault({ vault, dbId, target: { txid: b.db.txid + 1 }, out: path.join(dir, 'no.sqlite'), scratchDir: dir }), (e) => isGeodrError(e, 'TARGET_OUT_OF_RANGE'));
  }
}

type Op = 'A' | 'B' | 'shipA' | 'shipB' | 'begin' | 'later';

test('property: two lineages shipped into one vault in random interleavings; the newest lineage wins from its start', { timeout: 600_000 }, async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  let run = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        m: fc.integer({ min: 1, max: 14 }),
        seedBack: fc.nat(14),
        ops: fc.array(fc.constantFrom<Op>('A', 'A', 'B', 'B', 'shipA', 'shipB', 'later'), { maxLength: 36 }),
        beginAt: fc.option(fc.nat(36)),
        recheck: fc.boolean(),
        vault: fc.constantFrom('fs', 'mem', 'codec'),
        snapshotEvery: fc.integer({ min: 3, max: 25 }),
        maxBatchBytes: fc.integer({ min: 2000, max: 30_000 }),
        seed: fc.integer(),
      }),
      async (p) => {
        const runDir = path.join(dir, `run${run++}`);
        fs.mkdirSync(runDir);
        const rand = prng(p.seed);
        const clock = { now: 1_700_000_000_000 };
        const raw = p.vault === 'mem' ? new MemVault() : new FsVault(path.join(runDir, 'vault'));
        const vault: Vault = p.vault === 'codec' ? new CodecVault(raw, { compression: 'gzip', keyring: { active: 'k1', keys: new Map([['k1', Buffer.alloc(32, 3)]]) } }) : raw;
        const fencedA: number[] = [];
        // recheck: A lists the markers before every upload, so nothing of A's may land once
        // B's marker is there; otherwise A never looks again after its first one and keeps
        // uploading — then the lineage rule alone must keep A's objects out of the history.
        const common = (origin: string): ShipperOptions => ({
          vault,
          awaitSnapshots: true,
          snapshotEveryRecords: p.snapshotEvery,
          snapshotIntervalMs: 0,
          clock: () => clock.now,
          maxBatchBytes: p.maxBatchBytes,
          fenceCheckMs: p.recheck ? 0 : Number.MAX_SAFE_INTEGER,
          origin: { server: origin, region: origin === 'a' ? 'eastus' : 'westus' },
        });
        const shipperA = new Shipper({ ...common('a'), onFenced: (_id, e) => fencedA.push(e) });
        const shipperB = new Shipper(common('b'));
        const m = p.m;
        const s = await story(runDir, clock, rand, m, Math.max(1, m - p.seedBack), (a) => shipperA.ship(a.db, descriptor(a.db.dbId)));
        const dbId = s.a.db.dbId;
        const markerThere = async (): Promise<boolean> => (await raw.head(epochKey(dbId, 2))) !== undefined;
        try {
          const ops: Op[] = [...p.ops];
          if (p.beginAt !== null) ops.splice(Math.min(p.beginAt, ops.length), 0, 'begin');
          for (const op of ops) {
            if (op === 'A') s.a.write();
            else if (op === 'B') s.b.write();
            else if (op === 'later') clock.now += 2500;
            else if (op === 'begin') await shipperB.beginEpoch(s.b.db);
            else if (op === 'shipB') await shipperB.ship(s.b.db, descriptor(dbId));
            else {
              const fenced = await markerThere();
              const had = shipperA.hasUnshipped(s.a.db);
              const before = await epochOneKeys(raw, dbId);
              await shipperA.ship(s.a.db, descriptor(dbId));
              if (fenced && p.recheck) {
                assert.deepEqual(await epochOneKeys(raw, dbId), before, 'A uploads nothing once the marker is there');
                if (had) assert.equal(shipperA.state(dbId)?.fencedBy, 2, 'A looked before uploading');
              }
            }
          }
          await shipperB.ship(s.b.db, descriptor(dbId));
          assert.equal(shipperB.state(dbId)?.failures, 0, JSON.stringify(shipperB.state(dbId)));
          assert.equal(shipperB.hasUnshipped(s.b.db), false);
          assert.ok(await markerThere(), 'B wrote its marker before its first object');
          const [written] = await readMarkers(vault, dbId);
          assert.deepEqual(
            { epoch: written!.epoch, startTxid: written!.startTxid, checksum: written!.checksum, server: written!.server },
            { epoch: 2, startTxid: m, checksum: s.a.seen.checksum.get(m), server: 'b' },
          );
          // A writes on. A shipper that looks (this one, or a new one after a restart) is
          // fenced, reports it, and uploads nothing.
          s.a.write();
          const before = await epochOneKeys(raw, dbId);
          const looking = p.recheck ? shipperA : new Shipper({ ...common('a'), onFenced: (_id, e) => fencedA.push(e) });
          await looking.ship(s.a.db, descriptor(dbId));
          assert.equal(looking.state(dbId)?.fencedBy, 2);
          assert.equal(looking.hasUnshipped(s.a.db), false, 'a fenced database need not stay open');
          assert.deepEqual(fencedA.slice(-1), [2]);
          assert.deepEqual(await epochOneKeys(raw, dbId), before);
          await assert.rejects(looking.snapshotNow(s.a.db, descriptor(dbId)), (e) => isGeodrError(e, 'STALE_EPOCH'));
          await checkVault(vault, s, runDir, rand);

          // Retention far in the future: history before the newest snapshot and every orphan go;
          // the latest point still restores to B.
          const h = await readHistory(vault, dbId);
          const plan = planRetention(h, clock.now + 1);
          for (const o of chooseLineage(h).orphans) assert.ok(plan.includes(o.key), `orphan ${o.key} past the window goes`);
          // Orphans stay while they are inside the window.
          const young = chooseLineage(h).orphans.filter((o) => o.time >= clock.now - 10);
          for (const o of young) assert.ok(!planRetention(h, clock.now - 10).includes(o.key));
          for (const key of plan) await vault.delete(key);
          assert.equal(chooseLineage(await readHistory(vault, dbId)).orphans.length, 0);
          const latest = await restoreTo(vault, dbId, runDir, 'latest');
          assert.equal(latest.hash, s.b.seen.hash.get(s.b.db.txid));
        } finally {
          s.close();
          fs.rmSync(runDir, { recursive: true, force: true });
        }
      },
    ),
    // GEODR_CASE='<counterexample JSON>' replays one failure exactly.
    process.env.GEODR_CASE !== undefined
      ? { numRuns: 0, examples: [JSON.parse(process.env.GEODR_CASE) as [never]], includeErrorInReport: true }
      : { numRuns: Number(process.env.GEODR_RUNS ?? 30), includeErrorInReport: true, seed: process.env.GEODR_SEED === undefined ? undefined : Number(process.env.GEODR_SEED) },
  );
});

test('the default look every 2 s: a deposed primary uploads nothing once its next look finds the marker', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const clock = { now: 1_700_000_000_000 };
  const rand = prng(5);
  const vault = new FsVault(path.join(dir, 'vault'));
  const fenced: Array<[string, number]> = [];
  const shipperA = new Shipper({ vault, awaitSnapshots: true, clock: () => clock.now, onFenced: (id, e) => fenced.push([id, e]) });
  const s = await story(dir, clock, rand, 6, 3, (a) => shipperA.ship(a.db, descriptor(a.db.dbId)));
  t.after(() => s.close());
  const dbId = s.a.db.dbId;
  await shipperA.ship(s.a.db, descriptor(dbId));
  const shipperB = new Shipper({ vault, awaitSnapshots: true, clock: () => clock.now, origin: { server: 'b', region: 'westus' } });
  await shipperB.beginEpoch(s.b.db);
  // Within 2 s of A's last look A still uploads (those objects are not history)...
  s.a.write();
  await shipperA.ship(s.a.db, descriptor(dbId));
  assert.equal(shipperA.state(dbId)?.shippedTxid, s.a.db.txid);
  // ...and once 2 s have passed, its next upload looks first and finds the marker.
  clock.now += 2000;
  s.a.write();
  const before = await epochOneKeys(vault, dbId);
  await shipperA.ship(s.a.db, descriptor(dbId));
  assert.deepEqual(fenced, [[dbId, 2]]);
  assert.deepEqual(await epochOneKeys(vault, dbId), before);
  assert.match(shipperA.state(dbId)!.halted!, /epoch 2/);
  // Fenced for good: further calls neither upload nor report again.
  s.a.write();
  clock.now += 5000;
  await shipperA.ship(s.a.db, descriptor(dbId));
  assert.equal(fenced.length, 1);
  // beginEpoch is idempotent and refuses a database at epoch 1.
  const again = await shipperB.beginEpoch(s.b.db);
  assert.equal(again.startTxid, 6);
  await assert.rejects(shipperA.beginEpoch(s.a.db), (e) => isGeodrError(e, 'INVALID_ARGUMENT'));
  // Another server cannot begin the same epoch: it is fenced instead of shipping a rival history.
  const fencedC: number[] = [];
  const shipperC = new Shipper({ vault, awaitSnapshots: true, clock: () => clock.now, origin: { server: 'c', region: 'westus' }, onFenced: (_id, e) => fencedC.push(e) });
  await assert.rejects(shipperC.beginEpoch(s.b.db), (e) => isGeodrError(e, 'STALE_EPOCH'));
  await shipperC.ship(s.b.db, descriptor(dbId));
  assert.deepEqual(fencedC, [2]);
  assert.match(shipperC.state(dbId)!.halted!, /another server began epoch 2/);
  await shipperB.ship(s.b.db, descriptor(dbId));
  s.b.write();
  await shipperB.ship(s.b.db, descriptor(dbId));
  await checkVault(vault, s, dir, rand);
});

test('geo-redundant pair: each side ships to its own vault, GRS copies both ways, the marker travels first, both vaults restore B', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const clock = { now: 1_700_000_000_000 };
  const rand = prng(11);
  const vx = new FsVault(path.join(dir, 'vx'));
  const vy = new FsVault(path.join(dir, 'vy'));
  const xy = new GeoCopier({ source: vx, target: vy });
  const yx = new GeoCopier({ source: vy, target: vx });
  const fenced: number[] = [];
  const shipperA = new Shipper({ vault: vx, awaitSnapshots: true, snapshotEveryRecords: 5, snapshotIntervalMs: 0, clock: () => clock.now, onPut: (k) => xy.notify(k), onFenced: (_id, e) => fenced.push(e) });
  const s = await story(dir, clock, rand, 9, 4, (a) => shipperA.ship(a.db, descriptor(a.db.dbId)));
  t.after(() => s.close());
  const dbId = s.a.db.dbId;
  await shipperA.ship(s.a.db, descriptor(dbId));
  await xy.syncOnce();
  const shipperB = new Shipper({ vault: vy, awaitSnapshots: true, snapshotEveryRecords: 5, snapshotIntervalMs: 0, clock: () => clock.now, origin: { server: 'b', region: 'westus' }, onPut: (k) => yx.notify(k) });
  await shipperB.beginEpoch(s.b.db);
  for (let i = 0; i < 12; i++) {
    s.b.write();
    if (i % 4 === 3) await shipperB.ship(s.b.db, descriptor(dbId));
    // Cut off, A keeps writing and shipping to its own region's vault, which has no marker yet.
    s.a.write();
    if (i % 3 === 2) await shipperA.ship(s.a.db, descriptor(dbId));
  }
  await shipperB.ship(s.b.db, descriptor(dbId));
  await shipperA.ship(s.a.db, descriptor(dbId));
  assert.equal(shipperA.state(dbId)?.fencedBy, undefined, 'A cannot know yet');
  assert.equal(restorePoints(await readHistory(vx, dbId)).latest?.txid, s.a.db.txid, 'until the marker arrives, region X only knows A');

  // The marker reaches region X before any of B's objects, even when only records are copied.
  const recordsOnly = new GeoCopier({ source: vy, target: vx, prefix: recordsPrefix(dbId) });
  assert.ok((await recordsOnly.syncOnce()) > 0);
  assert.ok((await vx.head(epochKey(dbId, 2))) !== undefined, 'the marker went first');
  await yx.syncOnce();
  await xy.syncOnce();
  clock.now += 2000;
  s.a.write();
  await shipperA.ship(s.a.db, descriptor(dbId));
  assert.deepEqual(fenced, [2]);
  for (const vault of [vx, vy]) await checkVault(vault, s, dir, rand);
  // Both vaults hold every object now, and agree on the history.
  const hx = chooseLineage(await readHistory(vx, dbId));
  const hy = chooseLineage(await readHistory(vy, dbId));
  assert.deepEqual(hx.history.batches, hy.history.batches);
  assert.ok(hx.orphans.length > 0, 'A shipped alone after M');
});

test('a vault of old-format keys (epoch 1, no suffix, no markers) restores as before', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const clock = { now: 1_700_000_000_000 };
  const vault = new MemVault();
  const shipper = new Shipper({ vault, awaitSnapshots: true, snapshotEveryRecords: 7, snapshotIntervalMs: 0, clock: () => clock.now, maxBatchBytes: 5000 });
  const side = new Side(PrimaryDatabase.open({ file: path.join(dir, 'a.sqlite'), durability: 'commit', clock: () => clock.now }), 'a', clock, prng(3));
  t.after(() => side.db.close());
  side.db.write((c) => c.exec('create table t(id integer primary key, v text, b blob)'));
  side.note();
  for (let i = 0; i < 25; i++) {
    side.write();
    if (i % 4 === 0) await shipper.ship(side.db, descriptor(side.db.dbId));
  }
  await shipper.ship(side.db, descriptor(side.db.dbId));
  const oldBatch = /\/[0-9a-f]{16}-[0-9a-f]{16}-[0-9a-f]{16}\.batch$/;
  const oldSnap = /\/[0-9a-f]{16}-[0-9a-f]{16}\.full$/;
  const keys = [...vault.objects.keys()];
  assert.ok(keys.every((k) => !k.includes('/epochs/')), 'no marker at epoch 1');
  for (const k of keys.filter((k) => k.includes('/records/'))) assert.match(k, oldBatch);
  for (const k of keys.filter((k) => k.includes('/snapshots/'))) assert.match(k, oldSnap);
  const dbId = side.db.dbId;
  assert.equal((await restoreTo(vault, dbId, dir, 'latest')).hash, side.seen.hash.get(side.db.txid));
  assert.equal((await restoreTo(vault, dbId, dir, { txid: 13 })).hash, side.seen.hash.get(13));
  // A batch renamed to claim another epoch is refused, never read as that lineage's history.
  const victim = (await readHistory(vault, dbId)).batches.at(-1)!;
  const body = vault.objects.get(victim.key)!;
  vault.objects.delete(victim.key);
  const renamed = batchKey(dbId, victim.first, victim.last, victim.lastTime, 2);
  vault.objects.set(renamed, body);
  await assert.rejects(restoreFromVault({ vault, dbId, target: 'latest', out: path.join(dir, 'x.sqlite'), scratchDir: dir }), (e) => e instanceof GeodrError && e.code === 'VAULT_CORRUPT' && e.context.object === renamed);
});

test('a promoted primary whose first shipment meets a vault outage starts its lineage properly once the vault is back', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const clock = { now: 1_700_000_000_000 };
  const rand = prng(21);
  const inner = new FsVault(path.join(dir, 'vault'));
  const vault = new FaultVault(inner);
  const shipperA = new Shipper({ vault, awaitSnapshots: true, clock: () => clock.now });
  const s = await story(dir, clock, rand, 8, 2, (a) => shipperA.ship(a.db, descriptor(a.db.dbId)));
  t.after(() => s.close());
  const dbId = s.a.db.dbId;
  await shipperA.ship(s.a.db, descriptor(dbId));
  const errors: unknown[] = [];
  const shipperB = new Shipper({ vault, awaitSnapshots: true, intervalMs: 1, clock: () => clock.now, origin: { server: 'b', region: 'westus' }, onError: (e) => errors.push(e) });
  s.b.write();
  vault.setUnavailable(true);
  await assert.rejects(shipperB.beginEpoch(s.b.db), (e) => isGeodrError(e, 'VAULT_UNAVAILABLE'));
  await shipperB.ship(s.b.db, descriptor(dbId));
  assert.ok(errors.length > 0 && isGeodrError(errors[0], 'VAULT_UNAVAILABLE'));
  assert.equal(shipperB.state(dbId)?.discovered, false, 'a failed discovery leaves only the backoff');
  assert.equal(shipperB.hasUnshipped(s.b.db), true);
  vault.setUnavailable(false);
  clock.now += 60_000;
  // No beginEpoch after the outage: the shipper writes the marker itself before its first object.
  await shipperB.ship(s.b.db, descriptor(dbId));
  assert.equal(shipperB.state(dbId)?.failures, 0);
  assert.equal(shipperB.hasUnshipped(s.b.db), false);
  const h = await readHistory(inner, dbId);
  assert.deepEqual(
    h.epochs.map((m) => [m.epoch, m.startTxid, m.server]),
    [[2, 8, 'b']],
  );
  assert.ok(
    h.snapshots.some((x) => x.epoch === 2 && x.txid === 8),
    'the promotion snapshot starts the lineage',
  );
  await checkVault(inner, s, dir, rand);
});
