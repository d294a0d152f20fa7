/** geodr pool list|show|create|update|delete */
import { Option, type Command } from 'commander';
import type { Pool, PoolSettings } from '../sdk/index.js';
import { clientFor, globals, parseSize, parseWholeNumber } from './context.js';
import { formatBytes, formatTime, keyValues, print, printJson, table } from './format.js';

interface PoolFlags {
  maxDatabases?: number;
  maxConcurrentOperations?: number;
  storageQuota?: number;
}

function settingsOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--max-databases <n>', 'most databases the pool may hold (1-1000000)').argParser(parseWholeNumber))
    .addOption(new Option('--max-concurrent-operations <n>', 'operations that may run at once in the pool (1-64)').argParser(parseWholeNumber))
    .addOption(new Option('--storage-quota <size>', 'storage quota: bytes or 10MiB, 1GB, ...; 0 for none').argParser(parseSize));
}

function settingsFrom(flags: PoolFlags): PoolSettings {
  const s: PoolSettings = {};
  if (flags.maxDatabases !== undefined) s.maxDatabases = flags.maxDatabases;
  if (flags.maxConcurrentOperations !== undefined) s.maxConcurrentOperations = flags.maxConcurrentOperations;
  if (flags.storageQuota !== undefined) s.storageQuotaBytes = flags.storageQuota;
  return s;
}

const quota = (bytes: number): string => (bytes === 0 ? 'none' : `${formatBytes(bytes)} (${bytes} bytes)`);

function showPool(cmd: Command, p: Pool): void {
  if (globals(cmd).json === true) return printJson(p);
  print(
    keyValues([
      ['name', p.name],
      ['databases', `${p.databaseCount} (max ${p.maxDatabases})`],
      ['max concurrent operations', String(p.maxConcurrentOperations)],
      ['storage quota', quota(p.storageQuotaBytes)],
      ['used', `${formatBytes(p.usedBytes)} (${p.usedBytes} bytes)`],
      ['created', formatTime(p.createdAt)],
    ]),
  );
}

export function registerPoolCommands(program: Command): void {
  const pool = program.command('pool').description('manage elastic pools (groups of databases sharing limits)');

  pool
    .command('list')
    .description('list elastic pools')
    .action(async (_opts: object, cmd: Command) => {
      const pools = await clientFor(cmd).listPools();
      if (globals(cmd).json === true) return printJson({ value: pools });
      print(
        table(
          ['NAME', 'DATABASES', 'MAX DATABASES', 'MAX OPS', 'USED', 'QUOTA'],
          pools.map((p) => [p.name, String(p.databaseCount), String(p.maxDatabases), String(p.maxConcurrentOperations), formatBytes(p.usedBytes), p.storageQuotaBytes === 0 ? 'none' : formatBytes(p.storageQuotaBytes)]),
        ),
      );
    });

  pool
    .command('show')
    .description('show an elastic pool')
    .argument('<name>', 'pool name')
    .action(async (name: string, _opts: object, cmd: Command) => showPool(cmd, await clientFor(cmd).getPool(name)));

  settingsOptions(pool.command('create').description('create an elastic pool (an existing one gets the given settings)').argument('<name>', 'pool name')).action(
    async (name: string, flags: PoolFlags, cmd: Command) => showPool(cmd, await clientFor(cmd).putPool(name, settingsFrom(flags))),
  );

  settingsOptions(pool.command('update').description("change an elastic pool's settings").argument('<name>', 'pool name')).action(
    async (name: string, flags: PoolFlags, cmd: Command) => {
      const settings = settingsFrom(flags);
      if (Object.keys(settings).length === 0) cmd.error('nothing to update: give --max-databases, --max-concurrent-operations or --storage-quota', { exitCode: 2, code: 'geodr.usage' });
      showPool(cmd, await clientFor(cmd).updatePool(name, settings));
    },
  );

  pool
    .command('delete')
    .description('delete an empty elastic pool')
    .argument('<name>', 'pool name')
    .action(async (name: string, _opts: object, cmd: Command) => {
      await clientFor(cmd).deletePool(name);
      if (globals(cmd).json !== true) print(`pool ${name} deleted`);
    });
}
