// The SDK's geo-replication calls against real server processes: links, seeding, reads
// on the secondary, sync durability, wait-for-copy-sync, planned and forced failover,
// failover groups and a listener client that follows them; the epoch guard and the
// monotonic-read guard across a real network cut (a killed proxy process); and, with a
// scripted fetch, the ordering property and the listener's retry rules.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Cluster, eventually } from '../replication/testing/cluster.js';
import { comparePositions, GeodrApiError, GeodrClient, type Position } from './index.js';

const TOKEN = 'admin-token-0123456789abcdef';

async function rejectsWith(p: Promise<unknown>, code: string, status?: number): Promise<GeodrApiError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof GeodrApiError, `expected GeodrApiError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (status !== undefined) assert.equal(e.status, status, e.message);
    return e;
  }
  assert.fail(`expected ${code}, but the call succeeded`);
}

const count = async (c: GeodrClient, db: string): Promise<number> => Number((await c.query(db, 'select count(*) from t')).rows[0]![0]);

describe('against two servers', () => {
  let c: Cluster;
  let east: GeodrClient;
  let west: GeodrClient;

  before(async () => {
    c = await Cluster.start(['east', 'west']);
    east = new GeodrClient({ url: c.node('east').url, token: TOKEN });
    west = new GeodrClient({ url: c.node('west').url, token: TOKEN });
  });
  after(async () => {
    await c?.stop();
  });

  /** A database on east with table t and `rows` rows, and its secondary on west, seeded. */
  async function linked(db: string, rows: number): Promise<void> {
    await east.createDatabase(db);
    await east.batch(db, ['create table t (id integer primary key, v text)', ...Array.from({ length: rows }, (_, i) => ({ sql: 'insert into t (v) values (?)', params: [`r${i}`] }))]);
    const add = await east.addSecondary(db, { partnerServer: 'west' });
    await west.waitForOperation(add.operation.id, { intervalMs: 50, timeoutMs: 30_000 });
  }

  test('add a secondary, follow its seeding, read it, write with sync durability, wait for copy sync', { timeout: 60_000 }, async () => {
    await east.createDatabase('shop');
    await east.batch('shop', ['create table t (id integer primary key, v text)', "insert into t (v) values ('a'), ('b')"]);
    const add = await east.addSecondary('shop', { partnerServer: 'west' });
    assert.equal(add.server, 'west');
    assert.equal(add.database, 'shop');
    assert.equal(add.operation.kind, 'seedSecondary');
    // The seeding operation lives on the partner.
    await rejectsWith(east.getOperation(add.operation.id), 'NOT_FOUND', 404);
    const seeded = await west.waitForOperation(add.operation.id, { intervalMs: 50, timeoutMs: 30_000 });
    assert.equal(seeded.state, 'Succeeded');

    const [pl] = await east.replicationLinks('shop');
    assert.equal(pl?.role, 'Primary');
    assert.equal(pl?.partnerServer, 'west');
    assert.equal(pl?.partnerRole, 'Secondary');
    const [sl] = await west.replicationLinks('shop');
    assert.equal(sl?.role, 'Secondary');
    assert.equal(sl?.partnerServer, 'east');
    assert.equal((await west.replicationLink('shop', sl.id)).id, sl.id);
    await rejectsWith(west.replicationLink('shop', 'no-such-link'), 'NOT_FOUND', 404);

    // Sync durability, per call: on the secondary as soon as the write is acknowledged.
    const w = await east.query('shop', 'insert into t (v) values (?)', ['sync-1'], { durability: 'sync' });
    assert.deepEqual((await west.query('shop', "select count(*) from t where v = 'sync-1'")).rows, [[1]]);
    assert.deepEqual(east.position('shop'), { epoch: 1, txid: w.txid });
    // And per client.
    const syncClient = new GeodrClient({ url: c.node('east').url, token: TOKEN, durability: 'sync' });
    await syncClient.batch('shop', [{ sql: 'insert into t (v) values (?)', params: ['sync-2'] }]);
    assert.deepEqual((await west.query('shop', "select count(*) from t where v = 'sync-2'")).rows, [[1]]);
    const tx = await syncClient.transaction('shop');
    await tx.query("insert into t (v) values ('sync-3')");
    const committed = await tx.commit();
    assert.deepEqual((await west.query('shop', "select count(*) from t where v = 'sync-3'")).rows, [[1]]);
    assert.deepEqual(syncClient.position('shop'), { epoch: 1, txid: committed });

    // Wait for copy sync: everything committed before the call is on the secondary.
    const plain = await east.query('shop', "insert into t (v) values ('local')");
    const synced = await east.waitForCopySync('shop', { partnerServer: 'west', timeoutMs: 10_000 });
    assert.ok(synced.txid >= plain.txid);
    assert.ok(synced.secondaries[0]!.lastReplicatedTxid >= plain.txid);
    assert.equal(await count(west, 'shop'), await count(east, 'shop'));
    const dataClient = new GeodrClient({ url: c.node('east').url, token: c.node('east').server.dataToken });
    await rejectsWith(dataClient.waitForCopySync('shop'), 'FORBIDDEN', 403);

    // The secondary is readable, and says where writes go.
    const ro = await rejectsWith(west.query('shop', "insert into t (v) values ('no')"), 'READ_ONLY', 409);
    assert.match(ro.message, /geo-secondary/);

    // Bad input: refused, nothing changed.
    await rejectsWith(east.addSecondary('shop', { partnerServer: 'east' }), 'INVALID_ARGUMENT', 400);
    await rejectsWith(east.addSecondary('shop', { partnerServer: 'west' }), 'CONFLICT', 409);
    await rejectsWith(east.addSecondary('shop', { partnerServer: 'nowhere' }), 'NOT_FOUND', 404);
    await rejectsWith(east.failover('shop'), 'CONFLICT', 409);
    await rejectsWith(west.waitForCopySync('shop'), 'CONFLICT', 409);
    await assert.rejects(east.query('shop', 'select 1', undefined, { durability: 'fast' as never }), TypeError);
    assert.throws(() => new GeodrClient({ url: c.node('east').url, durability: 'always' as never }), TypeError);
    assert.equal((await east.replicationLinks('shop')).length, 1);
  });

  test('planned failover via the SDK: nothing lost, the epoch rises, the old primary follows', { timeout: 60_000 }, async () => {
    const before = await count(east, 'shop');
    const fo = await west.failover('shop');
    assert.equal(fo.database, 'shop');
    assert.equal(fo.epoch, 2);
    assert.equal(await count(west, 'shop'), before);
    const w = await west.query('shop', "insert into t (v) values ('on west')");
    assert.deepEqual(west.position('shop'), { epoch: 2, txid: w.txid });
    await rejectsWith(east.query('shop', "insert into t (v) values ('no')"), 'READ_ONLY', 409);
    await eventually(async () => (await count(east, 'shop')) === before + 1, 10_000, 'east follows');
    assert.equal(east.position('shop')?.epoch, 2, 'east, now a secondary, answers at the new epoch');
    assert.equal((await east.replicationLinks('shop'))[0]?.role, 'Secondary');

    // And back, with the link looked up by the SDK.
    assert.equal((await east.failover('shop')).epoch, 3);
    await east.query('shop', "insert into t (v) values ('home')");
  });

  test('a failover group: listeners, and a listener client that follows planned and forced group failovers', { timeout: 90_000 }, async () => {
    await linked('ga', 3);
    await linked('gb', 3);
    const g = await east.putFailoverGroup('grp', { partnerServer: 'west', databases: ['ga', 'gb'] });
    assert.equal(g.role, 'Primary');
    assert.deepEqual(g.databases.map((d) => d.database), ['ga', 'gb']);
    assert.equal(g.readWriteListener.server, 'east');
    assert.equal(g.readOnlyListener.server, 'west');
    assert.deepEqual((await west.listFailoverGroups()).map((x) => [x.name, x.role]), [['grp', 'Secondary']]);
    assert.equal((await west.getFailoverGroup('grp')).readWriteListener.server, 'east');
    assert.deepEqual(await west.failoverGroupListener('grp', 'rw'), { server: 'east', url: c.node('east').url });
    await assert.rejects(west.failoverGroupListener('grp', 'rx' as never), TypeError);
    await rejectsWith(east.getFailoverGroup('nope'), 'NOT_FOUND', 404);
    await rejectsWith(east.putFailoverGroup('grp2', { partnerServer: 'west', databases: ['shop-none'] }), 'NOT_FOUND', 404);

    // The first server is down: resolution moves on to the next.
    const dead = 'http://127.0.0.1:9';
    const app = GeodrClient.forListener({ servers: [dead, c.node('west').url, c.node('east').url], group: 'grp', kind: 'rw', token: TOKEN, retries: 6 });
    const reader = GeodrClient.forListener({ servers: [c.node('east').url, c.node('west').url], group: 'grp', kind: 'ro', token: TOKEN });
    assert.equal(app.url, dead, 'before the first request: the first server');
    await app.query('ga', "insert into t (v) values ('via rw')");
    assert.equal(app.url, c.node('east').url);
    await eventually(async () => (await reader.query('ga', "select count(*) from t where v = 'via rw'")).rows[0]![0] === 1, 10_000, 'the ro listener reads the secondary');
    assert.equal(reader.url, c.node('west').url);

    // Planned failover of the group to west: the rw client's next write meets READ_ONLY on east, resolves again, and lands on west.
    const fo = await west.failoverGroupFailover('grp');
    assert.deepEqual(fo.databases.map((d) => [d.database, d.epoch]), [['ga', 2], ['gb', 2]]);
    assert.equal(fo.group.role, 'Primary');
    await rejectsWith(west.failoverGroupFailover('grp'), 'CONFLICT', 409);
    const after1 = await app.query('ga', "insert into t (v) values ('after planned')");
    assert.equal(app.url, c.node('west').url);
    assert.equal(app.position('ga')?.epoch, 2);
    assert.equal((await west.query('ga', "select count(*) from t where v = 'after planned'")).rows[0]![0], 1);
    assert.ok(after1.txid > 0);

    // Forced failover back to east. Until west hears of it, a client that has not seen the
    // new epoch may still write there (that is the data loss allowed); once west is fenced
    // or has rejoined, it refuses, and the client moves.
    const forced = await east.failoverGroupForceFailoverAllowDataLoss('grp');
    assert.deepEqual(forced.databases.map((d) => d.epoch), [3, 3]);
    for (const db of ['ga', 'gb']) await eventually(async () => (await west.getDatabase(db)).role === 'secondary', 20_000, `west rejoins ${db}`);
    await app.batch('gb', ["insert into t (v) values ('after forced')"]);
    assert.equal(app.url, c.node('east').url);
    assert.equal(app.position('gb')?.epoch, 3);
    // Reads through the ro listener never go back, wherever it lands.
    const seen = reader.position('ga')!;
    const r = await reader.query('ga', 'select count(*) from t');
    assert.ok(comparePositions(reader.position('ga')!, seen) >= 0);
    assert.ok(Number(r.rows[0]![0]) >= 4);

    await east.deleteFailoverGroup('grp');
    assert.deepEqual(await east.listFailoverGroups(), []);
    await eventually(async () => (await west.listFailoverGroups()).length === 0, 5000, 'the partner forgets the group');
    // A client resolving now finds no group.
    await rejectsWith(GeodrClient.forListener({ servers: [c.node('east').url, c.node('west').url], group: 'grp', kind: 'rw', token: TOKEN }).query('ga', 'select 1'), 'NOT_FOUND', 404);
  });

  test('remove a link: the secondary becomes an independent, writable database', { timeout: 60_000 }, async () => {
    await linked('solo', 2);
    const [sl] = await west.replicationLinks('solo');
    const gone = await west.removeReplicationLink('solo', sl!.id);
    assert.deepEqual(gone, { removed: sl!.id, independent: { server: 'west', database: 'solo' } });
    await west.query('solo', "insert into t (v) values ('mine now')");
    assert.equal(await count(west, 'solo'), 3);
    await eventually(async () => (await east.replicationLinks('solo')).length === 0, 5000, 'the primary forgets the link');
    assert.equal((await west.getDatabase('solo')).role, 'primary');

    // createSecondary, asked of the copy's server; and a one-time copy.
    const op = await west.createSecondary('solo2', { sourceServer: 'east', sourceDatabaseName: 'solo' });
    assert.equal((await west.waitForOperation(op.id, { intervalMs: 50, timeoutMs: 30_000 })).state, 'Succeeded');
    assert.equal((await west.getDatabase('solo2')).role, 'secondary');
    const copy = await west.createSecondary('solo3', { sourceServer: 'east', sourceDatabaseName: 'solo', copy: true });
    await west.waitForOperation(copy.id, { intervalMs: 50, timeoutMs: 30_000 });
    await west.query('solo3', "insert into t (v) values ('copy')");
    assert.equal(await count(west, 'solo3'), 3);
    await rejectsWith(west.createSecondary('solo4', { sourceServer: 'west', sourceDatabaseName: 'solo' }), 'INVALID_ARGUMENT', 400);
    await assert.rejects(west.createDatabase('solo5', { createMode: 'Secondary' }), TypeError);
  });
});

describe('across a network cut', () => {
  let c: Cluster;
  let east: GeodrClient;
  let west: GeodrClient;

  before(async () => {
    c = await Cluster.start(['east', 'west'], { proxied: true, config: () => ({ replication: { heartbeatMs: 100, peerTimeoutMs: 1000, maxBackoffMs: 200, syncTimeoutMs: 400 } }) });
    east = new GeodrClient({ url: c.node('east').url, token: TOKEN });
    west = new GeodrClient({ url: c.node('west').url, token: TOKEN });
  });
  after(async () => {
    await c?.stop();
  });

  test('a lagging secondary is refused (STALE_READ); after a forced failover a client that saw the new epoch is refused by the old primary (STALE_EPOCH), which keeps what it wrote alone', { timeout: 120_000 }, async () => {
    await east.createDatabase('fence');
    await east.batch('fence', ['create table t (id integer primary key, v text)', "insert into t (v) values ('a'), ('b')"]);
    const add = await east.addSecondary('fence', { partnerServer: 'west' });
    await west.waitForOperation(add.operation.id, { intervalMs: 50, timeoutMs: 30_000 });
    await east.waitForCopySync('fence');
    await c.cut();

    // Monotonic reads: a client that saw east's newest write does not accept west's older answer.
    const w = await east.query('fence', "insert into t (v) values ('east only')");
    const reader = new GeodrClient({ url: c.node('west').url, token: TOKEN });
    reader.notePosition('fence', east.position('fence')!);
    const stale = await rejectsWith(reader.query('fence', 'select count(*) from t'), 'STALE_READ', 0);
    assert.equal(stale.retryable, true);
    assert.deepEqual(stale.context.details?.seen, { epoch: 1, txid: w.txid });
    assert.deepEqual(reader.position('fence'), { epoch: 1, txid: w.txid }, 'a refused answer teaches nothing');
    // A client without that knowledge reads west's older state.
    assert.equal(await count(new GeodrClient({ url: c.node('west').url, token: TOKEN }), 'fence'), 2);
    // Sync durability cannot be had while cut off: the write is committed on the primary, at the TXID the error names.
    const slow = await rejectsWith(east.query('fence', "insert into t (v) values ('sync, cut off')", undefined, { durability: 'sync' }), 'REPLICATION_TIMEOUT', 504);
    assert.equal(slow.context.txid, w.txid + 1);
    assert.deepEqual(east.position('fence'), { epoch: 1, txid: w.txid + 1 });
    assert.equal(await count(east, 'fence'), 4);

    // Forced failover on the secondary while the primary is cut off.
    const fo = await west.forceFailoverAllowDataLoss('fence');
    assert.equal(fo.epoch, 2);
    await west.query('fence', "insert into t (v) values ('west')");
    const seenNew = west.position('fence')!;
    assert.equal(seenNew.epoch, 2);

    // The old primary has not heard: a fresh client still writes there (the lost tail)...
    const fresh = new GeodrClient({ url: c.node('east').url, token: TOKEN });
    await fresh.query('fence', "insert into t (v) values ('lost')");
    const eastCount = await count(fresh, 'fence');
    // ...but a client that saw epoch 2 is refused before anything runs, for writes and reads.
    const informed = new GeodrClient({ url: c.node('east').url, token: TOKEN, retries: 0 });
    informed.notePosition('fence', seenNew);
    const e = await rejectsWith(informed.query('fence', "insert into t (v) values ('never')"), 'STALE_EPOCH', 409);
    assert.equal(e.context.details?.minEpoch, 2);
    await rejectsWith(informed.query('fence', 'select count(*) from t'), 'STALE_EPOCH', 409);
    await eventually(async () => (await count(fresh, 'fence')) === eastCount, 5000, 'east readable');
    assert.equal((await fresh.query('fence', "select count(*) from t where v = 'never'")).rows[0]![0], 0);

    // The network returns: east learns it was deposed, keeps its lost tail aside, and rejoins.
    await c.heal();
    await eventually(async () => (await east.getDatabase('fence')).role === 'secondary', 30_000, 'east rejoins as a secondary');
    const lost = await eventually(async () => (await east.lostTransactions()).find((r) => r.database === 'fence'), 10_000, 'a lost-transactions report');
    assert.equal(lost.newPrimary.server, 'west');
    assert.equal(lost.newPrimary.epoch, 2);
    assert.equal(lost.epoch, 1);
    assert.ok(lost.transactions >= 3, JSON.stringify(lost));
    // The fresh client saw (1, high TXID) on east; west's epoch 2 supersedes it even at a lower TXID.
    assert.equal(await count(fresh, 'fence'), 3);
    assert.ok(fresh.position('fence')!.epoch >= 2);
  });
});

describe('client rules (scripted fetch)', () => {
  /** A fetch answering SQL with the given (epoch, txid) in turn; records the Min-Epoch header each request carried. */
  function positions(answers: Position[]): { fetch: typeof fetch; minEpochs: number[] } {
    const minEpochs: number[] = [];
    let i = 0;
    const f: typeof fetch = (_url, init) => {
      minEpochs.push(Number((init?.headers as Record<string, string>)['geodr-min-epoch']));
      const a = answers[i++]!;
      const wire = { columns: ['x'], types: [null], rows: [[1]], rowsAffected: 0, lastInsertRowid: null, txid: a.txid };
      return Promise.resolve(Response.json(wire, { headers: { 'geodr-epoch': String(a.epoch) } }));
    };
    return { fetch: f, minEpochs };
  }

  test('property: accepted answers never go back in (epoch, TXID); refused ones are exactly those that would, and teach nothing', async () => {
    const pos = fc.record({ epoch: fc.integer({ min: 1, max: 4 }), txid: fc.integer({ min: 0, max: 30 }) });
    await fc.assert(
      fc.asyncProperty(fc.array(pos, { minLength: 1, maxLength: 30 }), async (answers) => {
        const s = positions(answers);
        const client = new GeodrClient({ url: 'http://geodr.invalid', fetch: s.fetch, retries: 0 });
        let high: Position | undefined;
        for (const a of answers) {
          const minEpoch = high?.epoch ?? 0;
          let accepted = true;
          try {
            await client.query('d', 'select 1');
          } catch (e) {
            assert.ok(e instanceof GeodrApiError);
            assert.equal(e.code, a.epoch < minEpoch ? 'STALE_EPOCH' : 'STALE_READ');
            assert.equal(e.status, 0);
            accepted = false;
          }
          assert.equal(s.minEpochs.at(-1), minEpoch, 'Min-Epoch carries the newest epoch seen');
          assert.equal(accepted, high === undefined || comparePositions(a, high) >= 0);
          if (accepted) high = { epoch: a.epoch, txid: a.txid };
          assert.deepEqual(client.position('d'), high);
        }
      }),
      { numRuns: 200 },
    );
  });

  test('a name that answers with another database id starts a new history; the id travels with Min-Epoch', async () => {
    const sent: Array<Record<string, string>> = [];
    const answers = [
      { epoch: 3, txid: 50, id: 'a'.repeat(32) },
      { epoch: 1, txid: 2, id: 'b'.repeat(32) }, // deleted and re-created: epoch 1 again, and that is not stale
      { epoch: 1, txid: 1, id: 'b'.repeat(32) }, // but going back within the new history is
    ];
    let i = 0;
    const f: typeof fetch = (_url, init) => {
      sent.push({ ...(init?.headers as Record<string, string>) });
      const a = answers[i++]!;
      return Promise.resolve(Response.json({ columns: ['x'], types: [null], rows: [[1]], rowsAffected: 0, lastInsertRowid: null, txid: a.txid }, { headers: { 'geodr-epoch': String(a.epoch), 'geodr-db-id': a.id } }));
    };
    const client = new GeodrClient({ url: 'http://geodr.invalid', fetch: f, retries: 0 });
    await client.query('db', 'select 1');
    await client.query('db', 'select 1');
    assert.deepEqual(client.position('db'), { epoch: 1, txid: 2 });
    await assert.rejects(client.query('db', 'select 1'), (e: unknown) => (e as { code?: string }).code === 'STALE_READ');
    assert.equal(sent[1]!['geodr-min-epoch'], '3');
    assert.equal(sent[1]!['geodr-db-id'], 'a'.repeat(32));
    assert.equal(sent[2]!['geodr-min-epoch'], '1');
    assert.equal(sent[2]!['geodr-db-id'], 'b'.repeat(32));
  });

  test('concurrent requests are each held to the position when they were sent', async () => {
    const answers = [
      { epoch: 1, txid: 10 },
      { epoch: 1, txid: 5 },
    ];
    let i = 0;
    const release: Array<() => void> = [];
    const f: typeof fetch = () => {
      const a = answers[i++]!;
      return new Promise((resolve) =>
        release.push(() => resolve(Response.json({ columns: [], types: [], rows: [], rowsAffected: 0, lastInsertRowid: null, txid: a.txid }, { headers: { 'geodr-epoch': String(a.epoch) } }))),
      );
    };
    const client = new GeodrClient({ url: 'http://geodr.invalid', fetch: f });
    const first = client.query('d', 'select 1');
    const second = client.query('d', 'select 1');
    await eventually(() => release.length === 2);
    release[0]!();
    await first;
    release[1]!();
    assert.equal((await second).txid, 5, 'sent before the newer answer arrived: not refused');
    assert.deepEqual(client.position('d'), { epoch: 1, txid: 10 });
  });

  test('a transaction opened on an older copy is rolled back and refused; a sync write that timed out still moves the position', async () => {
    const calls: string[] = [];
    const f: typeof fetch = (input, init) => {
      const path = new URL(input instanceof Request ? input.url : input).pathname;
      calls.push(`${init?.method} ${path} min-epoch=${(init?.headers as Record<string, string>)['geodr-min-epoch'] ?? '-'}`);
      if (path.endsWith('/transactions')) return Promise.resolve(Response.json({ transaction: 'tx1', expiresAt: new Date().toISOString() }, { status: 201, headers: { 'geodr-epoch': '1' } }));
      if (path.endsWith('/rollback')) return Promise.resolve(new Response(null, { status: 204 }));
      return Promise.resolve(
        Response.json({ error: { code: 'REPLICATION_TIMEOUT', message: 'no secondary confirmed', retryable: false, txid: 41 } }, { status: 504, headers: { 'geodr-epoch': '3' } }),
      );
    };
    const client = new GeodrClient({ url: 'http://geodr.invalid', fetch: f });
    await rejectsWith(client.query('d', "insert into t values ('x')", undefined, { durability: 'sync' }), 'REPLICATION_TIMEOUT', 504);
    assert.deepEqual(client.position('d'), { epoch: 3, txid: 41 });
    await rejectsWith(client.transaction('d'), 'STALE_EPOCH', 0);
    assert.deepEqual(calls, ['POST /v1/databases/d/query min-epoch=0', 'POST /v1/databases/d/transactions min-epoch=3', 'POST /v1/databases/d/transactions/tx1/rollback min-epoch=-']);
    client.forgetPosition('d');
    assert.equal(client.position('d'), undefined);
    assert.throws(() => client.notePosition('d', { epoch: -1, txid: 0 }), TypeError);
  });

  test('a listener client: re-resolves after READ_ONLY; never re-sends a write whose outcome is unknown; retries stale reads only for ro', async () => {
    type Reply = Response | 'reset';
    function listener(routes: Record<string, Reply[]>): { fetch: typeof fetch; calls: string[] } {
      const calls: string[] = [];
      const f: typeof fetch = (input) => {
        const u = new URL(input instanceof Request ? input.url : input);
        const key = `${u.host}${u.pathname}`;
        calls.push(key);
        const r = routes[key]?.shift();
        if (r === undefined) return Promise.reject(new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) }));
        if (r === 'reset') return Promise.reject(new TypeError('fetch failed', { cause: Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }) }));
        return Promise.resolve(r);
      };
      return { fetch: f, calls };
    }
    const target = (host: string): Response => Response.json({ server: host, url: `http://${host}` });
    const sql = (epoch: number, txid: number): Response => Response.json({ columns: [], types: [], rows: [], rowsAffected: 1, lastInsertRowid: 1, txid }, { headers: { 'geodr-epoch': String(epoch) } });
    const readOnly = (): Response => Response.json({ error: { code: 'READ_ONLY', message: 'a secondary', retryable: false } }, { status: 409, headers: { 'geodr-epoch': '2' } });
    const L = '/v1/failoverGroups/g/listener/rw';
    const Q = '/v1/databases/d/query';

    // READ_ONLY from the old primary: ask the other server first, move, retry; the epoch learnt from the refusal goes along.
    const a = listener({ [`a${L}`]: [target('a'), target('a')], [`b${L}`]: [target('b')], [`a${Q}`]: [sql(1, 5), readOnly()], [`b${Q}`]: [sql(2, 6)] });
    const app = GeodrClient.forListener({ servers: ['http://a', 'http://b'], group: 'g', kind: 'rw', fetch: a.fetch });
    await app.query('d', 'insert into t values (1)');
    await app.query('d', 'insert into t values (2)');
    assert.deepEqual(a.calls, [`a${L}`, `a${Q}`, `a${Q}`, `b${L}`, `b${Q}`]);
    assert.equal(app.url, 'http://b');
    assert.deepEqual(app.position('d'), { epoch: 2, txid: 6 });

    // A write whose connection broke after sending is not re-sent anywhere.
    const b = listener({ [`a${L}`]: [target('a')], [`a${Q}`]: ['reset'], [`b${Q}`]: [sql(1, 1)] });
    const e = await rejectsWith(GeodrClient.forListener({ servers: ['http://a', 'http://b'], group: 'g', kind: 'rw', fetch: b.fetch }).query('d', 'insert into t values (1)'), 'UNAVAILABLE', 0);
    assert.equal(e.context.details?.outcomeUnknown, true);
    assert.deepEqual(b.calls, [`a${L}`, `a${Q}`]);

    // A stale answer: an ro client asks again elsewhere; an rw client reports it.
    const RO = '/v1/failoverGroups/g/listener/ro';
    const ro = listener({ [`a${RO}`]: [target('a')], [`b${RO}`]: [target('b')], [`a${Q}`]: [sql(1, 3)], [`b${Q}`]: [sql(1, 9)] });
    const reader = GeodrClient.forListener({ servers: ['http://a', 'http://b'], group: 'g', kind: 'ro', fetch: ro.fetch });
    reader.notePosition('d', { epoch: 1, txid: 8 });
    assert.equal((await reader.query('d', 'select 1')).txid, 9);
    assert.equal(reader.url, 'http://b');
    const rw = listener({ [`a${L}`]: [target('a')], [`a${Q}`]: [sql(1, 3)] });
    const writer = GeodrClient.forListener({ servers: ['http://a'], group: 'g', kind: 'rw', fetch: rw.fetch });
    writer.notePosition('d', { epoch: 1, txid: 8 });
    await rejectsWith(writer.query('d', 'select 1'), 'STALE_READ', 0);

    // Every server refuses to resolve: that answer, not a retry loop.
    const none = listener({ [`a${L}`]: [Response.json({ error: { code: 'NOT_FOUND', message: 'no group', retryable: false } }, { status: 404 })] });
    await rejectsWith(GeodrClient.forListener({ servers: ['http://a'], group: 'g', kind: 'rw', fetch: none.fetch }).query('d', 'select 1'), 'NOT_FOUND', 404);
    assert.throws(() => GeodrClient.forListener({ servers: [], group: 'g', kind: 'rw' }), TypeError);
    assert.throws(() => GeodrClient.forListener({ servers: ['ftp://a'], group: 'g', kind: 'rw' }), TypeError);
    assert.throws(() => GeodrClient.forListener({ servers: ['http://a'], group: 'g', kind: 'rx' as never }), TypeError);
  });
});
