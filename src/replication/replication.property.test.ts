/**
 * Property: random sequences of writes, secondaries added and removed, and planned
 * failovers between three real servers. After every step, once the primary says the
 * secondaries have everything (wait-for-copy-sync), every secondary is at the
 * primary's TXID with the primary's checksum; no acknowledged write is ever missing;
 * a removed secondary becomes an independent writable copy holding everything.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { Cluster, eventually } from './testing/cluster.js';

const SERVERS = ['x', 'y', 'z'];
let c: Cluster;
before(async () => {
  c = await Cluster.start(SERVERS);
});
after(async () => {
  await c?.stop();
});

type Step = { kind: 'write'; rows: number } | { kind: 'add'; server: number } | { kind: 'remove'; server: number } | { kind: 'failover'; server: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('write' as const), rows: fc.integer({ min: 1, max: 40 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('add' as const), server: fc.integer({ min: 0, max: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove' as const), server: fc.integer({ min: 0, max: 2 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('failover' as const), server: fc.integer({ min: 0, max: 2 }) }) },
);

let run = 0;

test('random writes, link changes and planned failovers keep every secondary equal to the primary', { timeout: 600_000 }, async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 4, maxLength: 10 }), async (steps) => {
      const db = `prop${run++}`;
      const q = (server: string, sql: string, args: unknown[] = []) => c.api(server)('POST', `/v1/databases/${db}/query`, { sql, args });
      let primary = 'x';
      const secondaries = new Set<string>();
      const acked: string[] = [];
      let seq = 0;
      assert.equal((await c.api(primary)('PUT', `/v1/databases/${db}`, {})).status, 201);
      await q(primary, 'create table t(k text primary key, pad blob)');
      for (const s of steps) {
        if (s.kind === 'write') {
          const stmts = Array.from({ length: s.rows }, () => ({ sql: 'insert into t(k, pad) values (?, randomblob(abs(random()) % 1500))', args: [`k${seq++}`] }));
          const r = await c.api(primary)('POST', `/v1/databases/${db}/batch`, { statements: stmts });
          assert.equal(r.status, 200, JSON.stringify(r.body));
          for (const st of stmts) acked.push(st.args[0] as string);
        } else if (s.kind === 'add') {
          const server = SERVERS[s.server]!;
          if (server === primary || secondaries.has(server)) continue;
          const r = await c.api(primary)('POST', `/v1/databases/${db}/replicationLinks`, { partnerServer: server });
          assert.equal(r.status, 202, JSON.stringify(r.body));
          await eventually(async () => (await c.api(server)('GET', `/v1/operations/${r.body.operation.id}`)).body.state === 'Succeeded', 30_000, 'seeded');
          secondaries.add(server);
        } else if (s.kind === 'remove') {
          const server = SERVERS[s.server]!;
          if (!secondaries.has(server)) continue;
          await c.api(primary)('POST', `/v1/databases/${db}/waitForCopySync`, { partnerServer: server });
          const links = (await c.api(primary)('GET', `/v1/databases/${db}/replicationLinks`)).body.value as any[];
          const l = links.find((x) => x.partnerServer === server);
          const r = await c.api(primary)('DELETE', `/v1/databases/${db}/replicationLinks/${l.id}`);
          assert.equal(r.status, 200, JSON.stringify(r.body));
          secondaries.delete(server);
          // The former secondary is its own database now: writable, with everything.
          const w = await q(server, "insert into t(k) values ('independent')");
          assert.equal(w.status, 200, JSON.stringify(w.body));
          assert.equal((await q(server, 'select count(*) from t')).body.rows[0][0], acked.length + 1);
          assert.equal((await c.api(server)('GET', `/v1/databases/${db}`)).body.role, 'primary');
          assert.equal((await c.api(server)('DELETE', `/v1/databases/${db}`)).status, 200);
        } else {
          const server = SERVERS[s.server]!;
          if (!secondaries.has(server)) continue;
          const l = (await c.api(server)('GET', `/v1/databases/${db}/replicationLinks`)).body.value[0];
          const r = await c.api(server)('POST', `/v1/databases/${db}/replicationLinks/${l.id}/failover`);
          assert.equal(r.status, 200, JSON.stringify(r.body));
          secondaries.delete(server);
          secondaries.add(primary);
          primary = server;
        }
        // The invariant after every step.
        if (secondaries.size > 0) {
          const w = await c.api(primary)('POST', `/v1/databases/${db}/waitForCopySync`, {});
          assert.equal(w.status, 200, JSON.stringify(w.body));
        }
        const pv = (await c.api(primary)('GET', `/v1/databases/${db}`)).body;
        for (const sec of secondaries) {
          const sv = await eventually(async () => {
            const v = (await c.api(sec)('GET', `/v1/databases/${db}`)).body;
            return v.txid === pv.txid ? v : undefined;
          }, 10_000, `${sec} reaches TXID ${pv.txid}`);
          assert.equal(sv.role, 'secondary');
          assert.equal(sv.checksum, pv.checksum, `${sec} has the primary's checksum at TXID ${pv.txid}`);
        }
        const count = (await q(primary, 'select count(*) from t')).body.rows[0][0];
        assert.equal(count, acked.length, 'no acknowledged write is lost');
      }
      // Clean up: links first, then every copy.
      for (const sec of secondaries) {
        const l = ((await c.api(primary)('GET', `/v1/databases/${db}/replicationLinks`)).body.value as any[]).find((x) => x.partnerServer === sec);
        await c.api(primary)('DELETE', `/v1/databases/${db}/replicationLinks/${l.id}`);
        await c.api(sec)('DELETE', `/v1/databases/${db}`);
      }
      await c.api(primary)('DELETE', `/v1/databases/${db}`);
    }),
    { numRuns: Number(process.env.GEODR_PROPERTY_RUNS ?? 6), endOnFailure: true },
  );
});
