// Backups through the server: continuous shipping, point-in-time restore, restore of a
// dropped database, retention policies, and geo-restore in the paired region after the
// first region's server is killed and its vault is gone.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { tempDir } from '../engine/testing/helpers.js';
import { api } from './testing/http.js';
import { spawnServer, type ServerProcess } from './testing/spawn.js';

let root: { dir: string; cleanup: () => void };
let east: ServerProcess;
let west: ServerProcess;
let ce: ReturnType<typeof api>;
let cw: ReturnType<typeof api>;

const backup = { shipIntervalMs: 100, snapshotEveryRecords: 20, retentionEveryMs: 3_600_000 };

before(async () => {
  root = tempDir();
  const va = path.join(root.dir, 'vault-east');
  const vb = path.join(root.dir, 'vault-west');
  east = await spawnServer({
    dataDir: path.join(root.dir, 'east'),
    config: { name: 'tenants-east', region: 'eastus', pairedRegion: 'westus', vault: { type: 'fs', path: va }, pairedVault: { type: 'fs', path: vb }, backup },
  });
  west = await spawnServer({
    dataDir: path.join(root.dir, 'west'),
    config: { name: 'tenants-west', region: 'westus', pairedRegion: 'eastus', vault: { type: 'fs', path: vb }, pairedVault: { type: 'fs', path: va }, backup },
  });
  ce = api(east.url, east.adminToken);
  cw = api(west.url, west.adminToken);
});

after(async () => {
  await east.stop();
  await west.stop();
  root.cleanup();
});

async function sql(c: ReturnType<typeof api>, db: string, text: string, args?: unknown[]) {
  const r = await c('POST', `/v1/databases/${db}/query`, args === undefined ? { sql: text } : { sql: text, args });
  assert.ok(r.status === 200, `${text}: ${JSON.stringify(r.body)}`);
  return r.body;
}

async function waitOp(c: ReturnType<typeof api>, id: string) {
  for (;;) {
    const op = (await c('GET', `/v1/operations/${id}`)).body;
    if (op.state !== 'Pending' && op.state !== 'InProgress') return op;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function shipped(c: ReturnType<typeof api>, db: string, txid: number): Promise<any> {
  for (let i = 0; i < 200; i++) {
    const p = (await c('GET', `/v1/databases/${db}/restorePoints`)).body;
    // The vault listing can show a batch a moment before the shipper records it as shipped.
    if (p.latest?.txid >= txid && p.backup.shippedTxid >= txid) return p;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`TXID ${txid} of ${db} never reached the vault`);
}

test('continuous backup and point-in-time restore to a TXID and to a time', async () => {
  await ce('PUT', '/v1/databases/shop', {});
  await sql(ce, 'shop', 'create table orders(id integer primary key, item text)');
  const marks: Array<{ txid: number; time: string; count: number }> = [];
  for (let i = 1; i <= 40; i++) {
    const w = await sql(ce, 'shop', 'insert into orders(item) values (?)', [`item-${i}`]);
    if (i % 10 === 0) {
      marks.push({ txid: w.txid, time: new Date().toISOString(), count: i });
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const points = await shipped(ce, 'shop', marks[3]!.txid);
  assert.equal(points.earliest.txid, 0);
  assert.equal(points.backup.unshippedRecords, 0);
  assert.equal(points.backup.vault.startsWith('fs:'), true);

  let r = await ce('PUT', '/v1/databases/shop-at-20', { createMode: 'PointInTimeRestore', sourceDatabaseName: 'shop', restorePointTxid: marks[1]!.txid });
  assert.equal(r.status, 202);
  let op = await waitOp(ce, r.body.id);
  assert.equal(op.state, 'Succeeded', JSON.stringify(op.error));
  assert.equal(op.result.restoredTxid, marks[1]!.txid);
  assert.deepEqual((await sql(ce, 'shop-at-20', 'select count(*) from orders')).rows, [[20]]);

  r = await ce('PUT', '/v1/databases/shop-at-time', { createMode: 'PointInTimeRestore', sourceDatabaseName: 'shop', restorePointInTime: marks[2]!.time });
  op = await waitOp(ce, r.body.id);
  assert.equal(op.state, 'Succeeded', JSON.stringify(op.error));
  assert.deepEqual((await sql(ce, 'shop-at-time', 'select count(*) from orders')).rows, [[30]]);
  assert.ok(Date.parse(op.result.restoredTime) <= Date.parse(marks[2]!.time));
  // The restored database is a database like any other: writable, and backed up itself.
  await sql(ce, 'shop-at-time', "insert into orders(item) values ('after restore')");

  r = await ce('PUT', '/v1/databases/bad', { createMode: 'PointInTimeRestore', sourceDatabaseName: 'shop', restorePointTxid: 10_000 });
  op = await waitOp(ce, r.body.id);
  assert.equal(op.state, 'Failed');
  assert.equal(op.error.code, 'TARGET_OUT_OF_RANGE');
  assert.equal((await ce('GET', '/v1/databases/bad')).status, 404, 'a failed restore creates nothing');
  r = await ce('PUT', '/v1/databases/bad', { createMode: 'PointInTimeRestore', sourceDatabaseName: 'nope' });
  assert.equal(r.body.error.code, 'NOT_FOUND');
  r = await ce('PUT', '/v1/databases/bad', { createMode: 'PointInTimeRestore', sourceDatabaseName: 'shop', restorePointInTime: 'yesterday' });
  assert.equal(r.body.error.code, 'INVALID_ARGUMENT');
});

test('a dropped database is restorable from its backups', async () => {
  await ce('PUT', '/v1/databases/gone', {});
  await sql(ce, 'gone', 'create table a(x)');
  const w = await sql(ce, 'gone', "insert into a values ('keep me')");
  await shipped(ce, 'gone', w.txid);
  await ce('DELETE', '/v1/databases/gone');
  const dropped = (await ce('GET', '/v1/restorableDroppedDatabases')).body.value.find((d: { name: string }) => d.name === 'gone');
  assert.ok(dropped.dbId.length === 32);
  const r = await ce('PUT', '/v1/databases/gone', { createMode: 'Restore', sourceDatabaseId: dropped.id });
  const op = await waitOp(ce, r.body.id);
  assert.equal(op.state, 'Succeeded', JSON.stringify(op.error));
  assert.deepEqual((await sql(ce, 'gone', 'select x from a')).rows, [['keep me']]);
});

test('retention policies are validated and stored', async () => {
  await ce('PUT', '/v1/databases/pol', {});
  let r = await ce('PUT', '/v1/databases/pol/backupShortTermRetentionPolicies/default', { retentionDays: 14 });
  assert.equal(r.body.retentionDays, 14);
  r = await ce('PUT', '/v1/databases/pol/backupShortTermRetentionPolicies/default', { retentionDays: 36 });
  assert.equal(r.body.error.code, 'INVALID_ARGUMENT');
  r = await ce('PUT', '/v1/databases/pol/backupLongTermRetentionPolicies/default', { weeklyRetention: 'P12W', yearlyRetention: 'P11Y', weekOfYear: 3 });
  assert.equal(r.body.error.code, 'INVALID_ARGUMENT');
  assert.match(r.body.error.message, /10 years/);
  r = await ce('PUT', '/v1/databases/pol/backupLongTermRetentionPolicies/default', { weeklyRetention: 'P12W', monthlyRetention: 'P12M', yearlyRetention: 'P5Y', weekOfYear: 3 });
  assert.deepEqual(r.body, { weeklyRetention: 'P12W', monthlyRetention: 'P12M', yearlyRetention: 'P5Y', weekOfYear: 3 });
  assert.equal((await ce('GET', '/v1/databases/pol/backupShortTermRetentionPolicies/default')).body.retentionDays, 14);
  // A weekly long-term backup is taken from the newest snapshot by the retention job.
  await sql(ce, 'pol', 'create table a(x)');
  await shipped(ce, 'pol', 1);
  r = await ce('POST', '/v1/backup/retention');
  assert.ok(r.body.ltrTaken >= 1, JSON.stringify(r.body));
  const ltr = (await ce('GET', '/v1/databases/pol/longTermRetentionBackups')).body.value;
  assert.ok(ltr.some((b: { kind: string }) => b.kind === 'weekly'));
  const restored = await ce('PUT', '/v1/databases/pol-ltr', { createMode: 'RestoreLongTermRetentionBackup', sourceDatabaseId: (await ce('GET', '/v1/databases/pol')).body.dbId, restorePointTxid: ltr[0].txid });
  assert.equal((await waitOp(ce, restored.body.id)).state, 'Succeeded');
});

test('a restore point across databases restores them as a set; backups are restore-tested', async () => {
  for (const n of ['catalog', 'ten-a', 'ten-b']) {
    await ce('PUT', `/v1/databases/${n}`, {});
    await sql(ce, n, 'create table t(v)');
    await sql(ce, n, "insert into t values ('before')");
  }
  let r = await ce('POST', '/v1/restorePoints', { name: 'release-1', databases: ['catalog', 'ten-a', 'ten-b'] });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const point = r.body;
  assert.equal(point.databases.length, 3);
  for (const n of ['catalog', 'ten-a', 'ten-b']) await sql(ce, n, "insert into t values ('after')");
  for (const d of point.databases) await shipped(ce, d.name, d.txid);
  assert.equal((await ce('POST', '/v1/restorePoints', { name: 'bad/name', databases: ['catalog'] })).status, 400);
  assert.equal((await ce('POST', '/v1/restorePoints', { name: 'x', databases: ['missing'] })).body.error.code, 'NOT_FOUND');
  assert.ok((await ce('GET', '/v1/restorePoints')).body.value.some((p: { name: string }) => p.name === 'release-1'));
  r = await ce('POST', '/v1/restorePoints/release-1/restore', { suffix: '-r1' });
  assert.equal(r.status, 202);
  for (const op of r.body.value) assert.equal((await waitOp(ce, op.id)).state, 'Succeeded');
  for (const n of ['catalog', 'ten-a', 'ten-b']) assert.deepEqual((await sql(ce, `${n}-r1`, 'select v from t')).rows, [['before']], n);

  r = await ce('POST', '/v1/databases/catalog/verifyBackup');
  const op = await waitOp(ce, r.body.id);
  assert.equal(op.state, 'Succeeded', JSON.stringify(op.error));
  const db = (await ce('GET', '/v1/databases/catalog')).body;
  assert.equal(db.lastVerifiedRestore.error, null);
  assert.ok(db.lastVerifiedRestore.txid >= 2);
  const m = (await ce('GET', '/metrics')).body as string;
  assert.match(m, /geodr_backup_last_verified_restore_seconds\{[^}]*database="catalog"/);
  assert.match(m, /geodr_backup_shipped_txid\{/);
});

test('geo-restore: with the first region gone, the paired region restores from its copy within the estimated loss', async () => {
  await ce('PUT', '/v1/databases/tenant-geo', {});
  await sql(ce, 'tenant-geo', 'create table t(k integer primary key)');
  let last = 0;
  for (let k = 1; k <= 30; k++) last = (await sql(ce, 'tenant-geo', 'insert into t values (?)', [k])).txid;
  const before = await shipped(ce, 'tenant-geo', last);
  // Wait until the paired region holds the copy: the last batch copied and nothing of the
  // database still queued or in flight. Copies finish in any order, so copiedTxid (the greatest
  // batch copied) can reach `last` while an earlier batch is still being copied; killed then,
  // the paired vault would keep a gap and its restore window would end before `last`.
  let geo: { copiedTxid: number; pending: number } = { copiedTxid: 0, pending: -1 };
  for (let i = 0; i < 200; i++) {
    geo = (await ce('GET', '/v1/databases/tenant-geo/restorePoints')).body.backup.geo;
    if (geo.copiedTxid >= last && geo.pending === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(geo.copiedTxid, last);
  assert.equal(geo.pending, 0, 'no copy of the database still under way');
  const dbId = (await ce('GET', '/v1/databases/tenant-geo')).body.dbId;
  // Region loss: the server is killed and its vault disappears.
  await east.kill();
  fs.renameSync(path.join(root.dir, 'vault-east'), path.join(root.dir, 'vault-east-lost'));
  const rec = (await cw('GET', '/v1/recoverableDatabases')).body.value.find((d: { dbId: string }) => d.dbId === dbId);
  assert.ok(rec !== undefined, 'the paired region lists the database as recoverable');
  assert.equal(rec.region, 'eastus');
  assert.equal(rec.restorePoints.latest.txid, last);
  assert.ok(rec.estimatedDataLossSeconds >= 0);
  const r = await cw('PUT', '/v1/databases/tenant-geo', { createMode: 'Recovery', sourceDatabaseId: dbId });
  const op = await waitOp(cw, r.body.id);
  assert.equal(op.state, 'Succeeded', JSON.stringify(op.error));
  assert.equal(op.result.restoredTxid, last, 'no acknowledged write that reached the copy was lost');
  assert.deepEqual((await sql(cw, 'tenant-geo', 'select count(*), max(k) from t')).rows, [[30, 30]]);
  assert.ok(before.backup.unshippedRecords === 0);
});
