/** The official sqlite3 shell (Debian package sqlite3) opens replicas and restored files. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { test } from 'node:test';
import { LocalChain } from './chain.js';
import { NodeFs } from './fs.js';
import { materialize } from './materialize.js';
import { PrimaryDatabase } from './primary.js';
import { ReplicaDatabase } from './replica.js';
import { tempDir } from './testing/helpers.js';

function shell(file: string, sql: string): string {
  try {
    return execFileSync('sqlite3', ['-readonly', file, sql], { encoding: 'utf8' }).trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('the sqlite3 shell is missing: apt-get install sqlite3 (CI installs it)');
    throw e;
  }
}

test('sqlite3 shell reports integrity ok on a replica and on a restored file', () => {
  const { dir, cleanup } = tempDir();
  const p = PrimaryDatabase.open({ file: path.join(dir, 'p.db'), checkpointFrames: 30 });
  try {
    p.write((c) => c.exec('create table t(id integer primary key, v text, b blob); create index tv on t(v)'));
    for (let i = 0; i < 80; i++) p.write((c) => c.prepare('insert into t(v, b) values (?, ?)').run(`row ${i}`, Buffer.alloc(i * 120, i)));
    p.write((c) => c.exec('delete from t where id % 3 = 0'));
    p.write((c) => c.exec('vacuum'), { transaction: false });
    const r = ReplicaDatabase.create({ file: path.join(dir, 'r.db') }, path.join(p.stateDir, 'snapshots', '0000000000000000.full'), p.dbId);
    r.apply([...p.records(1)]);
    const expected = String(p.read((c) => (c.prepare('select count(*) as n from t').get() as { n: number }).n));
    assert.equal(shell(r.file, 'pragma integrity_check;'), 'ok');
    assert.equal(shell(r.file, 'select count(*) from t;'), expected);
    assert.equal(shell(r.file, 'pragma journal_mode;'), 'delete', 'a replica is a rollback-journal file');
    r.close();
    const out = path.join(dir, 'restored.db');
    materialize({ source: new LocalChain(new NodeFs(), p.stateDir, p.txLog), target: { txid: 40 }, out });
    assert.equal(shell(out, 'pragma integrity_check;'), 'ok');
    assert.equal(shell(out, 'select count(*) from t;'), '39');
  } finally {
    p.close();
    cleanup();
  }
});
