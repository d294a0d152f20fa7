/**
 * The seeds' DR flow with active geo-replication instead of restores: the catalog and
 * the tenant databases have geo-secondaries on the paired server and sit in one failover
 * group. The primary's server is killed; the group is forced over; rebuildAfterFailover
 * moves every shard to the new server (each local shard map came over with its tenant's
 * data). Routing reaches the new locations, every key is where it was written, the
 * group's read-write listener names the new server, and a second run changes nothing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GeodrClient, ShardMapClient, createShardMapManager, getShardMapManager } from '../sdk/index.js';
import { Cluster, eventually } from '../replication/testing/cluster.js';
import { TenantCatalog } from './tenants.js';

const TENANTS = ['t0', 't1', 't2'];
const ALL = ['catalog', ...TENANTS];

test('geo-failover of a failover group, then the recovery manager: routing follows, no key lost', { timeout: 120_000 }, async () => {
  const c = await Cluster.start(['east', 'west']);
  try {
    const eastUrl = c.node('east').url;
    const westUrl = c.node('west').url;
    const token = c.node('east').server.adminToken;
    const east = new GeodrClient({ url: eastUrl, token });
    const west = new GeodrClient({ url: westUrl, token });
    for (const db of ALL) await east.createDatabase(db);
    for (const db of TENANTS) await east.query(db, 'create table t (k integer, n integer)');
    const smmEast = await createShardMapManager({ url: eastUrl, token, database: 'catalog' });
    const tenants = new TenantCatalog(smmEast, 'tenants');
    await tenants.ensure('int');
    for (const [i, db] of TENANTS.entries()) await tenants.registerTenant(`tenant-${i}`, i, { server: eastUrl, database: db });
    const routesEast = new ShardMapClient({ catalog: { url: eastUrl, token, database: 'catalog' } });
    for (const i of TENANTS.keys()) {
      const conn = await routesEast.openConnectionForKey('tenants', i);
      for (let n = 0; n < 4; n++) await conn.query('insert into t values (?, ?)', [i, n]);
    }

    // Every database gets a secondary on west, and they form one failover group.
    for (const db of ALL) {
      const added = await east.addSecondary(db, { partnerServer: 'west' });
      await west.waitForOperation(added.operation.id, { timeoutMs: 30_000 });
    }
    const group = await c.api('east')('PUT', '/v1/failoverGroups/app', { partnerServer: 'west', databases: ALL });
    assert.equal(group.status, 200, JSON.stringify(group.body));
    assert.equal(group.body.readWriteListener.server, 'east');
    for (const db of ALL) await east.waitForCopySync(db);

    // East's region is lost; the group is forced over to west.
    await c.kill('east');
    const fo = await c.api('west')('POST', '/v1/failoverGroups/app/forceFailoverAllowDataLoss');
    assert.equal(fo.status, 200, JSON.stringify(fo.body));
    assert.equal(fo.body.databases.length, ALL.length);
    const rw = await c.api('west')('GET', '/v1/failoverGroups/app/listener/rw');
    assert.equal(rw.body.server, 'west');

    // The catalog on west still points at east until the recovery manager runs.
    const smm = getShardMapManager({ url: westUrl, token, database: 'catalog' });
    assert.ok((await smm.getShards('tenants')).every((s) => s.server === eastUrl));
    const rm = smm.getRecoveryManager();
    const first = await rm.rebuildAfterFailover({ fromServer: eastUrl, toServer: westUrl });
    assert.deepEqual(first.moved.map((m) => m.to.database).sort(), TENANTS);
    assert.deepEqual(first.notMoved, []);
    assert.deepEqual(first.failed, []);
    assert.ok((await smm.getShards('tenants')).every((s) => s.server === westUrl));
    for (const db of TENANTS) assert.deepEqual(await rm.detectMappingDifferences({ server: westUrl, database: db }), [], db);

    // Routing reaches west; every tenant's rows are there once.
    const routes = new ShardMapClient({ catalog: { url: westUrl, token, database: 'catalog' } });
    for (const [i, db] of TENANTS.entries()) {
      const conn = await routes.openConnectionForKey('tenants', i);
      assert.deepEqual(conn.location, { server: westUrl, database: db });
      assert.deepEqual((await conn.query('select count(*), sum(n) from t where k = ?', [i])).rows, [[4, 6]]);
      await conn.query('insert into t values (?, 9)', [i]);
    }

    // Twice equals once.
    const second = await rm.rebuildAfterFailover({ fromServer: eastUrl, toServer: westUrl });
    assert.deepEqual(second.moved, []);
    assert.deepEqual(second.failed, []);

    // East comes back as a secondary of west, catalog included.
    await c.restart('east');
    await eventually(async () => (await c.api('east')('GET', '/v1/databases/catalog')).body.role === 'secondary', 30_000, 'east rejoins');
  } finally {
    await c.stop();
  }
});
