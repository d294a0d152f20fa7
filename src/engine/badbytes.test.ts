/**
 * Corrupt, truncated, reordered and foreign bytes are detected by checksums and
 * never applied; the error names the object and the TXID.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { GeodrError, isGeodrError } from '../errors.js';
import { LocalChain } from './chain.js';
import { checksumHex } from './checksum.js';
import { compact } from './compact.js';
import { NodeFs } from './fs.js';
import { SEGMENT_HEADER_SIZE, TxLog } from './log.js';
import { materialize } from './materialize.js';
import { PrimaryDatabase } from './primary.js';
import { decodeRecord, encodeRecord, type TxRecord } from './record.js';
import { ReplicaDatabase } from './replica.js';
import { tempDir } from './testing/helpers.js';

const efs = new NodeFs();

function workload(dir: string, name: string, salt: number, n = 12): PrimaryDatabase {
  const p = PrimaryDatabase.open({ file: path.join(dir, `${name}.db`), segmentBytes: 16 * 1024 });
  p.write((c) => c.exec('create table t(id integer primary key, v blob)'));
  for (let i = 0; i < n; i++) p.write((c) => c.prepare('insert into t(v) values (?)').run(Buffer.alloc(300 + i * 97, (i + salt) % 251)));
  return p;
}

function replicaOf(dir: string, p: PrimaryDatabase, name = 'r'): ReplicaDatabase {
  return ReplicaDatabase.create({ file: path.join(dir, `${name}.db`), strict: true }, path.join(p.stateDir, 'snapshots', '0000000000000000.full'), p.dbId);
}

test('any flipped byte or truncation of a record is rejected, naming the object', () => {
  const { dir, cleanup } = tempDir();
  const p = workload(dir, 'a', 0);
  try {
    const encoded = [...p.records(1)].map((r) => encodeRecord(r));
    fc.assert(
      fc.property(fc.nat(encoded.length - 1), fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), fc.integer({ min: 1, max: 255 }), (i, at, xor) => {
        const bad = Buffer.from(encoded[i]!);
        const pos = Math.floor(at * bad.length);
        bad[pos]! ^= xor;
        assert.throws(
          () => decodeRecord(bad, { object: `rec-${i}`, dbId: p.dbId }),
          (e) => e instanceof GeodrError && ['RECORD_CORRUPT', 'FORMAT_UNSUPPORTED', 'RECORD_FOREIGN'].includes(e.code) && e.context.object === `rec-${i}`,
        );
      }),
      { numRuns: 400 },
    );
    fc.assert(
      fc.property(fc.nat(encoded.length - 1), fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), (i, at) => {
        const whole = encoded[i]!;
        const cut = whole.subarray(0, Math.floor(at * whole.length));
        assert.throws(() => decodeRecord(cut, { object: 'cut', dbId: p.dbId }), (e) => isGeodrError(e, 'RECORD_CORRUPT'));
      }),
      { numRuns: 200 },
    );
    // A body damaged past the header still names the TXID the header states.
    const bad = Buffer.from(encoded[3]!);
    bad[bad.length - 10]! ^= 1;
    assert.throws(() => decodeRecord(bad, { object: 'x' }), (e) => isGeodrError(e, 'RECORD_CORRUPT') && e.context.txid === 4);
  } finally {
    p.close();
    cleanup();
  }
});

test('reordered, repeated, skipped and foreign records are refused and nothing is applied', () => {
  const { dir, cleanup } = tempDir();
  const a = workload(dir, 'a', 0);
  const b = workload(dir, 'b', 7);
  const r = replicaOf(dir, a);
  try {
    const recs = [...a.records(1)];
    const start = checksumHex(r.checksum);
    const expectRefused = (batch: TxRecord[], code: string): void => {
      assert.throws(() => r.apply(batch), (e) => isGeodrError(e) && e.code === code && typeof e.context.txid === 'number');
      assert.equal(r.txid, 0);
      assert.equal(checksumHex(r.checksum), start);
    };
    assert.throws(() => r.read((c) => c.exec('create table x(a)')), (e) => isGeodrError(e, 'READ_ONLY'));
    expectRefused([recs[1]!, recs[0]!], 'RECORD_OUT_OF_ORDER');
    expectRefused([recs[0]!, recs[2]!], 'RECORD_OUT_OF_ORDER');
    expectRefused([recs[0]!, recs[0]!], 'RECORD_OUT_OF_ORDER');
    expectRefused([[...b.records(1, 1)][0]!], 'RECORD_FOREIGN');
    // A record spliced from another database with its id forged: the checksum chain catches it.
    const forged = { ...[...b.records(1, 2)][1]!, dbId: a.dbId, baseTxid: 0, txid: 1 };
    assert.throws(() => r.apply([forged]), (e) => isGeodrError(e, 'REPLICA_DIVERGED') && e.context.txid === 1);
    r.close();
    // The divergence stopped the replica before its file was touched: it reopens clean.
    const again = ReplicaDatabase.open({ file: path.join(dir, 'r.db'), strict: true });
    assert.equal(again.txid, 0);
    again.apply(recs);
    assert.equal(checksumHex(again.checksum), checksumHex(a.checksum));
    again.close();
  } finally {
    a.close();
    b.close();
    cleanup();
  }
});

test('a record whose pages were altered and re-encoded is refused by the checksum chain', () => {
  const { dir, cleanup } = tempDir();
  const a = workload(dir, 'a', 0);
  const r = replicaOf(dir, a);
  try {
    const recs = [...a.records(1)];
    r.apply(recs.slice(0, 5));
    const victim = recs[5]!;
    const page = Buffer.from(victim.pages[victim.pages.length - 1]![1]);
    page[page.length - 1]! ^= 0x55;
    const altered: TxRecord = { ...victim, pages: [...victim.pages.slice(0, -1), [victim.pages[victim.pages.length - 1]![0], page]] };
    const reencoded = decodeRecord(encodeRecord(altered), { object: 'm', dbId: a.dbId });
    assert.throws(() => r.apply([reencoded]), (e) => isGeodrError(e, 'REPLICA_DIVERGED') && e.context.txid === victim.txid);
    r.close();
    const again = ReplicaDatabase.open({ file: path.join(dir, 'r.db') });
    assert.equal(again.txid, 5);
    again.close();
  } finally {
    a.close();
    cleanup();
  }
});

test('damage inside the log before its tail is LOG_CORRUPT; a torn tail is cut', () => {
  const { dir, cleanup } = tempDir();
  const a = workload(dir, 'a', 0, 60);
  const logDir = path.join(a.stateDir, 'log');
  const last = a.txid;
  a.close();
  try {
    const segs = fs.readdirSync(logDir).sort();
    assert.ok(segs.length >= 3, `the log rotated (${segs.length} segments)`);
    // Tail: half of the last entry missing, as a crash mid-append leaves it.
    const tail = path.join(logDir, segs[segs.length - 1]!);
    const size = fs.statSync(tail).size;
    fs.truncateSync(tail, size - 200);
    const log = TxLog.open(efs, logDir, readDbId(a.stateDir));
    assert.equal(log.lastTxid, last - 1);
    assert.ok(log.tornBytesCut > 0);
    log.close();
    // Deep in an older segment: opening indexes it from its header, reading it finds the damage.
    const older = path.join(logDir, segs[1]!);
    const original = fs.readFileSync(older);
    const deep = Buffer.from(original);
    deep[deep.length - 300]! ^= 0x40;
    fs.writeFileSync(older, deep);
    const lazy = TxLog.open(efs, logDir, readDbId(a.stateDir));
    assert.throws(() => [...lazy.records(lazy.firstTxid!, lazy.lastTxid!)], (e) => e instanceof GeodrError && ['RECORD_CORRUPT', 'LOG_CORRUPT'].includes(e.code) && e.context.object === segs[1]);
    lazy.close();
    fs.writeFileSync(older, original);
    // Middle: a flipped byte in an older segment is not something a crash does.
    const mid = path.join(logDir, segs[0]!);
    const buf = fs.readFileSync(mid);
    buf[100]! ^= 0x10;
    fs.writeFileSync(mid, buf);
    assert.throws(() => TxLog.open(efs, logDir, readDbId(a.stateDir)), (e) => isGeodrError(e, 'LOG_CORRUPT') && e.context.object === segs[0]);
  } finally {
    cleanup();
  }
});

test('damage followed by valid records in the newest segment is refused, and nothing is cut', () => {
  const { dir, cleanup } = tempDir();
  const p = PrimaryDatabase.open({ file: path.join(dir, 'one.db') });
  try {
    p.write((c) => c.exec('create table t(v)'));
    for (let i = 0; i < 20; i++) p.write((c) => c.prepare('insert into t values (?)').run(i));
  } finally {
    p.close();
  }
  try {
    const logDir = path.join(dir, 'one.db.geodr', 'log');
    const segs = fs.readdirSync(logDir);
    assert.equal(segs.length, 1);
    const seg = path.join(logDir, segs[0]!);
    const bytes = fs.readFileSync(seg);
    bytes[SEGMENT_HEADER_SIZE + 200]! ^= 0x01;
    fs.writeFileSync(seg, bytes);
    assert.throws(() => TxLog.open(efs, logDir, readDbId(path.join(dir, 'one.db.geodr'))), (e) => isGeodrError(e, 'LOG_CORRUPT') && e.context.txid === 1);
    assert.equal(fs.statSync(seg).size, bytes.length, 'nothing was cut');
  } finally {
    cleanup();
  }
});

function readDbId(stateDir: string): string {
  return (JSON.parse(fs.readFileSync(path.join(stateDir, 'meta.json'), 'utf8')) as { dbId: string }).dbId;
}

test('a restore over a corrupt snapshot or unit fails, names it, and leaves no file', () => {
  const { dir, cleanup } = tempDir();
  const a = workload(dir, 'a', 0, 40);
  try {
    const chain = new LocalChain(efs, a.stateDir, a.txLog);
    compact(efs, chain, { spans: [5, 20], scratchDir: dir });
    const out = path.join(dir, 'out.db');
    const ok = materialize({ source: chain, target: { txid: 33 }, out, efs });
    assert.ok(ok.unitsApplied > 0, 'the plan used compacted units');
    fs.rmSync(out);
    const unitFile = path.join(a.stateDir, 'levels', 'L1', fs.readdirSync(path.join(a.stateDir, 'levels', 'L1')).sort()[0]!);
    const buf = fs.readFileSync(unitFile);
    buf[buf.length - 50]! ^= 0x01;
    fs.writeFileSync(unitFile, buf);
    const snap = path.join(a.stateDir, 'snapshots', '0000000000000000.full');
    const restoreTo = (txid: number): void => {
      materialize({ source: chain, target: { txid }, out, efs });
    };
    assert.throws(() => restoreTo(9), (e) => isGeodrError(e, 'RECORD_CORRUPT') && e.context.object === unitFile);
    assert.equal(fs.existsSync(out), false);
    assert.equal(fs.existsSync(`${out}.restoring`), false);
    const sbuf = fs.readFileSync(snap);
    sbuf[200]! ^= 0x80;
    fs.writeFileSync(snap, sbuf);
    assert.throws(() => restoreTo(3), (e) => e instanceof GeodrError && ['RECORD_CORRUPT', 'SNAPSHOT_CORRUPT'].includes(e.code) && String(e.context.object).endsWith('.full'));
    assert.equal(fs.existsSync(out), false);
    // A TXID past the history is out of range, not a silent "latest".
    assert.throws(() => restoreTo(a.txid + 1), (e) => isGeodrError(e, 'TARGET_OUT_OF_RANGE'));
  } finally {
    a.close();
    cleanup();
  }
});
