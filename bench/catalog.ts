/**
 * `npm run bench -- catalog`: data-dependent routing and the recovery manager at scale,
 * against real server processes (a catalog server and a shard server).
 *
 *   routingLookupsPerSec     ShardMapClient.lookup from a warm cache (in-process, no I/O)
 *   routingValidatedPerSec   openConnectionForKey with LSM validation (one HTTP read of the
 *                            shard's LSM each), 16 in flight, over a hot set of 200 tenants
 *   routedQueryPerSec        `select 1` through a ShardConnection (validated where it runs)
 *   recover10kShardsMs       rebuildAfterFailover after 10,000 shards moved server: the shard
 *                            server is stopped and started again on another port (every
 *                            shard's location changes), then the shards are detached and
 *                            attached at the new location and their GSM and LSM compared and
 *                            reconciled (detect + resolve), each LSM read from its database
 *
 * The provisioning (10,000 databases, one tenant mapping each) is timed as phases. There
 * is no budget for these in BRIEF.md; the targets below are this benchmark's own.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnServer, type ServerProcess } from '../src/server/testing/spawn.js';
import { ShardMapClient, createShardMapManager, type ShardConnection, type ShardMapManager } from '../src/sdk/index.js';
import { fmt, log, parseQuickDir, phase, printReport, rate, secondsSince, type BenchContext, type Budget } from './common.js';

export const CATALOG_USAGE = `options:
  --quick           500 shards instead of 10,000 and 2 s per rate instead of 6
  --dir DIR         work directory (default: the OS temp dir)`;

interface Sizes {
  shards: number;
  seconds: number;
  hot: number;
}

const FULL: Sizes = { shards: 10_000, seconds: 6, hot: 200 };
const QUICK: Sizes = { shards: 500, seconds: 2, hot: 200 };

const BUDGETS: Record<string, Budget> = {
  routingLookupsPerSec: { op: '>=', value: 500_000, what: 'target: routing lookups per second from a warm cache (in-process)' },
  routingValidatedPerSec: { op: '>=', value: 1_000, what: 'target: openConnectionForKey with LSM validation per second, over HTTP' },
  recover10kShardsMs: { op: '<=', value: 60_000, what: 'target: rebuildAfterFailover (detach, attach, detect, resolve) after 10,000 shards moved server' },
};

type Context = BenchContext<Sizes>;

async function put(sp: ServerProcess, route: string): Promise<void> {
  const r = await fetch(`${sp.url}${route}`, { method: 'PUT', headers: { authorization: `Bearer ${sp.adminToken}`, 'content-type': 'application/json' }, body: '{}' });
  if (!r.ok) throw new Error(`PUT ${route}: ${r.status} ${await r.text()}`);
}

const dbName = (i: number): string => `t-${String(i).padStart(5, '0')}`;

async function provision(ctx: Context, catalog: ServerProcess, shards: ServerProcess): Promise<ShardMapManager> {
  const n = ctx.sizes.shards;
  await put(catalog, '/v1/databases/catalog');
  await put(shards, `/v1/elasticPools/tenants`);
  await phase(ctx, `create ${n} tenant databases`, async () => {
    let made = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (;;) {
          const i = made++;
          if (i >= n) return;
          await put(shards, `/v1/databases/${dbName(i)}`);
          if ((i + 1) % 1000 === 0) log(`  ${i + 1} databases`);
        }
      }),
    );
  });
  const smm = await createShardMapManager({ url: catalog.url, token: catalog.adminToken, database: 'catalog', shardToken: shards.adminToken, concurrency: 16 });
  await smm.createListShardMap('tenants', 'int');
  await phase(ctx, `add ${n} shards with one tenant mapping each (GSM and LSMs)`, async () => {
    for (let from = 0; from < n; from += 1000) {
      const locs = Array.from({ length: Math.min(1000, n - from) }, (_, j) => ({ server: shards.url, database: dbName(from + j) }));
      await smm.addShards('tenants', locs, locs.map((location, j) => ({ key: from + j, location })));
      log(`  ${from + locs.length} shards`);
    }
  });
  return smm;
}

async function routing(ctx: Context, catalog: ServerProcess, shards: ServerProcess): Promise<void> {
  const n = ctx.sizes.shards;
  const client = new ShardMapClient({ catalog: { url: catalog.url, token: catalog.adminToken, database: 'catalog' }, shardToken: shards.adminToken });
  await phase(ctx, 'warm the routing cache (loadMap)', () => client.loadMap('tenants'));
  // Warm-cache lookups: the in-process cost of routing a key.
  let k = 0;
  const t0 = performance.now();
  let lookups = 0;
  while (performance.now() - t0 < ctx.sizes.seconds * 1000) {
    for (let j = 0; j < 1000; j++) await client.lookup('tenants', (k++ * 7919) % n);
    lookups += 1000;
  }
  ctx.results.routingLookupsPerSec = lookups / secondsSince(t0);
  ctx.figures.push({ label: 'routingLookupsPerSec', value: ctx.results.routingLookupsPerSec as number, unit: '/s', budget: 'routingLookupsPerSec', digits: 0 });
  log(`warm-cache lookups: ${fmt(ctx.results.routingLookupsPerSec as number, 0)}/s`);

  const hot = Array.from({ length: Math.min(ctx.sizes.hot, n) }, (_, i) => (i * 37) % n);
  for (const key of hot) await client.openConnectionForKey('tenants', key);
  ctx.results.routingValidatedPerSec = await rate(ctx.sizes.seconds, 16, (i) => client.openConnectionForKey('tenants', hot[i % hot.length]!));
  ctx.figures.push({ label: 'routingValidatedPerSec', value: ctx.results.routingValidatedPerSec as number, unit: '/s', budget: 'routingValidatedPerSec', digits: 0 });
  log(`validated opens: ${fmt(ctx.results.routingValidatedPerSec as number, 0)}/s`);

  const conns: ShardConnection[] = [];
  for (const key of hot) conns.push(await client.openConnectionForKey('tenants', key, { validate: false }));
  ctx.results.routedQueryPerSec = await rate(ctx.sizes.seconds, 16, (i) => conns[i % conns.length]!.query('select 1'));
  ctx.figures.push({ label: 'routedQueryPerSec', value: ctx.results.routedQueryPerSec as number, unit: '/s', digits: 0 });
  log(`routed queries: ${fmt(ctx.results.routedQueryPerSec as number, 0)}/s`);
  ctx.notes.push(`routingValidatedPerSec and routedQueryPerSec run over a hot set of ${hot.length} tenants (one database each, all open on the server); a cold tenant adds the open of its database.`);
}

async function recovery(ctx: Context, smm: ShardMapManager, shards: ServerProcess): Promise<ServerProcess> {
  const n = ctx.sizes.shards;
  const oldUrl = shards.url;
  await phase(ctx, 'stop the shard server and start it on another port', () => shards.stop());
  const moved = await spawnServer({ dataDir: shards.dataDir });
  log(`shards moved from ${oldUrl} to ${moved.url}`);
  const rm = smm.getRecoveryManager();
  const t0 = performance.now();
  const r = await rm.rebuildAfterFailover({ fromServer: oldUrl, toServer: moved.url, concurrency: 16 });
  const ms = performance.now() - t0;
  ctx.phases.push({ phase: `rebuildAfterFailover, ${n} shards`, seconds: ms / 1000 });
  if (r.moved.length !== n || r.failed.length > 0 || r.notMoved.length > 0) {
    throw new Error(`rebuild moved ${r.moved.length} of ${n} (not moved ${r.notMoved.length}, failed ${r.failed.length}): ${JSON.stringify(r.notMoved.slice(0, 3))} ${JSON.stringify(r.failed.slice(0, 3))}`);
  }
  ctx.results.recoverShards = n;
  ctx.results.recoverShardsMs = ms;
  ctx.results.recoverPerShardMs = ms / n;
  ctx.results.recoverReconciled = r.reconciled.length;
  if (n === 10_000) {
    ctx.results.recover10kShardsMs = ms;
    ctx.figures.push({ label: 'recover10kShardsMs', value: ms, unit: 'ms', budget: 'recover10kShardsMs', digits: 0 });
  } else {
    ctx.figures.push({ label: `recoverShardsMs (${n} shards)`, value: ms, unit: 'ms', digits: 0 });
  }
  log(`rebuildAfterFailover: ${n} shards in ${fmt(ms, 0)} ms (${fmt(ms / n, 2)} ms a shard)`);
  const t1 = performance.now();
  const again = await rm.rebuildAfterFailover({ fromServer: oldUrl, toServer: moved.url });
  ctx.results.rebuildAgainMs = performance.now() - t1;
  if (again.moved.length !== 0 || again.reconciled.length !== 0) throw new Error('the second rebuild changed something');
  ctx.figures.push({ label: 'rebuildAgainMs (nothing left to do)', value: ctx.results.rebuildAgainMs as number, unit: 'ms', digits: 0 });
  // Routing reaches the moved shards.
  const client = new ShardMapClient({ catalog: { url: smm.options.url, token: smm.options.token, database: 'catalog' }, shardToken: moved.adminToken });
  for (const key of [0, Math.floor(n / 2), n - 1]) {
    const conn = await client.openConnectionForKey('tenants', key);
    if (conn.location.server !== moved.url) throw new Error(`key ${key} still routes to ${conn.location.server}`);
  }
  ctx.notes.push('recover10kShardsMs: one run; the old server is down (no fencing). Per shard it reads the LSM of the database at the new location (opening it, the server holding up to maxOpenDatabases open), then one GSM transaction moves all shards and a bulk GSM read lets each shard be compared without another request; shards that agree need no writes.');
  return moved;
}

export async function runCatalogBench(args: string[]): Promise<void> {
  const opts = parseQuickDir(args);
  const base = opts.dir ?? os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  const dir = fs.mkdtempSync(path.join(base, 'geodr-bench-catalog-'));
  const ctx: Context = { dir, sizes: opts.quick ? QUICK : FULL, quick: opts.quick, results: {}, figures: [], phases: [], breakdowns: [], notes: [] };
  const loadAtStart = os.loadavg().map((x) => Math.round(x * 100) / 100);
  log(`work directory ${dir}${opts.quick ? ' (quick)' : ''}; load average ${loadAtStart.join(' ')}`);
  const started = performance.now();
  const servers: ServerProcess[] = [];
  try {
    const [catalog, shards] = await Promise.all([spawnServer({ dataDir: path.join(dir, 'catalog') }), spawnServer({ dataDir: path.join(dir, 'shards') })]);
    servers.push(catalog, shards);
    const smm = await provision(ctx, catalog, shards);
    await routing(ctx, catalog, shards);
    servers.push(await recovery(ctx, smm, shards));
  } finally {
    for (const s of servers) await s.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  ctx.phases.push({ phase: 'total', seconds: secondsSince(started) });
  const loadAtEnd = os.loadavg().map((x) => Math.round(x * 100) / 100);
  ctx.notes.push(`load average (1/5/15 min) at start ${loadAtStart.join(' ')}, at end ${loadAtEnd.join(' ')}; ${os.cpus().length} CPUs, shared with whatever else the machine ran.`);
  printReport('catalog', ctx, BUDGETS, 'target');
  const json = {
    bench: 'catalog',
    quick: opts.quick,
    date: new Date().toISOString(),
    ...ctx.results,
    budgets: BUDGETS,
    machine: { cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, loadAverageAtStart: loadAtStart, loadAverageAtEnd: loadAtEnd },
    phases: ctx.phases,
    notes: ctx.notes,
  };
  const resultsDir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  fs.mkdirSync(resultsDir, { recursive: true });
  const target = path.join(resultsDir, 'catalog.json');
  fs.writeFileSync(`${target}.tmp`, JSON.stringify(json, null, 2) + '\n');
  fs.renameSync(`${target}.tmp`, target);
  console.log(`\nresults written to ${path.relative(process.cwd(), target) || target}`);
}
