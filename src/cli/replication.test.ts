// geodr link ... and geodr fog ..., as a user runs them: a child process against two
// real servers that are each other's peers, checked by stdout (tables and --json),
// stderr and exit codes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Cluster, eventually } from '../replication/testing/cluster.js';
import { GeodrClient } from '../sdk/index.js';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));
const TOKEN = 'admin-token-0123456789abcdef';

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

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `geodr args...` against the named server. */
function geodr(node: 'east' | 'west', args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { env: { ...process.env, GEODR_URL: c.node(node).url, GEODR_TOKEN: TOKEN }, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
    );
  });
}

function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

function fails(r: Run, code: number, error: RegExp): Run {
  assert.equal(r.code, code, `expected exit ${code}, got ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.match(r.stderr, error);
  assert.equal(r.stdout, '', 'nothing on stdout when a command fails');
  return r;
}

const json = (r: Run): any => JSON.parse(ok(r).stdout);

/** Table rows as arrays of cells (split on runs of two or more spaces). */
const cells = (stdout: string): string[][] =>
  stdout
    .trimEnd()
    .split('\n')
    .map((l) => l.split(/\s{2,}/));

async function database(db: string, rows: number): Promise<void> {
  await east.createDatabase(db);
  await east.batch(db, ['create table t (id integer primary key, v text)', ...Array.from({ length: rows }, (_, i) => ({ sql: 'insert into t (v) values (?)', params: [`r${i}`] }))]);
}

test('link add --wait follows the seeding on the partner; list, show, wait-sync; refusals and their exit codes', { timeout: 90_000 }, async () => {
  await database('cli-shop', 5);
  fails(await geodr('east', ['link', 'add', 'cli-shop', '--partner-server', 'nowhere', '--wait']), 3, /not a known peer/);
  // --wait follows the seeding at the partner URL the primary's server reports.
  const seeded = json(await geodr('east', ['link', 'add', 'cli-shop', '--partner-server', 'west', '--wait', '--json']));
  assert.equal(seeded.kind, 'seedSecondary');
  assert.equal(seeded.state, 'Succeeded');
  assert.equal(seeded.database, 'cli-shop');

  const list = ok(await geodr('east', ['link', 'list', 'cli-shop']));
  const [head, row] = cells(list.stdout);
  assert.deepEqual(head, ['ID', 'ROLE', 'PARTNER', 'STATE', 'LAST TXID', 'LAG']);
  assert.equal(row?.[1], 'Primary');
  assert.equal(row?.[2], 'cli-shop@west');
  const [sl] = json(await geodr('west', ['link', 'list', 'cli-shop', '--json'])).value;
  assert.equal(sl.role, 'Secondary');
  const show = ok(await geodr('west', ['link', 'show', 'cli-shop', sl.id]));
  assert.match(show.stdout, /^role: +Secondary$/m);
  assert.match(show.stdout, /^partner: +cli-shop on east \(Primary\)$/m);
  fails(await geodr('west', ['link', 'show', 'cli-shop', 'no-such-link']), 3, /^geodr: NOT_FOUND: /);

  await east.query('cli-shop', "insert into t (v) values ('more')");
  // Run again until the link shows CATCH_UP: a pause on a loaded machine can show it
  // SUSPENDED for a moment (the secondary drops a stream after 400 ms without a heartbeat).
  const synced = await eventually(async () => {
    const r = await geodr('east', ['link', 'wait-sync', 'cli-shop', '--timeout', '10']);
    return r.code !== 0 || /^cli-shop@west +CATCH_UP /m.test(r.stdout) ? r : undefined;
  }, 10_000, 'wait-sync showing the link streaming');
  ok(synced);
  assert.match(synced.stdout, /^in sync at txid \d+$/m);
  assert.match(synced.stdout, /^cli-shop@west +CATCH_UP +\d+ +0 txids, 0 ms$/m);
  const sj = json(await geodr('east', ['link', 'wait-sync', 'cli-shop', '--partner-server', 'west', '--json']));
  assert.equal(sj.secondaries[0].lastReplicatedTxid, sj.txid);
  assert.equal((await west.query('cli-shop', 'select count(*) from t')).rows[0]![0], 6);

  fails(await geodr('east', ['link', 'wait-sync', 'cli-shop', '--timeout', '601']), 2, /^geodr: USAGE: /);
  fails(await geodr('east', ['link', 'wait-sync', 'cli-shop', '--timeout', 'soon']), 2, /^geodr: USAGE: /);
  fails(await geodr('west', ['link', 'wait-sync', 'cli-shop']), 4, /^geodr: CONFLICT: /);
  fails(await geodr('east', ['link', 'add', 'cli-shop', '--partner-server', 'west']), 4, /^geodr: CONFLICT: /);
  fails(await geodr('east', ['link', 'add', 'cli-shop', '--partner-server', 'east']), 4, /^geodr: INVALID_ARGUMENT: /);
  fails(await geodr('east', ['link', 'add', 'no-such-db', '--partner-server', 'west']), 3, /^geodr: NOT_FOUND: /);
  fails(await geodr('east', ['link', 'failover', 'cli-shop']), 4, /^geodr: CONFLICT: .*not a geo-secondary/);
  fails(await geodr('east', ['db', 'create', 'x', '--create-mode', 'Secondary']), 2, /link create-secondary/);
});

test('fog: create, list, show, listener, failover, force-failover, delete; link create-secondary and remove', { timeout: 90_000 }, async () => {
  await database('cli-a', 2);
  const add = await east.addSecondary('cli-a', { partnerServer: 'west' });
  await west.waitForOperation(add.operation.id, { intervalMs: 50, timeoutMs: 30_000 });

  fails(await geodr('east', ['fog', 'create', 'grp', '--partner-server', 'west']), 2, /^geodr: USAGE: .*--db/);
  const created = json(await geodr('east', ['fog', 'create', 'grp', '--partner-server', 'west', '--db', 'cli-a', '--json']));
  assert.equal(created.role, 'Primary');
  assert.deepEqual(created.databases, [{ database: 'cli-a', partnerDatabase: 'cli-a', role: 'primary' }]);
  const list = cells(ok(await geodr('west', ['fog', 'list'])).stdout);
  assert.deepEqual(list[0], ['NAME', 'ROLE', 'PARTNER', 'DATABASES', 'READ-WRITE', 'READ-ONLY', 'CONSISTENT']);
  assert.deepEqual(list[1], ['grp', 'Secondary', 'east', '1', 'east', 'west', 'yes']);
  const show = ok(await geodr('west', ['fog', 'show', 'grp']));
  assert.match(show.stdout, new RegExp(`^read-write listener: +east ${c.node('east').url}$`, 'm'));
  assert.match(show.stdout, /^cli-a +secondary +cli-a$/m);
  fails(await geodr('west', ['fog', 'show', 'nope']), 3, /^geodr: NOT_FOUND: /);

  assert.equal(ok(await geodr('west', ['fog', 'listener', 'grp', '--kind', 'rw'])).stdout, `${c.node('east').url}\n`);
  assert.deepEqual(cells(ok(await geodr('east', ['fog', 'listener', 'grp'])).stdout).slice(1), [
    ['rw', 'east', c.node('east').url],
    ['ro', 'west', c.node('west').url],
  ]);
  assert.deepEqual(json(await geodr('east', ['fog', 'listener', 'grp', '--json'])).ro, { server: 'west', url: c.node('west').url });
  fails(await geodr('east', ['fog', 'listener', 'grp', '--kind', 'rx']), 2, /^geodr: USAGE: /);

  const fo = ok(await geodr('west', ['fog', 'failover', 'grp']));
  assert.match(fo.stdout, /^primary side: +west$/m);
  assert.match(fo.stdout, /^cli-a +2 +\d+$/m);
  assert.equal(ok(await geodr('east', ['fog', 'listener', 'grp', '--kind', 'rw'])).stdout, `${c.node('west').url}\n`);
  fails(await geodr('west', ['fog', 'failover', 'grp']), 4, /^geodr: CONFLICT: /);
  fails(await geodr('east', ['fog', 'force-failover', 'grp']), 2, /^geodr: USAGE: .*--allow-data-loss/);
  const forced = json(await geodr('east', ['fog', 'force-failover', 'grp', '--allow-data-loss', '--json']));
  assert.deepEqual(forced.databases.map((d: any) => d.epoch), [3]);
  await eventually(async () => (await west.getDatabase('cli-a')).role === 'secondary', 20_000, 'west rejoins');

  assert.equal(ok(await geodr('east', ['fog', 'delete', 'grp'])).stdout, 'deleted failover group grp\n');
  fails(await geodr('east', ['fog', 'show', 'grp']), 3, /^geodr: NOT_FOUND: /);

  // A one-time copy, made on west from east's primary, waited for with a progress bar.
  const copy = ok(await geodr('west', ['link', 'create-secondary', 'cli-a-copy', '--source-server', 'east', '--source-db', 'cli-a', '--copy', '--wait']));
  assert.match(copy.stdout, /^state: +Succeeded$/m);
  assert.match(copy.stderr, /^seedSecondary \d+%$/m, 'plain progress lines when stderr is not a terminal');
  assert.equal((await west.getDatabase('cli-a-copy')).role, 'primary');
  fails(await geodr('west', ['link', 'create-secondary', 'cli-a-copy', '--source-server', 'east', '--source-db', 'cli-a']), 4, /^geodr: CONFLICT: /);

  // Remove the link, asked of the primary: west's copy becomes independent.
  const [pl] = await east.replicationLinks('cli-a');
  const removed = json(await geodr('east', ['link', 'remove', 'cli-a', pl!.id, '--json']));
  assert.deepEqual(removed, { removed: pl!.id, independent: { server: 'west', database: 'cli-a' } });
  await eventually(async () => (await west.getDatabase('cli-a')).role === 'primary', 10_000, 'west independent');
  assert.equal(ok(await geodr('east', ['link', 'list', 'cli-a'])).stdout, 'ID  ROLE  PARTNER  STATE  LAST TXID  LAG\n');
});

test('failover, force-failover with the primary down, wait-sync timing out, and the lost transactions', { timeout: 120_000 }, async () => {
  // cli-shop (first test): east primary, west secondary. Planned failover to west.
  const fo = json(await geodr('west', ['link', 'failover', 'cli-shop', '--json']));
  assert.equal(fo.epoch, 2);
  assert.match(ok(await geodr('east', ['link', 'list', 'cli-shop'])).stdout, /^\S+ +Secondary +cli-shop@west /m);

  // The secondary goes down; the primary keeps writing alone, and a wait for it times out (exit 6).
  await c.kill('east');
  for (let i = 0; i < 3; i++) await west.query('cli-shop', "insert into t (v) values ('alone')");
  fails(await geodr('west', ['link', 'wait-sync', 'cli-shop', '--timeout', '0.3']), 6, /^geodr: REPLICATION_TIMEOUT: /);

  // Then the primary goes down too, and east comes back: forced failover, which needs the confirmation.
  await c.kill('west');
  await c.restart('east');
  fails(await geodr('east', ['link', 'force-failover', 'cli-shop']), 2, /^geodr: USAGE: .*--allow-data-loss/);
  const forced = ok(await geodr('east', ['link', 'force-failover', 'cli-shop', '--allow-data-loss']));
  assert.match(forced.stdout, /^epoch: +3$/m);
  assert.match(forced.stdout, /^primary: +this server$/m);
  await east.query('cli-shop', "insert into t (v) values ('east again')");

  // West returns, learns it was deposed, keeps what it wrote alone, and rejoins.
  await c.restart('west');
  await eventually(async () => (await west.getDatabase('cli-shop')).role === 'secondary', 30_000, 'west rejoins as a secondary');
  const lost = await eventually(async () => {
    const v = json(await geodr('west', ['link', 'lost', '--json'])).value.filter((r: any) => r.database === 'cli-shop');
    return v.length > 0 ? v : undefined;
  }, 10_000, 'a lost-transactions report');
  assert.equal(lost[0].transactions, 3);
  assert.equal(lost[0].newPrimary.server, 'east');
  const table = cells(ok(await geodr('west', ['link', 'lost'])).stdout);
  assert.deepEqual(table[0], ['DATABASE', 'TXIDS', 'TRANSACTIONS', 'PAGES', 'FIRST', 'LAST', 'EPOCH', 'NEW PRIMARY', 'RECORDS']);
  assert.equal(table[1]?.[0], 'cli-shop');
  assert.equal(table[1]?.[2], '3');
  assert.equal(table[1]?.[7], 'cli-shop@east (epoch 3)');
  assert.equal(ok(await geodr('west', ['link', 'lost', '--database', 'other'])).stdout.trim().split('\n').length, 1, 'only the header');
  assert.equal((await east.query('cli-shop', "select count(*) from t where v = 'alone'")).rows[0]![0], 0);
});
