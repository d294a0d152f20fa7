// `geodr dev up/down`: real server processes per region, state that survives down/up.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { tempDir } from '../engine/testing/helpers.js';
import { GeodrError } from '../errors.js';
import { freePort } from '../server/testing/ports.js';
import { loadDeployment } from './deployment.js';
import { devDown, devStatus, devUp } from './dev.js';

test('dev up starts every server as its own process; down stops them; state survives', { timeout: 120_000 }, async (t) => {
  const { dir, cleanup } = tempDir();
  const stateDir = path.join(dir, 'state');
  // One hook, in this order: devDown needs the pid files that cleanup deletes (after-hooks run in registration order).
  t.after(async () => {
    try {
      await devDown({ stateDir });
    } finally {
      cleanup();
    }
  });
  const [pa, pb] = [await freePort(), await freePort()];
  const file = path.join(dir, 'deployment.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      name: 'test-deployment',
      regions: [
        { name: 'north', pairedRegion: 'south', vault: { type: 'fs', path: 'v/north' }, servers: [{ name: 'srv-north', address: `127.0.0.1:${pa}`, pools: [{ name: 'P1', maxDatabases: 5 }] }] },
        { name: 'south', pairedRegion: 'north', vault: { type: 'fs', path: 'v/south' }, servers: [{ name: 'srv-south', address: `127.0.0.1:${pb}`, pools: [{ name: 'P1' }] }] },
      ],
    }),
  );
  const up = await devUp(loadDeployment(file), { stateDir });
  assert.deepEqual(
    up.servers.map((s) => [s.name, s.region, s.state]),
    [
      ['srv-north', 'north', 'ready'],
      ['srv-south', 'south', 'ready'],
    ],
  );
  assert.notEqual(up.servers[0]!.pid, up.servers[1]!.pid);
  const headers = { authorization: `Bearer ${up.tokens.admin}`, 'content-type': 'application/json' };
  const north = up.servers[0]!.url;
  const pool = (await (await fetch(`${north}/v1/elasticPools/P1`, { headers })).json()) as { maxDatabases: number };
  assert.equal(pool.maxDatabases, 5, 'pools from the deployment file exist');
  let r = await fetch(`${north}/v1/databases/t1`, { method: 'PUT', headers, body: JSON.stringify({ elasticPoolName: 'P1' }) });
  assert.equal(r.status, 201);
  r = await fetch(`${north}/v1/databases/t1/query`, { method: 'POST', headers: { ...headers, authorization: `Bearer ${up.tokens.app}` }, body: JSON.stringify({ sql: 'create table a(x)' }) });
  assert.equal(r.status, 200, 'the app token may use the pool');
  const info = (await (await fetch(`${up.servers[1]!.url}/v1/server`, { headers })).json()) as { region: string };
  assert.equal(info.region, 'south');

  assert.equal((await devUp(loadDeployment(file), { stateDir })).servers.length, 2, 'up again is a no-op');
  assert.equal(await devDown({ stateDir }), 2);
  assert.ok((await devStatus({ stateDir })).servers.every((s) => s.state === 'stopped'));
  await assert.rejects(fetch(`${north}/healthz`));

  const again = await devUp(loadDeployment(file), { stateDir });
  assert.equal(again.tokens.admin, up.tokens.admin, 'tokens are kept');
  const db = (await (await fetch(`${north}/v1/databases/t1`, { headers })).json()) as { name: string; txid: number };
  assert.equal(db.name, 't1');
  assert.equal(db.txid, 1, 'the data survived down/up');
});

test('a bad deployment file is refused with the field named', (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, 'd.json');
  const cases: Array<[unknown, RegExp]> = [
    [{ name: 'x', regions: [{ name: 'a', pairedRegion: 'b', vault: { type: 'fs', path: 'v' }, servers: [{ name: 's', address: '127.0.0.1:1' }] }] }, /paired region b is not defined/],
    [{ name: 'x', regions: [{ name: 'a', pairedRegion: 'a', vault: { type: 'fs', path: 'v' }, servers: [{ name: 's', address: '127.0.0.1:1' }] }] }, /cannot pair with itself/],
    [{ name: 'x', regions: [{ name: 'a/b', pairedRegion: 'a', vault: { type: 'fs', path: 'v' }, servers: [] }] }, /regions\.0\.name/],
    [{ name: 'x', regions: [{ name: 'a', pairedRegion: 'a', vault: { type: 's3' }, servers: [] }] }, /regions\.0\.vault/],
    [{ name: 'x', regions: [], extra: 1 }, /extra/],
  ];
  for (const [d, pattern] of cases) {
    fs.writeFileSync(file, JSON.stringify(d));
    assert.throws(() => loadDeployment(file), (e) => e instanceof GeodrError && e.code === 'INVALID_ARGUMENT' && pattern.test(e.message), pattern.source);
  }
  fs.writeFileSync(file, 'not json');
  assert.throws(() => loadDeployment(file), /cannot read deployment file/);
});
