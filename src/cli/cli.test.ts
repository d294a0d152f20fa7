// The geodr command as a user runs it: a child process against a real server,
// checked by its stdout, stderr and exit code.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { spawnServer, type ServerProcess } from '../server/testing/spawn.js';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

let sp: ServerProcess;

before(async () => {
  sp = await spawnServer();
});

after(async () => {
  await sp?.stop();
  sp?.cleanup();
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `geodr args...` with GEODR_URL/GEODR_TOKEN pointing at the test server unless `env` overrides them. */
function geodr(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [MAIN, ...args],
      { env: { ...process.env, GEODR_URL: sp.url, GEODR_TOKEN: sp.adminToken, ...env }, timeout: 20_000 },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
    );
  });
}

function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** Table rows as arrays of cells (split on runs of two or more spaces). */
function cells(stdout: string): string[][] {
  return stdout
    .trimEnd()
    .split('\n')
    .map((l) => l.split(/\s{2,}/));
}

describe('help and usage', () => {
  test('--help lists the commands and the exit codes', async () => {
    const r = ok(await geodr(['--help']));
    for (const cmd of ['server', 'info', 'pool', 'db', 'sql', 'op']) assert.match(r.stdout, new RegExp(`^  ${cmd}\\b`, 'm'), cmd);
    assert.match(r.stdout, /Exit codes:/);
    for (const code of [0, 1, 2, 3, 4, 5, 6, 7]) assert.match(r.stdout, new RegExp(`^  ${code}  `, 'm'));
    assert.match(r.stdout, /GEODR_TOKEN/);
    assert.match(ok(await geodr(['db', '--help'])).stdout, /verify/);
    assert.match(ok(await geodr(['--version'])).stdout, /^\d+\.\d+\.\d+/);
  });

  test('geodr server --help prints the server usage', async () => {
    assert.match(ok(await geodr(['server', '--help'])).stdout, /Usage: geodr server/);
  });

  test('usage errors exit 2 with one line on stderr', async () => {
    // Independent runs, in parallel to keep the file fast.
    const [unknownFlag, unknownCommand, missingArg, badSize, badNumber, nothingToUpdate, badState, noSql, badUrl] = await Promise.all([
      geodr(['db', 'list', '--bogus']),
      geodr(['bogus']),
      geodr(['db', 'show']),
      geodr(['pool', 'create', 'p', '--storage-quota', '10XB']),
      geodr(['pool', 'create', 'p', '--max-databases', 'many']),
      geodr(['pool', 'update', 'p']),
      geodr(['op', 'list', '--state', 'Sleeping']),
      geodr(['sql', 'x']),
      geodr(['--url', 'ftp://x', 'info']),
    ]);
    assert.equal(unknownFlag.code, 2);
    assert.match(unknownFlag.stderr, /^geodr: USAGE: unknown option '--bogus'/);
    assert.equal(unknownFlag.stderr.trimEnd().split('\n').length, 1, 'one line');
    assert.equal(unknownCommand.code, 2);
    assert.equal(missingArg.code, 2, 'missing argument');
    assert.equal(badSize.code, 2);
    assert.match(badSize.stderr, /--storage-quota/);
    assert.equal(badNumber.code, 2);
    assert.equal(nothingToUpdate.code, 2, 'nothing to update');
    assert.equal(badState.code, 2);
    assert.equal(noSql.code, 2, 'no SQL');
    assert.equal(badUrl.code, 2);
  });
});

describe('commands', () => {
  test('info', async () => {
    const r = ok(await geodr(['info']));
    assert.match(r.stdout, /^name: +test$/m);
    assert.equal((JSON.parse(ok(await geodr(['info', '--json'])).stdout) as { region: string }).region, 'local');
  });

  test('pool create, list (table and JSON), update, delete', async () => {
    const created = ok(await geodr(['pool', 'create', 'cli-pool', '--max-databases', '3', '--storage-quota', '10MiB']));
    assert.match(created.stdout, /^storage quota: +10 MiB \(10485760 bytes\)$/m);
    assert.match(created.stdout, /^databases: +0 \(max 3\)$/m);

    const list = cells(ok(await geodr(['pool', 'list'])).stdout);
    assert.deepEqual(list[0], ['NAME', 'DATABASES', 'MAX DATABASES', 'MAX OPS', 'USED', 'QUOTA']);
    assert.deepEqual(
      list.find((r) => r[0] === 'cli-pool'),
      ['cli-pool', '0', '3', '2', '0 B', '10 MiB'],
    );

    const json = JSON.parse(ok(await geodr(['pool', 'list', '--json'])).stdout) as { value: Array<{ name: string; storageQuotaBytes: number }> };
    assert.equal(json.value.find((p) => p.name === 'cli-pool')?.storageQuotaBytes, 10 * 1024 * 1024);

    const updated = JSON.parse(ok(await geodr(['--json', 'pool', 'update', 'cli-pool', '--storage-quota', '1GB'])).stdout) as { storageQuotaBytes: number; maxDatabases: number };
    assert.deepEqual([updated.storageQuotaBytes, updated.maxDatabases], [1e9, 3]);

    ok(await geodr(['pool', 'create', 'cli-gone']));
    assert.match(ok(await geodr(['pool', 'delete', 'cli-gone'])).stdout, /deleted/);
    assert.equal((await geodr(['pool', 'show', 'cli-gone'])).code, 3);
    const conflict = await geodr(['pool', 'delete', 'default']);
    assert.equal(conflict.code, 4);
    assert.match(conflict.stderr, /^geodr: CONFLICT: /);
  });

  test('db create, show --json, list, rename, move, delete, dropped', async () => {
    ok(await geodr(['pool', 'create', 'cli-dbs']));
    assert.match(ok(await geodr(['db', 'create', 'cli-db', '--pool', 'cli-dbs'])).stdout, /^pool: +cli-dbs$/m);
    const shown = JSON.parse(ok(await geodr(['db', 'show', 'cli-db', '--json'])).stdout) as Record<string, unknown>;
    assert.equal(shown.name, 'cli-db');
    assert.equal(shown.pool, 'cli-dbs');
    assert.equal(shown.role, 'primary');
    assert.equal(shown.status, 'Online');
    assert.equal(typeof shown.txid, 'number');
    assert.equal(typeof shown.id, 'string');

    const list = cells(ok(await geodr(['db', 'list', '--pool', 'cli-dbs'])).stdout);
    assert.deepEqual(list[0], ['NAME', 'POOL', 'ROLE', 'SIZE', 'TXID', 'LAST WRITE']);
    assert.equal(list[1]![0], 'cli-db');

    ok(await geodr(['db', 'create', 'cli-tmp']));
    assert.match(ok(await geodr(['db', 'rename', 'cli-tmp', 'cli-tmp2'])).stdout, /^name: +cli-tmp2$/m);
    assert.match(ok(await geodr(['db', 'move', 'cli-tmp2', '--pool', 'cli-dbs'])).stdout, /^pool: +cli-dbs$/m);
    assert.equal((await geodr(['db', 'move', 'cli-tmp2'])).code, 2, '--pool is required');
    assert.match(ok(await geodr(['db', 'delete', 'cli-tmp2'])).stdout, /^files: +dropped\//m);
    const dropped = JSON.parse(ok(await geodr(['db', 'dropped', '--json'])).stdout) as { value: Array<{ name: string }> };
    assert.ok(dropped.value.some((d) => d.name === 'cli-tmp2'));
  });

  test('sql: a script runs as one batch; select prints a table or JSON', async () => {
    ok(await geodr(['db', 'create', 'cli-sql']));
    const script = ok(await geodr(['sql', 'cli-sql', "create table t (id integer primary key, name text, score real); insert into t (name, score) values ('a', 1.5)"]));
    assert.match(script.stdout, /1 row affected, last insert rowid 1/);

    const two = ok(await geodr(['sql', 'cli-sql', "insert into t (name, score) values ('b', 2); insert into t (name, score) values ('c', null)"]));
    assert.equal(two.stdout.match(/1 row affected/g)?.length, 2);

    const sel = cells(ok(await geodr(['sql', 'cli-sql', 'select id, name, score from t order by id'])).stdout);
    assert.deepEqual(sel, [
      ['id', 'name', 'score'],
      ['1', 'a', '1.5'],
      ['2', 'b', '2.0'],
      ['3', 'c', 'NULL'],
    ]);

    const json = JSON.parse(ok(await geodr(['sql', 'cli-sql', 'select id, score from t where id = ?', '--arg', '2', '--json'])).stdout) as Record<string, unknown>;
    assert.deepEqual(json.columns, ['id', 'score']);
    assert.deepEqual(json.rows, [[2, { $real: 2 }]], 'the JSON is the API wire form');

    const named = cells(ok(await geodr(['sql', 'cli-sql', 'select name, :big as big from t where id = :id', '--named', 'id=1', '--named', 'big=9223372036854775807'])).stdout);
    assert.deepEqual(named[1], ['a', '9223372036854775807']);

    ok(await geodr(['sql', 'cli-sql', 'insert into t (name) values (?)', '--arg', '{"k": [1]}']));
    assert.deepEqual(cells(ok(await geodr(['sql', 'cli-sql', 'select name from t where id = 4'])).stdout)[1], ['{"k": [1]}'], 'non-SQL JSON binds as its text');

    const unique = await geodr(['sql', 'cli-sql', "insert into t (id, name) values (1, 'dup')"]);
    assert.equal(unique.code, 4);
    assert.match(unique.stderr, /^geodr: SQL_ERROR: /);
    assert.equal((await geodr(['sql', 'cli-sql', 'select ?; select ?', '--arg', '1'])).code, 2);
  });

  test('an unknown database exits 3 with NOT_FOUND on stderr', async () => {
    const r = await geodr(['db', 'show', 'no-such-db']);
    assert.equal(r.code, 3);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^geodr: NOT_FOUND: database "no-such-db" does not exist/);
    assert.equal((await geodr(['sql', 'no-such-db', 'select 1'])).code, 3);
  });

  test('a bad token exits 5; an unreachable server exits 6', async () => {
    const r = await geodr(['--token', 'wrong-token-0123456789', 'db', 'list']);
    assert.equal(r.code, 5);
    assert.match(r.stderr, /^geodr: UNAUTHENTICATED: /);
    const none = await geodr(['db', 'list'], { GEODR_TOKEN: undefined });
    assert.equal(none.code, 5);
    assert.match(none.stderr, /--token or GEODR_TOKEN/);
    const down = await geodr(['--url', `http://127.0.0.1:${await closedPort()}`, 'info']);
    assert.equal(down.code, 6);
    assert.match(down.stderr, /^geodr: UNAVAILABLE: cannot reach/);
  });

  test('db verify waits with progress and exits 0 once Succeeded; op list/show/wait', async () => {
    ok(await geodr(['db', 'create', 'cli-verify']));
    const r = ok(await geodr(['db', 'verify', 'cli-verify']));
    assert.match(r.stdout, /^state: +Succeeded$/m);
    assert.match(r.stdout, /^progress: +100%$/m);
    assert.match(r.stdout, /^result\.integrity: +ok$/m);
    assert.match(r.stderr, /^verifyDatabase \d+%$/m, 'plain progress lines when stderr is not a terminal');

    const started = JSON.parse(ok(await geodr(['db', 'verify', 'cli-verify', '--no-wait', '--json'])).stdout) as { id: string; kind: string };
    assert.equal(started.kind, 'verifyDatabase');
    const waited = JSON.parse(ok(await geodr(['op', 'wait', started.id, '--json'])).stdout) as { state: string; percentComplete: number };
    assert.deepEqual([waited.state, waited.percentComplete], ['Succeeded', 100]);

    const ops = JSON.parse(ok(await geodr(['op', 'list', '--json', '--database', 'cli-verify'])).stdout) as { value: Array<{ id: string; state: string }> };
    assert.equal(ops.value.length, 2);
    assert.ok(ops.value.every((o) => o.state === 'Succeeded'));
    assert.ok(ops.value.some((o) => o.id === started.id));
    assert.match(ok(await geodr(['op', 'show', started.id])).stdout, /^kind: +verifyDatabase$/m);
    assert.equal((await geodr(['op', 'cancel', started.id])).code, 4, 'already finished: CONFLICT');
    assert.equal((await geodr(['op', 'show', 'no-such-op'])).code, 3);
  });
});
