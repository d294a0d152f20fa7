// The server as its users meet it: a real process on loopback, driven over HTTP.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { statementDeadlines } from '../engine/index.js';
import { api } from './testing/http.js';
import { spawnServer, type ServerProcess } from './testing/spawn.js';

let sp: ServerProcess;
let call: ReturnType<typeof api>;
let asData: ReturnType<typeof api>;

before(async () => {
  sp = await spawnServer({
    dataScope: { databases: ['shop'], pools: ['apps'] },
    // Transactions live 10 s by default here: a slow machine must not expire one mid-test; the expiry tests pass small lifetimes.
    config: { limits: { requestBytes: 64 * 1024, resultBytes: 256 * 1024, statementTimeoutMs: 500, transactionTimeoutMs: 10_000, writeWaitMs: 300, batchStatements: 50 } },
  });
  call = api(sp.url, sp.adminToken);
  asData = api(sp.url, sp.dataToken);
});
after(async () => {
  assert.equal(await sp.stop(), 0, 'clean drain exits 0');
  assert.doesNotMatch(sp.output(), new RegExp(`${sp.adminToken}|${sp.dataToken}`), 'no token in the logs');
  sp.cleanup();
});

async function sql(db: string, sqlText: string, args?: unknown[] | Record<string, unknown>, caller = call) {
  return caller('POST', `/v1/databases/${db}/query`, Array.isArray(args) ? { sql: sqlText, args } : args === undefined ? { sql: sqlText } : { sql: sqlText, named: args });
}

function rawRequest(method: string, route: string, body: string): Promise<{ status: number; body: any }> {  
  return new Promise((resolve, reject) => {
    const u = new URL(sp.url);
    const req = http.request({ host: u.hostname, port: u.port, method, path: route, headers: { authorization: `Bearer ${sp.adminToken}`, 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('management API', () => {
  test('pools: create, get, update, list, delete; limits enforced', async () => {
    let r = await call('PUT', '/v1/elasticPools/small', { maxDatabases: 2, maxConcurrentOperations: 1 });
    assert.equal(r.status, 201);
    assert.equal(r.body.maxDatabases, 2);
    r = await call('PUT', '/v1/elasticPools/small', { maxDatabases: 3 });
    assert.equal(r.status, 200);
    assert.equal(r.body.maxConcurrentOperations, 1, 'unchanged settings are kept');
    r = await call('PATCH', '/v1/elasticPools/nope', { maxDatabases: 3 });
    assert.equal(r.status, 404);
    assert.equal(r.body.error.code, 'NOT_FOUND');
    for (const n of ['a1', 'a2', 'a3']) assert.equal((await call('PUT', `/v1/databases/${n}`, { elasticPoolName: 'small' })).status, 201);
    r = await call('PUT', '/v1/databases/a4', { elasticPoolName: 'small' });
    assert.equal(r.status, 507);
    assert.equal(r.body.error.code, 'QUOTA_EXCEEDED');
    assert.equal((await call('GET', '/v1/databases/a4')).status, 404, 'nothing was created');
    r = await call('PATCH', '/v1/elasticPools/small', { maxDatabases: 1 });
    assert.equal(r.body.error.code, 'CONFLICT');
    r = await call('DELETE', '/v1/elasticPools/small');
    assert.equal(r.body.error.code, 'CONFLICT');
    for (const n of ['a1', 'a2', 'a3']) assert.equal((await call('DELETE', `/v1/databases/${n}`)).status, 200);
    assert.equal((await call('DELETE', '/v1/elasticPools/small')).status, 204);
    r = await call('GET', '/v1/elasticPools');
    assert.deepEqual(
      r.body.value.map((p: { name: string }) => p.name),
      ['default'],
    );
    assert.equal((await call('DELETE', '/v1/elasticPools/default')).body.error.code, 'CONFLICT');
  });

  test('databases: create, get, rename, move, delete (files kept as dropped)', async () => {
    await call('PUT', '/v1/elasticPools/apps', {});
    let r = await call('PUT', '/v1/databases/t1', {});
    assert.equal(r.status, 201);
    assert.equal(r.body.pool, 'default');
    assert.equal(r.body.role, 'primary');
    assert.equal(r.body.epoch, 1);
    assert.equal((await call('PUT', '/v1/databases/t1', {})).status, 200, 'the same create again is idempotent');
    assert.equal((await call('PUT', '/v1/databases/t1', { elasticPoolName: 'apps' })).body.error.code, 'CONFLICT');
    await sql('t1', 'create table k(v)');
    const w = await sql('t1', 'insert into k values (1)');
    r = await call('GET', '/v1/databases/t1');
    assert.equal(r.body.txid, w.body.txid);
    assert.match(r.body.checksum, /^[0-9a-f]{16}$/);
    assert.ok(r.body.sizeBytes > 0);
    assert.ok(Date.parse(r.body.lastWriteTime) > 0);
    r = await call('POST', '/v1/databases/t1/rename', { newName: 't2' });
    assert.equal(r.body.name, 't2');
    assert.equal((await call('GET', '/v1/databases/t1')).status, 404);
    assert.deepEqual((await sql('t2', 'select v from k')).body.rows, [[1]]);
    r = await call('PATCH', '/v1/databases/t2', { elasticPoolName: 'apps' });
    assert.equal(r.body.pool, 'apps');
    assert.equal((await call('PATCH', '/v1/databases/t2', { elasticPoolName: 'missing' })).body.error.code, 'NOT_FOUND');
    const id = r.body.id as string;
    r = await call('DELETE', '/v1/databases/t2');
    assert.equal(r.status, 200);
    assert.ok(fs.existsSync(path.join(sp.dataDir, 'dropped', id, 'db.sqlite')), 'the dropped database files are kept');
    r = await call('GET', '/v1/restorableDroppedDatabases');
    assert.ok(r.body.value.some((d: { id: string; name: string }) => d.id === id && d.name === 't2'));
    assert.equal((await sql('t2', 'select 1')).status, 404);
  });

  test('createMode: Secondary and Copy need a known source server; unknown modes are invalid; nothing is created', async () => {
    let r = await call('PUT', '/v1/databases/sec1', { createMode: 'Secondary' });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'INVALID_ARGUMENT');
    assert.match(r.body.error.message, /sourceServer and sourceDatabaseName/);
    r = await call('PUT', '/v1/databases/sec1', { createMode: 'Copy', sourceServer: 'nowhere', sourceDatabaseName: 'x' });
    assert.equal(r.status, 404);
    assert.match(r.body.error.message, /not a known peer/);
    r = await call('PUT', '/v1/databases/sec1', { createMode: 'Bogus' });
    assert.equal(r.body.error.code, 'INVALID_ARGUMENT');
    assert.equal((await call('GET', '/v1/databases/sec1')).status, 404);
  });

  test('bad names, unknown fields, malformed JSON and oversize bodies are refused and change nothing', async () => {
    const before = (await call('GET', '/v1/databases')).body.value.length;
    const badNames = ['..', 'a..b', '.hidden', 'x'.repeat(129), 'tempdb', 'v2', 'a/b', 'a\\b', 'a\u0000b', 'a\nb', '€uro', 'a b'];
    for (const n of badNames) {
      // node:http sends the path as given; fetch would resolve ".." (even %2E%2E) itself.
      const r = await rawRequest('PUT', `/v1/databases/${encodeURIComponent(n).replace(/\./g, '%2E')}`, '{}');
      assert.equal(r.status, 400, `name ${n}`);
      assert.equal(r.body.error.code, 'INVALID_ARGUMENT', `name ${n}`);
      assert.match(r.body.error.message, /database name/, `name ${n}`);
    }
    let r = await call('PUT', '/v1/databases/okname', { elasticPoolName: 'default', colour: 'red' });
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /colour/);
    r = await call('PUT', '/v1/databases/okname', undefined, { raw: '{"elasticPoolName": ' });
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /malformed JSON/);
    r = await call('PUT', '/v1/elasticPools/p9', { maxDatabases: 'ten' });
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /maxDatabases/);
    r = await call('POST', '/v1/databases/okname/query', { sql: `select '${'x'.repeat(70 * 1024)}'` });
    assert.equal(r.status, 413);
    assert.equal(r.body.error.code, 'LIMIT_EXCEEDED');
    r = await call('GET', '/v1/operations/nope');
    assert.equal(r.body.error.code, 'NOT_FOUND');
    r = await call('GET', '/v1/nothing-here');
    assert.equal(r.body.error.code, 'NOT_FOUND');
    assert.equal((await call('GET', '/v1/databases')).body.value.length, before);
    assert.equal((await call('GET', '/v1/elasticPools/p9')).status, 404);
  });

  test('auth: 401 without or with a wrong token, 403 outside a data token scope', async () => {
    await call('PUT', '/v1/databases/shop', {});
    await call('PUT', '/v1/databases/other', {});
    let r = await api(sp.url)('GET', '/v1/databases');
    assert.equal(r.status, 401);
    assert.match(r.body.error.message, /Authorization/);
    r = await api(sp.url, 'wrong-token-wrong-token')('GET', '/v1/databases');
    assert.equal(r.status, 401);
    r = await asData('PUT', '/v1/databases/x1', {});
    assert.equal(r.status, 403);
    assert.match(r.body.error.message, /admin/);
    assert.equal((await sql('shop', 'select 1', undefined, asData)).status, 200);
    r = await sql('other', 'select 1', undefined, asData);
    assert.equal(r.status, 403);
    assert.equal(r.body.error.code, 'FORBIDDEN');
    r = await asData('GET', '/v1/databases');
    assert.deepEqual(
      r.body.value.map((d: { name: string }) => d.name).filter((n: string) => n === 'shop' || n === 'other'),
      ['shop'],
    );
    assert.equal((await asData('GET', '/metrics')).status, 403);
  });

  test('verify runs as an operation that reports completion', async () => {
    await call('PUT', '/v1/databases/v1db', {});
    await sql('v1db', 'create table t(x)');
    const r = await call('POST', '/v1/databases/v1db/verify');
    assert.equal(r.status, 202);
    assert.equal(r.headers.get('location'), `/v1/operations/${r.body.id}`);
    let op = r.body;
    while (op.state === 'Pending' || op.state === 'InProgress') op = (await call('GET', `/v1/operations/${op.id}`)).body;
    assert.equal(op.state, 'Succeeded');
    assert.equal(op.percentComplete, 100);
    assert.equal(op.result.integrity, 'ok');
    assert.equal(op.result.checksum, (await call('GET', '/v1/databases/v1db')).body.checksum);
    assert.ok(Date.parse(op.endedAt) >= Date.parse(op.startedAt));
    assert.equal((await call('POST', `/v1/operations/${op.id}/cancel`)).body.error.code, 'CONFLICT');
    const list = (await call('GET', '/v1/operations?database=v1db')).body.value;
    assert.equal(list[0].id, op.id);
  });

  test('health, readiness, metrics and OpenAPI', async () => {
    assert.equal((await api(sp.url)('GET', '/healthz')).status, 200);
    assert.equal((await api(sp.url)('GET', '/readyz')).status, 200);
    const m = await call('GET', '/metrics');
    assert.equal(m.status, 200);
    for (const name of ['geodr_sql_statements_total', 'geodr_open_databases', 'geodr_database_log_bytes', 'geodr_database_checkpoints', 'geodr_operations']) {
      assert.match(m.body as string, new RegExp(name), name);
    }
    assert.match(m.body as string, /geodr_sql_statements_total\{[^}]*database="v1db"[^}]*kind="write"[^}]*\} \d+/);
    const o = await api(sp.url)('GET', '/openapi.json');
    assert.equal(o.body.openapi, '3.0.3');
    for (const p of ['/v1/databases/{db}', '/v1/elasticPools/{pool}', '/v1/operations/{id}', '/v1/databases/{db}/query', '/v1/databases/{db}/batch']) assert.ok(o.body.paths[p], p);
  });
});

describe('SQL endpoint', () => {
  test('statements with positional and named parameters; column names and declared types', async () => {
    await call('PUT', '/v1/databases/s1', {});
    assert.equal((await sql('s1', 'create table p(id integer primary key, name text, score real, data blob)')).status, 200);
    let r = await sql('s1', 'insert into p(name, score) values (?, ?)', ['ann', 1.5]);
    assert.equal(r.body.rowsAffected, 1);
    assert.equal(r.body.lastInsertRowid, 1);
    r = await sql('s1', 'insert into p(name, score) values (:n, @s)', { n: 'bob', '@s': 2.25 });
    assert.equal(r.status, 200);
    r = await sql('s1', 'select id, name, score, score * 2 as dbl from p order by id');
    assert.deepEqual(r.body.columns, ['id', 'name', 'score', 'dbl']);
    assert.deepEqual(r.body.types, ['INTEGER', 'TEXT', 'REAL', null]);
    assert.deepEqual(r.body.rows, [
      [1, 'ann', 1.5, { $real: 3 }],
      [2, 'bob', 2.25, 4.5],
    ]);
    r = await sql('s1', 'select ? + ?', [1]);
    assert.equal(r.body.error.code, 'SQL_ERROR');
    r = await sql('s1', 'selec 1');
    assert.equal(r.body.error.code, 'SQL_ERROR');
    assert.match(r.body.error.message, /syntax error/);
    r = await sql('s1', 'insert into p(id) values (1)');
    assert.equal(r.body.error.details.sqliteCode, 'SQLITE_CONSTRAINT_PRIMARYKEY');
    r = await sql('s1', 'select 1; select 2');
    assert.equal(r.body.error.code, 'SQL_ERROR');
  });

  test('BLOBs, 64-bit integers and REALs round-trip exactly', async () => {
    await call('PUT', '/v1/databases/s2', {});
    await sql('s2', 'create table v(i integer, r real, b blob, t text)');
    await fc.assert(
      fc.asyncProperty(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), fc.double({ noNaN: true }), fc.uint8Array({ maxLength: 300 }), fc.string(), async (i, real, blob, text) => {
        const enc = (x: bigint) => (x >= BigInt(Number.MIN_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : { $integer: x.toString() });
        const encReal = (x: number) => (!Number.isFinite(x) ? { $real: String(x) } : Number.isInteger(x) ? { $real: Object.is(x, -0) ? 0 : x } : x);
        await sql('s2', 'delete from v');
        const w = await sql('s2', 'insert into v values (?, ?, ?, ?)', [enc(i), encReal(real), { $blob: Buffer.from(blob).toString('base64') }, text]);
        assert.equal(w.status, 200, JSON.stringify(w.body));
        const r = await sql('s2', 'select i, r, b, t, typeof(i), typeof(r), typeof(b) from v');
        const [ri, rr, rb, rt, ti, tr, tb] = r.body.rows[0];
        assert.deepEqual(ri, enc(i));
        assert.deepEqual(rr, encReal(real));
        assert.equal(Buffer.from(rb.$blob, 'base64').equals(Buffer.from(blob)), true);
        assert.equal(rt, text);
        assert.deepEqual([ti, tr, tb], ['integer', 'real', 'blob']);
      }),
      { numRuns: 60 },
    );
  });

  test('a batch is atomic: a failing statement leaves nothing applied and is named', async () => {
    await call('PUT', '/v1/databases/s3', {});
    await sql('s3', 'create table a(x integer primary key)');
    let r = await call('POST', '/v1/databases/s3/batch', {
      statements: [{ sql: 'insert into a values (1)' }, { sql: 'insert into a values (?)', args: [2] }, { sql: 'insert into a values (1)' }],
    });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.details.statement, 2);
    assert.deepEqual((await sql('s3', 'select count(*) from a')).body.rows, [[0]]);
    r = await call('POST', '/v1/databases/s3/batch', { statements: [{ sql: 'insert into a values (1)' }, { sql: 'insert into a values (2)' }, { sql: 'select count(*) from a' }] });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.results[2].rows, [[2]]);
    assert.equal(r.body.results[0].txid, r.body.results[1].txid, 'one transaction, one TXID');
    r = await call('POST', '/v1/databases/s3/batch', { statements: [{ sql: 'begin' }, { sql: 'insert into a values (3)' }] });
    assert.equal(r.body.error.code, 'SQL_REFUSED');
    r = await call('POST', '/v1/databases/s3/batch', { statements: Array.from({ length: 51 }, () => ({ sql: 'select 1' })) });
    assert.equal(r.body.error.code, 'LIMIT_EXCEEDED');
  });

  test('interactive transactions: commit, rollback, timeout, and reads do not wait behind them', async () => {
    await call('PUT', '/v1/databases/s4', {});
    await sql('s4', 'create table a(x)');
    let r = await call('POST', '/v1/databases/s4/transactions', {});
    assert.equal(r.status, 201);
    const tx = r.body.transaction as string;
    await call('POST', '/v1/databases/s4/query', { sql: 'insert into a values (1)', transaction: tx });
    r = await call('POST', '/v1/databases/s4/query', { sql: 'select count(*) from a', transaction: tx });
    assert.deepEqual(r.body.rows, [[1]], 'the transaction sees its own write');
    r = await sql('s4', 'select count(*) from a');
    assert.deepEqual(r.body.rows, [[0]], 'others read the last committed state without waiting');
    r = await sql('s4', 'insert into a values (9)');
    assert.equal(r.body.error.code, 'BUSY', 'a write waits writeWaitMs for the open transaction, then gives up');
    r = await call('POST', `/v1/databases/s4/transactions/${tx}/commit`);
    assert.equal(typeof r.body.txid, 'number');
    assert.deepEqual((await sql('s4', 'select count(*) from a')).body.rows, [[1]]);
    assert.equal((await call('POST', `/v1/databases/s4/transactions/${tx}/commit`)).body.error.code, 'TRANSACTION_EXPIRED');

    const tx2 = (await call('POST', '/v1/databases/s4/transactions', {})).body.transaction as string;
    await call('POST', '/v1/databases/s4/query', { sql: 'insert into a values (2)', transaction: tx2 });
    await call('POST', `/v1/databases/s4/transactions/${tx2}/rollback`);
    assert.deepEqual((await sql('s4', 'select count(*) from a')).body.rows, [[1]]);

    const tx3 = (await call('POST', '/v1/databases/s4/transactions', { timeoutMs: 200 })).body.transaction as string;
    await call('POST', '/v1/databases/s4/query', { sql: 'insert into a values (3)', transaction: tx3 });
    await new Promise((res) => setTimeout(res, 400));
    r = await call('POST', '/v1/databases/s4/query', { sql: 'insert into a values (4)', transaction: tx3 });
    assert.equal(r.body.error.code, 'TRANSACTION_EXPIRED');
    assert.deepEqual((await sql('s4', 'select count(*) from a')).body.rows, [[1]], 'the expired transaction was rolled back');
    assert.equal((await sql('s4', 'insert into a values (5)')).status, 200, 'and the writer is free again');
  });

  test('deferred transactions become writers at their first write, unless the data moved; read transactions refuse writes', async () => {
    await call('PUT', '/v1/databases/s6', {});
    await sql('s6', 'create table a(x)');
    const q = (tx: string, s: string) => call('POST', '/v1/databases/s6/query', { sql: s, transaction: tx });
    let tx = (await call('POST', '/v1/databases/s6/transactions', { mode: 'deferred' })).body.transaction as string;
    assert.deepEqual((await q(tx, 'select count(*) from a')).body.rows, [[0]]);
    assert.equal((await sql('s6', 'insert into a values (1)')).status, 200, 'a deferred reader does not hold the writer');
    const r = await q(tx, 'insert into a values (2)');
    assert.equal(r.body.error.code, 'BUSY', 'its snapshot is stale: upgrading would lose the other write');
    assert.equal(r.body.error.details.sqliteCode, 'SQLITE_BUSY_SNAPSHOT');
    await call('POST', `/v1/databases/s6/transactions/${tx}/rollback`);
    tx = (await call('POST', '/v1/databases/s6/transactions', { mode: 'deferred' })).body.transaction as string;
    assert.deepEqual((await q(tx, 'select count(*) from a')).body.rows, [[1]]);
    assert.equal((await q(tx, 'insert into a values (3)')).status, 200);
    assert.equal((await sql('s6', 'insert into a values (4)')).body.error.code, 'BUSY', 'now it holds the writer');
    assert.equal((await call('POST', `/v1/databases/s6/transactions/${tx}/commit`)).status, 200);
    tx = (await call('POST', '/v1/databases/s6/transactions', { mode: 'read' })).body.transaction as string;
    assert.equal((await q(tx, 'insert into a values (5)')).body.error.code, 'READ_ONLY');
    await call('POST', `/v1/databases/s6/transactions/${tx}/rollback`);
    assert.deepEqual((await sql('s6', 'select x from a order by x')).body.rows, [[1], [3]]);
  });

  test('after a transaction expires, later statements on it fail too: nothing runs outside it', async () => {
    await call('PUT', '/v1/databases/s7', {});
    await sql('s7', 'create table a(x)');
    const tx = (await call('POST', '/v1/databases/s7/transactions', { timeoutMs: 150 })).body.transaction as string;
    await call('POST', '/v1/databases/s7/query', { sql: 'insert into a values (1)', transaction: tx });
    await new Promise((res) => setTimeout(res, 300));
    for (let i = 0; i < 3; i++) {
      const r = await call('POST', '/v1/databases/s7/query', { sql: 'insert into a values (2)', transaction: tx });
      assert.equal(r.body.error.code, 'TRANSACTION_EXPIRED');
    }
    assert.deepEqual((await sql('s7', 'select count(*) from a')).body.rows, [[0]]);
  });

  test('limits: result size and statement time give clear errors and roll back', async () => {
    await call('PUT', '/v1/databases/s5', {});
    await sql('s5', 'create table a(x)');
    let r = await sql('s5', "with recursive n(i) as (select 1 union all select i + 1 from n where i < 100000) select i, 'padding-padding-padding' from n");
    assert.equal(r.body.error.code, 'LIMIT_EXCEEDED');
    r = await sql('s5', 'with recursive n(i) as (select 1 union all select i + 1 from n) select i from n where i % 1000000 = 0');
    assert.equal(r.body.error.code, 'STATEMENT_TIMEOUT');
    r = await sql('s5', 'insert into a with recursive n(i) as (select 1 union all select i + 1 from n where i < 3000) select i from n returning x');
    assert.equal(r.status, 200);
    // SQLite does every insert before the first row comes back, so the row count stays small enough to finish
    // well inside the 500 ms statement deadline: 30,000 rows of 24-28 bytes are ~830 KB, over 3x the 256 KiB limit.
    r = await sql('s5', "insert into a with recursive n(i) as (select 1 union all select i + 1 from n where i < 30000) select 'padding-padding-padding' || i from n returning x");
    assert.equal(r.body.error.code, 'LIMIT_EXCEEDED');
    assert.deepEqual((await sql('s5', 'select count(*) from a')).body.rows, [[3000]], 'the oversize write was rolled back');
  });

  test('a statement that never yields a row is interrupted at its deadline, and nothing it did remains', async () => {
    // Each of these computes forever without producing a row, so only an interrupt inside
    // SQLite can end them: without one the server would never answer again.
    const forever = 'with recursive n(i) as (select 1 union all select i + 1 from n) select max(i) from n';
    assert.ok(statementDeadlines(), 'the deadline extension was not built (dist/native): these statements would never end');
    await call('PUT', '/v1/databases/s8', {});
    await sql('s8', 'create table a(x)');
    const before = (await sql('s8', 'insert into a values (1)')).body.txid;
    let r = await sql('s8', forever);
    assert.equal(r.body.error.code, 'STATEMENT_TIMEOUT', JSON.stringify(r.body));
    assert.match(r.body.error.message, /longer than 500 ms/);
    r = await sql('s8', `insert into a ${forever}`);
    assert.equal(r.body.error.code, 'STATEMENT_TIMEOUT', JSON.stringify(r.body));
    r = await call('POST', '/v1/databases/s8/batch', { statements: [{ sql: 'insert into a values (2)' }, { sql: `update a set x = (${forever})` }] });
    assert.equal(r.body.error.code, 'STATEMENT_TIMEOUT', JSON.stringify(r.body));
    assert.equal(r.body.error.details.statement, 1);
    // In an interactive transaction the interrupted write takes the transaction with it.
    const tx = (await call('POST', '/v1/databases/s8/transactions', {})).body.transaction as string;
    assert.equal((await call('POST', '/v1/databases/s8/query', { sql: 'insert into a values (3)', transaction: tx })).status, 200);
    r = await call('POST', '/v1/databases/s8/query', { sql: `delete from a where x < (${forever})`, transaction: tx });
    assert.equal(r.body.error.code, 'STATEMENT_TIMEOUT', JSON.stringify(r.body));
    await call('POST', `/v1/databases/s8/transactions/${tx}/rollback`);
    // Nothing was written, the writer is free, and the next statements run normally.
    const after = await sql('s8', 'select x from a');
    assert.deepEqual(after.body.rows, [[1]]);
    assert.equal(after.body.txid, before, 'no transaction was committed');
    assert.equal((await sql('s8', 'insert into a values (4)')).status, 200);
    assert.deepEqual((await sql('s8', 'pragma integrity_check')).body.rows, [['ok']]);
    assert.deepEqual((await sql('s8', 'select count(*) from (with recursive n(i) as (select 1 union all select i + 1 from n where i < 100000) select i from n)')).body.rows, [[100000]], 'a later statement is not interrupted');
    // A tenant cannot lift its own deadline.
    assert.equal((await sql('s8', 'select __geodr_deadline(0)')).body.error.code, 'SQL_REFUSED');
  });

  test('tenant isolation: nothing reaches a neighbour, a file, or the engine settings', async () => {
    await call('PUT', '/v1/databases/victim', {});
    await sql('victim', "create table secrets(s); insert into secrets values ('x')".split(';')[0]!);
    await sql('victim', "insert into secrets values ('top secret')");
    const victim = (await call('GET', '/v1/databases/victim')).body;
    const victimFile = path.join(sp.dataDir, 'databases', victim.id, 'db.sqlite');
    await call('PUT', '/v1/databases/attacker', {});
    const attempts = [
      `attach '${victimFile}' as v`,
      `ATTACH DATABASE 'file:${victimFile}?mode=ro' AS v`,
      `/* hi */ attach '${victimFile}' as v`,
      `vacuum into '${path.join(sp.dataDir, 'stolen.db')}'`,
      `select load_extension('/tmp/evil')`,
      'pragma journal_mode = delete',
      'pragma wal_autocheckpoint = 1',
      'pragma writable_schema = 1',
      'pragma locking_mode = exclusive',
      'pragma wal_checkpoint(truncate)',
      'select * from pragma_wal_checkpoint',
      'detach v',
    ];
    for (const s of attempts) {
      const r = await sql('attacker', s);
      assert.equal(r.status, 403, s);
      assert.equal(r.body.error.code, 'SQL_REFUSED', s);
    }
    assert.equal(fs.existsSync(path.join(sp.dataDir, 'stolen.db')), false);
    assert.deepEqual((await sql('attacker', 'pragma journal_mode')).body.rows, [['wal']], 'reading a setting is fine');
    assert.deepEqual((await sql('attacker', "select count(*) from pragma_database_list where name <> 'main'")).body.rows, [[0]]);
    assert.equal((await sql('attacker', 'select * from secrets')).body.error.code, 'SQL_ERROR', 'the neighbour table does not exist here');
    assert.deepEqual((await sql('victim', 'select s from secrets')).body.rows, [['top secret']]);
  });

  test('storage quota: a write past it fails whole, nothing partial', async () => {
    await call('PUT', '/v1/elasticPools/tiny', { storageQuotaBytes: 256 * 1024 });
    await call('PUT', '/v1/databases/q1', { elasticPoolName: 'tiny' });
    await sql('q1', 'create table a(x)');
    let r = await sql('q1', 'insert into a select randomblob(1000) from (with recursive n(i) as (select 1 union all select i + 1 from n where i < 100) select i from n)');
    assert.equal(r.status, 200);
    r = await sql('q1', 'insert into a select randomblob(1000) from (with recursive n(i) as (select 1 union all select i + 1 from n where i < 1000) select i from n)');
    assert.equal(r.status, 507);
    assert.equal(r.body.error.code, 'QUOTA_EXCEEDED');
    assert.deepEqual((await sql('q1', 'select count(*) from a')).body.rows, [[100]]);
    r = await call('PATCH', '/v1/elasticPools/tiny', { storageQuotaBytes: 4 << 20 });
    r = await sql('q1', 'insert into a select randomblob(1000) from (with recursive n(i) as (select 1 union all select i + 1 from n where i < 1000) select i from n)');
    assert.equal(r.status, 200, 'a raised quota applies at once');
    assert.ok((await call('GET', '/v1/elasticPools/tiny')).body.usedBytes > 1_000_000);
  });
});

test('state and operations survive a restart; a second server cannot take the data directory', async () => {
  await call('PUT', '/v1/databases/persist', {});
  await sql('persist', 'create table a(x)');
  await sql('persist', 'insert into a values (42)');
  const op = (await call('POST', '/v1/databases/persist/verify')).body;
  while ((await call('GET', `/v1/operations/${op.id}`)).body.state !== 'Succeeded') await new Promise((r) => setTimeout(r, 20));
  await assert.rejects(spawnServer({ dataDir: sp.dataDir }), /another server/);
  assert.equal(await sp.stop(), 0);
  sp = await sp.restart();
  call = api(sp.url, sp.adminToken);
  asData = api(sp.url, sp.dataToken);
  assert.deepEqual((await sql('persist', 'select x from a')).body.rows, [[42]]);
  assert.equal((await call('GET', `/v1/operations/${op.id}`)).body.state, 'Succeeded');
});
