// The SDK against a real server process: management calls, SQL and its value
// encoding, typed errors, and the retry rules (with a fake fetch for the cases a real
// server cannot stage on demand).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import fc from 'fast-check';
import { spawnServer, type ServerProcess } from '../server/testing/spawn.js';
import { GeodrApiError, GeodrClient, type Operation, type RestorePoints } from './index.js';

let sp: ServerProcess;
let admin: GeodrClient;

before(async () => {
  // Fast shipping so restore tests find their TXIDs in the vault quickly.
  sp = await spawnServer({ dataScope: { databases: ['app-db'] }, config: { backup: { shipIntervalMs: 100, snapshotEveryRecords: 20 } } });
  admin = new GeodrClient({ url: sp.url, token: sp.adminToken });
});

after(async () => {
  await sp?.stop();
  sp?.cleanup();
});

async function rejectsWith(p: Promise<unknown>, code: string, status?: number): Promise<GeodrApiError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof GeodrApiError, `expected GeodrApiError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (status !== undefined) assert.equal(e.status, status);
    return e;
  }
  assert.fail(`expected ${code}, but the call succeeded`);
}

describe('management', () => {
  test('server info, health and metrics', async () => {
    const info = await admin.server();
    assert.equal(info.name, 'test');
    assert.equal(info.defaultPool, 'default');
    assert.deepEqual(await admin.health(), { live: true, ready: true });
    assert.match(await admin.metrics(), /# HELP/);
  });

  test('pools: create, get, update, list, delete', async () => {
    const created = await admin.putPool('sdk-pool', { maxDatabases: 5 });
    assert.equal(created.name, 'sdk-pool');
    assert.equal(created.maxDatabases, 5);
    assert.equal(created.databaseCount, 0);
    assert.equal((await admin.getPool('sdk-pool')).maxDatabases, 5);

    const updated = await admin.updatePool('sdk-pool', { storageQuotaBytes: 10 << 20, maxConcurrentOperations: 3 });
    assert.equal(updated.maxDatabases, 5, 'unnamed settings are kept');
    assert.equal(updated.storageQuotaBytes, 10 << 20);
    assert.equal(updated.maxConcurrentOperations, 3);
    assert.equal((await admin.putPool('sdk-pool', { maxDatabases: 7 })).storageQuotaBytes, 10 << 20, 'put on an existing pool updates');

    const names = (await admin.listPools()).map((p) => p.name);
    assert.ok(names.includes('default') && names.includes('sdk-pool'), names.join());

    await rejectsWith(admin.updatePool('no-such-pool', { maxDatabases: 1 }), 'NOT_FOUND', 404);
    await rejectsWith(admin.deletePool('default'), 'CONFLICT', 409);
    await admin.deletePool('sdk-pool');
    await rejectsWith(admin.getPool('sdk-pool'), 'NOT_FOUND', 404);
  });

  test('databases: create, get, list, rename, move, delete, dropped', async () => {
    await admin.putPool('sdk-p2');
    const d = await admin.createDatabase('sdk-a', { pool: 'sdk-p2' });
    assert.equal(d.name, 'sdk-a');
    assert.equal(d.pool, 'sdk-p2');
    assert.equal(d.role, 'primary');
    assert.equal(d.createMode, 'Default');
    assert.equal((await admin.getDatabase('sdk-a')).id, d.id);
    assert.deepEqual((await admin.listDatabases({ pool: 'sdk-p2' })).map((x) => x.name), ['sdk-a']);
    await rejectsWith(admin.createDatabase('sdk-a'), 'CONFLICT', 409);
    await assert.rejects(admin.createDatabase('sdk-copy', { createMode: 'Copy' }), (err: unknown) => err instanceof TypeError && /createSecondary/.test(err.message));

    const renamed = await admin.renameDatabase('sdk-a', 'sdk-b');
    assert.equal(renamed.name, 'sdk-b');
    assert.equal(renamed.id, d.id, 'the id survives a rename');
    await rejectsWith(admin.getDatabase('sdk-a'), 'NOT_FOUND', 404);

    const moved = await admin.moveDatabase('sdk-b', 'default');
    assert.equal(moved.pool, 'default');
    assert.deepEqual(await admin.listDatabases({ pool: 'sdk-p2' }), []);

    const dropped = await admin.deleteDatabase('sdk-b');
    assert.equal(dropped.id, d.id);
    assert.equal(dropped.name, 'sdk-b');
    assert.ok((await admin.listDroppedDatabases()).some((x) => x.id === d.id));
    await rejectsWith(admin.getDatabase('sdk-b'), 'NOT_FOUND', 404);
  });

  test('verify runs as an operation that waitForOperation follows to Succeeded', async () => {
    await admin.createDatabase('sdk-verify');
    await admin.batch('sdk-verify', ['create table t (x)', 'insert into t values (1), (2), (3)']);
    const op = await admin.verifyDatabase('sdk-verify');
    assert.equal(op.kind, 'verifyDatabase');
    assert.equal(op.database, 'sdk-verify');
    const seen: Operation[] = [];
    const done = await admin.waitForOperation(op.id, { intervalMs: 20, timeoutMs: 10_000, onProgress: (o) => seen.push(o) });
    assert.equal(done.state, 'Succeeded');
    assert.equal(done.percentComplete, 100);
    assert.equal(done.result?.integrity, 'ok');
    assert.ok(seen.length >= 1);
    assert.equal(seen.at(-1)!.state, 'Succeeded');

    assert.ok((await admin.listOperations({ database: 'sdk-verify' })).some((o) => o.id === op.id));
    assert.ok((await admin.listOperations({ state: 'Succeeded' })).some((o) => o.id === op.id));
    assert.equal((await admin.getOperation(op.id)).state, 'Succeeded');
    await rejectsWith(admin.cancelOperation(op.id), 'CONFLICT', 409);
    await rejectsWith(admin.getOperation('no-such-op'), 'NOT_FOUND', 404);
  });

  test('waitForOperation gives up with TIMEOUT and honours an abort signal', async () => {
    // A fake server whose operation never finishes.
    const pending = { id: 'op1', kind: 'verifyDatabase', state: 'InProgress', percentComplete: 50 };
    const client = new GeodrClient({ url: 'http://geodr.invalid', fetch: () => Promise.resolve(Response.json(pending)) });
    const e = await rejectsWith(client.waitForOperation('op1', { intervalMs: 10, timeoutMs: 50 }), 'TIMEOUT');
    assert.equal(e.retryable, true);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('stop')), 30);
    await assert.rejects(client.waitForOperation('op1', { intervalMs: 10, signal: ac.signal }), /stop/);
  });

  test('a Failed or Cancelled operation rejects with its code and the operation', async () => {
    const failed = { id: 'f', kind: 'verifyDatabase', state: 'Failed', percentComplete: 40, database: 'd', error: { code: 'INTEGRITY_CHECK_FAILED', message: 'INTEGRITY_CHECK_FAILED: bad page (database d)' } };
    const client = new GeodrClient({ url: 'http://geodr.invalid', fetch: () => Promise.resolve(Response.json(failed)) });
    const e = await rejectsWith(client.waitForOperation('f'), 'INTEGRITY_CHECK_FAILED');
    assert.equal(e.message, 'bad page (database d)');
    assert.equal(e.operation?.id, 'f');
    assert.equal(e.context.database, 'd');
    const cancelled = new GeodrClient({ url: 'http://geodr.invalid', fetch: () => Promise.resolve(Response.json({ ...failed, state: 'Cancelled', error: null })) });
    assert.equal((await rejectsWith(cancelled.waitForOperation('f'), 'CANCELLED')).operation?.state, 'Cancelled');
  });
});

describe('backups and restores', () => {
  /** Polls restorePoints until the vault holds `txid`. */
  async function shipped(db: string, txid: number): Promise<RestorePoints> {
    for (let i = 0; i < 200; i++) {
      const p = await admin.restorePoints(db);
      // The vault listing can show a batch a moment before the shipper records it as shipped.
      if (p.latest !== null && p.latest.txid >= txid && p.backup.shippedTxid >= txid) return p;
      await delay(50);
    }
    assert.fail(`TXID ${txid} of ${db} never reached the vault`);
  }

  test('restorePoints, then point-in-time restore to a TXID and to a time', async () => {
    const d = await admin.createDatabase('sdk-shop');
    assert.equal(d.dbId.length, 32);
    assert.equal(d.retentionDays, 7);
    await admin.query('sdk-shop', 'create table orders (id integer primary key, item text)');
    const marks: Array<{ txid: number; time: Date }> = [];
    for (let i = 1; i <= 30; i++) {
      const w = await admin.query('sdk-shop', 'insert into orders (item) values (?)', [`item-${i}`]);
      if (i % 10 === 0) {
        marks.push({ txid: w.txid, time: new Date() });
        await delay(15);
      }
    }
    const points = await shipped('sdk-shop', marks[2]!.txid);
    assert.equal(points.database, 'sdk-shop');
    assert.equal(points.dbId, d.dbId);
    assert.equal(points.earliest?.txid, 0);
    assert.ok(!Number.isNaN(Date.parse(points.latest!.time)));
    assert.equal(points.backup.unshippedRecords, 0);
    assert.equal(points.backup.shippedTxid, marks[2]!.txid);
    assert.equal(points.backup.estimatedDataLossSeconds, 0);
    assert.equal(points.backup.geo, null, 'no paired vault');

    const op = await admin.restoreDatabase('sdk-shop-10', { mode: 'PointInTimeRestore', sourceDatabaseName: 'sdk-shop', txid: marks[0]!.txid });
    assert.equal(op.kind, 'restoreDatabase');
    assert.equal(op.database, 'sdk-shop-10');
    const done = await admin.waitForOperation(op.id, { intervalMs: 50, timeoutMs: 10_000 });
    assert.equal(done.result?.restoredTxid, marks[0]!.txid);
    assert.deepEqual((await admin.query('sdk-shop-10', 'select count(*), max(item) from orders')).rows, [[10, 'item-9']]);
    const restored = await admin.getDatabase('sdk-shop-10');
    assert.equal(restored.createMode, 'PointInTimeRestore');
    assert.notEqual(restored.dbId, d.dbId, 'a restored database has backups of its own');

    const byTime = await admin.restoreDatabase('sdk-shop-20', { mode: 'PointInTimeRestore', sourceDatabaseName: 'sdk-shop', time: marks[1]!.time });
    await admin.waitForOperation(byTime.id, { intervalMs: 50, timeoutMs: 10_000 });
    assert.deepEqual((await admin.query('sdk-shop-20', 'select count(*) from orders')).rows, [[20]]);

    // Out of range: the operation fails, and nothing is created.
    const far = await admin.restoreDatabase('sdk-shop-far', { mode: 'PointInTimeRestore', sourceDatabaseName: 'sdk-shop', txid: 1_000_000 });
    const e = await rejectsWith(admin.waitForOperation(far.id, { intervalMs: 50 }), 'TARGET_OUT_OF_RANGE');
    assert.equal(e.operation?.state, 'Failed');
    await rejectsWith(admin.getDatabase('sdk-shop-far'), 'NOT_FOUND', 404);

    await rejectsWith(admin.restoreDatabase('sdk-x', { mode: 'PointInTimeRestore', sourceDatabaseName: 'sdk-shop', txid: 1, time: new Date() }), 'INVALID_ARGUMENT', 400);
    await rejectsWith(admin.restoreDatabase('sdk-x', { mode: 'PointInTimeRestore', sourceDatabaseName: 'no-such-db' }), 'NOT_FOUND', 404);
    await rejectsWith(admin.restoreDatabase('sdk-shop-10', { mode: 'PointInTimeRestore', sourceDatabaseName: 'sdk-shop' }), 'CONFLICT', 409);
    await assert.rejects(admin.restoreDatabase('sdk-x', { mode: 'PointInTimeRestore', sourceDatabaseName: 'sdk-shop', time: new Date(NaN) }), RangeError);
    await assert.rejects(admin.createDatabase('sdk-x', { createMode: 'PointInTimeRestore' }), (err: unknown) => err instanceof TypeError && /restoreDatabase/.test(err.message));
    await assert.rejects(admin.restoreDatabase('sdk-x', { mode: 'Default' as never }), TypeError);
  });

  test('a dropped database restores by its id', async () => {
    await admin.createDatabase('sdk-gone');
    await admin.query('sdk-gone', 'create table a (x)');
    const w = await admin.query('sdk-gone', "insert into a values ('keep me')");
    await shipped('sdk-gone', w.txid);
    const dropped = await admin.deleteDatabase('sdk-gone');
    assert.equal(dropped.dbId.length, 32);
    assert.equal(dropped.retentionDays, 7);
    const listed = (await admin.listDroppedDatabases()).find((x) => x.id === dropped.id);
    assert.equal(listed?.dbId, dropped.dbId);
    const op = await admin.restoreDatabase('sdk-gone', { mode: 'Restore', sourceDatabaseId: dropped.id });
    await admin.waitForOperation(op.id, { intervalMs: 50, timeoutMs: 10_000 });
    assert.deepEqual((await admin.query('sdk-gone', 'select x from a')).rows, [['keep me']]);
  });

  test('short- and long-term retention; retention job; long-term backups and their restore', async () => {
    await admin.createDatabase('sdk-pol');
    assert.deepEqual(await admin.getShortTermRetention('sdk-pol'), { retentionDays: 7 });
    assert.deepEqual(await admin.setShortTermRetention('sdk-pol', 14), { retentionDays: 14 });
    assert.equal((await admin.getDatabase('sdk-pol')).retentionDays, 14);
    await rejectsWith(admin.setShortTermRetention('sdk-pol', 36), 'INVALID_ARGUMENT', 400);
    await rejectsWith(admin.setShortTermRetention('sdk-pol', 0), 'INVALID_ARGUMENT', 400);
    assert.deepEqual(await admin.getShortTermRetention('sdk-pol'), { retentionDays: 14 }, 'a refused value changes nothing');

    assert.deepEqual(await admin.getLongTermRetention('sdk-pol'), { weeklyRetention: null, monthlyRetention: null, yearlyRetention: null, weekOfYear: 1 });
    const policy = { weeklyRetention: 'P12W', monthlyRetention: 'P12M', yearlyRetention: 'P5Y', weekOfYear: 3 };
    assert.deepEqual(await admin.setLongTermRetention('sdk-pol', policy), policy);
    assert.deepEqual(await admin.getLongTermRetention('sdk-pol'), policy);
    await rejectsWith(admin.setLongTermRetention('sdk-pol', { yearlyRetention: 'P11Y' }), 'INVALID_ARGUMENT', 400);
    await rejectsWith(admin.setLongTermRetention('sdk-pol', { weeklyRetention: '12 weeks' }), 'INVALID_ARGUMENT', 400);
    assert.deepEqual(await admin.getLongTermRetention('sdk-pol'), policy);

    const w = await admin.query('sdk-pol', 'create table a (x)');
    await shipped('sdk-pol', w.txid);
    const r = await admin.runRetention();
    assert.equal(typeof r.deleted, 'number');
    assert.ok(r.ltrTaken >= 1, JSON.stringify(r));
    const backups = await admin.listLongTermBackups('sdk-pol');
    const weekly = backups.find((b) => b.kind === 'weekly');
    assert.ok(weekly !== undefined, JSON.stringify(backups));
    const op = await admin.restoreDatabase('sdk-pol-ltr', { mode: 'RestoreLongTermRetentionBackup', sourceDatabaseId: (await admin.getDatabase('sdk-pol')).dbId, txid: weekly.txid });
    assert.equal((await admin.waitForOperation(op.id, { intervalMs: 50, timeoutMs: 10_000 })).result?.restoredTxid, weekly.txid);
    await rejectsWith(admin.restoreDatabase('sdk-x', { mode: 'RestoreLongTermRetentionBackup', sourceDatabaseId: (await admin.getDatabase('sdk-pol')).dbId }), 'INVALID_ARGUMENT', 400);

    // {} removes the policy.
    assert.deepEqual(await admin.setLongTermRetention('sdk-pol', {}), { weeklyRetention: null, monthlyRetention: null, yearlyRetention: null, weekOfYear: 1 });
    assert.deepEqual(await admin.listRecoverableDatabases(), [], 'no paired region');
  });
});

describe('SQL', () => {
  before(async () => {
    await admin.createDatabase('sdk-sql');
    await admin.query('sdk-sql', 'create table kv (k text primary key, v)');
  });

  test('query with positional and named parameters; objects()', async () => {
    const ins = await admin.query('sdk-sql', 'insert into kv values (?, ?)', ['a', 1]);
    assert.equal(ins.rowsAffected, 1);
    assert.equal(typeof ins.lastInsertRowid, 'number');
    assert.ok(ins.txid > 0);
    await admin.query('sdk-sql', 'insert into kv values (:k, $v)', { k: 'b', v: 'two' });
    const r = await admin.query('sdk-sql', 'select k, v from kv where k in (?, ?) order by k', ['a', 'b']);
    assert.deepEqual(r.columns, ['k', 'v']);
    assert.deepEqual(r.types, ['TEXT', null]);
    assert.deepEqual(r.rows, [
      ['a', 1],
      ['b', 'two'],
    ]);
    assert.deepEqual(r.objects(), [
      { k: 'a', v: 1 },
      { k: 'b', v: 'two' },
    ]);
    assert.deepEqual((await admin.query('sdk-sql', 'select ? as t, ? as f', [true, false])).rows, [[1, 0]]);
  });

  test('batch is atomic', async () => {
    const rs = await admin.batch('sdk-sql', [{ sql: 'insert into kv values (?, ?)', params: ['c', 3] }, "insert into kv values ('d', 4)", 'select count(*) n from kv where k in (\'c\', \'d\')']);
    assert.equal(rs.length, 3);
    assert.deepEqual(rs[2]!.rows, [[2]]);
    const e = await rejectsWith(admin.batch('sdk-sql', ["insert into kv values ('e', 5)", "insert into kv values ('a', 0)"]), 'SQL_ERROR', 400);
    assert.equal(e.context.details?.statement, 1);
    assert.deepEqual((await admin.query('sdk-sql', "select count(*) from kv where k = 'e'")).rows, [[0]], 'nothing of a failed batch applies');
  });

  test('transactions commit and roll back', async () => {
    const tx = await admin.transaction('sdk-sql', { timeoutMs: 5000 });
    assert.ok(tx.expiresAt.getTime() > Date.now());
    await tx.query('insert into kv values (?, ?)', ['t1', 1]);
    await tx.batch([{ sql: 'insert into kv values (?, ?)', params: ['t2', 2] }]);
    assert.deepEqual((await tx.query("select count(*) from kv where k like 't%'")).rows, [[2]], 'the transaction sees its writes');
    const txid = await tx.commit();
    assert.equal(typeof txid, 'number');
    assert.deepEqual((await admin.query('sdk-sql', "select count(*) from kv where k like 't%'")).rows, [[2]]);
    await rejectsWith(tx.commit(), 'TRANSACTION_EXPIRED', 410);

    const rb = await admin.transaction('sdk-sql');
    await rb.query("insert into kv values ('r1', 1)");
    await rb.rollback();
    assert.deepEqual((await admin.query('sdk-sql', "select count(*) from kv where k = 'r1'")).rows, [[0]]);

    const read = await admin.transaction('sdk-sql', { mode: 'read' });
    assert.deepEqual((await read.query("select count(*) from kv where k like 't%'")).rows, [[2]]);
    await read.rollback();
  });

  test('int64, REAL, BLOB and text values round-trip exactly (intMode bigint)', async () => {
    const exact = new GeodrClient({ url: sp.url, token: sp.adminToken, intMode: 'bigint' });
    await exact.query('sdk-sql', 'create table vals (i integer, r real, b blob, t text)');
    await fc.assert(
      fc.asyncProperty(
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
        fc.double({ noNaN: true }).map((r) => (Object.is(r, -0) ? 0 : r)),
        fc.uint8Array({ maxLength: 64 }),
        fc.string({ unit: 'grapheme', maxLength: 16 }),
        async (i, r, b, t) => {
          const ins = await exact.query('sdk-sql', 'insert into vals values (?, ?, ?, ?)', [i, r, b, t]);
          assert.equal(typeof ins.lastInsertRowid, 'bigint');
          const got = await exact.query('sdk-sql', 'select i, r, b, t, typeof(i), typeof(r), typeof(b) from vals where rowid = ?', [ins.lastInsertRowid!]);
          assert.deepEqual(got.rows, [[i, r, b, t, 'integer', 'real', 'blob']]);
        },
      ),
      { numRuns: 60 },
    );
  });

  test("intMode number: safe integers as numbers, larger ones as bigint, integral REAL as number", async () => {
    const r = await admin.query('sdk-sql', 'select 42, ? , 2.0, 1.5, ?', [2n ** 62n, { $real: 3 }]);
    assert.deepEqual(r.rows, [[42, 2n ** 62n, 2, 1.5, 3]]);
    assert.deepEqual((await admin.query('sdk-sql', 'select typeof(?)', [{ $real: 3 }])).rows, [['real']], 'a tagged parameter passes through');
  });

  test('parameters SQLite cannot hold are refused before sending', async () => {
    await assert.rejects(admin.query('sdk-sql', 'select ?', [2n ** 63n]), RangeError);
    await assert.rejects(admin.query('sdk-sql', 'select ?', [NaN]), RangeError);
    await assert.rejects(admin.query('sdk-sql', 'select ?', [new Date() as never]), TypeError);
  });
});

describe('typed errors', () => {
  test('NOT_FOUND for an unknown database, with status 404 and context', async () => {
    const e = await rejectsWith(admin.getDatabase('no-such-db'), 'NOT_FOUND', 404);
    assert.equal(e.retryable, false);
    assert.equal(e.context.database, 'no-such-db');
    assert.doesNotMatch(e.message, /^NOT_FOUND/, 'the code is not repeated in the message');
    await rejectsWith(admin.query('no-such-db', 'select 1'), 'NOT_FOUND', 404);
  });

  test('SQL_ERROR names the SQLite code of a UNIQUE violation', async () => {
    await admin.createDatabase('sdk-err');
    await admin.query('sdk-err', 'create table u (x unique)');
    await admin.query('sdk-err', 'insert into u values (1)');
    const e = await rejectsWith(admin.query('sdk-err', 'insert into u values (1)'), 'SQL_ERROR', 400);
    assert.match(String(e.context.details?.sqliteCode), /^SQLITE_CONSTRAINT/);
    assert.equal(e.context.database, 'sdk-err');
    await rejectsWith(admin.query('sdk-err', "attach 'x.db' as x"), 'SQL_REFUSED', 403);
  });

  test('UNAUTHENTICATED with a bad token; FORBIDDEN outside a data token scope', async () => {
    await rejectsWith(new GeodrClient({ url: sp.url, token: 'not-a-real-token-0000' }).listDatabases(), 'UNAUTHENTICATED', 401);
    await rejectsWith(new GeodrClient({ url: sp.url }).server(), 'UNAUTHENTICATED', 401);

    await admin.createDatabase('app-db');
    await admin.createDatabase('other-db');
    const app = new GeodrClient({ url: sp.url, token: sp.dataToken });
    await app.query('app-db', 'create table t (x)');
    assert.deepEqual((await app.listDatabases()).map((d) => d.name), ['app-db']);
    const e = await rejectsWith(app.query('other-db', 'select 1'), 'FORBIDDEN', 403);
    assert.equal(e.context.database, 'other-db');
    await rejectsWith(app.listPools(), 'FORBIDDEN', 403);
  });
});

describe('retries', () => {
  type Step = 'refused' | 'reset' | 'busy' | 'ok';
  /** A fetch that plays `steps` in order and records each request's method. */
  function scripted(steps: Step[]): { fetch: typeof fetch; calls: string[] } {
    const calls: string[] = [];
    const failure = (code: string, message: string): TypeError => new TypeError('fetch failed', { cause: Object.assign(new Error(message), { code }) });
    const f: typeof fetch = (_url, init) => {
      calls.push(init?.method ?? 'GET');
      const step = steps[calls.length - 1] ?? 'ok';
      if (step === 'refused') return Promise.reject(failure('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:9'));
      if (step === 'reset') return Promise.reject(failure('UND_ERR_SOCKET', 'other side closed'));
      if (step === 'busy') return Promise.resolve(Response.json({ error: { code: 'BUSY', message: 'BUSY: wait', retryable: true } }, { status: 503 }));
      return Promise.resolve(Response.json({ columns: [], types: [], rows: [], rowsAffected: 1, lastInsertRowid: 1, txid: 9, value: [], name: 'x' }));
    };
    return { fetch: f, calls };
  }
  const client = (f: typeof fetch, retries = 3): GeodrClient => new GeodrClient({ url: 'http://geodr.invalid', token: 't', fetch: f, retries });

  test('a request that never reached the server is retried, even a write', async () => {
    const s = scripted(['refused', 'refused', 'ok']);
    assert.equal((await client(s.fetch).query('d', 'insert into t values (1)')).txid, 9);
    assert.deepEqual(s.calls, ['POST', 'POST', 'POST']);
  });

  test('a SQL write whose connection broke mid-request is not re-sent', async () => {
    const s = scripted(['reset', 'ok']);
    const e = await rejectsWith(client(s.fetch).query('d', 'insert into t values (1)'), 'UNAVAILABLE', 0);
    assert.equal(s.calls.length, 1);
    assert.equal(e.retryable, false, 'the outcome is unknown: blindly retrying could apply it twice');
    assert.equal(e.context.details?.outcomeUnknown, true);
    assert.match(e.message, /may or may not have been applied/);
  });

  test('GET, PUT and DELETE are retried after a broken connection', async () => {
    const get = scripted(['reset', 'reset', 'ok']);
    await client(get.fetch).listDatabases();
    assert.equal(get.calls.length, 3);
    const put = scripted(['reset', 'ok']);
    await client(put.fetch).putPool('p');
    assert.deepEqual(put.calls, ['PUT', 'PUT']);
  });

  test('retryable 503s are retried, except inside an interactive transaction', async () => {
    const s = scripted(['busy', 'ok']);
    await client(s.fetch).query('d', 'insert into t values (1)');
    assert.equal(s.calls.length, 2);
    const tx = scripted(['busy', 'ok']);
    await rejectsWith(client(tx.fetch).query('d', 'insert into t values (1)', undefined, 'tx-1'), 'BUSY', 503);
    assert.equal(tx.calls.length, 1);
  });

  test('gives up after `retries` attempts with UNAVAILABLE, retryable', async () => {
    const s = scripted(['refused', 'refused', 'refused']);
    const e = await rejectsWith(client(s.fetch, 2).server(), 'UNAVAILABLE', 0);
    assert.equal(e.retryable, true);
    assert.equal(s.calls.length, 3);
    assert.match(e.message, /ECONNREFUSED/);
  });

  // Last: it restarts the shared server.
  test('a GET succeeds against a server that comes back within the retry window', async () => {
    let attempts = 0;
    const counting: typeof fetch = (input, init) => {
      attempts++;
      return fetch(input, init);
    };
    const client = new GeodrClient({ url: sp.url, token: sp.adminToken, retries: 8, fetch: counting });
    await sp.stop();
    const pending = client.server();
    await delay(200);
    sp = await sp.restart();
    assert.equal((await pending).name, 'test');
    assert.ok(attempts >= 2, `${attempts} attempt(s)`);
  });
});
