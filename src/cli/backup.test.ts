// geodr db restore|geo-restore|restore-points|retention|ltr|ltr-backups|recoverable and
// geodr backup retention, as a user runs them: a child process against real servers
// (two regions with paired vaults, so geo-restore has a copy to read).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../engine/testing/helpers.js';
import { GeodrClient } from '../sdk/index.js';
import { spawnServer, type ServerProcess } from '../server/testing/spawn.js';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));
const backup = { shipIntervalMs: 100, snapshotEveryRecords: 20 };

let root: { dir: string; cleanup: () => void };
let east: ServerProcess;
let west: ServerProcess;
let sdk: GeodrClient;

before(async () => {
  root = tempDir();
  const va = path.join(root.dir, 'vault-east');
  const vb = path.join(root.dir, 'vault-west');
  [east, west] = await Promise.all([
    spawnServer({ dataDir: path.join(root.dir, 'east'), config: { name: 'cli-east', region: 'eastus', vault: { type: 'fs', path: va }, pairedVault: { type: 'fs', path: vb }, backup } }),
    spawnServer({ dataDir: path.join(root.dir, 'west'), config: { name: 'cli-west', region: 'westus', vault: { type: 'fs', path: vb }, pairedVault: { type: 'fs', path: va }, backup } }),
  ]);
  sdk = new GeodrClient({ url: east.url, token: east.adminToken });
});

after(async () => {
  await Promise.all([east?.stop(), west?.stop()]);
  root?.cleanup();
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `geodr args...` against the east server unless `server` says otherwise. */
function geodr(args: string[], server: () => ServerProcess = () => east): Promise<Run> {
  const sp = server();
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { env: { ...process.env, GEODR_URL: sp.url, GEODR_TOKEN: sp.adminToken }, timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
    );
  });
}

function ok(r: Run): Run {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

/** Waits until the vault holds `txid` of `db`. */
async function shipped(db: string, txid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const p = await sdk.restorePoints(db);
    // The vault listing can show a batch a moment before the shipper records it as shipped.
    if ((p.latest?.txid ?? -1) >= txid && p.backup.shippedTxid >= txid) return;
    await delay(50);
  }
  assert.fail(`TXID ${txid} of ${db} never reached the vault`);
}

/** A database with `n` rows in table t, one TXID per row; returns the TXID of each row. */
async function seed(db: string, n: number): Promise<number[]> {
  await sdk.createDatabase(db);
  await sdk.query(db, 'create table t (k integer primary key)');
  const txids: number[] = [];
  for (let k = 1; k <= n; k++) txids.push((await sdk.query(db, 'insert into t values (?)', [k])).txid);
  return txids;
}

describe('restores', () => {
  test('db restore-points shows the window and the shipping state', async () => {
    const txids = await seed('cli-points', 5);
    await shipped('cli-points', txids.at(-1)!);
    const r = ok(await geodr(['db', 'restore-points', 'cli-points']));
    assert.match(r.stdout, /^database: +cli-points$/m);
    assert.match(r.stdout, /^db id: +[0-9a-f]{32}$/m);
    assert.match(r.stdout, /^earliest: +txid 0 at \d{4}-\d\d-\d\dT/m);
    assert.match(r.stdout, new RegExp(`^latest: +txid ${txids.at(-1)} at `, 'm'));
    assert.match(r.stdout, new RegExp(`^shipped txid: +${txids.at(-1)}$`, 'm'));
    assert.match(r.stdout, /^unshipped records: +0$/m);
    assert.match(r.stdout, /^estimated data loss: +0 s$/m);
    assert.match(r.stdout, /^shipping: +ok$/m);
    assert.match(r.stdout, /^geo copy: +fs:.*copied txid \d+/m);
    const json = JSON.parse(ok(await geodr(['db', 'restore-points', 'cli-points', '--json'])).stdout);
    assert.equal(json.latest.txid, txids.at(-1));
    assert.equal(json.backup.unshippedRecords, 0);
    assert.equal((await geodr(['db', 'restore-points', 'no-such-db'])).code, 3);
  });

  test('db restore --from DB --txid N restores that TXID, with progress on stderr', async () => {
    const txids = await seed('cli-shop', 12);
    await shipped('cli-shop', txids.at(-1)!);
    const r = ok(await geodr(['db', 'restore', 'cli-shop-7', '--from', 'cli-shop', '--txid', String(txids[6])]));
    assert.match(r.stdout, /^kind: +restoreDatabase$/m);
    assert.match(r.stdout, /^state: +Succeeded$/m);
    assert.match(r.stdout, new RegExp(`^result\\.restoredTxid: +${txids[6]}$`, 'm'));
    assert.match(r.stderr, /^restoreDatabase \d+%$/m, 'plain progress lines when stderr is not a terminal');
    assert.deepEqual(JSON.parse(ok(await geodr(['sql', 'cli-shop-7', 'select count(*), max(k) from t', '--json'])).stdout).rows, [[7, 7]]);

    // --no-wait prints the started operation; op wait follows it.
    const started = JSON.parse(ok(await geodr(['db', 'restore', 'cli-shop-all', '--from', 'cli-shop', '--no-wait', '--json'])).stdout);
    assert.equal(started.kind, 'restoreDatabase');
    assert.equal(JSON.parse(ok(await geodr(['op', 'wait', started.id, '--json'])).stdout).state, 'Succeeded');
    assert.deepEqual(JSON.parse(ok(await geodr(['sql', 'cli-shop-all', 'select count(*) from t', '--json'])).stdout).rows, [[12]]);

    // A point outside the window: the operation fails (exit 7) and is printed; the target exists already: refused (exit 4).
    const far = await geodr(['db', 'restore', 'cli-shop-far', '--from', 'cli-shop', '--txid', '1000000']);
    assert.equal(far.code, 7);
    assert.match(far.stdout, /^state: +Failed$/m);
    assert.match(far.stderr, /^geodr: TARGET_OUT_OF_RANGE: /m);
    const exists = await geodr(['db', 'restore', 'cli-shop-7', '--from', 'cli-shop']);
    assert.equal(exists.code, 4);
    assert.match(exists.stderr, /^geodr: CONFLICT: /);
  });

  test('db restore --dropped ID brings back a deleted database', async () => {
    const txids = await seed('cli-gone', 3);
    await shipped('cli-gone', txids.at(-1)!);
    ok(await geodr(['db', 'delete', 'cli-gone']));
    const dropped = JSON.parse(ok(await geodr(['db', 'dropped', '--json'])).stdout).value.find((d: { name: string }) => d.name === 'cli-gone');
    const r = ok(await geodr(['db', 'restore', 'cli-gone', '--dropped', dropped.id]));
    assert.match(r.stdout, /^state: +Succeeded$/m);
    assert.deepEqual(JSON.parse(ok(await geodr(['sql', 'cli-gone', 'select count(*) from t', '--json'])).stdout).rows, [[3]]);
    assert.equal((await geodr(['db', 'restore', 'cli-gone-2', '--dropped', '00000000-0000-0000-0000-000000000000'])).code, 3);
  });

  test('db retention shows and sets the window; an invalid value is refused', async () => {
    ok(await geodr(['db', 'create', 'cli-pol']));
    assert.match(ok(await geodr(['db', 'retention', 'cli-pol'])).stdout, /^retention days: +7$/m);
    assert.match(ok(await geodr(['db', 'retention', 'cli-pol', '--days', '14'])).stdout, /^retention days: +14$/m);
    assert.deepEqual(JSON.parse(ok(await geodr(['db', 'retention', 'cli-pol', '--json'])).stdout), { retentionDays: 14 });
    assert.match(ok(await geodr(['db', 'show', 'cli-pol'])).stdout, /^retention days: +14$/m);
    const [tooLong, notANumber] = await Promise.all([geodr(['db', 'retention', 'cli-pol', '--days', '36']), geodr(['db', 'retention', 'cli-pol', '--days', 'two'])]);
    assert.equal(tooLong.code, 4, 'out of range: the server refuses it');
    assert.match(tooLong.stderr, /^geodr: INVALID_ARGUMENT: .*35/);
    assert.equal(notANumber.code, 2);
    assert.match(notANumber.stderr, /^geodr: USAGE: .*--days/);
    assert.match(ok(await geodr(['db', 'retention', 'cli-pol'])).stdout, /^retention days: +14$/m, 'unchanged');
  });

  test('db ltr changes what its flags name; backup retention takes a long-term backup; db restore --ltr restores it', async () => {
    const txids = await seed('cli-ltr', 3);
    let r = ok(await geodr(['db', 'ltr', 'cli-ltr']));
    assert.match(r.stdout, /^weekly: +none$/m);
    r = ok(await geodr(['db', 'ltr', 'cli-ltr', '--weekly', 'P12W', '--yearly', 'p5y', '--week-of-year', '3']));
    assert.match(r.stdout, /^weekly: +P12W$/m);
    assert.match(r.stdout, /^yearly: +P5Y$/m);
    assert.match(r.stdout, /^week of year: +3$/m);
    const merged = JSON.parse(ok(await geodr(['db', 'ltr', 'cli-ltr', '--monthly', 'P12M', '--json'])).stdout);
    assert.deepEqual(merged, { weeklyRetention: 'P12W', monthlyRetention: 'P12M', yearlyRetention: 'P5Y', weekOfYear: 3 }, 'other settings are kept');
    const tooLong = await geodr(['db', 'ltr', 'cli-ltr', '--yearly', 'P11Y']);
    assert.equal(tooLong.code, 4);
    assert.match(tooLong.stderr, /10 years/);

    await shipped('cli-ltr', txids.at(-1)!);
    r = ok(await geodr(['backup', 'retention']));
    assert.match(r.stdout, /^long-term backups taken: +[1-9]\d*$/m);
    assert.match(r.stdout, /^objects deleted: +\d+$/m);
    const backups = JSON.parse(ok(await geodr(['db', 'ltr-backups', 'cli-ltr', '--json'])).stdout).value as Array<{ kind: string; txid: number }>;
    const weekly = backups.find((b) => b.kind === 'weekly');
    assert.ok(weekly !== undefined, JSON.stringify(backups));
    const table = ok(await geodr(['db', 'ltr-backups', 'cli-ltr'])).stdout;
    assert.match(table, /^KIND +TXID +TIME +KEY$/m);
    assert.match(table, /^weekly +\d+ +\d{4}-\d\d-\d\dT\S+ +databases\/[0-9a-f]{32}\/ltr\//m);

    const dbId = (await sdk.getDatabase('cli-ltr')).dbId;
    r = ok(await geodr(['db', 'restore', 'cli-ltr-old', '--ltr', dbId, '--txid', String(weekly.txid)]));
    assert.match(r.stdout, new RegExp(`^result\\.restoredTxid: +${weekly.txid}$`, 'm'));

    r = ok(await geodr(['db', 'ltr', 'cli-ltr', '--clear']));
    assert.match(r.stdout, /^weekly: +none$/m);
    assert.match(r.stdout, /^yearly: +none$/m);
  });

  test('db recoverable and db geo-restore in the paired region', async () => {
    const txids = await seed('cli-geo', 4);
    const dbId = (await sdk.getDatabase('cli-geo')).dbId;
    // The last batch copied is not enough: copies finish in any order, so an earlier batch (or the
    // descriptor, or the base snapshot) may still be in flight, and west's listing would stop short.
    for (let i = 0; i < 200; i++) {
      const geo = (await sdk.restorePoints('cli-geo')).backup.geo;
      if ((geo?.copiedTxid ?? 0) >= txids.at(-1)! && geo?.pending === 0) break;
      await delay(50);
    }
    const list = ok(await geodr(['db', 'recoverable'], () => west)).stdout;
    assert.match(list, /^NAME +DB ID +REGION +SERVER +LATEST TXID +LATEST TIME +EST\. DATA LOSS$/m);
    assert.match(list, new RegExp(`^cli-geo +${dbId} +eastus +cli-east +${txids.at(-1)} `, 'm'));
    const r = ok(await geodr(['db', 'geo-restore', 'cli-geo', '--source-id', dbId, '--txid', String(txids[1])], () => west));
    assert.match(r.stdout, /^state: +Succeeded$/m);
    assert.deepEqual(JSON.parse(ok(await geodr(['sql', 'cli-geo', 'select count(*) from t', '--json'], () => west)).stdout).rows, [[2]]);
  });
});

test('bad flag combinations are usage errors (exit 2) that name the problem', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['db', 'restore', 'x'], /say what to restore: --from DB .* --dropped ID .* --ltr DBID/],
    [['db', 'restore', 'x', '--from', 'a', '--dropped', 'b'], /give one of --from, --dropped and --ltr, not --from and --dropped/],
    [['db', 'restore', 'x', '--from', 'a', '--time', '2026-01-01T00:00:00Z', '--txid', '3'], /give --time or --txid, not both/],
    [['db', 'restore', 'x', '--ltr', '0123456789abcdef0123456789abcdef'], /--ltr needs --txid/],
    [['db', 'restore', 'x', '--ltr', '0123456789abcdef0123456789abcdef', '--time', '2026-01-01T00:00:00Z'], /--ltr restores a long-term backup by its TXID/],
    [['db', 'restore', 'x', '--from', 'a', '--time', 'yesterday'], /--time.*ISO-8601/],
    [['db', 'restore', 'x', '--from', 'a', '--txid', '-1'], /--txid/],
    [['db', 'geo-restore', 'x'], /--source-id/],
    [['db', 'geo-restore', 'x', '--source-id', 'y', '--time', '2026-01-01T00:00:00Z', '--txid', '3'], /give --time or --txid, not both/],
    [['db', 'ltr', 'x', '--clear', '--weekly', 'P1W'], /--clear removes the whole policy/],
    [['db', 'ltr', 'x', '--weekly', '12 weeks'], /--weekly.*ISO-8601 duration/],
    [['db', 'create', 'x', '--create-mode', 'PointInTimeRestore'], /use geodr db restore NAME --from DB/],
  ];
  const runs = await Promise.all(cases.map(([args]) => geodr(args)));
  runs.forEach((r, i) => {
    const [args, message] = cases[i]!;
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code} ${r.stderr}`);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^geodr: USAGE: /, args.join(' '));
    assert.match(r.stderr, message, args.join(' '));
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, `${args.join(' ')}: one line`);
  });
});
