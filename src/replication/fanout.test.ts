/**
 * Four secondaries (the limit; a fifth is refused), a planned failover under write
 * load to one of them, and the other three relinked to the new primary without
 * re-seeding: no new seeding operation, and the bytes they received after the
 * failover are a small fraction of the database. Every copy ends on the primary's
 * checksum, and no acknowledged write is lost.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cluster, eventually } from './testing/cluster.js';

const SECONDARIES = ['s1', 's2', 's3', 's4'];

test('four secondaries; planned failover under load relinks the other three without re-seeding', { timeout: 180_000 }, async () => {
  const c = await Cluster.start(['p', ...SECONDARIES]);
  try {
    const p = c.api('p');
    const sql = (n: string, q: string, args: unknown[] = []) => c.api(n)('POST', '/v1/databases/big/query', { sql: q, args });
    assert.equal((await p('PUT', '/v1/databases/big', {})).status, 201);
    await sql('p', 'create table t(id integer primary key, v text, pad blob)');
    // About 16 MB, so a re-seed (the whole file) stands far apart from what streaming
    // the paced writes of the failover window costs (well under 2 MB).
    for (let b = 0; b < 20; b++) {
      const r = await p('POST', '/v1/databases/big/batch', { statements: Array.from({ length: 400 }, (_, i) => ({ sql: 'insert into t(v, pad) values (?, randomblob(2000))', args: [`seed${b * 400 + i}`] })) });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }

    for (const s of SECONDARIES) {
      const add = await p('POST', '/v1/databases/big/replicationLinks', { partnerServer: s });
      assert.equal(add.status, 202, JSON.stringify(add.body));
    }
    // A fifth is refused, naming the limit; a second one on the same server too.
    const fifth = await p('POST', '/v1/databases/big/replicationLinks', { partnerServer: 'elsewhere' });
    assert.equal(fifth.status, 413);
    assert.equal(fifth.body.error.code, 'LIMIT_EXCEEDED');
    assert.match(fifth.body.error.message, /limit is 4/);
    for (const s of SECONDARIES) {
      await eventually(async () => (await c.api(s)('GET', '/v1/databases/big')).body.status === 'Online', 30_000, `${s} seeded`);
    }
    const size = (await p('GET', '/v1/databases/big')).body.sizeBytes as number;
    assert.ok(size > 15_000_000, `the database is ${size} bytes`);

    let writing = true;
    const acked: string[] = [];
    let target = 'p';
    const writer = (async () => {
      let i = 0;
      while (writing) {
        const v = `w${i++}`;
        const r = await sql(target, 'insert into t(v) values (?)', [v]);
        if (r.status === 200) acked.push(v);
        else if (r.body?.error?.code === 'READ_ONLY') target = 's1';
        else if (r.status !== 503) assert.fail(`unexpected ${r.status} ${JSON.stringify(r.body)}`);
        // Paced (at most ~100 writes a second), so the bytes streamed in the window do not
        // depend on how fast the machine is.
        await new Promise((res) => setTimeout(res, 10));
      }
    })();
    await new Promise((r) => setTimeout(r, 400));
    const before = new Map<string, number>();
    for (const s of SECONDARIES) before.set(s, (await c.api(s)('GET', '/v1/databases/big/replicationLinks')).body.value[0].bytesTransferred);
    const link = (await c.api('s1')('GET', '/v1/databases/big/replicationLinks')).body.value[0];
    const fo = await c.api('s1')('POST', `/v1/databases/big/replicationLinks/${link.id}/failover`);
    assert.equal(fo.status, 200, JSON.stringify(fo.body));
    target = 's1';
    await new Promise((r) => setTimeout(r, 400));
    writing = false;
    await writer;

    const wait = await c.api('s1')('POST', '/v1/databases/big/waitForCopySync', {});
    assert.equal(wait.status, 200, JSON.stringify(wait.body));
    const links = (await c.api('s1')('GET', '/v1/databases/big/replicationLinks')).body.value as any[];
    assert.deepEqual(links.map((l) => l.partnerServer).sort(), ['p', 's2', 's3', 's4']);
    const primary = (await c.api('s1')('GET', '/v1/databases/big')).body;
    for (const s of ['p', 's2', 's3', 's4']) {
      const v = (await c.api(s)('GET', '/v1/databases/big')).body;
      assert.equal(v.role, 'secondary', s);
      assert.equal(v.checksum, primary.checksum, `${s} equals the new primary`);
      assert.equal(v.txid, primary.txid);
      if (s === 'p') continue;
      const ops = (await c.api(s)('GET', '/v1/operations?database=big')).body.value as any[];
      assert.equal(ops.filter((o) => o.kind === 'seedSecondary').length, 1, `${s} was seeded once`);
      const l = (await c.api(s)('GET', '/v1/databases/big/replicationLinks')).body.value[0];
      assert.equal(l.partnerServer, 's1');
      // Bytes received by a fresh link since the relink (a relinked sink counts from zero on its new stream).
      const since = l.bytesTransferred - (before.get(s) ?? 0);
      assert.ok(since < size / 4, `${s} received ${since} bytes after the failover; the database is ${size}`);
    }
    // No acknowledged write lost.
    const rows = (await sql('s1', "select v from t where v like 'w%'")).body.rows.map((r: any[]) => r[0] as string);
    const have = new Set(rows);
    for (const v of acked) assert.ok(have.has(v), `acknowledged ${v} is present`);
  } finally {
    await c.stop();
  }
});
