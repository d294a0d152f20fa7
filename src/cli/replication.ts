/**
 * Geo-replication: geodr link list|show|add|create-secondary|remove|failover|
 * force-failover|wait-sync|lost, and geodr fog (failover groups) list|show|create|
 * delete|failover|force-failover|listener.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { GeodrApiError, GeodrClient, type FailoverGroup, type FailoverGroupFailoverResult, type FailoverResult, type ListenerKind, type ReplicationLink } from '../sdk/index.js';
import { CliExit, EXIT, clientFor, collect, errorLine, globals, parseSeconds, parseUrl } from './context.js';
import { formatBytes, formatTime, keyValues, print, printJson, table } from './format.js';
import { showOperation, timeoutOption, waitAndShow } from './operation.js';

const usageError = (cmd: Command, message: string): never => cmd.error(message, { exitCode: EXIT.USAGE, code: 'geodr.usage' });

/** The confirmation a forced failover needs: it can lose what the primary had not sent. */
const allowDataLoss = (): Option => new Option('--allow-data-loss', 'confirm: transactions the primary had not sent yet are lost (kept aside on the old primary when it returns)');

function requireAllowDataLoss(cmd: Command, flags: { allowDataLoss?: boolean }, what: string): void {
  if (flags.allowDataLoss !== true) usageError(cmd, `${what} makes the secondary the primary at once and can lose transactions the primary had not sent; add --allow-data-loss to confirm (or use failover, which loses nothing)`);
}

const lag = (l: ReplicationLink): string => `${l.lagTxids} txid${l.lagTxids === 1 ? '' : 's'}${l.lagMs === null ? '' : `, ${l.lagMs} ms`}`;

function showLink(cmd: Command, l: ReplicationLink): void {
  if (globals(cmd).json === true) return printJson(l);
  const pairs: Array<[string, string]> = [
    ['id', l.id],
    ['database', l.database],
    ['role', l.role],
    ['partner', `${l.partnerDatabase} on ${l.partnerServer} (${l.partnerRole})`],
    ['state', l.state === 'SEEDING' ? `SEEDING ${l.percentComplete}%` : l.state],
    ['last replicated txid', String(l.lastReplicatedTxid)],
    ['last replicated time', formatTime(l.lastReplicatedTime)],
    ['lag', lag(l)],
    ['bytes transferred', formatBytes(l.bytesTransferred)],
    ['created', formatTime(l.createdAt)],
    ['modified', formatTime(l.modifiedAt)],
  ];
  if (l.lastError !== null) pairs.push(['last error', l.lastError]);
  print(keyValues(pairs));
}

function showFailover(cmd: Command, r: FailoverResult): void {
  if (globals(cmd).json === true) return printJson(r);
  print(
    keyValues([
      ['database', r.database],
      ['primary', 'this server'],
      ['epoch', String(r.epoch)],
      ['txid', String(r.txid)],
      ['duration', `${r.ms} ms`],
    ]),
  );
}

function showGroup(cmd: Command, g: FailoverGroup): void {
  if (globals(cmd).json === true) return printJson(g);
  print(
    keyValues([
      ['name', g.name],
      ['server', `${g.server} (${g.role})`],
      ['partner', g.partnerServer],
      ['read-write listener', `${g.readWriteListener.server} ${g.readWriteListener.url}`],
      ['read-only listener', `${g.readOnlyListener.server} ${g.readOnlyListener.url}`],
      ['consistent', g.consistent ? 'yes' : 'no (its databases are split between the sides)'],
      ['created', formatTime(g.createdAt)],
      ['modified', formatTime(g.modifiedAt)],
    ]),
  );
  print('');
  print(table(['DATABASE', 'ROLE', 'PARTNER DATABASE'], g.databases.map((d) => [d.database, d.role, d.partnerDatabase])));
}

function showGroupFailover(cmd: Command, r: FailoverGroupFailoverResult): void {
  if (globals(cmd).json === true) return printJson(r);
  print(
    keyValues([
      ['group', r.group.name],
      ['primary side', r.group.readWriteListener.server],
      ['duration', `${r.ms} ms`],
    ]),
  );
  print('');
  print(table(['DATABASE', 'EPOCH', 'TXID'], r.databases.map((d) => [d.database, String(d.epoch), String(d.txid)])));
}

function parseKind(value: string): ListenerKind {
  if (value !== 'rw' && value !== 'ro') throw new InvalidArgumentError('expected rw (read-write) or ro (read-only).');
  return value;
}

/** Seconds for a server-side wait (1 ms - 600 s). */
function parseWaitSeconds(value: string): number {
  const s = parseSeconds(value);
  if (s > 600) throw new InvalidArgumentError('at most 600 seconds.');
  return s;
}

export function registerReplicationCommands(program: Command): void {
  const link = program.command('link').description('geo-replication links of a database: secondaries, failover, wait for sync, lost transactions');

  link
    .command('list')
    .description('list the replication links of a database on this server (as primary or secondary), with state and lag')
    .argument('<db>', 'database name')
    .action(async (db: string, _opts: object, cmd: Command) => {
      const links = await clientFor(cmd).replicationLinks(db);
      if (globals(cmd).json === true) return printJson({ value: links });
      print(
        table(
          ['ID', 'ROLE', 'PARTNER', 'STATE', 'LAST TXID', 'LAG'],
          links.map((l) => [l.id, l.role, `${l.partnerDatabase}@${l.partnerServer}`, l.state === 'SEEDING' ? `SEEDING ${l.percentComplete}%` : l.state, String(l.lastReplicatedTxid), lag(l)]),
        ),
      );
    });

  link
    .command('show')
    .description('show one replication link')
    .argument('<db>', 'database name')
    .argument('<link>', 'link id (see link list)')
    .action(async (db: string, id: string, _opts: object, cmd: Command) => showLink(cmd, await clientFor(cmd).replicationLink(db, id)));

  link
    .command('add')
    .description("add a readable geo-secondary of DB on another server (asked of the primary's server); seeding runs as an operation there")
    .argument('<db>', 'database name (a primary on this server)')
    .requiredOption('--partner-server <name>', 'the server to hold the secondary (one of this server\'s peers)')
    .option('--partner-db <name>', 'its name there (default: the same name)')
    .option('--partner-pool <pool>', "its elastic pool there (default: that server's default pool)")
    .option('--wait', 'wait for the seeding operation on the partner with a progress bar')
    .addOption(new Option('--partner-url <url>', "the partner server's URL (default: the one the primary's server reports)").argParser(parseUrl))
    .option('--partner-token <token>', 'token for the partner server (default: --token)')
    .addOption(timeoutOption())
    .action(async (db: string, opts: { partnerServer: string; partnerDb?: string; partnerPool?: string; wait?: boolean; partnerUrl?: string; partnerToken?: string; timeout?: number }, cmd: Command) => {
      const r = await clientFor(cmd).addSecondary(db, { partnerServer: opts.partnerServer, partnerDatabase: opts.partnerDb, partnerElasticPoolName: opts.partnerPool });
      if (opts.wait === true) {
        const g = globals(cmd);
        const partner = new GeodrClient({ url: opts.partnerUrl ?? r.serverUrl, token: opts.partnerToken ?? g.token });
        return waitAndShow(cmd, partner, r.operation.id, opts.timeout);
      }
      if (globals(cmd).json === true) return printJson(r);
      print(
        keyValues([
          ['secondary', `${r.database} on ${r.server}`],
          ['operation', r.operation.id],
          ['kind', r.operation.kind],
          ['state', r.operation.state],
        ]),
      );
      process.stderr.write(`follow it on the partner: geodr --url ${r.serverUrl} op wait ${r.operation.id}\n`);
    });

  link
    .command('create-secondary')
    .description('create DB on this server as a geo-secondary of a primary on another server (or with --copy, a one-time copy)')
    .argument('<db>', 'the new database')
    .requiredOption('--source-server <name>', "the primary's server (one of this server's peers)")
    .requiredOption('--source-db <name>', 'the primary database there')
    .option('--pool <pool>', "elastic pool of the new database (default: the server's default pool)")
    .option('--copy', 'a one-time copy that becomes an independent database once seeded')
    .option('--wait', 'wait for the seeding operation with a progress bar')
    .addOption(timeoutOption())
    .action(async (db: string, opts: { sourceServer: string; sourceDb: string; pool?: string; copy?: boolean; wait?: boolean; timeout?: number }, cmd: Command) => {
      const client = clientFor(cmd);
      const op = await client.createSecondary(db, { sourceServer: opts.sourceServer, sourceDatabaseName: opts.sourceDb, elasticPoolName: opts.pool, copy: opts.copy === true });
      if (opts.wait !== true) return showOperation(cmd, op);
      await waitAndShow(cmd, client, op.id, opts.timeout);
    });

  link
    .command('remove')
    .description('remove a link (asked of either side): the secondary becomes an independent, writable database')
    .argument('<db>', 'database name')
    .argument('<link>', 'link id (see link list)')
    .action(async (db: string, id: string, _opts: object, cmd: Command) => {
      const r = await clientFor(cmd).removeReplicationLink(db, id);
      if (globals(cmd).json === true) return printJson(r);
      print(keyValues([['removed', r.removed], ['independent', `${r.independent.database} on ${r.independent.server}`]]));
    });

  link
    .command('failover')
    .description("planned failover, asked of the secondary's server: it becomes the primary; nothing is lost")
    .argument('<db>', 'database name (a secondary on this server)')
    .argument('[link]', 'link id (default: the link to its primary)')
    .action(async (db: string, id: string | undefined, _opts: object, cmd: Command) => showFailover(cmd, await clientFor(cmd).failover(db, id)));

  link
    .command('force-failover')
    .description("forced failover, asked of the secondary's server: it becomes the primary at once, even with the primary unreachable (needs --allow-data-loss)")
    .argument('<db>', 'database name (a secondary on this server)')
    .argument('[link]', 'link id (default: the link to its primary)')
    .addOption(allowDataLoss())
    .action(async (db: string, id: string | undefined, opts: { allowDataLoss?: boolean }, cmd: Command) => {
      requireAllowDataLoss(cmd, opts, 'force-failover');
      showFailover(cmd, await clientFor(cmd).forceFailoverAllowDataLoss(db, id));
    });

  link
    .command('wait-sync')
    .description("wait until the secondaries (or the one named) have every transaction committed before the call (asked of the primary's server)")
    .argument('<db>', 'database name (a primary on this server)')
    .option('--partner-server <name>', 'wait only for the secondary on this server')
    .option('--partner-db <name>', 'wait only for the secondary of this name')
    .addOption(new Option('--timeout <seconds>', "give up after this long (at most 600; default: the server's replication.syncTimeoutMs); exit 6").argParser(parseWaitSeconds))
    .action(async (db: string, opts: { partnerServer?: string; partnerDb?: string; timeout?: number }, cmd: Command) => {
      let r;
      try {
        r = await clientFor(cmd).waitForCopySync(db, {
          partnerServer: opts.partnerServer,
          partnerDatabase: opts.partnerDb,
          timeoutMs: opts.timeout === undefined ? undefined : Math.max(1, Math.round(opts.timeout * 1000)),
        });
      } catch (e) {
        // Not there yet is "try again later", like any timeout of the CLI.
        if (e instanceof GeodrApiError && e.code === 'REPLICATION_TIMEOUT') {
          process.stderr.write(`${errorLine(e, globals(cmd))}\n`);
          throw new CliExit(EXIT.UNAVAILABLE);
        }
        throw e;
      }
      if (globals(cmd).json === true) return printJson(r);
      print(`in sync at txid ${r.txid}`);
      print(table(['SECONDARY', 'STATE', 'LAST TXID', 'LAG'], r.secondaries.map((l) => [`${l.partnerDatabase}@${l.partnerServer}`, l.state, String(l.lastReplicatedTxid), lag(l)])));
    });

  link
    .command('lost')
    .description('what deposed primaries on this server wrote alone before they rejoined: TXIDs, times, pages, kept files')
    .option('--database <name>', 'only reports about this database')
    .action(async (opts: { database?: string }, cmd: Command) => {
      const reports = (await clientFor(cmd).lostTransactions()).filter((r) => opts.database === undefined || r.database === opts.database);
      if (globals(cmd).json === true) return printJson({ value: reports });
      print(
        table(
          ['DATABASE', 'TXIDS', 'TRANSACTIONS', 'PAGES', 'FIRST', 'LAST', 'EPOCH', 'NEW PRIMARY', 'RECORDS'],
          reports.map((r) => [
            r.database,
            `${r.fromTxid}-${r.toTxid}`,
            String(r.transactions),
            String(r.pagesChanged),
            formatTime(r.firstTime),
            formatTime(r.lastTime),
            String(r.epoch),
            `${r.newPrimary.database}@${r.newPrimary.server} (epoch ${r.newPrimary.epoch})`,
            r.files.records,
          ]),
        ),
      );
    });

  const fog = program.command('fog').description('failover groups: databases that fail over together, with read-write and read-only listeners');

  fog
    .command('list')
    .description('failover groups this server is a side of')
    .action(async (_opts: object, cmd: Command) => {
      const groups = await clientFor(cmd).listFailoverGroups();
      if (globals(cmd).json === true) return printJson({ value: groups });
      print(
        table(
          ['NAME', 'ROLE', 'PARTNER', 'DATABASES', 'READ-WRITE', 'READ-ONLY', 'CONSISTENT'],
          groups.map((g) => [g.name, g.role, g.partnerServer, String(g.databases.length), g.readWriteListener.server, g.readOnlyListener.server, g.consistent ? 'yes' : 'no']),
        ),
      );
    });

  fog
    .command('show')
    .description('show a failover group: sides, listeners, databases and their roles')
    .argument('<name>', 'group name')
    .action(async (name: string, _opts: object, cmd: Command) => showGroup(cmd, await clientFor(cmd).getFailoverGroup(name)));

  fog
    .command('create')
    .description("create or update a failover group (asked of the primary side's server); every database needs a secondary on the partner")
    .argument('<name>', 'group name')
    .requiredOption('--partner-server <name>', 'the other side')
    .requiredOption('--db <name>', 'a database of the group (repeat for each)', collect)
    .action(async (name: string, opts: { partnerServer: string; db: string[] }, cmd: Command) => showGroup(cmd, await clientFor(cmd).putFailoverGroup(name, { partnerServer: opts.partnerServer, databases: opts.db })));

  fog
    .command('delete')
    .description('delete a failover group on both sides (its databases and links stay)')
    .argument('<name>', 'group name')
    .action(async (name: string, _opts: object, cmd: Command) => {
      await clientFor(cmd).deleteFailoverGroup(name);
      if (globals(cmd).json === true) return printJson({ deleted: name });
      print(`deleted failover group ${name}`);
    });

  fog
    .command('failover')
    .description("planned failover of every database of the group to this server (asked of the secondary side's server)")
    .argument('<name>', 'group name')
    .action(async (name: string, _opts: object, cmd: Command) => showGroupFailover(cmd, await clientFor(cmd).failoverGroupFailover(name)));

  fog
    .command('force-failover')
    .description('forced failover of every database of the group to this server (needs --allow-data-loss)')
    .argument('<name>', 'group name')
    .addOption(allowDataLoss())
    .action(async (name: string, opts: { allowDataLoss?: boolean }, cmd: Command) => {
      requireAllowDataLoss(cmd, opts, 'force-failover');
      showGroupFailover(cmd, await clientFor(cmd).failoverGroupForceFailoverAllowDataLoss(name));
    });

  fog
    .command('listener')
    .description('where the listeners point now; with --kind, just that URL (for scripts)')
    .argument('<name>', 'group name')
    .addOption(new Option('--kind <kind>', 'rw (read-write) or ro (read-only)').argParser(parseKind))
    .action(async (name: string, opts: { kind?: ListenerKind }, cmd: Command) => {
      const client = clientFor(cmd);
      if (opts.kind !== undefined) {
        const t = await client.failoverGroupListener(name, opts.kind);
        return globals(cmd).json === true ? printJson(t) : print(t.url);
      }
      const [rw, ro] = await Promise.all([client.failoverGroupListener(name, 'rw'), client.failoverGroupListener(name, 'ro')]);
      if (globals(cmd).json === true) return printJson({ rw, ro });
      print(table(['KIND', 'SERVER', 'URL'], [['rw', rw.server, rw.url], ['ro', ro.server, ro.url]]));
    });
}
