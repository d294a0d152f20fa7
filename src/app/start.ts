/**
 * `npm start`: brings up the default two-region deployment on loopback (as `geodr dev
 * up` does), creates a few tenant databases in the first region, and sells tickets in
 * them for a while, printing each tenant's progress. Then it stops the servers (their
 * state stays in .geodr-dev for the next run). Options: --seconds N (default 30),
 * --tenants N (default 5), --keep (leave the servers running).
 */
import { parseArgs } from 'node:util';
import { loadDeployment } from '../deploy/deployment.js';
import { devDown, devUp, DEFAULT_STATE_DIR, type DevState } from '../deploy/dev.js';
import { GeodrClient } from '../sdk/index.js';
import { buyTicket, provisionTenants, tenantStats } from './workload.js';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { seconds: { type: 'string', default: '30' }, tenants: { type: 'string', default: '5' }, keep: { type: 'boolean', default: false }, 'state-dir': { type: 'string' } },
    strict: true,
  });
  const seconds = Number(values.seconds);
  const count = Number(values.tenants);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new Error(`--seconds must be a positive number, got ${values.seconds}`);
  if (!Number.isInteger(count) || count < 1 || count > 100) throw new Error(`--tenants must be an integer from 1 to 100, got ${values.tenants}`);
  const stateDir = values['state-dir'] ?? process.env.GEODR_DEV_DIR ?? DEFAULT_STATE_DIR;

  console.log('Starting the default deployment (two paired regions, one server each)...');
  const state = await devUp(loadDeployment(undefined), { stateDir, log: (l) => console.log(`  ${l}`) });
  for (const s of state.servers) console.log(`  ${s.name} (${s.region}, paired with ${s.pairedRegion}): ${s.url}`);
  console.log(`  admin token: ${state.tokens.admin}`);
  try {
    return await run(state, stateDir, seconds, count, values.keep === true);
  } catch (e) {
    if (values.keep !== true) await devDown({ stateDir });
    throw e;
  }
}

async function run(state: DevState, stateDir: string, seconds: number, count: number, keep: boolean): Promise<number> {
  const primary = state.servers[0]!;
  const pool = state.deployment.regions[0]!.servers[0]!.pools[0]?.name ?? 'default';
  const client = new GeodrClient({ url: primary.url, token: state.tokens.admin });
  const tenants = Array.from({ length: count }, (_, i) => `venue-${String(i + 1).padStart(2, '0')}`);
  console.log(`\nProvisioning ${count} tenant databases in ${primary.name}/${pool}...`);
  await provisionTenants(client, tenants, pool);

  // Active geo-replication: each tenant gets a readable secondary on the paired region's server.
  const partner = state.servers.find((s) => s.region === primary.pairedRegion);
  const partnerClient = partner === undefined ? undefined : new GeodrClient({ url: partner.url, token: state.tokens.admin });
  if (partner !== undefined && partnerClient !== undefined) {
    console.log(`Adding a geo-secondary of every tenant on ${partner.name} (${partner.region})...`);
    for (const tenant of tenants) {
      const links = await client.replicationLinks(tenant);
      if (links.some((l) => l.partnerServer === partner.name)) continue;
      const added = await client.addSecondary(tenant, { partnerServer: partner.name });
      await partnerClient.waitForOperation(added.operation.id, { timeoutMs: 60_000 });
    }
  }

  console.log(`Selling tickets for ${seconds} s (Ctrl-C stops early):\n`);
  let stop = false;
  process.once('SIGINT', () => {
    stop = true;
  });
  let seed = 42;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  const end = Date.now() + seconds * 1000;
  let sold = 0;
  const buyers = Array.from({ length: 4 }, async () => {
    while (!stop && Date.now() < end) {
      const tenant = tenants[Math.floor(rand() * tenants.length)]!;
      await buyTicket(client, tenant, rand);
      sold++;
      await new Promise((r) => setTimeout(r, 5));
    }
  });
  const reporter = (async () => {
    while (!stop && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 3000));
      const stats = await tenantStats(client, tenants);
      console.log(`${new Date().toISOString().slice(11, 19)}  ${stats.map((s) => `${s.tenant}: ${s.tickets} tickets (TXID ${s.txid})`).join('  ')}`);
    }
  })();
  await Promise.all([...buyers, reporter]);
  console.log(`\n${sold} tickets sold, each acknowledged only once durable in its tenant's log.`);
  // Continuous backup: within about a second every write is in the region's vault, then in
  // the paired region's copy.
  await new Promise((r) => setTimeout(r, 2500));
  const paired = state.servers.find((s) => s.region === primary.pairedRegion)?.region ?? 'the paired region';
  for (const tenant of tenants) {
    const p = await client.restorePoints(tenant);
    console.log(
      `  ${tenant}: TXID ${p.backup.shippedTxid} in the ${primary.region} vault, ${p.backup.geo?.copiedTxid ?? 0} copied to ${paired}; restorable from ${p.earliest?.time ?? '-'} to ${p.latest?.time ?? '-'}`,
    );
  }
  if (partner !== undefined && partnerClient !== undefined) {
    console.log(`\nGeo-secondaries on ${partner.name}:`);
    for (const tenant of tenants) {
      await client.waitForCopySync(tenant);
      const [link] = await partnerClient.replicationLinks(tenant);
      const db = await partnerClient.getDatabase(tenant);
      console.log(`  ${tenant}: ${link?.state ?? '-'} at TXID ${db.txid}, lag ${link?.lagTxids ?? '-'} transactions, checksum ${db.checksum}`);
    }
    // A planned failover and back: the tenant keeps every ticket, and its other copy follows.
    const tenant = tenants[0]!;
    const there = await partnerClient.failover(tenant);
    await buyTicket(partnerClient, tenant, rand);
    const back = await client.failover(tenant);
    console.log(`  planned failover of ${tenant} to ${partner.name} took ${there.ms} ms (epoch ${there.epoch}); a ticket sold there; back to ${primary.name} in ${back.ms} ms (epoch ${back.epoch}).`);
  }
  if (keep) {
    console.log(`Servers left running. Try:\n  GEODR_URL=${primary.url} GEODR_TOKEN=${state.tokens.admin} npx geodr db list\nStop them with: npx geodr dev down`);
  } else {
    await devDown({ stateDir });
    console.log(`Servers stopped; their data stays in ${stateDir}. "npx geodr dev up" starts them again.`);
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`npm start: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
