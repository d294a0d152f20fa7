// Interactive write transactions: statements arrive across awaits, commit captures once.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { isGeodrError } from '../errors.js';
import { PrimaryDatabase } from './primary.js';
import { LocalChain } from './chain.js';
import { materialize } from './materialize.js';
import { NodeFs } from './fs.js';
import Database from 'better-sqlite3';
import { dumpHash, tempDir } from './testing/helpers.js';

test('begin/commit spans awaits, logs one record, and blocks write() meanwhile', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const db = PrimaryDatabase.open({ file: path.join(dir, 'a.db'), durability: 'group', strict: true });
  db.write((c) => c.exec('create table t(x integer)'));
  const before = db.txid;
  const tx = db.begin();
  tx.conn.prepare('insert into t values (1)').run();
  await tick();
  tx.conn.prepare('insert into t values (2)').run();
  assert.throws(() => db.write((c) => c.exec('insert into t values (9)')), (e) => isGeodrError(e, 'BUSY'));
  // Readers do not see the open transaction.
  assert.equal(db.read((c) => (c.prepare('select count(*) n from t').get() as { n: number }).n), 0);
  assert.equal(db.checkpoint(), false);
  const txid = tx.commit();
  assert.equal(txid, before + 1);
  assert.equal(tx.open, false);
  assert.throws(() => tx.commit(), (e) => isGeodrError(e, 'DATABASE_CLOSED'));
  await db.waitDurable(txid);
  assert.equal(db.read((c) => (c.prepare('select count(*) n from t').get() as { n: number }).n), 2);

  // A rolled-back transaction leaves no record and frees the writer.
  const tx2 = db.begin();
  tx2.conn.prepare('insert into t values (3)').run();
  tx2.rollback();
  tx2.rollback();
  assert.equal(db.txid, txid);
  db.write((c) => c.exec('insert into t values (4)'));
  const expected = db.read((c) => dumpHash(c));
  db.close();

  // The log replays to the same contents.
  const efs = new NodeFs();
  const out = path.join(dir, 'restored.db');
  materialize({ source: new LocalChain(efs, path.join(dir, 'a.db.geodr')), target: 'latest', out, efs });
  const check = new Database(out, { readonly: true });
  assert.equal(dumpHash(check), expected);
  check.close();
});

test('close() rolls back an open transaction', (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, 'b.db');
  const db = PrimaryDatabase.open({ file });
  db.write((c) => c.exec('create table t(x)'));
  const tx = db.begin();
  tx.conn.exec('insert into t values (1)');
  db.close();
  const again = PrimaryDatabase.open({ file });
  assert.equal(again.read((c) => (c.prepare('select count(*) n from t').get() as { n: number }).n), 0);
  again.close();
});
