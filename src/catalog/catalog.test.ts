/**
 * The shard map manager, routing and the recovery manager against a real server
 * process: shard map changes keep the GSM and every LSM equal; routing follows keys
 * through splits and moves and refuses offline tenants; LSM/GSM differences are
 * detected and resolved both ways; interrupted operations stay pending until replayed;
 * bad input and wrong credentials change nothing; tenant SQL cannot touch the LSM.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { api } from '../server/testing/http.js';
import { spawnServer, type ServerProcess } from '../server/testing/spawn.js';
import { GeodrApiError, GeodrClient, ShardMapClient, createShardMapManager, getShardMapManager, type ShardMapManager } from '../sdk/index.js';
import type { ShardLocation } from './model.js';
import { GeodrError } from '../errors.js';
import { TenantCatalog } from './tenants.js';
import { startInventorySync, syncInventory } from './inventory.js';

let sp: ServerProcess;
let admin: GeodrClient;
let smm: ShardMapManager;
let at: (db: string) => ShardLocation;
const SHARDS = ['a', 'b', 'c', 'd'];

before(async () => {
  sp = await spawnServer({ dataScope: { databases: ['catalog', ...SHARDS] } });
  admin = new GeodrClient({ url: sp.url, token: sp.adminToken });
  for (const db of ['catalog', 'other', ...SHARDS]) await admin.createDatabase(db);
  for (const db of SHARDS) await admin.query(db, 'create table t (k, v)');
  smm = await createShardMapManager({ url: sp.url, token: sp.adminToken, database: 'catalog' });
  at = (db) => ({ server: sp.url, database: db });
});

after(async () => {
  await sp?.stop();
  sp?.cleanup();
});

/**
 * Rejects with an error of `code`: a GeodrApiError (the server or a shard answered), or a
 * GeodrError for arguments the SDK checks before sending anything. Returns it.
 */
async function rejects(p: Promise<unknown>, code: string, fragment?: string): Promise<GeodrApiError | GeodrError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof GeodrApiError || e instanceof GeodrError, `not a geodr error: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (fragment !== undefined) assert.ok(e.message.includes(fragment), `${JSON.stringify(e.message)} lacks ${JSON.stringify(fragment)}`);
    return e;
  }
  assert.fail(`expected ${code}`);
}

/** Every location of `map` (and every shard database) agrees with the GSM. */
async function consistent(map: string): Promise<void> {
  const rm = smm.getRecoveryManager();
  for (const db of SHARDS) assert.deepEqual(await rm.detectMappingDifferences(at(db), map), [], `${map} at ${db}`);
  assert.deepEqual(await smm.pendingOperations(map), []);
  // And the LSMs hold exactly the GSM's mappings, shard by shard.
  const mappings = await smm.getMappings(map);
  for (const s of await smm.getShards(map)) {
    const lsm = (await smm.readLocal(s, map)).maps[0]!;
    assert.equal(lsm.shardId, s.id);
    const want = mappings.filter((m) => m.shardId === s.id).map(({ id, low, high, status, version }) => ({ id, low, high, status, version }));
    assert.deepEqual(lsm.mappings, want);
  }
}

describe('shard maps', () => {
  test('create list and range maps of every key type; the same request again answers the map', async () => {
    for (const keyType of ['int', 'string', 'binary'] as const) {
      const l = await smm.createListShardMap(`list-${keyType}`, keyType);
      assert.deepEqual([l.kind, l.keyType, l.shards, l.mappings], ['list', keyType, 0, 0]);
      const r = await smm.createRangeShardMap(`range-${keyType}`, keyType);
      assert.equal(r.kind, 'range');
    }
    assert.equal((await smm.createListShardMap('list-int', 'int')).name, 'list-int');
    await rejects(smm.createRangeShardMap('list-int', 'int'), 'CONFLICT', 'list map');
    await rejects(smm.createListShardMap('bad name!', 'int'), 'INVALID_ARGUMENT');
    assert.ok((await smm.listShardMaps()).some((m) => m.name === 'range-binary'));
    await smm.deleteShardMap('range-binary');
    await rejects(smm.getShardMap('range-binary'), 'NOT_FOUND');
  });

  test('range mappings: add, split, merge, move, offline, remove keep the GSM and every LSM equal', async () => {
    await smm.createRangeShardMap('orders', 'int');
    for (const db of ['a', 'b']) await smm.addShard('orders', at(db));
    const low = await smm.addRangeMapping('orders', { low: null, high: 1000 }, at('a'));
    const high = await smm.addRangeMapping('orders', { low: 1000, high: null }, at('b'));
    assert.equal(low.pendingOperation, null);
    await consistent('orders');
    const [l, r] = await smm.splitMapping('orders', low.id, 500);
    assert.deepEqual([l.low, l.high, r.low, r.high], ['-9223372036854775808', '500', '500', '1000']);
    await consistent('orders');
    const moved = await smm.moveMapping('orders', r.id, at('b'));
    assert.equal(moved.shardId, (await smm.getShard('orders', at('b')))!.id);
    assert.equal(moved.status, 'online');
    await consistent('orders');
    // [500, 1000) and [1000, ∞) are now adjacent on b: merge them.
    const merged = await smm.mergeMappings('orders', r.id, high.id);
    assert.deepEqual([merged.low, merged.high], ['500', null]);
    await consistent('orders');
    assert.equal((await smm.lookup('orders', 10 ** 12)).mapping.id, merged.id);
    assert.equal((await smm.lookup('orders', -5)).mapping.id, l.id);
    await smm.takeOffline('orders', l.id);
    await smm.removeMapping('orders', l.id);
    await rejects(smm.lookup('orders', -5), 'NOT_FOUND', 'no mapping');
    await consistent('orders');
    await smm.removeShard('orders', at('a'));
    assert.deepEqual((await smm.readLocal(at('a'), 'orders')).maps, [], "the removed shard's LSM no longer has the map");
    await consistent('orders');
  });

  test('bad input is refused with a clear error and changes nothing', async () => {
    await smm.createRangeShardMap('bad', 'int');
    await smm.addShards('bad', [at('a'), at('b')]);
    const m = await smm.addRangeMapping('bad', { low: 0, high: 100 }, at('a'));
    const snapshot = async (): Promise<unknown> => [await smm.getShards('bad'), await smm.getMappings('bad'), await smm.readLocal(at('a')), await smm.readLocal(at('b'))];
    const before = await snapshot();
    const e = await rejects(smm.addRangeMapping('bad', { low: 50, high: 150 }, at('b')), 'CONFLICT', 'overlaps');
    assert.equal(e.context.details?.conflictsWith, m.id);
    await rejects(smm.addMappings('bad', [{ low: 200, high: 300, location: at('b') }, { low: 99, high: 101, location: at('b') }]), 'CONFLICT', 'overlaps');
    await rejects(smm.addRangeMapping('bad', { low: 300, high: 400 }, at('nowhere')), 'NOT_FOUND', 'not a shard');
    await rejects(smm.addRangeMapping('bad', { low: 300, high: 300 }, at('b')), 'INVALID_ARGUMENT', 'low must be below high');
    await assert.rejects(smm.addPointMapping('bad', 7, at('b')), /INVALID_ARGUMENT: .*range map/);
    await rejects(smm.splitMapping('bad', m.id, 0), 'INVALID_ARGUMENT', 'strictly inside');
    await rejects(smm.splitMapping('bad', 'no-such-mapping', 5), 'NOT_FOUND');
    await rejects(smm.removeMapping('bad', m.id), 'CONFLICT', 'offline before removing');
    await rejects(smm.updateMapping('bad', m.id, { location: at('b') }), 'CONFLICT', 'must be offline to move');
    await rejects(smm.removeShard('bad', at('a')), 'CONFLICT', 'still holds 1 mappings');
    await rejects(smm.addShard('bad', at('a')), 'CONFLICT', 'already shard');
    await assert.rejects(smm.addRangeMapping('bad', { low: 1.5, high: 2 }, at('b')), /INVALID_ARGUMENT: an int shard key must be a safe integer/);
    assert.deepEqual(await snapshot(), before);

    // A shard taken offline takes no mappings (and its own go offline for routing).
    await smm.setShardStatus('bad', at('b'), 'offline');
    await rejects(smm.addRangeMapping('bad', { low: 500, high: 600 }, at('b')), 'CONFLICT', 'offline');
    await smm.setShardStatus('bad', at('b'), 'online');
    const again = await snapshot();

    // Shapes and texts the SDK would never send.
    const http = api(sp.url, sp.adminToken);
    const ops = '/v1/databases/catalog/shardMapManager/maps/bad/operations';
    const r1 = await http('POST', ops, { kind: 'addMappings', mappings: [{ low: 'ten', high: '20', shardId: m.shardId }] });
    assert.equal(r1.status, 400);
    assert.match(r1.body.error.message, /not a decimal integer/);
    const r2 = await http('POST', ops, { kind: 'addMappings', mappings: [{ low: '1', high: '2', shardId: m.shardId }], surprise: 1 });
    assert.equal(r2.status, 400);
    assert.match(r2.body.error.message, /unknown field "surprise"/);
    const r3 = await http('POST', ops, { kind: 'explode' });
    assert.equal(r3.status, 400);
    const r4 = await http('GET', '/v1/databases/other/shardMapManager/maps');
    assert.equal(r4.status, 404);
    assert.match(r4.body.error.message, /holds no shard map manager/);
    const r5 = await http('POST', '/v1/databases/a/localShardMap', { changes: [{ map: 'bad', shardId: 'x', kind: 'range', keyType: 'int', put: [{ id: 'm', low: '5', high: '1', status: 'online', version: 1 }] }] });
    assert.equal(r5.status, 400);
    assert.match(r5.body.error.message, /low must be below high/);
    const r6 = await http('POST', '/v1/databases/a/localShardMap', { changes: [{ map: 'bad', shardId: 'some-other-shard', kind: 'range', keyType: 'int', shardStatus: 'online' }] });
    assert.equal(r6.status, 409, 'an LSM change for another shard id of the map is refused');
    assert.deepEqual(await snapshot(), again);
  });

  test('credentials: a data token reads and routes but changes nothing; no token gets nothing', async () => {
    const data = getShardMapManager({ url: sp.url, token: sp.dataToken, database: 'catalog' });
    assert.ok((await data.listShardMaps()).length > 0);
    assert.equal((await data.lookup('bad', 5)).shard.database, 'a');
    await rejects(data.createRangeShardMap('nope', 'int'), 'FORBIDDEN');
    await rejects(data.addRangeMapping('bad', { low: 1000, high: 2000 }, at('b')), 'FORBIDDEN');
    assert.deepEqual(await data.getRecoveryManager().detectMappingDifferences(at('a'), 'bad'), [], 'detecting only reads');
    await rejects(data.getRecoveryManager().detachShard(at('a'), 'bad'), 'FORBIDDEN');
    await rejects(data.writeLocal(at('a'), [{ map: 'bad', shardId: 'x', kind: 'range', keyType: 'int', dropShard: true }]), 'FORBIDDEN');
    const anon = getShardMapManager({ url: sp.url, database: 'catalog' });
    await rejects(anon.listShardMaps(), 'UNAUTHENTICATED');
    const wrong = getShardMapManager({ url: sp.url, token: 'not-a-token-0123456789', database: 'catalog' });
    await rejects(wrong.lookup('bad', 5), 'UNAUTHENTICATED');
    // The data token is scoped to catalog, a-d: another database's LSM and SQL are off limits.
    const r = await api(sp.url, sp.dataToken)('GET', '/v1/databases/other/localShardMap');
    assert.equal(r.status, 403);
    const routes = new ShardMapClient({ catalog: { url: sp.url, token: sp.dataToken, database: 'catalog' } });
    assert.deepEqual((await (await routes.openConnectionForKey('bad', 5)).query('select 1')).rows, [[1]]);
  });
});

describe('API description', () => {
  test('the catalog routes are in /openapi.json', async () => {
    const o = await api(sp.url)('GET', '/openapi.json');
    assert.equal(o.status, 200);
    for (const p of [
      '/v1/databases/{db}/shardMapManager/maps/{map}/lookup',
      '/v1/databases/{db}/shardMapManager/maps/{map}/operations',
      '/v1/databases/{db}/shardMapManager/recovery/rebuildAfterFailover',
      '/v1/databases/{db}/catalog/tenants/{name}',
      '/v1/databases/{db}/localShardMap/execute',
    ]) {
      assert.ok(o.body.paths[p], p);
    }
  });
});

describe('tenant SQL and the LSM', () => {
  test('the JSON endpoint, batches, routed SQL and libSQL pipelines cannot read or write the LSM', async () => {
    const http = api(sp.url, sp.dataToken);
    for (const sql of ['select * from __geodr_lsm_mappings', "update __geodr_lsm_mappings set version = 99", 'delete from "__geodr_lsm_shards"', "select * from '__geodr_lsm_mappings'", 'drop table __geodr_lsm_mappings']) {
      const q = await http('POST', '/v1/databases/a/query', { sql });
      assert.equal(q.status, 403, sql);
      assert.equal(q.body.error.code, 'SQL_REFUSED');
      const b = await http('POST', '/v1/databases/a/batch', { statements: [{ sql: 'select 1' }, { sql }] });
      assert.equal(b.body.error.code, 'SQL_REFUSED', sql);
      const h = await http('POST', '/v1/databases/a/v2/pipeline', { requests: [{ type: 'execute', stmt: { sql } }, { type: 'close' }] });
      assert.equal(h.status, 200);
      assert.equal(h.body.results[0].type, 'error', sql);
      assert.equal(h.body.results[0].error.code, 'SQL_REFUSED', sql);
    }
    const m = (await smm.getMappings('bad'))[0]!;
    const routed = await http('POST', '/v1/databases/a/localShardMap/execute', { map: 'bad', key: '5', mappingId: m.id, version: m.version, statements: [{ sql: 'select * from __geodr_lsm_shards' }] });
    assert.equal(routed.body.error.code, 'SQL_REFUSED');
    // Nor can it see them: listings of the schema leave them out, on every endpoint.
    const listings = ["select name from sqlite_master where type = 'table' order by name", 'pragma table_list', 'select name from pragma_table_list', 'select name from dbstat'];
    for (const sql of listings) {
      const q = await http('POST', '/v1/databases/a/query', { sql });
      assert.equal(q.status, 200, `${sql}: ${JSON.stringify(q.body)}`);
      const h = await http('POST', '/v1/databases/a/v2/pipeline', { requests: [{ type: 'execute', stmt: { sql } }, { type: 'close' }] });
      const hrows = h.body.results[0].response.result.rows as Array<Array<{ value?: string }>>;
      const seen = [...(q.body.rows as unknown[][]).flat(), ...hrows.flat().map((c) => c.value)].map(String);
      assert.ok(seen.some((n) => n === 't'), `${sql} lists the tenant's table`);
      assert.ok(!seen.some((n) => n.includes('__geodr_')), `${sql} hides the reserved tables: ${seen.join(', ')}`);
    }
    const lsm = await smm.readLocal(at('a'), 'bad');
    assert.equal(lsm.maps[0]!.mappings.length, 1, 'the LSM is intact');
  });
});

describe('routing', () => {
  test('keys route to their owner; a stale cache is refreshed and the call retried; offline is TENANT_OFFLINE', async () => {
    await smm.createRangeShardMap('events', 'int');
    await smm.addShards('events', [at('c'), at('d')], [{ low: null, high: null, location: at('c') }]);
    const routes = new ShardMapClient({ catalog: { url: sp.url, token: sp.dataToken, database: 'catalog' } });
    const conn = await routes.openConnectionForKey('events', 750);
    assert.deepEqual(conn.location, at('c'));
    await conn.query('insert into t values (?, ?)', [750, 'first']);
    // Split at 500 and move [500, ∞) to d (moving the row along, as an app would).
    const whole = (await smm.getMappings('events'))[0]!;
    const [, right] = await smm.splitMapping('events', whole.id, 500);
    await smm.takeOffline('events', right.id);
    await rejects(conn.query('select 1'), 'TENANT_OFFLINE', 'offline');
    await admin.query('d', 'insert into t values (750, ?)', ['first']);
    await admin.query('c', 'delete from t where k = 750');
    await smm.updateMapping('events', right.id, { location: at('d') });
    await smm.bringOnline('events', right.id);
    const before = routes.stats.stale;
    // The connection still caches c; c's LSM refuses, the GSM says d, the call lands there.
    await conn.query('insert into t values (?, ?)', [750, 'second']);
    assert.deepEqual(conn.location, at('d'));
    assert.ok(routes.stats.stale > before, 'the stale route was noticed');
    assert.deepEqual((await admin.query('d', 'select v from t where k = 750 order by v')).rows, [['first'], ['second']]);
    assert.deepEqual((await admin.query('c', 'select count(*) from t where k = 750')).rows, [[0]]);
    // Reads and batches follow the same route; writes commit durably with a TXID.
    const [w, r] = await conn.batch([{ sql: 'insert into t values (?, ?)', params: [750, 'third'] }, 'select count(*) from t where k = 750']);
    assert.ok(w!.txid > 0);
    assert.deepEqual(r!.rows, [[3]]);
    assert.equal(r!.txid, w!.txid);
    assert.equal((await routes.openConnectionForKey('events', 10)).location.database, 'c');
    await assert.rejects(routes.openConnectionForKey('events', 'x'), /INVALID_ARGUMENT/);
    // A warm cache answers without the GSM.
    const lookups = routes.stats.lookups;
    for (let i = 0; i < 100; i++) await routes.lookup('events', 600 + i);
    assert.equal(routes.stats.lookups, lookups);
    assert.equal(routes.stats.hits >= 100, true);
  });

  test('an LSM that disagrees with the GSM is never used: routing ends with MAPPING_STALE, and recovery repairs it both ways', async () => {
    await smm.createRangeShardMap('drift', 'int');
    await smm.addShards('drift', [at('a'), at('b')], [
      { low: 0, high: 100, location: at('a') },
      { low: 100, high: 200, location: at('a') },
      { low: 200, high: 300, location: at('b') },
    ]);
    const [m0, m1, m2] = await smm.getMappings('drift');
    const shardA = (await smm.getShard('drift', at('a')))!;
    // The LSM of a: m0 at another version, m1 gone, and a stray mapping the GSM does not have.
    await smm.writeLocal(at('a'), [
      { map: 'drift', shardId: shardA.id, kind: 'range', keyType: 'int', remove: [m1!.id], put: [{ ...pick(m0!), version: 7 }, { id: 'stray', low: '300', high: '400', status: 'online', version: 1 }] },
    ]);
    const routes = new ShardMapClient({ catalog: { url: sp.url, token: sp.dataToken, database: 'catalog' }, attempts: 2 });
    const e = await rejects(routes.openConnectionForKey('drift', 50), 'MAPPING_STALE', 'run the recovery manager');
    assert.match(e.message, /disagree/);
    const conn = await routes.openConnectionForKey('drift', 250);
    await rejects(
      (async () => {
        await smm.writeLocal(at('b'), [{ map: 'drift', shardId: m2!.shardId, kind: 'range', keyType: 'int', shardStatus: 'offline' }]);
        await conn.query('insert into t values (250, 1)');
      })(),
      'MAPPING_STALE',
    );
    assert.deepEqual((await admin.query('b', 'select count(*) from t where k = 250')).rows, [[0]], 'nothing ran on a refusing shard');

    const rm = smm.getRecoveryManager();
    const [token] = await rm.detectMappingDifferences(at('a'), 'drift');
    assert.deepEqual(token!.differences.map((d) => `${d.kind}:${d.mappingId}`).sort(), [`MappingDiffers:${m0!.id}`, `MappingOnlyInGlobal:${m1!.id}`, 'MappingOnlyInLocal:stray'].sort());
    assert.equal(token!.shardId, shardA.id);
    const kept = await rm.resolveMappingDifferences(token!, 'KeepGlobalMapping');
    assert.deepEqual([kept.changedGlobal, kept.changedLocal], [true, true]);
    const [tb] = await rm.detectMappingDifferences(at('b'), 'drift');
    assert.deepEqual(tb!.differences.map((d) => d.kind), ['ShardStatusDiffers']);
    await rm.resolveMappingDifferences(tb!, 'KeepGlobalMapping');
    await consistent('drift');
    // m0's two copies differed: its version now tops both, so every cache of it is stale.
    assert.equal((await smm.getMappings('drift')).find((m) => m.id === m0!.id)!.version, 8);
    assert.equal((await routes.openConnectionForKey('drift', 50)).location.database, 'a');
    await conn.query('insert into t values (250, 1)');
    assert.deepEqual(await rm.resolveMappingDifferences(token!, 'KeepGlobalMapping').then((r) => [r.changedGlobal, r.changedLocal]), [false, false], 'resolving again changes nothing');

    // Trusting the LSM: a stray mapping joins the GSM, one that overlaps b's stays b's.
    await smm.writeLocal(at('a'), [
      {
        map: 'drift',
        shardId: shardA.id,
        kind: 'range',
        keyType: 'int',
        put: [
          { id: 'stray2', low: '400', high: '500', status: 'online', version: 3 },
          { id: 'overlap', low: '250', high: '260', status: 'online', version: 1 },
        ],
      },
    ]);
    const [t2] = await rm.detectMappingDifferences(at('a'), 'drift');
    const r = await rm.resolveMappingDifferences(t2!, 'KeepShardMapping');
    assert.deepEqual(r.conflicts.map((c) => c.id), ['overlap']);
    await consistent('drift');
    assert.equal((await smm.lookup('drift', 450)).mapping.id, 'stray2');
    assert.equal((await smm.lookup('drift', 255)).shard.database, 'b');
    await rejects(rm.resolveMappingDifferences(t2!, 'KeepEverything' as 'KeepShardMapping'), 'INVALID_ARGUMENT');
  });

  test('an interrupted operation stays pending, holds its rows, and is finished by replaying it', async () => {
    await smm.createRangeShardMap('pending', 'int');
    await smm.addShards('pending', [at('c')], [{ low: 0, high: 1000, location: at('c') }]);
    const m = (await smm.getMappings('pending'))[0]!;
    const crashing = getShardMapManager({
      url: sp.url,
      token: sp.adminToken,
      database: 'catalog',
      onStep: (label) => {
        if (label.startsWith('gsm ')) throw new Error('simulated crash between the GSM and the LSM');
      },
    });
    await assert.rejects(crashing.splitMapping('pending', m.id, 500), /simulated crash/);
    const [op] = await smm.pendingOperations('pending');
    assert.equal(op!.kind, 'splitMapping');
    assert.equal(op!.steps.length, 1);
    assert.deepEqual(op!.steps[0]!.change!.remove, [m.id]);
    // The GSM has the halves; the LSM still has the whole: routing refuses rather than guess.
    const routes = new ShardMapClient({ catalog: { url: sp.url, token: sp.dataToken, database: 'catalog' }, attempts: 2 });
    await rejects(routes.openConnectionForKey('pending', 700), 'MAPPING_STALE');
    const [token] = await smm.getRecoveryManager().detectMappingDifferences(at('c'), 'pending');
    assert.ok(token!.differences.some((d) => d.kind === 'PendingOperation' && d.operationId === op!.id));
    // Another change to the held rows replays the operation first, then goes ahead.
    const halves = (await smm.getMappings('pending')).map((x) => x.id);
    const merged = await smm.mergeMappings('pending', halves[0]!, halves[1]!);
    assert.deepEqual([merged.low, merged.high], ['0', '1000']);
    await consistent('pending');
    // recoverPendingOperations finishes one that nothing else touched.
    await assert.rejects(crashing.takeOffline('pending', merged.id), /simulated crash/);
    assert.deepEqual((await smm.recoverPendingOperations({ map: 'pending' })).failed, []);
    await consistent('pending');
    assert.equal((await smm.getMappings('pending'))[0]!.status, 'offline');
  });
});

describe('recovery manager', () => {
  test('detach fences the old copy; attach, detect and resolve bring the shard back', async () => {
    await smm.createListShardMap('users', 'string');
    await smm.addShards('users', [at('d')], [{ key: 'ada', location: at('d') }, { key: 'bob', location: at('d') }]);
    const routes = new ShardMapClient({ catalog: { url: sp.url, token: sp.dataToken, database: 'catalog' }, attempts: 2 });
    const conn = await routes.openConnectionForKey('users', 'ada');
    const rm = smm.getRecoveryManager();
    const { detached, fenced } = await rm.detachShard(at('d'), 'users');
    assert.equal(detached.length, 1);
    assert.equal(fenced, true);
    assert.equal((await smm.readLocal(at('d'), 'users')).maps[0]!.status, 'detached');
    await rejects(routes.openConnectionForKey('users', 'bob'), 'NOT_FOUND', 'no mapping');
    // A cached route to the detached copy is refused there (the fence), then finds nothing in the GSM.
    await rejects(conn.query('select 1'), 'NOT_FOUND');
    const [t] = await rm.detectMappingDifferences(at('d'), 'users');
    assert.deepEqual(t!.differences.map((d) => d.kind).sort(), ['MappingOnlyInLocal', 'MappingOnlyInLocal', 'ShardNotInGlobal']);
    const { attached } = await rm.attachShard(at('d'), 'users');
    assert.deepEqual(attached.map((s) => [s.id, s.attached]), [[detached[0]!.id, true]]);
    assert.equal((await smm.readLocal(at('d'), 'users')).maps[0]!.status, 'online', 'attach lifts the fence');
    assert.equal((await rm.attachShard(at('d'), 'users')).attached[0]!.attached, false, 'attaching twice is a no-op');
    const [t2] = await rm.detectMappingDifferences(at('d'), 'users');
    await rm.resolveMappingDifferences(t2!, 'KeepShardMapping');
    await consistent('users');
    assert.deepEqual((await routes.openConnectionForKey('users', 'bob')).location, at('d'));
    await rejects(rm.attachShard(at('other'), 'users'), 'NOT_FOUND', 'not a shard');
  });

  test('the recovery manager over the API: admin only, same results as the SDK', async () => {
    const http = api(sp.url, sp.adminToken);
    const base = '/v1/databases/catalog/shardMapManager/recovery';
    const det = await http('POST', `${base}/detectMappingDifferences`, { server: sp.url, database: 'd' });
    assert.equal(det.status, 200);
    assert.deepEqual(det.body.value, []);
    const shardD = (await smm.getShard('users', at('d')))!;
    await smm.writeLocal(at('d'), [{ map: 'users', shardId: shardD.id, kind: 'list', keyType: 'string', put: [{ id: 'carol-mapping', low: 'carol', high: null, status: 'online', version: 1 }] }]);
    const det2 = await http('POST', `${base}/detectMappingDifferences`, { server: sp.url, database: 'd', map: 'users' });
    assert.deepEqual(det2.body.value[0].differences.map((d: { kind: string }) => d.kind), ['MappingOnlyInLocal']);
    const res = await http('POST', `${base}/resolveMappingDifferences`, { token: det2.body.value[0], resolution: 'KeepShardMapping' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.changedGlobal, true);
    assert.equal((await smm.lookup('users', 'carol')).mapping.id, 'carol-mapping');
    const bad = await http('POST', `${base}/resolveMappingDifferences`, { token: det2.body.value[0], resolution: 'KeepBoth' });
    assert.equal(bad.status, 400);
    const forbidden = await api(sp.url, sp.dataToken)('POST', `${base}/detectMappingDifferences`, { server: sp.url, database: 'd' });
    assert.equal(forbidden.status, 403);
    const noop = await http('POST', `${base}/rebuildAfterFailover`, { fromServer: 'http://127.0.0.1:1', toServer: sp.url });
    assert.deepEqual(noop.body.moved, []);
    const pending = await http('POST', `${base}/recoverPendingOperations`, {});
    assert.deepEqual(pending.body, { completed: [], failed: [] });
    const unknownField = await http('POST', `${base}/rebuildAfterFailover`, { fromServer: sp.url, toServer: sp.url, everything: true });
    assert.equal(unknownField.status, 400);
  });
});

describe('tenant catalog and inventory', () => {
  test('tenants register idempotently, go offline and online, and record their restores; inventory sync fills pools', async () => {
    const catalog = new TenantCatalog(smm, 'tenants');
    await catalog.ensure('string');
    await admin.putPool('Pool1', { maxDatabases: 100 });
    await admin.moveDatabase('a', 'Pool1');
    const t = await catalog.registerTenant('contoso', 'contoso', at('a'), { pool: 'registered-pool' });
    assert.deepEqual([t.server, t.database, t.status, t.pool, t.lastRestored], [sp.url, 'a', 'online', 'registered-pool', null]);
    assert.equal((await catalog.registerTenant('contoso', 'contoso', at('a'))).mappingId, t.mappingId, 'registering again finishes nothing twice');
    await catalog.registerTenant('fabrikam', 'fabrikam', at('b'));
    await rejects(catalog.registerTenant('contoso-2', 'contoso', at('b')), 'CONFLICT', 'already routes');
    const routes = new ShardMapClient({ catalog: { url: sp.url, token: sp.dataToken, database: 'catalog' } });
    assert.equal((await routes.openConnectionForKey('tenants', 'fabrikam')).location.database, 'b');
    await catalog.setTenantStatus('fabrikam', 'offline');
    await rejects(routes.openConnectionForKey('tenants', 'fabrikam'), 'TENANT_OFFLINE');
    assert.equal((await catalog.getTenant('fabrikam')).status, 'offline');
    await catalog.setTenantStatus('fabrikam', 'online');
    assert.equal((await routes.openConnectionForKey('tenants', 'fabrikam')).location.database, 'b');
    const restored = await catalog.recordRestore('fabrikam', { txid: 42, time: '2026-05-01T12:00:00.000Z' });
    assert.deepEqual(restored.lastRestored, { txid: 42, time: '2026-05-01T12:00:00.000Z' });
    assert.equal((await catalog.recordRestore('fabrikam', { txid: 50 }, 'repatriated')).lastRepatriated!.txid, 50);

    const r = await syncInventory(smm, [{ url: sp.url }, { url: 'http://127.0.0.1:1' }]);
    assert.equal(r.synced.length, 1);
    assert.equal(r.failed.length, 1, 'a server that does not answer is reported, the rest recorded');
    const inv = (await smm.getInventory())[0]!;
    assert.equal(inv.name, 'test');
    assert.deepEqual(inv.pools.find((p) => p.name === 'Pool1')!.settings, { maxDatabases: 100, maxConcurrentOperations: 2, storageQuotaBytes: 0 });
    assert.deepEqual(inv.databases.find((d) => d.name === 'a'), { name: 'a', pool: 'Pool1', settings: { role: 'primary', createMode: 'Default', retentionDays: 7 } });
    assert.equal((await catalog.getTenant('contoso')).pool, 'Pool1', 'the pool comes from the inventory once synced');
    const rounds: number[] = [];
    const job = startInventorySync(smm, [{ url: sp.url }], 50, (x) => rounds.push(x.synced.length));
    // Waits for the rounds rather than a time window, which a slow machine may not fill.
    const giveUpAt = Date.now() + 10_000;
    while (rounds.length < 2 && Date.now() < giveUpAt) await new Promise((res) => setTimeout(res, 10));
    await job.stop();
    assert.ok(rounds.length >= 2 && rounds.every((n) => n === 1), `rounds ${JSON.stringify(rounds)}`);
    await catalog.removeTenant('contoso');
    await rejects(catalog.getTenant('contoso'), 'NOT_FOUND');
    await rejects(routes.lookup('tenants', 'contoso'), 'NOT_FOUND');
    await rejects(smm.deleteShardMap('tenants'), 'CONFLICT');
  });
});

function pick(m: { id: string; low: string; high: string | null; status: 'online' | 'offline'; version: number }) {
  return { id: m.id, low: m.low, high: m.high, status: m.status, version: m.version };
}
