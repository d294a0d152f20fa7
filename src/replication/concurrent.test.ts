/**
 * Two operators force a failover of the same database at the same moment, on two
 * different secondaries, with the primary gone. The next epoch is claimed with the
 * sibling first, so at most one of them becomes primary: never two primaries at one
 * epoch, also after both secondaries restarted. The other follows the winner, and the
 * copies end equal.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
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

test('concurrent forced failovers on two secondaries: at most one primary', { timeout: 120_000 }, async () => {
  const c = await Cluster.start(['p', 's1', 's2']);
  try {
    const p = c.api('p');
    for (const db of ['dup', 'seq']) {
      assert.equal((await p('PUT', `/v1/databases/${db}`, {})).status, 201);
      await p('POST', `/v1/databases/${db}/query`, { sql: 'create table t(id integer primary key, v text)' });
      for (const s of ['s1', 's2']) {
        const add = await p('POST', `/v1/databases/${db}/replicationLinks`, { partnerServer: s });
        await eventually(async () => (await c.api(s)('GET', `/v1/operations/${add.body.operation.id}`)).body.state === 'Succeeded', 30_000, `${s} seeded`);
      }
      for (let i = 0; i < 5; i++) await p('POST', `/v1/databases/${db}/query`, { sql: "insert into t(v) values ('x')" });
      assert.equal((await p('POST', `/v1/databases/${db}/waitForCopySync`, {})).status, 200);
    }
    // Each secondary learns its sibling from the primary's heartbeats (no API shows it). All
    // links exist and every write is applied, so only heartbeats flow now: two more reads on
    // each secondary's link mean a heartbeat listing the sibling has arrived there.
    await Promise.all(
      ['s1', 's2'].flatMap((s) =>
        ['dup', 'seq'].map(async (db) => {
          const received = async (): Promise<number> => (await c.api(s)('GET', `/v1/databases/${db}/replicationLinks`)).body.value[0].bytesTransferred as number;
          let last = await received();
          for (let i = 0; i < 2; i++) {
            const before = last;
            last = await eventually(async () => {
              const now = await received();
              return now !== before ? now : undefined;
            }, 10_000, `a heartbeat on ${s} for ${db}`);
          }
        }),
      ),
    );
    await c.kill('p');
    // Both secondaries restart with the primary gone, so they hear no heartbeat again: what
    // they knew of each other must have been kept on disk for the claims below to hold.
    for (const s of ['s1', 's2']) {
      await c.kill(s);
      await c.restart(s);
    }

    const force = async (s: string, db = 'dup') => {
      const l = (await c.api(s)('GET', `/v1/databases/${db}/replicationLinks`)).body.value[0];
      return c.api(s)('POST', `/v1/databases/${db}/replicationLinks/${l.id}/forceFailoverAllowDataLoss`);
    };

    // One after the other (a slow second operator): the first claim still stands, so the second is refused.
    const first = await force('s1', 'seq');
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const second = await force('s2', 'seq');
    assert.equal(second.status, 409, JSON.stringify(second.body));
    assert.equal(second.body.error.code, 'CONFLICT');
    assert.match(second.body.error.message, /s1 is failing seq over/);
    const [a, b] = await Promise.all([force('s1'), force('s2')]);
    console.log(`concurrent forced failovers answered ${a.status} (s1) and ${b.status} (s2)`);
    assert.ok(!(a.status === 200 && b.status === 200), `both became primary: ${JSON.stringify([a.body, b.body])}`);
    for (const r of [a, b]) if (r.status !== 200) assert.equal(r.body.error.code, 'CONFLICT', JSON.stringify(r.body));
    let winner = a.status === 200 ? 's1' : b.status === 200 ? 's2' : undefined;
    if (winner === undefined) {
      // Both stood down: one of them, asked again alone, goes ahead.
      const again = await force('s1');
      assert.equal(again.status, 200, JSON.stringify(again.body));
      winner = 's1';
    }
    const loser = winner === 's1' ? 's2' : 's1';
    const roles = await Promise.all(['s1', 's2'].map(async (s) => (await c.api(s)('GET', '/v1/databases/dup')).body.role as string));
    assert.equal(roles.filter((r) => r === 'primary').length, 1);
    assert.equal((await c.api(winner)('POST', '/v1/databases/dup/query', { sql: "insert into t(v) values ('after')" })).status, 200);
    await eventually(async () => {
      const w = (await c.api(winner)('GET', '/v1/databases/dup')).body;
      const l = (await c.api(loser)('GET', '/v1/databases/dup')).body;
      return l.role === 'secondary' && l.txid === w.txid && l.checksum === w.checksum;
    }, 30_000, `${loser} follows ${winner}`);
  } finally {
    await c.stop();
  }
});

test('after a forced failover, a sibling ahead of the new primary (diverged) or behind it (outside its log) resyncs by the pages that differ, without a re-seed', { timeout: 120_000 }, async () => {
  const c = await Cluster.start(['p', 's1', 's2'], { proxied: true, config: () => ({ replication: { heartbeatMs: 100, peerTimeoutMs: 1000, maxBackoffMs: 200 } }) });
  try {
    const p = c.api('p');
    const q = (n: string, db: string, sql: string) => c.api(n)('POST', `/v1/databases/${db}/query`, { sql });
    for (const db of ['ahead', 'behind']) {
      assert.equal((await p('PUT', `/v1/databases/${db}`, {})).status, 201);
      await q('p', db, 'create table t(id integer primary key, v text, pad blob)');
      await p('POST', `/v1/databases/${db}/batch`, { statements: Array.from({ length: 200 }, () => ({ sql: "insert into t(v, pad) values ('seed', randomblob(1000))" })) });
      for (const s of ['s1', 's2']) {
        const add = await p('POST', `/v1/databases/${db}/replicationLinks`, { partnerServer: s });
        await eventually(async () => (await c.api(s)('GET', `/v1/operations/${add.body.operation.id}`)).body.state === 'Succeeded', 30_000, `${s} seeded`);
      }
      assert.equal((await p('POST', `/v1/databases/${db}/waitForCopySync`, {})).status, 200);
    }
    // s1 stops hearing from p; p writes on, and only s2 gets it. Then p is lost.
    await c.cutBetween('p', 's1');
    for (const db of ['ahead', 'behind']) for (let i = 0; i < 10; i++) assert.equal((await q('p', db, "insert into t(v) values ('only-s2')")).status, 200);
    await eventually(async () => (await c.api('s2')('GET', '/v1/databases/ahead')).body.txid === (await p('GET', '/v1/databases/ahead')).body.txid, 10_000, 's2 has everything');
    await eventually(async () => (await c.api('s2')('GET', '/v1/databases/behind')).body.txid === (await p('GET', '/v1/databases/behind')).body.txid, 10_000, 's2 has everything');
    await c.kill('p');

    const force = async (s: string, db: string) => {
      const l = (await c.api(s)('GET', `/v1/databases/${db}/replicationLinks`)).body.value[0];
      const r = await c.api(s)('POST', `/v1/databases/${db}/replicationLinks/${l.id}/forceFailoverAllowDataLoss`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
    };
    // "ahead": s1 (behind) becomes primary, so s2 has records the new history replaced.
    await force('s1', 'ahead');
    // "behind": s2 (ahead) becomes primary, so s1 needs records from before its log began.
    await force('s2', 'behind');
    for (const [db, primary, sibling] of [['ahead', 's1', 's2'], ['behind', 's2', 's1']] as const) {
      assert.equal((await q(primary, db, "insert into t(v) values ('after')")).status, 200);
      await eventually(async () => {
        const pv = (await c.api(primary)('GET', `/v1/databases/${db}`)).body;
        const sv = (await c.api(sibling)('GET', `/v1/databases/${db}`)).body;
        return sv.role === 'secondary' && sv.status === 'Online' && sv.txid === pv.txid && sv.checksum === pv.checksum;
      }, 30_000, `${sibling} follows ${primary} for ${db}`);
      const ops = (await c.api(sibling)('GET', `/v1/operations?database=${db}`)).body.value as any[];
      assert.equal(ops.filter((o) => o.kind === 'seedSecondary').length, 1, `${sibling} was not re-seeded for ${db}`);
      const rows = (await q(sibling, db, "select count(*) from t where v = 'only-s2'")).body.rows[0][0];
      assert.equal(rows, db === 'ahead' ? 0 : 10, `${db}: the sibling holds exactly the new primary's history`);
    }
    const m = String((await c.api('s2')('GET', '/metrics')).body) + String((await c.api('s1')('GET', '/metrics')).body);
    const resyncs = [...m.matchAll(/geodr_replication_events_total\{event="resyncs"[^}]*\} (\d+)/g)].reduce((n, x) => n + Number(x[1]), 0);
    assert.equal(resyncs, 2);
  } finally {
    await c.stop();
  }
});

test('an old primary back after a long outage (the new primary pruned its log since the failover) rejoins by resync, keeping its old copy', { timeout: 120_000 }, async () => {
  const c = await Cluster.start(['east', 'west'], {
    config: () => ({ limits: { logSegmentBytes: 64 << 10 }, replication: { heartbeatMs: 100, peerTimeoutMs: 1000, maxBackoffMs: 200, maxLagTxids: 20 }, backup: { shipIntervalMs: 200 } }),
  });
  try {
    const east = c.api('east');
    const west = c.api('west');
    const q = (n: typeof east, sql: string) => n('POST', '/v1/databases/long/query', { sql });
    assert.equal((await east('PUT', '/v1/databases/long', {})).status, 201);
    await q(east, 'create table t(id integer primary key, v text, pad blob)');
    const add = await east('POST', '/v1/databases/long/replicationLinks', { partnerServer: 'west' });
    await eventually(async () => (await west('GET', `/v1/operations/${add.body.operation.id}`)).body.state === 'Succeeded', 30_000, 'seeded');
    for (let i = 0; i < 10; i++) await q(east, "insert into t(v, pad) values ('base', randomblob(1500))");
    assert.equal((await east('POST', '/v1/databases/long/waitForCopySync', {})).status, 200);
    await c.kill('east');
    const l = (await west('GET', '/v1/databases/long/replicationLinks')).body.value[0];
    const fo = await west('POST', `/v1/databases/long/replicationLinks/${l.id}/forceFailoverAllowDataLoss`);
    assert.equal(fo.status, 200, JSON.stringify(fo.body));
    const split = fo.body.txid as number;
    // West writes far more than it keeps log for while east is away.
    for (let i = 0; i < 40; i++) {
      await west('POST', '/v1/databases/long/batch', { statements: Array.from({ length: 5 }, () => ({ sql: "insert into t(v, pad) values ('west', randomblob(1500))" })) });
    }
    // Pruning runs every few seconds, once the records are in the vault and checkpointed:
    // wait until west's log no longer holds the first record after the split east would need.
    const westLog = logDir(c.node('west').server.dataDir, (await west('GET', '/v1/databases/long')).body.id as string);
    await eventually(() => (firstLoggedTxid(westLog) ?? 0) > split + 1, 30_000, `west's log pruned past TXID ${split + 1}`);
    await c.restart('east');
    await eventually(async () => {
      const e = (await c.api('east')('GET', '/v1/databases/long')).body;
      const w = (await west('GET', '/v1/databases/long')).body;
      return e.role === 'secondary' && e.status === 'Online' && e.txid === w.txid && e.checksum === w.checksum;
    }, 30_000, 'east rejoins and catches up');
    const ops = (await c.api('east')('GET', '/v1/operations?database=long')).body.value as any[];
    const rejoin = ops.find((o) => o.kind === 'rejoinAsSecondary' && o.state === 'Succeeded');
    assert.equal(rejoin?.result?.resync, true, JSON.stringify(ops));
    assert.equal(ops.filter((o) => o.kind === 'seedSecondary').length, 0, 'no re-seed');
    const lost = (await c.api('east')('GET', '/v1/lostTransactions')).body.value.filter((r: any) => r.database === 'long');
    assert.equal(lost.length, 1);
    assert.equal(lost[0].newPrimary.server, 'west');
    assert.equal((await c.api('east')('POST', '/v1/databases/long/query', { sql: "select count(*) from t where v = 'west'" })).body.rows[0][0], 200);
  } finally {
    await c.stop();
  }
});
