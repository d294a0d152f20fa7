/**
 * Geo-replication between real server processes: seeding under writes, readable
 * secondaries, link views, wait-for-copy-sync and sync durability, planned failover
 * (nothing lost, old primary follows), forced failover with the old primary's lost
 * tail reported and rewound, removal of a link, and bad requests.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { statementDeadlines } from '../engine/index.js';
import { Cluster, eventually } from './testing/cluster.js';

let c: Cluster;

before(async () => {
  // A short statement deadline for the interrupted reads below.
  c = await Cluster.start(['east', 'west', 'north'], { config: () => ({ limits: { statementTimeoutMs: 2000 } }) });
});
after(async () => {
  await c?.stop();
});

async function sql(node: string, db: string, q: string, args: unknown[] = [], headers: Record<string, string> = {}) {
  return c.api(node)('POST', `/v1/databases/${db}/query`, { sql: q, args }, { headers });
}

async function count(node: string, db: string): Promise<number> {
  const r = await sql(node, db, 'select count(*) from t');
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return Number(r.body.rows[0][0]);
}

async function waitOp(node: string, id: string): Promise<any> {
  return eventually(async () => {
    const r = await c.api(node)('GET', `/v1/operations/${id}`);
    if (r.body.state === 'Failed') throw new Error(`operation failed: ${JSON.stringify(r.body.error)}`);
    return r.body.state === 'Succeeded' ? r.body : undefined;
  }, 30_000, `operation ${id}`);
}

async function link(node: string, db: string): Promise<any> {
  const r = await c.api(node)('GET', `/v1/databases/${db}/replicationLinks`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.value[0];
}

test('seed under writes, stream, read on the secondary, fail over both ways', { timeout: 120_000 }, async () => {
  assert.equal((await c.api('east')('PUT', '/v1/databases/shop', {})).status, 201);
  assert.equal((await sql('east', 'shop', 'create table t(id integer primary key, v text)')).status, 200);
  for (let i = 0; i < 50; i++) await sql('east', 'shop', 'insert into t(v) values (?)', [`a${i}`]);

  // Writes keep coming while the secondary seeds.
  let writing = true;
  let acked = 50;
  const writer = (async () => {
    while (writing) {
      const r = await sql('east', 'shop', 'insert into t(v) values (?)', ['w']);
      if (r.status === 200) acked++;
    }
  })();
  const add = await c.api('east')('POST', '/v1/databases/shop/replicationLinks', { partnerServer: 'west' });
  assert.equal(add.status, 202, JSON.stringify(add.body));
  await waitOp('west', add.body.operation.id);
  await new Promise((r) => setTimeout(r, 300));
  writing = false;
  await writer;

  const sync = await c.api('east')('POST', '/v1/databases/shop/waitForCopySync', {});
  assert.equal(sync.status, 200, JSON.stringify(sync.body));
  assert.equal(await count('west', 'shop'), acked);
  // A secondary drops a stream after four missed heartbeats (400 ms): a pause on a loaded
  // machine shows the link SUSPENDED until it reconnects, so the state is waited for.
  const l = await eventually(async () => {
    const v = await link('east', 'shop');
    return v.state === 'CATCH_UP' ? v : undefined;
  }, 10_000, 'the link streams');
  assert.equal(l.role, 'Primary');
  assert.equal(l.partnerServer, 'west');
  assert.equal(l.lagTxids, 0);
  const sl = await link('west', 'shop');
  assert.equal(sl.role, 'Secondary');
  assert.equal(sl.lastReplicatedTxid, sync.body.txid);

  // Metrics show the link from both sides.
  const metrics = await eventually(async () => {
    const m = String((await c.api('east')('GET', '/metrics')).body);
    assert.match(m, /geodr_replication_link_up\{database="shop",partner="west",role="Primary",state="CATCH_UP",server="east",region="region-east"\} 1/);
    return m;
  }, 10_000, 'the link up in the metrics');
  assert.match(metrics, /geodr_replication_lag_transactions\{database="shop",partner="west",role="Primary",server="east",region="region-east"\} 0/);

  // The secondary is read-only and says where to write.
  const w = await sql('west', 'shop', 'insert into t(v) values (1)');
  assert.equal(w.status, 409);
  assert.equal(w.body.error.code, 'READ_ONLY');
  assert.equal(w.body.error.details.primaryServer, 'east');
  const ver = await c.api('west')('GET', '/v1/databases/shop');
  assert.equal(ver.body.role, 'secondary');
  const ep = await c.api('east')('GET', '/v1/databases/shop');
  assert.equal(ver.body.checksum, ep.body.checksum);

  // Sync durability: acknowledged only once the secondary has it.
  const sw = await sql('east', 'shop', 'insert into t(v) values (?)', ['sync'], { 'geodr-durability': 'sync' });
  assert.equal(sw.status, 200, JSON.stringify(sw.body));
  const sec = await sql('west', 'shop', "select count(*) from t where v = 'sync'");
  assert.equal(Number(sec.body.rows[0][0]), 1);

  // A read that never yields a row is interrupted on the secondary too, as is one over the
  // system views, and replay goes on.
  const forever = '(with recursive n(i) as (select 1 union all select i + 1 from n) select max(i) from n)';
  assert.ok(statementDeadlines(), 'the deadline extension was not built (dist/native): these reads would never end');
  const stuck = await sql('west', 'shop', `select count(*) from t where id < ${forever}`);
  assert.equal(stuck.body.error?.code, 'STATEMENT_TIMEOUT', JSON.stringify(stuck.body));
  const stuckView = await sql('west', 'shop', `select * from sys.geo_replication_links where ${forever} > 0`);
  assert.equal(stuckView.body.error?.code, 'STATEMENT_TIMEOUT', JSON.stringify(stuckView.body));
  assert.equal((await sql('east', 'shop', 'insert into t(v) values (?)', ['sync'], { 'geodr-durability': 'sync' })).status, 200);
  assert.equal(Number((await sql('west', 'shop', "select count(*) from t where v = 'sync'")).body.rows[0][0]), 2);

  // Planned failover asked of the secondary.
  const before = await count('east', 'shop');
  const fo = await c.api('west')('POST', `/v1/databases/shop/replicationLinks/${sl.id}/failover`);
  assert.equal(fo.status, 200, JSON.stringify(fo.body));
  assert.equal(fo.body.epoch, 2);
  assert.equal(await count('west', 'shop'), before);
  const w2 = await sql('west', 'shop', 'insert into t(v) values (?)', ['after']);
  assert.equal(w2.status, 200, JSON.stringify(w2.body));
  assert.equal(w2.headers.get('geodr-epoch'), '2');
  const e2 = await sql('east', 'shop', 'insert into t(v) values (1)');
  assert.equal(e2.status, 409);
  assert.equal(e2.body.error.code, 'READ_ONLY');
  await eventually(async () => (await count('east', 'shop')) === before + 1, 10_000, 'old primary follows');
  assert.equal((await link('east', 'shop')).role, 'Secondary');

  // And back, planned again.
  const el = await link('east', 'shop');
  const back = await c.api('east')('POST', `/v1/databases/shop/replicationLinks/${el.id}/failover`);
  assert.equal(back.status, 200, JSON.stringify(back.body));
  assert.equal(back.body.epoch, 3);
  assert.equal((await sql('east', 'shop', 'insert into t(v) values (1)')).status, 200);
  await eventually(async () => (await count('west', 'shop')) === before + 2, 10_000, 'west follows');
});

test('forced failover: the old primary is fenced, reports what it wrote alone, and rejoins by rewinding', { timeout: 120_000 }, async () => {
  assert.equal((await c.api('east')('PUT', '/v1/databases/ff', {})).status, 201);
  await sql('east', 'ff', 'create table t(id integer primary key, v text)');
  for (let i = 0; i < 20; i++) await sql('east', 'ff', 'insert into t(v) values (?)', [`x${i}`]);
  const add = await c.api('east')('POST', '/v1/databases/ff/replicationLinks', { partnerServer: 'north' });
  await waitOp('north', add.body.operation.id);
  await c.api('east')('POST', '/v1/databases/ff/waitForCopySync', {});
  const nl = await link('north', 'ff');

  // The primary goes away; the secondary is forced to take over.
  await c.kill('east');
  const fo = await c.api('north')('POST', `/v1/databases/ff/replicationLinks/${nl.id}/forceFailoverAllowDataLoss`);
  assert.equal(fo.status, 200, JSON.stringify(fo.body));
  assert.equal((await sql('north', 'ff', "insert into t(v) values ('north')")).status, 200);

  // East comes back with nothing lost (everything was synced): it rejoins without a report.
  await c.restart('east');
  await eventually(async () => (await c.api('east')('GET', '/v1/databases/ff')).body.role === 'secondary', 20_000, 'east rejoins');
  await eventually(async () => (await count('east', 'ff')) === 21, 10_000, 'east has north write');
  const lost = await c.api('east')('GET', '/v1/lostTransactions');
  assert.deepEqual(lost.body.value.filter((r: any) => r.database === 'ff'), []);
});

test('the seeds T-SQL on the SQL endpoint (JSON and libSQL), and pool changes under a live link', { timeout: 120_000 }, async () => {
  const east = c.api('east');
  const west = c.api('west');
  assert.equal((await west('PUT', '/v1/elasticPools/replicas', { maxDatabases: 10 })).status, 201);
  assert.equal((await east('PUT', '/v1/databases/tsql', {})).status, 201);
  await sql('east', 'tsql', 'create table t(id integer primary key, v text)');
  await sql('east', 'tsql', "insert into t(v) values ('one')");

  // A malformed statement is refused and changes nothing.
  const bad = await sql('east', 'tsql', 'ALTER DATABASE tsql ADD SECONDARY ON');
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.code, 'INVALID_ARGUMENT');
  assert.equal((await east('GET', '/v1/databases/tsql/replicationLinks')).body.value.length, 0);

  const add = await sql('east', 'tsql', 'ALTER DATABASE [tsql] ADD SECONDARY ON SERVER west WITH (ALLOW_CONNECTIONS = ALL, SERVICE_OBJECTIVE = ELASTIC_POOL(name = replicas));');
  assert.equal(add.status, 200, JSON.stringify(add.body));
  assert.deepEqual(add.body.columns, ['operation_id', 'partner_server', 'partner_database', 'state']);
  await waitOp('west', add.body.rows[0][0]);
  assert.equal((await west('GET', '/v1/databases/tsql')).body.pool, 'replicas');

  const wait = await sql('east', 'tsql', "EXEC sp_wait_for_database_copy_sync @target_server = N'west', @target_database = N'tsql'");
  assert.equal(wait.status, 200, JSON.stringify(wait.body));
  // The state is waited for: a pause on a loaded machine shows the link SUSPENDED for a moment.
  const links = await eventually(async () => {
    const r = await sql('east', 'tsql', "select partner_server, role_desc, replication_state_desc from sys.geo_replication_links where database_name = 'tsql'");
    return r.status !== 200 || r.body.rows[0]?.[2] === 'CATCH_UP' ? r : undefined;
  }, 10_000, 'the link streams');
  assert.equal(links.status, 200, JSON.stringify(links.body));
  assert.deepEqual(links.body.rows, [['west', 'PRIMARY', 'CATCH_UP']]);
  const ops = await sql('west', 'tsql', "select operation, state_desc, percent_complete from sys.dm_operation_status where major_resource_id = 'tsql'");
  assert.equal(ops.status, 200, JSON.stringify(ops.body));
  assert.ok(ops.body.rows.length >= 1);

  // Through @libsql/client (Hrana) too: the secondary's view of the link.
  const { createClient } = await import('@libsql/client');
  const client = createClient({ url: `${c.node('west').url}/v1/databases/tsql/`, authToken: c.node('west').server.adminToken });
  try {
    const rs = await client.execute('select partner_server, role_desc, replication_lag_txids from sys.dm_geo_replication_link_status');
    const row = rs.rows.find((r) => r.partner_server === 'east');
    assert.ok(row !== undefined, JSON.stringify(rs.rows));
    assert.equal(row.role_desc, 'SECONDARY');
    assert.equal((await client.execute('select v from t')).rows[0]!.v, 'one');
  } finally {
    client.close();
  }

  // Pools are resized on both sides (secondary first when growing, primary first when shrinking) while writes replicate.
  assert.equal((await west('PATCH', '/v1/elasticPools/replicas', { maxDatabases: 50, storageQuotaBytes: 1 << 30 })).status, 200);
  assert.equal((await east('PATCH', '/v1/elasticPools/default', { maxDatabases: 50, storageQuotaBytes: 1 << 30 })).status, 200);
  for (let i = 0; i < 10; i++) await sql('east', 'tsql', 'insert into t(v) values (?)', [`p${i}`]);
  assert.equal((await east('PATCH', '/v1/elasticPools/default', { storageQuotaBytes: 0 })).status, 200);
  assert.equal((await west('PATCH', '/v1/elasticPools/replicas', { storageQuotaBytes: 0 })).status, 200);
  assert.equal((await east('POST', '/v1/databases/tsql/waitForCopySync', {})).status, 200);
  assert.equal(await count('west', 'tsql'), 11);
  await eventually(async () => (await link('west', 'tsql')).state === 'CATCH_UP', 10_000, 'the link streams');

  // FAILOVER and REMOVE SECONDARY as statements, run on the servers the seeds run them on.
  const fo = await sql('west', 'tsql', 'ALTER DATABASE tsql FAILOVER');
  assert.equal(fo.status, 200, JSON.stringify(fo.body));
  assert.equal((await west('GET', '/v1/databases/tsql')).body.role, 'primary');
  const rm = await sql('west', 'tsql', 'ALTER DATABASE tsql REMOVE SECONDARY ON SERVER east');
  assert.equal(rm.status, 200, JSON.stringify(rm.body));
  const independent = await sql('east', 'tsql', "insert into t(v) values ('east is its own now')");
  assert.equal(independent.status, 200, JSON.stringify(independent.body));
  assert.notEqual((await east('GET', '/v1/databases/tsql')).body.dbId, (await west('GET', '/v1/databases/tsql')).body.dbId);

  // A client's newest epoch counts only for the database it saw: another one under the name starts over.
  const newer = await sql('west', 'tsql', "insert into t(v) values ('x')", [], { 'geodr-min-epoch': '99' });
  assert.equal(newer.status, 409);
  assert.equal(newer.body.error.code, 'STALE_EPOCH');
  const other = await sql('west', 'tsql', "insert into t(v) values ('x')", [], { 'geodr-min-epoch': '99', 'geodr-db-id': '0'.repeat(32) });
  assert.equal(other.status, 200, JSON.stringify(other.body));
  assert.equal(other.headers.get('geodr-db-id'), (await west('GET', '/v1/databases/tsql')).body.dbId);
});
