/**
 * A real network cut between two server processes (the forwarders between them are
 * killed; clients still reach both). The old primary keeps taking client writes while
 * cut off; the secondary is forced to fail over and takes its own. When the path comes
 * back the old primary learns of the newer epoch, stops taking writes, keeps what it
 * wrote alone as a lost-transactions report (exactly the writes it acknowledged after
 * the split), and rejoins as a secondary by rewinding only its own pages. Nothing of
 * the old primary's lone writes ever reaches the new primary.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { DatabaseHost } from '../server/host.js';
import { Cluster, eventually } from './testing/cluster.js';

/** A server's local log directory for a database (by its record id). */
function logDir(dataDir: string, id: string): string {
  return path.join(DatabaseHost.pathsFor(dataDir, id).stateDir, 'log');
}

/** First TXID still in a local log: segments are named by their first TXID (16 hex digits). */
function firstLoggedTxid(dir: string): number | undefined {
  const first = fs.readdirSync(dir).filter((n) => /^[0-9a-f]{16}\.seg$/.test(n)).sort()[0];
  return first === undefined ? undefined : parseInt(first.slice(0, 16), 16);
}

test('network cut: lone writes on the old primary are fenced, reported and rewound', { timeout: 120_000 }, async () => {
  const c = await Cluster.start(['east', 'west'], { proxied: true });
  try {
    const east = c.api('east');
    const west = c.api('west');
    const sql = (n: typeof east, q: string, args: unknown[] = [], headers: Record<string, string> = {}) => n('POST', '/v1/databases/app/query', { sql: q, args }, { headers });
    assert.equal((await east('PUT', '/v1/databases/app', {})).status, 201);
    await sql(east, 'create table t(id integer primary key, who text, n integer, pad blob)');
    for (let i = 0; i < 30; i++) await sql(east, 'insert into t(who, n, pad) values (?, ?, randomblob(300))', ['base', i]);
    const add = await east('POST', '/v1/databases/app/replicationLinks', { partnerServer: 'west' });
    assert.equal(add.status, 202);
    await eventually(async () => (await west('GET', `/v1/operations/${add.body.operation.id}`)).body.state === 'Succeeded', 30_000, 'seeded');
    assert.equal((await east('POST', '/v1/databases/app/waitForCopySync', {})).status, 200);
    const split = (await west('GET', '/v1/databases/app')).body.txid as number;

    await c.cut();
    // The link shows the cut on both sides.
    await eventually(async () => (await west('GET', '/v1/databases/app/replicationLinks')).body.value[0].state === 'SUSPENDED', 10_000, 'west sees the cut');

    // East keeps taking writes from clients that know nothing.
    const lone: number[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await sql(east, 'insert into t(who, n, pad) values (?, ?, randomblob(500))', ['east-alone', i]);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      lone.push(r.body.txid as number);
    }
    const waited = await east('POST', '/v1/databases/app/waitForCopySync', { timeoutMs: 300 });
    assert.equal(waited.status, 504, 'the cut secondary cannot confirm');
    assert.equal(waited.body.error.code, 'REPLICATION_TIMEOUT');

    // West is forced to take over while east is unreachable.
    const link = (await west('GET', '/v1/databases/app/replicationLinks')).body.value[0];
    const fo = await west('POST', `/v1/databases/app/replicationLinks/${link.id}/forceFailoverAllowDataLoss`);
    assert.equal(fo.status, 200, JSON.stringify(fo.body));
    assert.equal(fo.body.txid, split);
    const epoch = fo.body.epoch as number;
    const westRows: number[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await sql(west, 'insert into t(who, n) values (?, ?)', ['west', i]);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('geodr-epoch'), String(epoch));
      westRows.push(i);
    }

    // A client that has seen the new epoch is refused by the old primary, even while it is cut off.
    const stale = await sql(east, "insert into t(who) values ('from-a-client-that-knows')", [], { 'geodr-min-epoch': String(epoch) });
    assert.equal(stale.status, 409);
    assert.equal(stale.body.error.code, 'STALE_EPOCH');
    // One more lone write from an unaware client while still cut off.
    const last = await sql(east, 'insert into t(who, n) values (?, ?)', ['east-alone', 99]);
    if (last.status === 200) lone.push(last.body.txid as number);

    await c.heal();
    await eventually(async () => (await east('GET', '/v1/databases/app')).body.role === 'secondary', 30_000, 'east rejoins as a secondary');
    const refused = await sql(east, "insert into t(who) values ('late')");
    assert.equal(refused.status, 409);
    assert.ok(['READ_ONLY', 'STALE_EPOCH'].includes(refused.body.error.code));

    // East now equals west: west's rows present, none of east's lone ones.
    await eventually(async () => (await sql(east, "select count(*) from t where who = 'west'")).body.rows[0][0] === 8, 10_000, 'west rows on east');
    assert.equal((await sql(east, "select count(*) from t where who = 'east-alone'")).body.rows[0][0], 0);
    assert.equal((await sql(west, "select count(*) from t where who like 'east-alone%' or who like 'from-a-client%' or who = 'late'")).body.rows[0][0], 0);
    const ev = (await east('GET', '/v1/databases/app')).body;
    const wv = (await west('GET', '/v1/databases/app')).body;
    assert.equal(ev.checksum, wv.checksum);
    assert.equal(ev.txid, wv.txid);

    // The lost-transactions report lists exactly what east acknowledged alone.
    const lost = (await east('GET', '/v1/lostTransactions')).body.value.filter((r: any) => r.database === 'app');
    assert.equal(lost.length, 1, JSON.stringify(lost));
    const rep = lost[0];
    assert.equal(rep.divergedAt, split);
    assert.equal(rep.fromTxid, split + 1);
    assert.equal(rep.toTxid, Math.max(...lone));
    assert.equal(rep.transactions, lone.length);
    assert.ok(rep.pagesChanged > 0);
    assert.equal(rep.newPrimary.server, 'west');
    const kept = new Database(path.join(c.node('east').server.dataDir, rep.files.database), { readonly: true });
    try {
      const rows = kept.prepare("select n from t where who = 'east-alone' order by n").all() as Array<{ n: number }>;
      assert.equal(rows.length, lone.length);
      assert.equal(kept.prepare('pragma integrity_check').pluck().get(), 'ok');
    } finally {
      kept.close();
    }
    assert.ok(fs.statSync(path.join(c.node('east').server.dataDir, rep.files.records)).size > 0);

    // The rejoin moved only what it had to: far less than the database.
    const ops = (await east('GET', '/v1/operations?database=app')).body.value as any[];
    const rejoin = ops.find((o) => o.kind === 'rejoinAsSecondary' && o.state === 'Succeeded');
    assert.ok(rejoin !== undefined, JSON.stringify(ops));
    assert.equal(rejoin.result.reseeded, undefined);
    assert.ok(rejoin.result.unitBytes < ev.sizeBytes, `unit ${rejoin.result.unitBytes} bytes vs database ${ev.sizeBytes}`);

    // And it follows west from now on.
    await sql(west, "insert into t(who) values ('after')");
    await eventually(async () => (await sql(east, "select count(*) from t where who = 'after'")).body.rows[0][0] === 1, 10_000, 'east follows west');
  } finally {
    await c.stop();
  }
});

test('network loss: the primary keeps working, the link shows the lag, streaming resumes with no gap, and a secondary left too far behind resyncs itself by the pages that differ', { timeout: 120_000 }, async () => {
  const c = await Cluster.start(['east', 'west'], {
    proxied: true,
    config: () => ({ limits: { logSegmentBytes: 64 << 10 }, replication: { heartbeatMs: 100, peerTimeoutMs: 1000, maxBackoffMs: 200, maxLagTxids: 40 }, backup: { shipIntervalMs: 200 } }),
  });
  try {
    const east = c.api('east');
    const west = c.api('west');
    const sql = (n: typeof east, q: string, args: unknown[] = []) => n('POST', '/v1/databases/app/query', { sql: q, args });
    assert.equal((await east('PUT', '/v1/databases/app', {})).status, 201);
    await sql(east, 'create table t(id integer primary key, pad blob)');
    const add = await east('POST', '/v1/databases/app/replicationLinks', { partnerServer: 'west' });
    await eventually(async () => (await west('GET', `/v1/operations/${add.body.operation.id}`)).body.state === 'Succeeded', 30_000, 'seeded');
    const seeds = async () => ((await west('GET', '/v1/operations?database=app')).body.value as any[]).filter((o) => o.kind === 'seedSecondary');

    // A short cut: the primary writes on, the link shows the lag, and the stream resumes where it stopped.
    await c.cut();
    for (let i = 0; i < 10; i++) assert.equal((await sql(east, 'insert into t(pad) values (randomblob(2000))')).status, 200);
    const lagging = await eventually(async () => {
      const l = (await east('GET', '/v1/databases/app/replicationLinks')).body.value[0];
      return l.state === 'SUSPENDED' && l.lagTxids >= 10 ? l : undefined;
    }, 10_000, 'the primary shows the lag');
    assert.ok(lagging.lagMs === null || lagging.lagMs >= 0);
    await c.heal();
    assert.equal((await east('POST', '/v1/databases/app/waitForCopySync', { timeoutMs: 15_000 })).status, 200);
    assert.equal((await seeds()).length, 1, 'no re-seed after a short cut');
    const e1 = (await east('GET', '/v1/databases/app')).body;
    const w1 = (await west('GET', '/v1/databases/app')).body;
    assert.equal(w1.checksum, e1.checksum);

    // A long cut: far more than the log is kept for; the primary prunes it, and the secondary
    // catches up on its own by the pages that differ (a resync), without a re-seed.
    await c.cut();
    for (let i = 0; i < 30; i++) {
      const r = await east('POST', '/v1/databases/app/batch', { statements: Array.from({ length: 5 }, () => ({ sql: 'insert into t(pad) values (randomblob(2000))' })) });
      assert.equal(r.status, 200);
      for (let j = 0; j < 4; j++) assert.equal((await sql(east, 'insert into t(pad) values (randomblob(1500))')).status, 200);
    }
    // Pruning runs every few seconds, once the records are in the vault and checkpointed:
    // wait until the primary's log no longer holds the first record west needs.
    const westAt = (await west('GET', '/v1/databases/app')).body.txid as number;
    const eastLog = logDir(c.node('east').server.dataDir, (await east('GET', '/v1/databases/app')).body.id as string);
    await eventually(() => (firstLoggedTxid(eastLog) ?? 0) > westAt + 1, 30_000, `east's log pruned past TXID ${westAt + 1}`);
    await c.heal();
    const resynced = async (): Promise<number> => {
      const m = String((await west('GET', '/metrics')).body);
      return Number(/geodr_replication_events_total\{event="resyncs"[^}]*\} (\d+)/.exec(m)?.[1] ?? 0);
    };
    await eventually(async () => (await resynced()) === 1, 30_000, 'resynced');
    assert.equal((await east('POST', '/v1/databases/app/waitForCopySync', { timeoutMs: 15_000 })).status, 200);
    assert.equal((await seeds()).length, 1, 'no re-seed');
    const e2 = (await east('GET', '/v1/databases/app')).body;
    const w2 = (await west('GET', '/v1/databases/app')).body;
    assert.equal(w2.checksum, e2.checksum);
    assert.equal(w2.txid, e2.txid);
    assert.equal((await sql(west, 'select count(*) from t')).body.rows[0][0], 10 + 30 * 9);
  } finally {
    await c.stop();
  }
});

test('a shared vault fences a cut-off old primary: its shipping finds the new epoch and it stops taking writes', { timeout: 120_000 }, async () => {
  const vault = fs.mkdtempSync(path.join((await import('node:os')).tmpdir(), 'geodr-shared-vault-'));
  const c = await Cluster.start(['east', 'west'], {
    proxied: true,
    config: () => ({ vault: { type: 'fs', path: vault }, backup: { shipIntervalMs: 200 }, replication: { heartbeatMs: 100, peerTimeoutMs: 1000, maxBackoffMs: 200 } }),
  });
  try {
    const east = c.api('east');
    const west = c.api('west');
    const sql = (n: typeof east, q: string) => n('POST', '/v1/databases/app/query', { sql: q });
    assert.equal((await east('PUT', '/v1/databases/app', {})).status, 201);
    await sql(east, 'create table t(id integer primary key, who text)');
    const add = await east('POST', '/v1/databases/app/replicationLinks', { partnerServer: 'west' });
    await eventually(async () => (await west('GET', `/v1/operations/${add.body.operation.id}`)).body.state === 'Succeeded', 30_000, 'seeded');
    await east('POST', '/v1/databases/app/waitForCopySync', {});

    await c.cut();
    const link = (await west('GET', '/v1/databases/app/replicationLinks')).body.value[0];
    const fo = await west('POST', `/v1/databases/app/replicationLinks/${link.id}/forceFailoverAllowDataLoss`);
    assert.equal(fo.status, 200, JSON.stringify(fo.body));
    await sql(west, "insert into t(who) values ('west')");

    // East cannot reach west, but the vault they share tells it: it stops taking writes.
    let lone = 0;
    const refused = await eventually(async () => {
      const r = await sql(east, "insert into t(who) values ('east-alone')");
      if (r.status === 200) {
        lone++;
        return undefined;
      }
      return r;
    }, 20_000, 'east fenced through the vault');
    assert.equal(refused.status, 409);
    assert.equal(refused.body.error.code, 'STALE_EPOCH');
    assert.equal((await east('GET', '/v1/databases/app')).body.status, 'Fenced');

    await c.heal();
    await eventually(async () => (await east('GET', '/v1/databases/app')).body.role === 'secondary', 30_000, 'east rejoins');
    const lost = (await east('GET', '/v1/lostTransactions')).body.value.filter((r: any) => r.database === 'app');
    assert.equal(lost.length, lone > 0 ? 1 : 0, JSON.stringify(lost));
    if (lone > 0) assert.equal(lost[0].transactions, lone);
    await eventually(async () => (await sql(east, "select count(*) from t where who = 'west'")).body.rows?.[0]?.[0] === 1, 10_000, 'east follows west');
  } finally {
    await c.stop();
    fs.rmSync(vault, { recursive: true, force: true });
  }
});
