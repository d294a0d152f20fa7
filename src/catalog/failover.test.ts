/**
 * The failover workflow on real servers in two paired regions: tenants (a list map,
 * the tenant catalog) and a range map live on east; east's region is lost (SIGKILL);
 * the catalog and every tenant database are geo-restored on west from the paired
 * vault, under the same names — which moves each shard to a new server exactly as a
 * failover does. rebuildAfterFailover repairs the maps: routing reaches the new
 * location, no key is lost or duplicated, and running it twice equals running it once,
 * including after a run that died half-way.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { tempDir } from '../engine/testing/helpers.js';
import { spawnServer, type ServerProcess } from '../server/testing/spawn.js';
import { GeodrClient, ShardMapClient, createShardMapManager, getShardMapManager, type ShardMapManager } from '../sdk/index.js';
import { TenantCatalog } from './tenants.js';

const backup = { shipIntervalMs: 100, snapshotEveryRecords: 20 };
const TENANTS = ['t0', 't1', 't2', 't3'];
const RANGE = ['r0', 'r1'];
const ALL = ['catalog', ...TENANTS, ...RANGE];
const ORDER_KEYS = Array.from({ length: 10 }, (_, i) => i * 100);

let root: { dir: string; cleanup: () => void };
let east: ServerProcess;
let west: ServerProcess;

before(async () => {
  root = tempDir();
  const va = path.join(root.dir, 'vault-east');
  const vb = path.join(root.dir, 'vault-west');
  [east, west] = await Promise.all([
    spawnServer({ dataDir: path.join(root.dir, 'east'), config: { name: 'east', region: 'eastus', vault: { type: 'fs', path: va }, pairedVault: { type: 'fs', path: vb }, backup } }),
    spawnServer({ dataDir: path.join(root.dir, 'west'), config: { name: 'west', region: 'westus', vault: { type: 'fs', path: vb }, pairedVault: { type: 'fs', path: va }, backup } }),
  ]);
});

after(async () => {
  await Promise.all([east?.stop(), west?.stop()]);
  root?.cleanup();
});

/** Shards and mappings of both maps, as the GSM has them. */
async function dump(smm: ShardMapManager): Promise<unknown> {
  const out: Record<string, unknown> = {};
  for (const map of ['tenants', 'orders']) out[map] = { shards: await smm.getShards(map), mappings: await smm.getMappings(map), pending: await smm.pendingOperations(map) };
  return out;
}

test('failover by geo-restore: rebuildAfterFailover repairs the maps, routing follows, no key lost or duplicated, twice equals once', async () => {
  const eastAdmin = new GeodrClient({ url: east.url, token: east.adminToken });
  for (const db of ALL) await eastAdmin.createDatabase(db);
  for (const db of [...TENANTS, ...RANGE]) await eastAdmin.query(db, 'create table t (k integer, n integer)');
  const smmEast = await createShardMapManager({ url: east.url, token: east.adminToken, database: 'catalog' });
  const tenants = new TenantCatalog(smmEast, 'tenants');
  await tenants.ensure('int');
  for (const [i, db] of TENANTS.entries()) await tenants.registerTenant(`tenant-${i}`, i, { server: east.url, database: db });
  await smmEast.createRangeShardMap('orders', 'int');
  await smmEast.addShards('orders', [{ server: east.url, database: 'r0' }, { server: east.url, database: 'r1' }], [
    { low: null, high: 500, location: { server: east.url, database: 'r0' } },
    { low: 500, high: null, location: { server: east.url, database: 'r1' } },
  ]);

  // The app writes through routing.
  const routesEast = new ShardMapClient({ catalog: { url: east.url, token: east.adminToken, database: 'catalog' } });
  for (const i of TENANTS.keys()) {
    const conn = await routesEast.openConnectionForKey('tenants', i);
    for (let n = 0; n < 5; n++) await conn.query('insert into t values (?, ?)', [i, n]);
  }
  for (const k of ORDER_KEYS) await (await routesEast.openConnectionForKey('orders', k)).query('insert into t values (?, 0)', [k]);

  // Everything reaches the paired region's vault, then east's region is lost.
  const westAdmin = new GeodrClient({ url: west.url, token: west.adminToken });
  const want = new Map<string, { txid: number; dbId: string }>();
  for (const db of ALL) {
    const d = await eastAdmin.getDatabase(db);
    want.set(db, { txid: d.txid, dbId: d.dbId });
  }
  for (let i = 0; ; i++) {
    const rec = await westAdmin.listRecoverableDatabases();
    if (ALL.every((db) => (rec.find((r) => r.dbId === want.get(db)!.dbId)?.restorePoints.latest?.txid ?? -1) >= want.get(db)!.txid)) break;
    assert.ok(i < 300, 'the geo copies never caught up');
    await delay(50);
  }
  await east.kill();

  // Geo-restore the catalog and every tenant database on west, under the same names.
  const ops = await Promise.all(ALL.map((db) => westAdmin.restoreDatabase(db, { mode: 'Recovery', sourceDatabaseId: want.get(db)!.dbId })));
  const restored = new Map<string, number>();
  for (const [i, op] of ops.entries()) restored.set(ALL[i]!, Number((await westAdmin.waitForOperation(op.id, { intervalMs: 50, timeoutMs: 60_000 })).result?.restoredTxid));

  const smm = getShardMapManager({ url: west.url, token: west.adminToken, database: 'catalog' });
  const rm = smm.getRecoveryManager();
  // The restored catalog still points at east; an app reading it caches east's locations.
  assert.ok((await smm.getShards('tenants')).every((s) => s.server === east.url));
  const routes = new ShardMapClient({ catalog: { url: west.url, token: west.adminToken, database: 'catalog' }, retries: 1 });
  for (const i of TENANTS.keys()) assert.equal((await routes.lookup('tenants', i)).shard.server, east.url);

  // A run that died right after moving one shard: the relocation stays pending and the next run finishes it.
  const t0 = (await smm.getShard('tenants', { server: east.url, database: 't0' }))!;
  const half = await smm.catalog.send<{ operation: { id: string } }>({
    method: 'POST',
    path: smm.gsmPath('/global/relocate'),
    body: { moves: [{ shardId: t0.id, server: west.url, database: 't0' }], reconcile: true },
  });
  const first = await rm.rebuildAfterFailover({ fromServer: east.url, toServer: west.url });
  assert.deepEqual(first.resumed, [half.operation.id]);
  assert.deepEqual(first.notMoved, []);
  assert.deepEqual(first.failed, []);
  assert.deepEqual(first.conflicts, []);
  assert.equal(first.fenced, 0, 'east does not answer: nothing to fence');
  assert.deepEqual(first.moved.map((m) => m.to.database).sort(), ['r0', 'r1', 't1', 't2', 't3']);
  assert.ok(first.moved.every((m) => m.from.server === east.url && m.to.server === west.url));

  // The maps agree everywhere, and everything points at west.
  for (const db of [...TENANTS, ...RANGE]) assert.deepEqual(await rm.detectMappingDifferences({ server: west.url, database: db }), [], db);
  const after1 = await dump(smm);
  for (const map of ['tenants', 'orders']) assert.ok((await smm.getShards(map)).every((s) => s.server === west.url));

  // Routing reaches the new location: the cached east routes do not answer, so they are looked up again.
  for (const [i, db] of TENANTS.entries()) {
    const conn = await routes.openConnectionForKey('tenants', i);
    assert.deepEqual(conn.location, { server: west.url, database: db });
    assert.deepEqual((await conn.query('select count(*), sum(n) from t where k = ?', [i])).rows, [[5, 10]]);
  }
  const counts = new Map<number, number>();
  for (const db of RANGE) for (const [k] of (await westAdmin.query(db, 'select k from t')).rows as number[][]) counts.set(k!, (counts.get(k!) ?? 0) + 1);
  assert.deepEqual([...counts.entries()].sort((a, b) => a[0] - b[0]), ORDER_KEYS.map((k) => [k, 1]));
  for (const k of ORDER_KEYS) {
    const conn = await routes.openConnectionForKey('orders', k);
    assert.equal(conn.location.database, k < 500 ? 'r0' : 'r1');
    assert.deepEqual((await conn.query('select count(*) from t where k = ?', [k])).rows, [[1]]);
  }
  assert.equal(routes.stats.stale, TENANTS.length, 'each cached east route was found stale once');
  // No key lost or duplicated: every order key is in exactly one range shard, where routing sends it.
  await (await routes.openConnectionForKey('tenants', 2)).query('insert into t values (2, 5)');
  assert.deepEqual((await westAdmin.query('t2', 'select count(*) from t where k = 2')).rows, [[6]]);

  // The tenant catalog follows the shard map; each restore's TXID is recorded.
  const catalog = new TenantCatalog(smm, 'tenants');
  for (const [i, db] of TENANTS.entries()) {
    const t = await catalog.recordRestore(`tenant-${i}`, { txid: restored.get(db)! });
    assert.deepEqual([t.server, t.database, t.status, t.lastRestored?.txid], [west.url, db, 'online', restored.get(db)]);
  }

  // Twice equals once.
  const second = await rm.rebuildAfterFailover({ fromServer: east.url, toServer: west.url });
  assert.deepEqual(second, { moved: [], notMoved: [], reconciled: [], conflicts: [], failed: [], fenced: 0, resumed: [] });
  assert.deepEqual(await dump(smm), after1);
});
