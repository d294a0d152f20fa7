/** geodr db list|show|create|delete|rename|move|verify|dropped (backup and restore subcommands: backup.ts) */
import { Option, type Command } from 'commander';
import type { CreateMode, Database, DroppedDatabase } from '../sdk/index.js';
import { registerRestoreCommands } from './backup.js';
import { clientFor, globals } from './context.js';
import { formatBytes, formatTime, keyValues, print, printJson, table } from './format.js';
import { showOperation, timeoutOption, waitAndShow } from './operation.js';

const CREATE_MODES: CreateMode[] = ['Default', 'Copy', 'Secondary', 'PointInTimeRestore', 'Restore', 'Recovery', 'RestoreLongTermRetentionBackup'];

const RESTORE_COMMANDS: Partial<Record<CreateMode, string>> = {
  PointInTimeRestore: 'geodr db restore NAME --from DB [--time ISO | --txid N]',
  Restore: 'geodr db restore NAME --dropped ID',
  RestoreLongTermRetentionBackup: 'geodr db restore NAME --ltr DBID --txid N',
  Recovery: 'geodr db geo-restore NAME --source-id DBID',
  Secondary: 'geodr link create-secondary NAME --source-server S --source-db DB',
  Copy: 'geodr link create-secondary NAME --source-server S --source-db DB --copy',
};

function showDatabase(cmd: Command, d: Database): void {
  if (globals(cmd).json === true) return printJson(d);
  print(
    keyValues([
      ['name', d.name],
      ['id', d.id],
      ['db id', d.dbId],
      ['pool', d.pool],
      ['role', d.role],
      ['status', d.status],
      ['create mode', d.createMode],
      ['created', formatTime(d.createdAt)],
      ['size', `${formatBytes(d.sizeBytes)} (${d.sizeBytes} bytes)`],
      ['txid', String(d.txid)],
      ['checksum', d.checksum === '' ? '-' : d.checksum],
      ['epoch', String(d.epoch)],
      ['last write', formatTime(d.lastWriteTime)],
      ['retention days', String(d.retentionDays)],
    ]),
  );
}

function showDropped(cmd: Command, d: DroppedDatabase): void {
  if (globals(cmd).json === true) return printJson(d);
  print(
    keyValues([
      ['name', d.name],
      ['id', d.id],
      ['pool', d.pool],
      ['created', formatTime(d.createdAt)],
      ['dropped', formatTime(d.droppedAt)],
      ['txid', String(d.txid)],
      ['files', d.location],
      ['db id', d.dbId],
      ['retention days', String(d.retentionDays)],
    ]),
  );
}

export function registerDatabaseCommands(program: Command): void {
  const db = program.command('db').description('manage databases');

  db.command('list')
    .description('list databases')
    .option('--pool <pool>', 'only databases in this elastic pool')
    .action(async (opts: { pool?: string }, cmd: Command) => {
      const dbs = await clientFor(cmd).listDatabases({ pool: opts.pool });
      if (globals(cmd).json === true) return printJson({ value: dbs });
      print(table(['NAME', 'POOL', 'ROLE', 'SIZE', 'TXID', 'LAST WRITE'], dbs.map((d) => [d.name, d.pool, d.role, formatBytes(d.sizeBytes), String(d.txid), formatTime(d.lastWriteTime)])));
    });

  db.command('show')
    .description('show a database: pool, role, size, TXID, checksum, epoch, last write')
    .argument('<name>', 'database name')
    .action(async (name: string, _opts: object, cmd: Command) => showDatabase(cmd, await clientFor(cmd).getDatabase(name)));

  db.command('create')
    .description('create an empty database')
    .argument('<name>', 'database name')
    .option('--pool <pool>', "elastic pool (default: the server's default pool)")
    .addOption(new Option('--create-mode <mode>', 'how to create it: Default (empty); restores have their own commands (db restore, db geo-restore)').choices(CREATE_MODES))
    .action(async (name: string, opts: { pool?: string; createMode?: CreateMode }, cmd: Command) => {
      const restore = opts.createMode === undefined ? undefined : RESTORE_COMMANDS[opts.createMode];
      if (restore !== undefined) cmd.error(`--create-mode ${opts.createMode} answers with an operation: use ${restore}`, { exitCode: 2, code: 'geodr.usage' });
      showDatabase(cmd, await clientFor(cmd).createDatabase(name, { pool: opts.pool, createMode: opts.createMode }));
    });

  db.command('delete')
    .description('delete a database (its files are kept; see db dropped)')
    .argument('<name>', 'database name')
    .action(async (name: string, _opts: object, cmd: Command) => showDropped(cmd, await clientFor(cmd).deleteDatabase(name)));

  db.command('rename')
    .description('rename a database')
    .argument('<name>', 'database name')
    .argument('<new-name>', 'its new name')
    .action(async (name: string, newName: string, _opts: object, cmd: Command) => showDatabase(cmd, await clientFor(cmd).renameDatabase(name, newName)));

  db.command('move')
    .description('move a database to another elastic pool')
    .argument('<name>', 'database name')
    .requiredOption('--pool <pool>', 'the pool to move it to')
    .action(async (name: string, opts: { pool: string }, cmd: Command) => showDatabase(cmd, await clientFor(cmd).moveDatabase(name, opts.pool)));

  db.command('verify')
    .description('recompute the checksum and run integrity_check (an operation; waits with a progress bar)')
    .argument('<name>', 'database name')
    .option('--no-wait', 'print the started operation and return')
    .addOption(timeoutOption())
    .action(async (name: string, opts: { wait: boolean; timeout?: number }, cmd: Command) => {
      const client = clientFor(cmd);
      const op = await client.verifyDatabase(name);
      if (!opts.wait) return showOperation(cmd, op);
      await waitAndShow(cmd, client, op.id, opts.timeout);
    });

  db.command('dropped')
    .description('list deleted databases whose files are kept (restore one with geodr db restore NEW --dropped ID)')
    .action(async (_opts: object, cmd: Command) => {
      const dropped = await clientFor(cmd).listDroppedDatabases();
      if (globals(cmd).json === true) return printJson({ value: dropped });
      print(table(['NAME', 'ID', 'POOL', 'DROPPED', 'TXID', 'FILES'], dropped.map((d) => [d.name, d.id, d.pool, formatTime(d.droppedAt), String(d.txid), d.location])));
    });

  registerRestoreCommands(db);
}
