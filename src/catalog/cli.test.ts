// geodr catalog …, as a user runs it: a child process against a real server, checked
// by its stdout, stderr and exit code.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { spawnServer, type ServerProcess } from '../server/testing/spawn.js';
import { GeodrClient, getShardMapManager } from '../sdk/index.js';

const MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url));
let sp: ServerProcess;

before(async () => {
  sp = await spawnServer({ dataScope: { databases: ['cat'] } });
  const admin = new GeodrClient({ url: sp.url, token: sp.adminToken });
  for (const db of ['cat', 's1', 's2']) await admin.createDatabase(db);
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

function geodr(args: string[], token = sp.adminToken): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [MAIN, 'catalog', '--catalog-db', 'cat', ...args],
      { env: { ...process.env, GEODR_URL: sp.url, GEODR_TOKEN: token }, timeout: 20_000 },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
    );
  });
}

function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

test('geodr catalog: maps, shards, mappings, lookups, tenants, recovery and inventory', async () => {
  assert.match(ok(await geodr(['--help'])).stdout, /rebuild/);
  assert.match(ok(await geodr(['create'])).stdout, /shard map manager ready in cat/);
  assert.match(ok(await geodr(['map', 'create', 'orders', '--kind', 'range', '--key-type', 'int'])).stdout, /^kind: +range$/m);
  for (const db of ['s1', 's2']) ok(await geodr(['shard', 'add', 'orders', '--database', db]));
  ok(await geodr(['mapping', 'add', 'orders', '--database', 's1', '--high', '100']));
  ok(await geodr(['mapping', 'add', 'orders', '--database', 's2', '--low', '100']));
  const look = ok(await geodr(['lookup', 'orders', '42'])).stdout;
  assert.match(look, /^range: +\[-9223372036854775808, 100\)$/m);
  assert.match(look, /^database: +s1$/m);
  const id = JSON.parse(ok(await geodr(['lookup', 'orders', '42', '--json'])).stdout).mapping.id as string;
  const split = ok(await geodr(['mapping', 'split', 'orders', id, '--at', '50'])).stdout;
  assert.match(split, /\[-9223372036854775808, 50\)/);
  assert.match(split, /\[50, 100\)/);
  const mappings = JSON.parse(ok(await geodr(['mappings', 'orders', '--json'])).stdout).value;
  assert.equal(mappings.length, 3);
  assert.match(ok(await geodr(['map', 'show', 'orders'])).stdout, /SERVER +DATABASE/);
  const maps = JSON.parse(ok(await geodr(['maps', '--json'])).stdout).value;
  assert.deepEqual(maps.map((m: { name: string; mappings: number }) => [m.name, m.mappings]), [['orders', 3]]);

  // Bad input and credentials map to the documented exit codes (independent runs, in parallel).
  const [overlap, badKey, badKind, keyOnRange, noCatalog, forbidden, reader] = await Promise.all([
    geodr(['mapping', 'add', 'orders', '--database', 's2', '--low', '10', '--high', '20']),
    geodr(['lookup', 'orders', 'forty-two']),
    geodr(['map', 'create', 'x', '--kind', 'tree', '--key-type', 'int']),
    geodr(['mapping', 'add', 'orders', '--database', 's1', '--key', '5']),
    geodr(['lookup', 'orders', '999999', '--catalog-db', 'nope']),
    geodr(['map', 'create', 'y', '--kind', 'list', '--key-type', 'int'], sp.dataToken),
    geodr(['lookup', 'orders', '150'], sp.dataToken),
  ]);
  assert.equal(overlap.code, 4);
  assert.match(overlap.stderr, /^geodr: CONFLICT: .*overlaps/m);
  assert.equal(badKey.code, 4);
  assert.match(badKey.stderr, /INVALID_ARGUMENT: .*not a decimal integer/);
  assert.equal(badKind.code, 2);
  assert.equal(keyOnRange.code, 2, 'a key on a range map is a usage error');
  assert.equal(noCatalog.code, 3);
  assert.equal(forbidden.code, 5);
  assert.match(ok(reader).stdout, /^database: +s2$/m, 'a data token scoped to the catalog reads');

  // Tenants.
  assert.match(ok(await geodr(['tenant', 'register', 'contoso', '--key', 'contoso', '--database', 's1', '--pool', 'Pool1'])).stdout, /^status: +online$/m);
  assert.match(ok(await geodr(['tenant', 'offline', 'contoso'])).stdout, /^status: +offline$/m);
  assert.match(ok(await geodr(['tenant', 'online', 'contoso'])).stdout, /^status: +online$/m);
  assert.match(ok(await geodr(['tenant', 'restored', 'contoso', '--txid', '7'])).stdout, /^last restored: +txid 7 at /m);
  assert.match(ok(await geodr(['tenants'])).stdout, /^contoso +contoso +online/m);

  // Recovery: an LSM that disagrees is found and repaired; rebuild from a server that has nothing moves nothing.
  const smm = getShardMapManager({ url: sp.url, token: sp.adminToken, database: 'cat' });
  const s1 = (await smm.getShard('orders', { server: sp.url, database: 's1' }))!;
  await smm.writeLocal({ server: sp.url, database: 's1' }, [{ map: 'orders', shardId: s1.id, kind: 'range', keyType: 'int', remove: [mappings[0].id] }]);
  const detect = ok(await geodr(['detect', '--database', 's1'])).stdout;
  assert.match(detect, new RegExp(`^orders +MappingOnlyInGlobal +${mappings[0].id}`, 'm'));
  assert.match(ok(await geodr(['resolve', '--database', 's1', '--keep', 'global'])).stdout, /^orders: KeepGlobalMapping; GSM unchanged, LSM changed$/m);
  assert.match(ok(await geodr(['detect', '--database', 's1'])).stdout, /no differences/);
  assert.equal((await geodr(['resolve', '--database', 's1'])).code, 2, '--keep is required');
  assert.match(ok(await geodr(['rebuild', '--from', 'http://127.0.0.1:1', '--to', sp.url])).stdout, /^moved: +0$/m);
  assert.match(ok(await geodr(['detach', '--database', 's2', '--map', 'orders'])).stdout, /detached 1 shards; the old copy is fenced/);
  ok(await geodr(['attach', '--database', 's2', '--map', 'orders']));
  assert.match(ok(await geodr(['resolve', '--database', 's2', '--keep', 'shard'])).stdout, /GSM changed/);
  assert.match(ok(await geodr(['pending'])).stdout, /^ID +MAP +KIND/);

  // Inventory.
  assert.match(ok(await geodr(['sync'])).stdout, /^synced http:\/\/127\.0\.0\.1:\d+ \(test, local\): 1 pools, 3 databases$/m);
  const inv = JSON.parse(ok(await geodr(['inventory', '--json'])).stdout).value;
  assert.deepEqual(inv[0].databases.map((d: { name: string }) => d.name), ['cat', 's1', 's2']);
  const down = await geodr(['sync', '--server', 'http://127.0.0.1:1']);
  assert.equal(down.code, 6);
  assert.match(down.stderr, /sync of http:\/\/127\.0\.0\.1:1 failed/);
});
