/**
 * geodr catalog …: the shard map manager (maps, shards, mappings, lookups), the
 * recovery manager (detect, resolve, detach, attach, rebuild after a failover, pending
 * operations), the tenant catalog and inventory sync. `--url` is the server holding
 * the catalog database (`--catalog-db`, default `catalog`); shard servers are reached
 * at their URL with the same token.
 */
import { Argument, InvalidArgumentError, Option, type Command } from 'commander';
import {
  formatLocation,
  getShardMapManager,
  keyValue,
  parseKeyText,
  startInventorySync,
  syncInventory,
  TenantCatalog,
  type Mapping,
  type MappingDifferenceResolution,
  type RecoveryToken,
  type Shard,
  type ShardKey,
  type ShardLocation,
  type ShardMapManager,
  type SyncResult,
  type Tenant,
} from '../sdk/index.js';
import { CliExit, EXIT, collect, globals, parseSeconds } from './context.js';
import { formatTime, keyValues, print, printJson, table } from './format.js';

interface CatalogFlags {
  catalogDb: string;
}

function manager(cmd: Command): ShardMapManager {
  const g = globals(cmd);
  const { catalogDb } = cmd.optsWithGlobals<CatalogFlags>();
  return getShardMapManager({ url: g.url, token: g.token, database: catalogDb });
}

const json = (cmd: Command): boolean => globals(cmd).json === true;

/** --server (default: the catalog server, --url) and --database. */
function locationOptions(c: Command, what = 'the shard'): Command {
  return c.option('--server <url>', `server of ${what} (default: --url)`).requiredOption('--database <name>', `database of ${what}`);
}

function locationOf(cmd: Command, opts: { server?: string; database: string }): ShardLocation {
  return { server: opts.server ?? globals(cmd).url, database: opts.database };
}

/** A key given as text, as the map's key type wants it. */
async function keyFor(smm: ShardMapManager, map: string, text: string): Promise<ShardKey> {
  const info = await smm.mapInfo(map);
  parseKeyText(info.keyType, text);
  return keyValue(info.keyType, text);
}

const statusArgument = (): Argument => new Argument('<status>', 'online or offline').choices(['online', 'offline']);

function parseRename(value: string, previous: Record<string, string> | undefined): Record<string, string> {
  const m = /^([^=]+)=([^=]+)$/.exec(value);
  if (m === null) throw new InvalidArgumentError('expected OLD=NEW (a database restored under another name).');
  return { ...previous, [m[1]!]: m[2]! };
}

function range(m: Mapping, kind: string): string {
  return kind === 'list' ? m.low : `[${m.low}, ${m.high ?? '∞'})`;
}

function showShards(cmd: Command, shards: Shard[]): void {
  if (json(cmd)) return printJson({ value: shards });
  print(table(['ID', 'MAP', 'SERVER', 'DATABASE', 'STATUS', 'VERSION', 'PENDING'], shards.map((s) => [s.id, s.map, s.server, s.database, s.status, String(s.version), s.pendingOperation ?? '-'])));
}

async function showMappings(cmd: Command, smm: ShardMapManager, map: string, mappings: Mapping[]): Promise<void> {
  if (json(cmd)) return printJson({ value: mappings });
  const info = await smm.mapInfo(map);
  const shards = new Map((await smm.getShards(map)).map((s) => [s.id, s]));
  print(
    table(
      ['ID', info.kind === 'list' ? 'KEY' : 'RANGE', 'SHARD', 'STATUS', 'VERSION', 'PENDING'],
      mappings.map((m) => {
        const s = shards.get(m.shardId);
        return [m.id, range(m, info.kind), s === undefined ? m.shardId : formatLocation(s), m.status, String(m.version), m.pendingOperation ?? '-'];
      }),
    ),
  );
}

function showTenant(cmd: Command, t: Tenant): void {
  if (json(cmd)) return printJson(t);
  print(
    keyValues([
      ['name', t.name],
      ['map', t.map],
      ['key', t.key],
      ['status', t.status],
      ['server', t.server ?? '-'],
      ['database', t.database ?? '-'],
      ['pool', t.pool ?? '-'],
      ['last restored', t.lastRestored === null ? '-' : `txid ${t.lastRestored.txid} at ${t.lastRestored.time}`],
      ['last repatriated', t.lastRepatriated === null ? '-' : `txid ${t.lastRepatriated.txid} at ${t.lastRepatriated.time}`],
      ['updated', formatTime(t.updatedAt)],
    ]),
  );
}

function showTokens(cmd: Command, tokens: RecoveryToken[]): void {
  if (json(cmd)) return printJson({ value: tokens });
  if (tokens.length === 0) return print('no differences: the GSM and the LSM agree');
  const rows: string[][] = [];
  for (const t of tokens) {
    for (const d of t.differences) {
      const side = (x: typeof d.global): string => (x === undefined ? '-' : Object.entries(x).map(([k, v]) => `${k}=${v === null ? '∞' : String(v)}`).join(' '));
      rows.push([t.map, d.kind, d.mappingId ?? d.operationId ?? '-', side(d.global), side(d.local)]);
    }
  }
  print(table(['MAP', 'DIFFERENCE', 'MAPPING/OPERATION', 'GSM', 'LSM'], rows));
}

function showSync(cmd: Command, r: SyncResult): void {
  if (json(cmd)) return printJson(r);
  for (const s of r.synced) print(`synced ${s.server} (${s.name}, ${s.region}): ${s.pools.length} pools, ${s.databases.length} databases`);
  for (const f of r.failed) process.stderr.write(`geodr: sync of ${f.server} failed: ${f.error}\n`);
}

export function registerCatalogCommands(program: Command): void {
  const catalog = program
    .command('catalog')
    .description('shard maps, data-dependent routing lookups, the recovery manager, tenants and inventory')
    .addOption(new Option('--catalog-db <name>', 'the catalog database on --url').env('GEODR_CATALOG_DB').default('catalog'));

  catalog
    .command('create')
    .description('create the shard map manager (GSM, tenant catalog, inventory) in the catalog database')
    .action(async (_o: object, cmd: Command) => {
      const smm = manager(cmd);
      await smm.catalog.send({ method: 'PUT', path: smm.gsmPath('') });
      if (json(cmd)) return printJson({ database: smm.database, created: true });
      print(`shard map manager ready in ${smm.database}`);
    });

  // Maps

  catalog
    .command('maps')
    .description('list shard maps')
    .action(async (_o: object, cmd: Command) => {
      const maps = await manager(cmd).listShardMaps();
      if (json(cmd)) return printJson({ value: maps });
      print(table(['NAME', 'KIND', 'KEY TYPE', 'SHARDS', 'MAPPINGS', 'CREATED'], maps.map((m) => [m.name, m.kind, m.keyType, String(m.shards), String(m.mappings), m.createdAt])));
    });
  const map = catalog.command('map').description('create, show or delete a shard map');
  map
    .command('create')
    .description('create a shard map')
    .argument('<name>', 'map name')
    .addOption(new Option('--kind <kind>', 'list (one key per mapping) or range ([low, high) per mapping)').choices(['list', 'range']).makeOptionMandatory())
    .addOption(new Option('--key-type <type>', 'key type').choices(['int', 'string', 'binary']).makeOptionMandatory())
    .action(async (name: string, o: { kind: 'list' | 'range'; keyType: 'int' | 'string' | 'binary' }, cmd: Command) => {
      const m = await manager(cmd).createShardMap(name, o.kind, o.keyType);
      if (json(cmd)) return printJson(m);
      print(keyValues([['name', m.name], ['kind', m.kind], ['key type', m.keyType], ['shards', String(m.shards)], ['mappings', String(m.mappings)]]));
    });
  map
    .command('show')
    .description('show a shard map, its shards and mappings')
    .argument('<name>', 'map name')
    .action(async (name: string, _o: object, cmd: Command) => {
      const smm = manager(cmd);
      const m = await smm.getShardMap(name);
      const [shards, mappings] = await Promise.all([smm.getShards(name), smm.getMappings(name)]);
      if (json(cmd)) return printJson({ ...m, value: { shards, mappings } });
      print(keyValues([['name', m.name], ['kind', m.kind], ['key type', m.keyType], ['created', m.createdAt]]));
      print('');
      showShards(cmd, shards);
      print('');
      await showMappings(cmd, smm, name, mappings);
    });
  map
    .command('delete')
    .description('delete a shard map without shards, pending operations or tenants')
    .argument('<name>', 'map name')
    .action(async (name: string, _o: object, cmd: Command) => {
      await manager(cmd).deleteShardMap(name);
      if (!json(cmd)) print(`deleted shard map ${name}`);
    });

  // Shards

  catalog
    .command('shards')
    .description("list a shard map's shards")
    .argument('<map>', 'map name')
    .action(async (m: string, _o: object, cmd: Command) => showShards(cmd, await manager(cmd).getShards(m)));
  const shard = catalog.command('shard').description('add, remove, or take a shard online or offline');
  locationOptions(shard.command('add').description('add a shard (its database gets the local shard map)').argument('<map>', 'map name'))
    .option('--offline', 'add it offline')
    .action(async (m: string, o: { server?: string; database: string; offline?: boolean }, cmd: Command) => {
      const s = await manager(cmd).addShard(m, locationOf(cmd, o), o.offline === true ? { status: 'offline' } : {});
      showShards(cmd, [s]);
    });
  locationOptions(shard.command('remove').description('remove a shard that holds no mappings').argument('<map>', 'map name')).action(
    async (m: string, o: { server?: string; database: string }, cmd: Command) => {
      await manager(cmd).removeShard(m, locationOf(cmd, o));
      if (!json(cmd)) print(`removed shard ${formatLocation(locationOf(cmd, o))} from ${m}`);
    },
  );
  locationOptions(shard.command('status').description('take a shard (all its mappings) offline, or bring it online').argument('<map>', 'map name').addArgument(statusArgument())).action(
    async (m: string, status: 'online' | 'offline', o: { server?: string; database: string }, cmd: Command) => showShards(cmd, [await manager(cmd).setShardStatus(m, locationOf(cmd, o), status)]),
  );

  // Mappings

  catalog
    .command('mappings')
    .description("list a shard map's mappings in key order")
    .argument('<map>', 'map name')
    .option('--shard-id <id>', "only this shard's")
    .action(async (m: string, o: { shardId?: string }, cmd: Command) => {
      const smm = manager(cmd);
      await showMappings(cmd, smm, m, await smm.getMappings(m, o.shardId === undefined ? {} : { shardId: o.shardId }));
    });
  catalog
    .command('lookup')
    .description('where a key routes: its mapping and shard')
    .argument('<map>', 'map name')
    .argument('<key>', 'the key: decimal (int), the string, or hex (binary)')
    .action(async (m: string, keyText: string, _o: object, cmd: Command) => {
      const smm = manager(cmd);
      const r = await smm.lookup(m, await keyFor(smm, m, keyText));
      if (json(cmd)) return printJson(r);
      print(keyValues([['key', keyText], ['mapping', r.mapping.id], ['range', range(r.mapping, (await smm.mapInfo(m)).kind)], ['status', r.mapping.status], ['version', String(r.mapping.version)], ['shard', r.shard.id], ['server', r.shard.server], ['database', r.shard.database], ['shard status', r.shard.status]]));
    });
  const mapping = catalog.command('mapping').description('add, split, merge, move, take offline or remove mappings');
  locationOptions(mapping.command('add').description('add a mapping: --key for a list map, --low/--high for a range map (omitted bounds are open)').argument('<map>', 'map name'))
    .option('--key <key>', 'list maps: the key')
    .option('--low <key>', 'range maps: first key (inclusive)')
    .option('--high <key>', 'range maps: end (exclusive)')
    .option('--offline', 'add it offline')
    .action(async (m: string, o: { server?: string; database: string; key?: string; low?: string; high?: string; offline?: boolean }, cmd: Command) => {
      const smm = manager(cmd);
      const loc = locationOf(cmd, o);
      const opts = o.offline === true ? { status: 'offline' as const } : {};
      const info = await smm.mapInfo(m);
      if (info.kind === 'list' && (o.key === undefined || o.low !== undefined || o.high !== undefined)) cmd.error(`${m} is a list map: give --key (not --low/--high)`, { exitCode: 2, code: 'geodr.usage' });
      if (info.kind === 'range' && o.key !== undefined) cmd.error(`${m} is a range map: give --low and/or --high (not --key)`, { exitCode: 2, code: 'geodr.usage' });
      const created =
        info.kind === 'list'
          ? await smm.addPointMapping(m, await keyFor(smm, m, o.key!), loc, opts)
          : await smm.addRangeMapping(m, { low: o.low === undefined ? null : await keyFor(smm, m, o.low), high: o.high === undefined ? null : await keyFor(smm, m, o.high) }, loc, opts);
      await showMappings(cmd, smm, m, [created]);
    });
  mapping
    .command('remove')
    .description('remove an offline mapping')
    .argument('<map>', 'map name')
    .argument('<id>', 'mapping id')
    .action(async (m: string, id: string, _o: object, cmd: Command) => {
      await manager(cmd).removeMapping(m, id);
      if (!json(cmd)) print(`removed mapping ${id}`);
    });
  mapping
    .command('status')
    .description('take a mapping offline (routing answers TENANT_OFFLINE) or bring it online')
    .argument('<map>', 'map name')
    .argument('<id>', 'mapping id')
    .addArgument(statusArgument())
    .action(async (m: string, id: string, status: 'online' | 'offline', _o: object, cmd: Command) => {
      const smm = manager(cmd);
      await showMappings(cmd, smm, m, [await smm.updateMapping(m, id, { status })]);
    });
  locationOptions(mapping.command('move').description('move a mapping to another shard: offline, move, online (move its data meanwhile)').argument('<map>', 'map name').argument('<id>', 'mapping id'), 'the target shard').action(
    async (m: string, id: string, o: { server?: string; database: string }, cmd: Command) => {
      const smm = manager(cmd);
      await showMappings(cmd, smm, m, [await smm.moveMapping(m, id, locationOf(cmd, o))]);
    },
  );
  mapping
    .command('split')
    .description('split a range mapping at a key into [low, at) and [at, high)')
    .argument('<map>', 'map name')
    .argument('<id>', 'mapping id')
    .requiredOption('--at <key>', 'split point')
    .action(async (m: string, id: string, o: { at: string }, cmd: Command) => {
      const smm = manager(cmd);
      await showMappings(cmd, smm, m, await smm.splitMapping(m, id, await keyFor(smm, m, o.at)));
    });
  mapping
    .command('merge')
    .description('merge two adjacent range mappings of one shard')
    .argument('<map>', 'map name')
    .argument('<left>', 'mapping id of the lower range')
    .argument('<right>', 'mapping id of the upper range')
    .action(async (m: string, left: string, right: string, _o: object, cmd: Command) => {
      const smm = manager(cmd);
      await showMappings(cmd, smm, m, [await smm.mergeMappings(m, left, right)]);
    });

  // Recovery manager

  catalog
    .command('pending')
    .description('pending operations: shard map changes whose local shard map steps are not all done')
    .option('--map <map>', 'only this map')
    .action(async (o: { map?: string }, cmd: Command) => {
      const ops = await manager(cmd).pendingOperations(o.map);
      if (json(cmd)) return printJson({ value: ops });
      print(table(['ID', 'MAP', 'KIND', 'CREATED', 'STEPS'], ops.map((op) => [op.id, op.map, op.kind, op.createdAt, op.steps.map((s) => formatLocation(s)).join(', ')])));
    });
  catalog
    .command('recover-pending')
    .description('finish interrupted shard map operations by replaying their steps')
    .option('--map <map>', 'only this map')
    .action(async (o: { map?: string }, cmd: Command) => {
      const r = await manager(cmd).recoverPendingOperations({ map: o.map });
      if (json(cmd)) return printJson(r);
      print(`completed ${r.completed.length} pending operations`);
      for (const f of r.failed) process.stderr.write(`geodr: operation ${f.operation} stays pending: ${f.error}\n`);
    });
  locationOptions(catalog.command('detect').description('compare the GSM with the local shard map at a location (mapping differences)'), 'the location')
    .option('--map <map>', 'only this map')
    .action(async (o: { server?: string; database: string; map?: string }, cmd: Command) => {
      showTokens(cmd, await manager(cmd).getRecoveryManager().detectMappingDifferences(locationOf(cmd, o), o.map));
    });
  locationOptions(catalog.command('resolve').description('detect and resolve the differences at a location: --keep shard trusts the LSM, --keep global the GSM'), 'the location')
    .option('--map <map>', 'only this map')
    .addOption(new Option('--keep <side>', 'which side to trust').choices(['shard', 'global']).makeOptionMandatory())
    .action(async (o: { server?: string; database: string; map?: string; keep: 'shard' | 'global' }, cmd: Command) => {
      const rm = manager(cmd).getRecoveryManager();
      const resolution: MappingDifferenceResolution = o.keep === 'shard' ? 'KeepShardMapping' : 'KeepGlobalMapping';
      const results = [];
      for (const t of await rm.detectMappingDifferences(locationOf(cmd, o), o.map)) results.push(await rm.resolveMappingDifferences(t, resolution));
      if (json(cmd)) return printJson({ value: results });
      if (results.length === 0) return print('no differences: nothing to resolve');
      for (const r of results) {
        print(`${r.map}: ${resolution}; GSM ${r.changedGlobal ? 'changed' : 'unchanged'}, LSM ${r.changedLocal ? 'changed' : 'unchanged'}${r.replayed.length > 0 ? `; replayed ${r.replayed.length} pending operations` : ''}`);
        for (const c of r.conflicts) process.stderr.write(`geodr: ${r.map}: mapping ${c.id} dropped from the LSM: ${c.reason}\n`);
      }
    });
  locationOptions(catalog.command('detach').description('remove the shard at a location from the GSM (and fence its copy if it answers)'), 'the location')
    .option('--map <map>', 'only this map')
    .action(async (o: { server?: string; database: string; map?: string }, cmd: Command) => {
      const r = await manager(cmd).getRecoveryManager().detachShard(locationOf(cmd, o), o.map);
      if (json(cmd)) return printJson(r);
      print(`detached ${r.detached.length} shards${r.fenced ? '; the old copy is fenced' : ''}`);
    });
  locationOptions(catalog.command('attach').description('add the database at a location to the GSM as the shard its local shard map says it is'), 'the location')
    .option('--map <map>', 'only this map')
    .action(async (o: { server?: string; database: string; map?: string }, cmd: Command) => {
      const r = await manager(cmd).getRecoveryManager().attachShard(locationOf(cmd, o), o.map);
      if (json(cmd)) return printJson(r);
      showShards(cmd, r.attached);
    });
  catalog
    .command('rebuild')
    .description('after a failover or a restore to another server: move every shard of --from whose database answers on --to, and reconcile it trusting its LSM (idempotent; run again as more databases come online)')
    .requiredOption('--from <server>', 'the server the shards were on')
    .requiredOption('--to <server>', 'the server they are on now')
    .option('--map <map>', 'only this map')
    .option('--database <old=new>', 'a database restored under another name (repeatable)', parseRename)
    .option('--no-fence', 'do not mark the old copies detached even if the old server answers')
    .action(async (o: { from: string; to: string; map?: string; database?: Record<string, string>; fence: boolean }, cmd: Command) => {
      const r = await manager(cmd).getRecoveryManager().rebuildAfterFailover({ fromServer: o.from, toServer: o.to, map: o.map, databases: o.database, fence: o.fence });
      if (json(cmd)) return printJson(r);
      print(
        keyValues([
          ['moved', String(r.moved.length)],
          ['reconciled', String(r.reconciled.length)],
          ['not moved', String(r.notMoved.length)],
          ['failed', String(r.failed.length)],
          ['fenced', String(r.fenced)],
          ['resumed', String(r.resumed.length)],
        ]),
      );
      for (const n of r.notMoved) process.stderr.write(`geodr: ${n.map} shard ${n.database} not moved: ${n.reason}\n`);
      for (const f of r.failed) process.stderr.write(`geodr: ${f.map} shard ${f.shardId}: ${f.error}\n`);
    });

  // Tenants and inventory

  catalog
    .command('tenants')
    .description('list tenants: key, status, location, pool, last restore')
    .action(async (_o: object, cmd: Command) => {
      const ts = await manager(cmd).listTenants();
      if (json(cmd)) return printJson({ value: ts });
      print(table(['NAME', 'KEY', 'STATUS', 'SERVER', 'DATABASE', 'POOL', 'LAST RESTORED'], ts.map((t) => [t.name, t.key, t.status, t.server ?? '-', t.database ?? '-', t.pool ?? '-', t.lastRestored === null ? '-' : String(t.lastRestored.txid)])));
    });
  const tenant = catalog.command('tenant').description('register, show, take offline or remove tenants').option('--map <map>', "the tenants' list map", 'tenants');
  const tenants = (cmd: Command): TenantCatalog => new TenantCatalog(manager(cmd), cmd.optsWithGlobals<{ map: string }>().map);
  tenant
    .command('show')
    .description('show a tenant')
    .argument('<name>', 'tenant name')
    .action(async (name: string, _o: object, cmd: Command) => showTenant(cmd, await tenants(cmd).getTenant(name)));
  locationOptions(tenant.command('register').description("register a tenant: its key routes to its database (created as a shard if needed)").argument('<name>', 'tenant name'), "the tenant's database")
    .requiredOption('--key <key>', "the tenant's key")
    .option('--pool <pool>', 'its elastic pool')
    .action(async (name: string, o: { server?: string; database: string; key: string; pool?: string }, cmd: Command) => {
      const c = tenants(cmd);
      await c.ensure().catch(() => undefined);
      const t = await c.registerTenant(name, await keyFor(c.smm, c.map, o.key), locationOf(cmd, o), o.pool === undefined ? {} : { pool: o.pool });
      showTenant(cmd, t);
    });
  for (const status of ['online', 'offline'] as const) {
    tenant
      .command(status)
      .description(status === 'offline' ? 'take a tenant offline (routing answers TENANT_OFFLINE)' : 'bring a tenant online')
      .argument('<name>', 'tenant name')
      .action(async (name: string, _o: object, cmd: Command) => showTenant(cmd, await tenants(cmd).setTenantStatus(name, status)));
  }
  tenant
    .command('restored')
    .description("record the TXID the tenant's database was restored (or repatriated) at")
    .argument('<name>', 'tenant name')
    .requiredOption('--txid <n>', 'the TXID', (v: string) => {
      if (!/^\d+$/.test(v)) throw new InvalidArgumentError('expected a whole number.');
      return Number(v);
    })
    .option('--time <iso>', 'when (default: now)')
    .option('--repatriated', 'it was repatriated, not restored')
    .action(async (name: string, o: { txid: number; time?: string; repatriated?: boolean }, cmd: Command) => {
      showTenant(cmd, await tenants(cmd).recordRestore(name, { txid: o.txid, ...(o.time === undefined ? {} : { time: o.time }) }, o.repatriated === true ? 'repatriated' : 'restored'));
    });
  tenant
    .command('remove')
    .description("remove a tenant (its mapping goes offline, then away)")
    .argument('<name>', 'tenant name')
    .action(async (name: string, _o: object, cmd: Command) => {
      await tenants(cmd).removeTenant(name);
      if (!json(cmd)) print(`removed tenant ${name}`);
    });

  catalog
    .command('sync')
    .description("record servers' pools and databases in the catalog's inventory (once, or --every SECONDS until interrupted)")
    .option('--server <url>', 'a server to record (repeatable; default: --url)', collect)
    .option('--every <seconds>', 'repeat every so many seconds', parseSeconds)
    .action(async (o: { server?: string[]; every?: number }, cmd: Command) => {
      const smm = manager(cmd);
      const servers = (o.server ?? [globals(cmd).url]).map((url) => ({ url }));
      if (o.every === undefined) {
        const r = await syncInventory(smm, servers);
        showSync(cmd, r);
        if (r.failed.length > 0) throw new CliExit(EXIT.UNAVAILABLE);
        return;
      }
      const job = startInventorySync(smm, servers, o.every * 1000, (r) => showSync(cmd, r));
      await new Promise<void>((resolve) => {
        const stop = (): void => void job.stop().then(resolve);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
  catalog
    .command('inventory')
    .description('servers, pools and databases as the last sync recorded them')
    .action(async (_o: object, cmd: Command) => {
      const inv = await manager(cmd).getInventory();
      if (json(cmd)) return printJson({ value: inv });
      print(
        table(
          ['SERVER', 'NAME', 'REGION', 'POOLS', 'DATABASES', 'SYNCED'],
          inv.map((s) => [s.server, s.name, s.region, s.pools.map((p) => p.name).join(','), String(s.databases.length), s.syncedAt]),
        ),
      );
    });
}
