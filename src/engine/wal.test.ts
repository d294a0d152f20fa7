/** WAL reading: the facts from SQLite's format that decide what capture accepts. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { isGeodrError } from '../errors.js';
import { checksumHex } from './checksum.js';
import { NodeFs } from './fs.js';
import { PrimaryDatabase } from './primary.js';
import { assertSqliteVersion } from './sqlite.js';
import { dumpHash, tempDir } from './testing/helpers.js';
import { parseWalHeader, scanWal, walChecksum, WAL_FRAME_HEADER_SIZE, WAL_HEADER_SIZE } from './wal.js';

process.env.SQLITE_USE_URI = '1';
const efs = new NodeFs();

function rawWal(dir: string, pageSize = 4096): { db: Database.Database; file: string } {
  const file = path.join(dir, 'raw.db');
  const db = new Database(file);
  db.pragma(`page_size = ${pageSize}`);
  db.pragma('journal_mode = WAL');
  db.pragma('wal_autocheckpoint = 0');
  db.exec('create table t(id integer primary key, v blob)');
  return { db, file };
}

function scanFile(walFile: string): ReturnType<typeof scanWal> {
  const fd = efs.open(walFile, 'r', 'test');
  try {
    return scanWal(efs, fd, undefined);
  } finally {
    efs.close(fd, 'test');
  }
}

/** Rewrites a little-endian WAL with big-endian checksums (magic 0x377f0683), as a big-endian host writes it. */
function toBigEndian(src: Buffer): Buffer {
  const out = Buffer.from(src);
  out.writeUInt32BE(0x377f0683, 0);
  const pageSize = out.readUInt32BE(8);
  let [s1, s2] = walChecksum(out.subarray(0, 24), true, 0, 0);
  out.writeUInt32BE(s1, 24);
  out.writeUInt32BE(s2, 28);
  const frameSize = WAL_FRAME_HEADER_SIZE + pageSize;
  for (let off = WAL_HEADER_SIZE; off + frameSize <= out.length; off += frameSize) {
    [s1, s2] = walChecksum(out.subarray(off, off + 8), true, s1, s2);
    [s1, s2] = walChecksum(out.subarray(off + WAL_FRAME_HEADER_SIZE, off + frameSize), true, s1, s2);
    out.writeUInt32BE(s1, off + 16);
    out.writeUInt32BE(s2, off + 20);
  }
  return out;
}

test('a WAL with big-endian checksums reads the same as the native one, and SQLite agrees', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { db, file } = rawWal(dir);
    for (let i = 0; i < 12; i++) db.prepare('insert into t(v) values (?)').run(Buffer.alloc(500 * i, i + 1));
    const le = fs.readFileSync(`${file}-wal`);
    const expected = dumpHash(db);
    const be = toBigEndian(le);
    assert.equal(parseWalHeader(le)?.bigEndianChecksums, false);
    assert.equal(parseWalHeader(be)?.bigEndianChecksums, true);
    const copy = path.join(dir, 'be.db');
    fs.copyFileSync(file, copy);
    fs.writeFileSync(`${copy}-wal`, be);
    db.close();
    const a = scanFile(path.join(dir, 'be.db-wal'));
    fs.writeFileSync(path.join(dir, 'le.db-wal'), le);
    const b = scanFile(path.join(dir, 'le.db-wal'));
    assert.equal(a.commits.length, 13);
    assert.equal(a.commits.length, b.commits.length);
    for (let i = 0; i < a.commits.length; i++) {
      assert.equal(a.commits[i]!.commitSize, b.commits[i]!.commitSize);
      assert.deepEqual([...a.commits[i]!.pages.keys()], [...b.commits[i]!.pages.keys()]);
    }
    // SQLite itself accepts the converted WAL: our checksum matches its algorithm.
    const c = new Database(copy, { readonly: true });
    assert.equal(dumpHash(c), expected);
    c.close();
  } finally {
    cleanup();
  }
});

test('frames of an older WAL generation past the new ones are not read', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { db, file } = rawWal(dir);
    for (let i = 0; i < 30; i++) db.prepare('insert into t(v) values (?)').run(Buffer.alloc(3000, i));
    const before = fs.statSync(`${file}-wal`).size;
    // RESTART leaves the file in place; the next writer starts over at frame 1 with new salts.
    db.pragma('wal_checkpoint(RESTART)');
    db.prepare('insert into t(v) values (?)').run(Buffer.alloc(10, 1));
    db.prepare('insert into t(v) values (?)').run(Buffer.alloc(10, 2));
    assert.equal(fs.statSync(`${file}-wal`).size, before, 'old frames remain in the file');
    const scan = scanFile(`${file}-wal`);
    assert.equal(scan.commits.length, 2);
    db.close();
  } finally {
    cleanup();
  }
});

test('frames after the last commit (a spilled, uncommitted transaction) are not captured', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { db, file } = rawWal(dir);
    db.prepare('insert into t(v) values (?)').run(Buffer.alloc(10, 1));
    db.pragma('cache_size = 2');
    db.exec('begin');
    for (let i = 0; i < 300; i++) db.prepare('insert into t(v) values (?)').run(Buffer.alloc(400, i % 250));
    const walSize = fs.statSync(`${file}-wal`).size;
    const mid = scanFile(`${file}-wal`);
    assert.ok(walSize > WAL_HEADER_SIZE + 3 * (4096 + 24) * 2, 'the open transaction spilled frames to the WAL');
    assert.equal(mid.commits.length, 2, 'only the committed transactions');
    db.exec('rollback');
    db.prepare('insert into t(v) values (?)').run(Buffer.alloc(10, 2));
    const after = scanFile(`${file}-wal`);
    assert.equal(after.commits.length, 3);
    db.close();
  } finally {
    cleanup();
  }
});

test('a frame with a bad checksum ends the chain at the commit before it', () => {
  const { dir, cleanup } = tempDir();
  try {
    const { db, file } = rawWal(dir);
    for (let i = 0; i < 5; i++) db.prepare('insert into t(v) values (?)').run(Buffer.alloc(100, i));
    const wal = fs.readFileSync(`${file}-wal`);
    db.close();
    const frameSize = WAL_FRAME_HEADER_SIZE + 4096;
    fs.writeFileSync(path.join(dir, 'good.db-wal'), wal);
    const whole = scanFile(path.join(dir, 'good.db-wal'));
    assert.equal(whole.commits.length, 6);
    // Damage the page of the frame that ends the fourth commit.
    const k = whole.commits[3]!.end.frame;
    const bad = Buffer.from(wal);
    bad[WAL_HEADER_SIZE + (k - 1) * frameSize + WAL_FRAME_HEADER_SIZE + 100]! ^= 0xff;
    fs.writeFileSync(path.join(dir, 'bad.db-wal'), bad);
    const scan = scanFile(path.join(dir, 'bad.db-wal'));
    assert.equal(scan.commits.length, 3);
  } finally {
    cleanup();
  }
});

test('repeated commit frames written as sector padding are not extra transactions', () => {
  const { dir, cleanup } = tempDir();
  try {
    const file = path.join(dir, 'p.db');
    const p = PrimaryDatabase.open({ file, synchronous: 'FULL', connectionUri: `file:${file}?psow=0`, checkpointFrames: 0, strict: true, pageSize: 1024 });
    p.write((c) => c.exec('create table t(v)'));
    let pages = 0;
    for (let i = 0; i < 20; i++) {
      p.write((c) => c.prepare('insert into t values (?)').run(i));
    }
    for (const r of p.records(1)) pages += r.pages.length;
    assert.equal(p.txid, 21, 'one record per transaction');
    const frames = p.status().walFrames;
    assert.ok(frames > pages, `padding frames were written (${frames} frames for ${pages} pages)`);
    const content = p.read(dumpHash);
    const sum = checksumHex(p.checksum);
    p.close();
    const q = PrimaryDatabase.open({ file, strict: true });
    assert.equal(checksumHex(q.checksum), sum);
    assert.equal(q.read(dumpHash), content);
    q.close();
  } finally {
    cleanup();
  }
});

// Regression: after a RESTART checkpoint a write that changed nothing cached the old WAL
// header; the next writer restarted the WAL in place (same file size), and capture, still
// looking for frames past the old position, missed that commit.
test('the first commit of a restarted WAL is captured even after a write that changed nothing', () => {
  const { dir, cleanup } = tempDir();
  try {
    const p = PrimaryDatabase.open({ file: path.join(dir, 'p.db'), pageSize: 512, strict: true, checkpointFrames: 0 });
    p.write((c) => c.exec('create table t(v)'));
    p.write((c) => c.prepare('insert into t values (?)').run(Buffer.alloc(10_000, 1)));
    assert.equal(p.checkpoint(), true);
    const before = p.txid;
    p.write((c) => c.prepare('select count(*) from t').get());
    assert.equal(p.txid, before, 'a write that changed nothing is no transaction');
    p.write((c) => c.exec('create table u(v)'));
    assert.equal(p.txid, before + 1);
    assert.equal(p.status().walFrames > 0, true);
    p.verify();
    p.close();
  } finally {
    cleanup();
  }
});

test('a checkpoint held up by an open reader returns at once, and the later WAL restart is captured', () => {
  const { dir, cleanup } = tempDir();
  try {
    const p = PrimaryDatabase.open({ file: path.join(dir, 'p.db'), strict: true, checkpointFrames: 0 });
    p.write((c) => c.exec('create table t(v)'));
    for (let i = 0; i < 20; i++) p.write((c) => c.prepare('insert into t values (?)').run(Buffer.alloc(3000, i)));
    // A reader left open mid-iteration pins the WAL.
    const rows = p.read((c) => c.prepare('select v from t').iterate());
    rows.next();
    const started = Date.now();
    assert.equal(p.checkpoint(), false, 'busy while the reader is open');
    assert.ok(Date.now() - started < 1000, 'did not wait for the reader');
    rows.return?.();
    const before = p.txid;
    // A write that changes nothing reads (and would cache) the old WAL header.
    p.write((c) => c.prepare('select count(*) from t').get());
    // With the reader gone the WAL is fully backfilled, so this writer restarts it.
    p.write((c) => c.prepare('insert into t values (?)').run(Buffer.alloc(10, 1)));
    assert.equal(p.txid, before + 1);
    p.verify();
    assert.equal(p.checkpoint(), true);
    p.close();
  } finally {
    cleanup();
  }
});

test('every page size from 512 to 65536 is captured and reopened', () => {
  for (const pageSize of [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]) {
    const { dir, cleanup } = tempDir();
    try {
      const file = path.join(dir, 'p.db');
      const p = PrimaryDatabase.open({ file, pageSize, strict: true });
      p.write((c) => c.exec('create table t(v)'));
      p.write((c) => c.prepare('insert into t values (?)').run(Buffer.alloc(pageSize * 3, 7)));
      assert.equal(p.pageSize, pageSize);
      const sum = checksumHex(p.checksum);
      p.close();
      const q = PrimaryDatabase.open({ file, strict: true });
      assert.equal(checksumHex(q.checksum), sum, `page size ${pageSize}`);
      q.close();
    } finally {
      cleanup();
    }
  }
});

test('SQLite older than 3.51.3 is refused', () => {
  for (const v of ['3.51.2', '3.7.0', '3.45.1', 'garbage']) {
    assert.throws(() => assertSqliteVersion(v), (e) => isGeodrError(e, 'SQLITE_TOO_OLD') && e.message.includes(v));
  }
  for (const v of ['3.51.3', '3.52.0', '4.0.0']) assertSqliteVersion(v);
});
