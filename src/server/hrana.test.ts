// The libSQL remote protocol as @libsql/client meets it: a real server on loopback,
// driven by the unmodified client, plus raw pipeline requests for what it never sends.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient, LibsqlError, type Client } from '@libsql/client';
import fc from 'fast-check';
import { isGeodrError } from '../errors.js';
import { ServerConfigSchema } from './config.js';
import { HranaEndpoint } from './hrana.js';
import { GeodrServer } from './server.js';
import { SqlSession } from './sql.js';

const ADMIN = 'hrana-admin-token-0123456789';
const DATA = 'hrana-data-token-0123456789';

let dir: string;
let server: GeodrServer;
let client: Client;
let big: Client;

function connect(db: string, opts: { token?: string; intMode?: 'number' | 'bigint' } = {}): Client {
  return createClient({ url: `${server.url}/v1/databases/${db}/`, authToken: opts.token ?? ADMIN, intMode: opts.intMode ?? 'number' });
}

// The response shapes the tests read; one loose Result stands for every request's.
interface Err {
  message: string;
  code: string;
}
interface Result {
  cols: Array<{ name: string; decltype: string | null }>;
  rows: unknown[][];
  affected_row_count: number;
  last_insert_rowid: string | null;
  query_duration_ms: number;
  step_results: Array<Result | null>;
  step_errors: Array<Err | null>;
  params: Array<{ name: string | null }>;
  is_explain: boolean;
  is_readonly: boolean;
}
type Outcome = { type: 'ok'; response: { type: string; result: Result; is_autocommit: boolean } } | { type: 'error'; error: Err };
interface Body {
  baton: string | null;
  base_url: string | null;
  results: Outcome[];
  /** Set on HTTP errors (the shape libSQL clients read: {message, code}). */
  message?: string;
  code?: string;
}
interface Reply {
  status: number;
  body: Body;
}

async function pipe(db: string, body: unknown, opts: { token?: string; version?: 2 | 3 } = {}): Promise<Reply> {
  const r = await fetch(`${server.url}/v1/databases/${db}/v${opts.version ?? 3}/pipeline`, {
    method: 'POST',
    headers: { authorization: `Bearer ${opts.token ?? ADMIN}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: r.status, body: (await r.json()) as Body };
}

function ok(r: Reply | Body, i: number): { type: string; result: Result; is_autocommit: boolean } {
  const o = ('results' in r ? r : r.body).results[i]!;
  if (o.type !== 'ok') assert.fail(`request ${i} failed: ${o.error.code} ${o.error.message}`);
  return o.response;
}

function err(r: Reply, i: number): Err {
  const o = r.body.results[i]!;
  if (o.type !== 'error') assert.fail(`request ${i} succeeded`);
  return o.error;
}

/** 'ok' or 'CODE message' per request. */
const outcomes = (r: Reply): string[] => r.body.results.map((o) => (o.type === 'ok' ? 'ok' : `${o.error.code} ${o.error.message}`));

const text = (sql: string, args: unknown[] = []): unknown => ({ type: 'execute', stmt: { sql, args } });
const int = (n: number | bigint): unknown => ({ type: 'integer', value: String(n) });

async function rejects(p: Promise<unknown>, code: string, message?: RegExp): Promise<LibsqlError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof LibsqlError, `expected a LibsqlError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (message !== undefined) assert.match(e.message, message);
    return e;
  }
  assert.fail(`expected ${code}`);
}

before(async () => {
  dir = fs.mkdtempSync(path.join(tmpdir(), 'geodr-hrana-'));
  const config = ServerConfigSchema.parse({
    dataDir: dir,
    port: 0,
    logLevel: 'silent',
    tokens: [
      { name: 'admin', secret: ADMIN, role: 'admin' },
      { name: 'app', secret: DATA, role: 'data', databases: ['h', 'h2'] },
    ],
  });
  server = await GeodrServer.start(config);
  for (const db of ['h', 'h2']) {
    const r = await fetch(`${server.url}/v1/databases/${db}`, { method: 'PUT', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(r.status, 201);
  }
  client = connect('h');
  big = connect('h', { intMode: 'bigint' });
});

after(async () => {
  client.close();
  big.close();
  await server.shutdown();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('@libsql/client over HTTP', () => {
  test('execute: create, insert with positional and named args, select back', async () => {
    await client.execute('create table people (id integer primary key, name text not null, age integer)');
    let r = await client.execute({ sql: 'insert into people (name, age) values (?, ?)', args: ['ada', 36] });
    assert.equal(r.rowsAffected, 1);
    assert.equal(r.lastInsertRowid, 1n);
    r = await client.execute({ sql: 'insert into people (name, age) values (:name, @age)', args: { name: 'grace', age: 85 } });
    assert.equal(r.lastInsertRowid, 2n);
    await client.execute({ sql: 'insert into people (name, age) values ($name, ?2)', args: { $name: 'alan', 2: 41 } });
    r = await client.execute({ sql: 'select id, name, age, age + 1 as next from people where age > ? order by id', args: [0] });
    assert.deepEqual(r.columns, ['id', 'name', 'age', 'next']);
    assert.deepEqual(r.columnTypes, ['INTEGER', 'TEXT', 'INTEGER', '']);
    assert.deepEqual(
      r.rows.map((row) => [row.id, row.name, row.age, row.next]),
      [
        [1, 'ada', 36, 37],
        [2, 'grace', 85, 86],
        [3, 'alan', 41, 42],
      ],
    );
    assert.equal(r.rows[0]![1], 'ada', 'rows index by position too');
  });

  test('integers, floats, text and blobs round-trip exactly (property)', async () => {
    await big.execute('create table vals (k integer, x)');
    const value = fc.oneof(
      fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }),
      fc.constantFrom(-(1n << 63n), (1n << 63n) - 1n, 0n, 9007199254740993n),
      fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => (Object.is(d, -0) ? 0 : d)),
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.uint8Array({ maxLength: 64 }),
      fc.constant(null),
    );
    let k = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(value, { minLength: 1, maxLength: 12 }), async (values) => {
        const key = ++k;
        // A write batch repeats one statement, so the client also sends store_sql/sql_id.
        await big.batch(
          values.map((v) => ({ sql: 'insert into vals (k, x) values (?, ?)', args: [key, v] })),
          'write',
        );
        const r = await big.execute({ sql: 'select x from vals where k = :k order by rowid', args: { k: key } });
        const got = r.rows.map((row) => (row.x instanceof ArrayBuffer ? new Uint8Array(row.x) : row.x));
        assert.deepEqual(got, values.map((v) => (v instanceof Uint8Array ? new Uint8Array(v) : v)));
      }),
      { numRuns: 60 },
    );
  });

  test('batch write is atomic: a failing statement applies nothing and surfaces', async () => {
    await client.execute('create table uniq (a integer unique)');
    const e = await rejects(
      client.batch(['insert into uniq values (1)', 'insert into uniq values (2)', 'insert into uniq values (1)', 'insert into uniq values (3)'], 'write'),
      'SQLITE_CONSTRAINT_UNIQUE',
      /UNIQUE constraint failed/,
    );
    assert.equal((e as LibsqlError & { statementIndex?: number }).statementIndex, 2);
    assert.equal((await client.execute('select count(*) as n from uniq')).rows[0]!.n, 0);
    const rs = await client.batch(['insert into uniq values (1)', { sql: 'insert into uniq values (?)', args: [2] }, 'select a from uniq order by a'], 'write');
    assert.equal(rs.length, 3);
    assert.deepEqual(
      rs[2]!.rows.map((r) => r.a),
      [1, 2],
    );
    const reads = await client.batch(['select count(*) as n from uniq'], 'read');
    assert.equal(reads[0]!.rows[0]!.n, 2);
  });

  test('interactive transactions: commit, rollback, and read-only', async () => {
    await client.execute('create table acct (id integer primary key, balance integer)');
    const tx = await client.transaction('write');
    await tx.execute({ sql: 'insert into acct values (?, ?)', args: [1, 100] });
    await tx.execute('update acct set balance = balance - 30 where id = 1');
    assert.equal((await tx.execute('select balance from acct')).rows[0]!.balance, 70, 'the transaction sees its own writes');
    assert.equal((await client.execute('select count(*) as n from acct')).rows[0]!.n, 0, 'others do not, before commit');
    await tx.commit();
    assert.equal(tx.closed, true);
    assert.equal((await client.execute('select balance from acct')).rows[0]!.balance, 70);

    const tx2 = await client.transaction('write');
    await tx2.batch(['update acct set balance = 0', 'insert into acct values (2, 5)']);
    assert.equal((await tx2.execute('select count(*) as n from acct')).rows[0]!.n, 2);
    await tx2.rollback();
    const after = await client.execute('select id, balance from acct');
    assert.deepEqual(
      after.rows.map((r) => [r.id, r.balance]),
      [[1, 70]],
    );

    const ro = await client.transaction('read');
    assert.equal((await ro.execute('select balance from acct')).rows[0]!.balance, 70);
    await rejects(ro.execute('insert into acct values (3, 1)'), 'READ_ONLY');
    await ro.commit();

    // A failed statement leaves the transaction open and usable.
    const tx3 = await client.transaction('write');
    await rejects(tx3.execute('insert into acct values (1, 0)'), 'SQLITE_CONSTRAINT_PRIMARYKEY');
    await tx3.execute('insert into acct values (4, 4)');
    await tx3.commit();
    assert.equal((await client.execute('select count(*) as n from acct')).rows[0]!.n, 2);
  });

  test('executeMultiple runs a sequence and stops at the first error', async () => {
    await client.executeMultiple(`
      create table seq (a text); -- a comment; with a semicolon
      insert into seq values ('x;y');
      insert into seq values ('z');
    `);
    assert.deepEqual(
      (await client.execute('select a from seq order by rowid')).rows.map((r) => r.a),
      ['x;y', 'z'],
    );
    await rejects(client.executeMultiple(`insert into seq values ('1'); insert into nope values (1); insert into seq values ('2')`), 'SQLITE_ERROR', /no such table/);
    assert.deepEqual(
      (await client.execute('select a from seq order by rowid')).rows.map((r) => r.a),
      ['x;y', 'z', '1'],
    );
  });

  test('errors carry their codes, and the client keeps working afterwards', async () => {
    await rejects(client.execute('selec 1'), 'SQLITE_ERROR', /syntax error/);
    await client.execute('create table once (v text primary key)');
    await client.execute("insert into once values ('a')");
    await rejects(client.execute("insert into once values ('a')"), 'SQLITE_CONSTRAINT_PRIMARYKEY');
    await rejects(client.execute("attach database '/tmp/x.db' as x"), 'SQL_REFUSED', /ATTACH is not allowed/);
    await rejects(client.execute('pragma journal_mode = delete'), 'SQL_REFUSED');
    // The guard's own refusals carry geodr's code: SQLite never saw the text.
    await rejects(client.execute('select 1; select 2'), 'SQL_ERROR', /expected one statement/);
    await rejects(client.execute({ sql: 'select ?', args: [1, 2] }), 'SQLITE_RANGE');
    assert.equal((await client.execute('select 1 as one')).rows[0]!.one, 1);
  });

  test('concurrent requests and overlapping transactions', async () => {
    await client.execute('create table conc (v integer)');
    await Promise.all(Array.from({ length: 20 }, (_, i) => client.execute({ sql: 'insert into conc values (?)', args: [i] })));
    assert.equal((await client.execute('select count(*) as n from conc')).rows[0]!.n, 20);

    // The second writer waits for the first to commit, then sees its write.
    const t1 = await client.transaction('write');
    await t1.execute('insert into conc values (100)');
    const t2 = await client.transaction('write');
    const second = t2.execute('select count(*) as n from conc');
    await new Promise((r) => setTimeout(r, 50));
    await t1.commit();
    assert.equal((await second).rows[0]!.n, 21);
    // Abandoning a transaction closes its stream, which rolls it back and frees the writer.
    await t2.execute('insert into conc values (200)');
    t2.close();
    await client.execute('insert into conc values (300)');
    assert.deepEqual(
      (await client.execute('select v from conc where v >= 100 order by v')).rows.map((r) => r.v),
      [100, 300],
    );
  });

  test('a wrong token is refused', async () => {
    const bad = connect('h', { token: 'not-a-token-0123456789' });
    try {
      // The client surfaces the server's own code and message for HTTP-level errors.
      await rejects(bad.execute('select 1'), 'UNAUTHENTICATED', /unknown token/);
    } finally {
      bad.close();
    }
    const data = connect('h', { token: DATA });
    try {
      assert.equal((await data.execute('select 2 as two')).rows[0]!.two, 2, 'a data token for the database works');
    } finally {
      data.close();
    }
  });
});

describe('Hrana pipeline protocol', () => {
  test('a stream spans requests; its baton is single-use and bound to database and token', async () => {
    await client.execute('create table st (v integer)');
    let r = await pipe('h', { requests: [text('begin immediate'), text('insert into st values (1)')] });
    assert.equal(r.status, 200);
    assert.equal(r.body.base_url, null);
    assert.deepEqual(outcomes(r), ['ok', 'ok']);
    const b1 = r.body.baton!;
    assert.match(b1, /^[A-Za-z0-9_-]{32}$/);

    r = await pipe('h', { baton: b1, requests: [{ type: 'get_autocommit' }, text('select count(*) from st')] });
    assert.equal(ok(r, 0).is_autocommit, false);
    assert.deepEqual(ok(r, 1).result.rows, [[int(1)]], 'the open transaction sees its insert');
    const b2 = r.body.baton!;
    assert.notEqual(b2, b1);

    r = await pipe('h', { baton: b1, requests: [] });
    assert.equal(r.status, 410, 'a used baton stops working');
    assert.equal(r.body.code, 'TRANSACTION_EXPIRED');
    assert.equal((await pipe('h2', { baton: b2, requests: [] })).status, 410, 'not for another database');
    assert.equal((await pipe('h', { baton: b2, requests: [] }, { token: DATA })).status, 410, 'not for another token');

    r = await pipe('h', { baton: b2, requests: [text('commit'), { type: 'get_autocommit' }, { type: 'close' }] });
    assert.deepEqual(outcomes(r), ['ok', 'ok', 'ok']);
    assert.equal(ok(r, 1).is_autocommit, true);
    assert.equal(r.body.baton, null, 'a closed stream gets no baton');
    assert.equal((await client.execute('select count(*) as n from st')).rows[0]!.n, 1);
  });

  test('malformed bodies are 400; a malformed request fails alone', async () => {
    for (const [body, field] of [
      ['[1]', /body must be a JSON object/],
      [{ requests: 'x' }, /requests must be an array/],
      [{ baton: 5, requests: [] }, /baton must be a string/],
    ] as const) {
      const r = await pipe('h', body);
      assert.equal(r.status, 400);
      assert.equal(r.body.code, 'INVALID_ARGUMENT');
      assert.match(r.body.message ?? '', field);
    }
    const r = await pipe('h', {
      requests: [
        { type: 'frobnicate' },
        { type: 'execute', stmt: { args: [] } },
        text('select ?', [{ type: 'integer', value: 1 }]),
        text('select ?', [{ type: 'blob', base64: '!!' }]),
        text('select ?', [{ type: 'integer', value: '9223372036854775808' }]),
        { type: 'execute', stmt: { sql: 'select 1', sql_id: 1 } },
        text('select ?', [{ type: 'blob', base64: 'AAE' }]),
        { type: 'close' },
        text('select 1'),
      ],
    });
    assert.equal(r.status, 200);
    const errs = outcomes(r);
    assert.match(errs[0]!, /^INVALID_ARGUMENT .*requests\[0\]\.type unknown request type "frobnicate"/);
    assert.match(errs[1]!, /requests\[1\]\.stmt needs exactly one of "sql" and "sql_id"/);
    assert.match(errs[2]!, /requests\[2\]\.stmt\.args\[0\]\.value must be a string of decimal digits/);
    assert.match(errs[3]!, /requests\[3\]\.stmt\.args\[0\]\.base64 must be base64/);
    assert.match(errs[4]!, /outside the 64-bit integer range/);
    assert.match(errs[5]!, /needs exactly one/);
    assert.deepEqual(ok(r, 6).result.rows, [[{ type: 'blob', base64: 'AAE=' }]], 'unpadded base64 is accepted');
    assert.equal(errs[7], 'ok');
    assert.match(errs[8]!, /the stream is closed/);
    assert.equal(r.body.baton, null);
  });

  test('batch conditions: ok, error, not, and, or, is_autocommit', async () => {
    const step = (sql: string, condition?: unknown): unknown => ({ stmt: { sql }, ...(condition === undefined ? {} : { condition }) });
    const r = await pipe('h', {
      requests: [
        {
          type: 'batch',
          batch: {
            steps: [
              step('select 0'),
              step('select nope'),
              step('select 2', { type: 'error', step: 1 }),
              step('select 3', { type: 'and', conds: [{ type: 'ok', step: 0 }, { type: 'not', cond: { type: 'ok', step: 1 } }] }),
              step('select 4', { type: 'or', conds: [{ type: 'ok', step: 1 }, { type: 'ok', step: 2 }] }),
              step('select 5', { type: 'ok', step: 1 }),
              step('select 6', { type: 'ok', step: 5 }),
              step('select 7', { type: 'is_autocommit' }),
              step('select 8', { type: 'not', cond: { type: 'error', step: 5 } }),
            ],
          },
        },
        { type: 'batch', batch: { steps: [step('select 1', { type: 'ok', step: 0 })] } },
        { type: 'close' },
      ],
    });
    const res = ok(r, 0).result;
    const ran = res.step_results.map((x, i) => (x === null ? (res.step_errors[i] === null ? 'skip' : 'error') : (x.rows[0]![0] as { value: string }).value));
    assert.deepEqual(ran, ['0', 'error', '2', '3', '4', 'skip', 'skip', '7', '8']);
    assert.equal(res.step_errors[1]?.code, 'SQLITE_ERROR');
    assert.equal(res.step_results.length, 9);
    assert.equal(res.step_errors.length, 9);
    assert.match(err(r, 1).message, /condition\.step must be the index of an earlier step/);

    const v2 = await pipe('h', { requests: [{ type: 'get_autocommit' }, { type: 'batch', batch: { steps: [step('select 1'), step('select 1', { type: 'is_autocommit' })] } }, { type: 'close' }] }, { version: 2 });
    assert.match(err(v2, 0).message, /protocol version 3/);
    assert.match(err(v2, 1).message, /is_autocommit needs protocol version 3/);
  });

  test('execute results: columns, want_rows, numbered and named parameters', async () => {
    const r = await pipe('h', {
      requests: [
        text('select ?2 as b, ?1 as a, ?2 as again', [{ type: 'text', value: 'one' }, { type: 'float', value: 2 }]),
        { type: 'execute', stmt: { sql: 'select :a, @b, $c, ?', named_args: [{ name: ':a', value: int(1) }, { name: 'b', value: { type: 'null' } }, { name: '$c', value: { type: 'text', value: 'c' } }], args: [] } },
        { type: 'execute', stmt: { sql: 'select id from people', want_rows: false } },
        text("update people set age = age where name = 'ada'"),
        text('select 1e999'),
        { type: 'close' },
      ],
    });
    assert.equal(err(r, 4).code, 'UNSUPPORTED', 'JSON has no Infinity');
    const [a, b, c, d] = [0, 1, 2, 3].map((i) => ok(r, i).result) as [Result, Result, Result, Result];
    assert.deepEqual(a.cols, [
      { name: 'b', decltype: null },
      { name: 'a', decltype: null },
      { name: 'again', decltype: null },
    ]);
    assert.deepEqual(a.rows, [[{ type: 'float', value: 2 }, { type: 'text', value: 'one' }, { type: 'float', value: 2 }]]);
    assert.deepEqual(b.rows, [[int(1), { type: 'null' }, { type: 'text', value: 'c' }, { type: 'null' }]], 'unbound parameters are NULL');
    assert.deepEqual(c.rows, []);
    assert.deepEqual(c.cols, [{ name: 'id', decltype: 'INTEGER' }]);
    assert.equal(d.affected_row_count, 1);
    assert.equal(typeof d.last_insert_rowid, 'string');
    assert.equal(typeof a.query_duration_ms, 'number');
  });

  test('store_sql, close_sql, sequence and describe', async () => {
    let r = await pipe('h', {
      requests: [
        { type: 'store_sql', sql_id: 7, sql: 'select name from people where id = ?' },
        { type: 'execute', stmt: { sql_id: 7, args: [int(2)] } },
        { type: 'store_sql', sql_id: 7, sql: 'select 1' },
        { type: 'store_sql', sql_id: 8, sql: 'create table sq (a); insert into sq values (1); insert into sq values (2)' },
        { type: 'sequence', sql_id: 8 },
        { type: 'describe', sql: 'select id, name as n, :x, ?, ?4 from people where age > :x' },
        { type: 'describe', sql: 'insert into people (name) values (?)' },
        { type: 'describe', sql: 'explain query plan select * from people' },
        { type: 'describe', sql: 'select * from missing' },
        { type: 'close_sql', sql_id: 7 },
        { type: 'execute', stmt: { sql_id: 7 } },
      ],
    });
    assert.deepEqual(ok(r, 1).result.rows, [[{ type: 'text', value: 'grace' }]]);
    assert.match(err(r, 2).message, /sql_id 7 is already in use/);
    ok(r, 4);
    assert.deepEqual(ok(r, 5).result, {
      params: [{ name: ':x' }, { name: null }, { name: null }, { name: '?4' }],
      cols: [
        { name: 'id', decltype: 'INTEGER' },
        { name: 'n', decltype: 'TEXT' },
        { name: ':x', decltype: null },
        { name: '?', decltype: null },
        { name: '?4', decltype: null },
      ],
      is_explain: false,
      is_readonly: true,
    });
    assert.deepEqual(ok(r, 6).result, { params: [{ name: null }], cols: [], is_explain: false, is_readonly: false });
    assert.equal(ok(r, 7).result.is_explain, true);
    assert.deepEqual(
      ok(r, 7).result.cols.map((c) => c.name),
      ['id', 'parent', 'notused', 'detail'],
    );
    assert.match(err(r, 8).message, /no such table: missing/);
    ok(r, 9);
    assert.match(err(r, 10).message, /sql_id 7 is not stored on this stream/);
    r = await pipe('h', { baton: r.body.baton, requests: [text('select count(*) from sq'), { type: 'close' }] });
    assert.deepEqual(ok(r, 0).result.rows, [[int(2)]]);
  });

  test('limits: batch steps and pipeline length', async () => {
    const n = server.config.limits.batchStatements + 1;
    let r = await pipe('h', { requests: [{ type: 'batch', batch: { steps: Array.from({ length: n }, () => ({ stmt: { sql: 'select 1' } })) } }, { type: 'close' }] });
    assert.equal(err(r, 0).code, 'LIMIT_EXCEEDED');
    r = await pipe('h', { requests: Array.from({ length: n }, () => ({ type: 'close_sql', sql_id: 1 })) });
    assert.equal(r.status, 413);
  });

  test('idle streams expire and roll back; close() rolls back every stream', async () => {
    const limits = { ...server.config.limits, transactionTimeoutMs: 150 };
    const ctx = { host: server.service.host, store: server.service.store, limits };
    const ep = new HranaEndpoint({ openSession: (db) => new SqlSession(ctx, db), limits });
    await client.execute('create table idle (v)');
    const first = (await ep.pipeline('h', 'admin', { requests: [text('begin'), text('insert into idle values (1)')] }, 3)) as Body;
    ok(first, 1);
    await new Promise((r) => setTimeout(r, 400));
    await assert.rejects(ep.pipeline('h', 'admin', { baton: first.baton, requests: [text('commit')] }, 3), (e) => isGeodrError(e, 'TRANSACTION_EXPIRED'));
    // Rolled back, and the writer is free again.
    await client.execute('insert into idle values (2)');
    assert.deepEqual(
      (await client.execute('select v from idle')).rows.map((r) => r.v),
      [2],
    );

    const open = (await ep.pipeline('h', 'admin', { requests: [text('begin immediate'), text('insert into idle values (3)')] }, 3)) as Body;
    assert.equal(typeof open.baton, 'string');
    ep.close();
    await client.execute('insert into idle values (4)');
    assert.deepEqual(
      (await client.execute('select v from idle order by v')).rows.map((r) => r.v),
      [2, 4],
    );
    await assert.rejects(ep.pipeline('h', 'admin', { requests: [] }, 3), (e) => isGeodrError(e, 'UNAVAILABLE'));
  });

  test('after its transaction expires, a live stream refuses statements until ROLLBACK', async () => {
    // The stream outlives the transaction: sessions time out at 150 ms, streams at 5 s.
    const ctx = { host: server.service.host, store: server.service.store, limits: { ...server.config.limits, transactionTimeoutMs: 150 } };
    const ep = new HranaEndpoint({ openSession: (db) => new SqlSession(ctx, db), limits: { ...server.config.limits, transactionTimeoutMs: 5000 } });
    try {
      await client.execute('create table lost (v)');
      const r1 = (await ep.pipeline('h', 'admin', { requests: [text('begin'), text('insert into lost values (1)')] }, 3)) as Body;
      await new Promise((r) => setTimeout(r, 300));
      const r2 = (await ep.pipeline(
        'h',
        'admin',
        { baton: r1.baton, requests: [text('insert into lost values (2)'), text('insert into lost values (3)'), text('commit'), text('rollback'), text('insert into lost values (4)'), { type: 'close' }] },
        3,
      )) as Body;
      assert.deepEqual(
        r2.results.map((o) => (o.type === 'ok' ? 'ok' : o.error.code)),
        ['TRANSACTION_EXPIRED', 'TRANSACTION_EXPIRED', 'TRANSACTION_EXPIRED', 'ok', 'ok', 'ok'],
      );
      assert.deepEqual(
        (await client.execute('select v from lost')).rows.map((r) => r.v),
        [4],
        'nothing of the expired transaction applied; the statement after ROLLBACK did',
      );
    } finally {
      ep.close();
    }
  });
});
