/**
 * Backups and restores: geodr db restore|geo-restore|restore-points|retention|ltr|
 * ltr-backups|recoverable, and geodr backup retention.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { BackupStatus, GeodrClient, LongTermRetentionPolicy, RestoreOptions, RestorePoint, RestorePoints } from '../sdk/index.js';
import { clientFor, globals, parseTime, parseWholeNumber } from './context.js';
import { formatDuration, formatTime, keyValues, print, printJson, table } from './format.js';
import { showOperation, timeoutOption, waitAndShow } from './operation.js';

interface PointFlags {
  time?: string;
  txid?: number;
}

interface WaitFlags {
  pool?: string;
  wait: boolean;
  timeout?: number;
}

interface RestoreFlags extends PointFlags, WaitFlags {
  from?: string;
  dropped?: string;
  ltr?: string;
}

const usageError = (cmd: Command, message: string): never => cmd.error(message, { exitCode: 2, code: 'geodr.usage' });

/** --time, --txid, --pool, --no-wait and --timeout, shared by db restore and db geo-restore. */
function pointAndWaitOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--time <iso>', 'restore to the last commit at or before this time (ISO 8601, e.g. 2026-05-01T12:00:00Z)').argParser(parseTime))
    .addOption(new Option('--txid <n>', 'restore to exactly this TXID').argParser(parseWholeNumber))
    .option('--pool <pool>', "elastic pool of the new database (default: the server's default pool)")
    .option('--no-wait', 'print the started operation and return')
    .addOption(timeoutOption());
}

/** Starts the restore, then waits with a progress bar (or prints the started operation with --no-wait). */
async function startRestore(cmd: Command, name: string, opts: RestoreOptions, flags: WaitFlags): Promise<void> {
  const client = clientFor(cmd);
  const op = await client.restoreDatabase(name, { ...opts, ...(flags.pool === undefined ? {} : { pool: flags.pool }) });
  if (!flags.wait) return showOperation(cmd, op);
  await waitAndShow(cmd, client, op.id, flags.timeout);
}

const point = (p: PointFlags): Pick<RestoreOptions, 'time' | 'txid'> => ({ ...(p.time === undefined ? {} : { time: p.time }), ...(p.txid === undefined ? {} : { txid: p.txid }) });

/** Which restore the flags ask for; a usage error for none, several, or a point the kind cannot take. */
export function restoreOptionsFrom(flags: RestoreFlags, usage: (message: string) => never): RestoreOptions {
  const sources = (['from', 'dropped', 'ltr'] as const).filter((k) => flags[k] !== undefined);
  if (sources.length === 0) usage('say what to restore: --from DB (point in time), --dropped ID (a deleted database) or --ltr DBID (a long-term backup)');
  if (sources.length > 1) usage(`give one of --from, --dropped and --ltr, not ${sources.map((s) => `--${s}`).join(' and ')}`);
  if (flags.time !== undefined && flags.txid !== undefined) usage('give --time or --txid, not both');
  if (flags.from !== undefined) return { mode: 'PointInTimeRestore', sourceDatabaseName: flags.from, ...point(flags) };
  if (flags.dropped !== undefined) return { mode: 'Restore', sourceDatabaseId: flags.dropped, ...point(flags) };
  if (flags.time !== undefined) usage('--ltr restores a long-term backup by its TXID: give --txid (see geodr db ltr-backups), not --time');
  if (flags.txid === undefined) usage('--ltr needs --txid: the TXID of the long-term backup (see geodr db ltr-backups)');
  return { mode: 'RestoreLongTermRetentionBackup', sourceDatabaseId: flags.ltr!, txid: flags.txid };
}

const showPoint = (p: RestorePoint | null): string => (p === null ? '- (nothing in the vault yet)' : `txid ${p.txid} at ${p.time}`);

function shippingState(b: BackupStatus): string {
  if (b.halted !== null) return `halted: ${b.halted}`;
  if (b.failures > 0) return `retrying (${b.failures} failure${b.failures === 1 ? '' : 's'} in a row)`;
  return 'ok';
}

function geoCopy(b: BackupStatus): string {
  if (b.geo === null) return 'none (no paired vault)';
  const g = b.geo;
  return `${g.vault}: copied txid ${g.copiedTxid}, ${g.pending} object${g.pending === 1 ? '' : 's'} pending, last copy ${formatTime(g.lastCopiedAt)}`;
}

function showRestorePoints(cmd: Command, p: RestorePoints): void {
  if (globals(cmd).json === true) return printJson(p);
  const b = p.backup;
  print(
    keyValues([
      ['database', p.database],
      ['db id', p.dbId],
      ['earliest', showPoint(p.earliest)],
      ['latest', showPoint(p.latest)],
      ['vault', b.vault],
      ['shipped txid', String(b.shippedTxid)],
      ['unshipped records', String(b.unshippedRecords)],
      ['last shipped commit', formatTime(b.lastShippedCommitTime)],
      ['estimated data loss', formatDuration(b.estimatedDataLossSeconds)],
      ['shipping', shippingState(b)],
      ['geo copy', geoCopy(b)],
    ]),
  );
}

const DURATION = /^P\d+[DWMY]$/;

/** An ISO-8601 retention duration (P12W, P12M, P5Y, P30D), or "none" (null). */
function parseRetention(value: string): string | null {
  if (value.toLowerCase() === 'none') return null;
  const v = value.toUpperCase();
  if (!DURATION.test(v)) throw new InvalidArgumentError('expected an ISO-8601 duration like P12W, P12M or P5Y (days, weeks, months, years), or none.');
  return v;
}

interface LtrFlags {
  weekly?: string | null;
  monthly?: string | null;
  yearly?: string | null;
  weekOfYear?: number;
  clear?: boolean;
}

function showLtr(cmd: Command, database: string, p: LongTermRetentionPolicy): void {
  if (globals(cmd).json === true) return printJson(p);
  const none = p.weeklyRetention === null && p.monthlyRetention === null && p.yearlyRetention === null;
  print(
    keyValues([
      ['database', database],
      ['weekly', p.weeklyRetention ?? 'none'],
      ['monthly', p.monthlyRetention ?? 'none'],
      ['yearly', p.yearlyRetention ?? 'none'],
      ['week of year', none ? '-' : String(p.weekOfYear)],
    ]),
  );
}

async function setLtr(client: GeodrClient, database: string, flags: LtrFlags): Promise<LongTermRetentionPolicy> {
  if (flags.clear === true) return client.setLongTermRetention(database, {});
  // The API replaces the whole policy; the command changes only what its flags name.
  const cur = await client.getLongTermRetention(database);
  return client.setLongTermRetention(database, {
    weeklyRetention: flags.weekly !== undefined ? flags.weekly : cur.weeklyRetention,
    monthlyRetention: flags.monthly !== undefined ? flags.monthly : cur.monthlyRetention,
    yearlyRetention: flags.yearly !== undefined ? flags.yearly : cur.yearlyRetention,
    weekOfYear: flags.weekOfYear ?? cur.weekOfYear,
  });
}

/** The backup and restore subcommands of `geodr db`. */
export function registerRestoreCommands(db: Command): void {
  pointAndWaitOptions(
    db
      .command('restore')
      .description('create a database from backups (an operation; waits with a progress bar): a point in time of a database (--from), a deleted database (--dropped) or a long-term backup (--ltr)')
      .argument('<name>', 'name of the new database')
      .option('--from <db>', 'point-in-time restore of this database (default point: now)')
      .option('--dropped <id>', 'restore this deleted database: its id or db id from geodr db dropped (default point: its last)')
      .option('--ltr <dbid>', 'restore a long-term backup of the database with this db id (geodr db show); needs --txid from geodr db ltr-backups'),
  ).action(async (name: string, flags: RestoreFlags, cmd: Command) => {
    const opts = restoreOptionsFrom(flags, (m) => usageError(cmd, m));
    await startRestore(cmd, name, opts, flags);
  });

  pointAndWaitOptions(
    db
      .command('geo-restore')
      .description("create a database from this region's copy of a paired-region database's backups (an operation; waits with a progress bar)")
      .argument('<name>', 'name of the new database')
      .requiredOption('--source-id <dbid>', 'db id of the database to recover (see geodr db recoverable)'),
  ).action(async (name: string, flags: PointFlags & WaitFlags & { sourceId: string }, cmd: Command) => {
    if (flags.time !== undefined && flags.txid !== undefined) usageError(cmd, 'give --time or --txid, not both');
    await startRestore(cmd, name, { mode: 'Recovery', sourceDatabaseId: flags.sourceId, ...point(flags) }, flags);
  });

  db.command('restore-points')
    .description('the restore window (earliest and latest points in the vault) and where backup shipping stands')
    .argument('<name>', 'database name')
    .action(async (name: string, _opts: object, cmd: Command) => showRestorePoints(cmd, await clientFor(cmd).restorePoints(name)));

  db.command('retention')
    .description('show, or with --days set, the point-in-time restore window')
    .argument('<name>', 'database name')
    .addOption(new Option('--days <n>', 'keep point-in-time backups this many days (1-35)').argParser(parseWholeNumber))
    .action(async (name: string, opts: { days?: number }, cmd: Command) => {
      const client = clientFor(cmd);
      const r = opts.days === undefined ? await client.getShortTermRetention(name) : await client.setShortTermRetention(name, opts.days);
      if (globals(cmd).json === true) return printJson(r);
      print(
        keyValues([
          ['database', name],
          ['retention days', String(r.retentionDays)],
        ]),
      );
    });

  db.command('ltr')
    .description('show, or with flags change, the long-term retention policy (weekly, monthly and yearly backups)')
    .argument('<name>', 'database name')
    .addOption(new Option('--weekly <duration>', 'keep weekly backups this long, e.g. P12W; none to stop').argParser(parseRetention))
    .addOption(new Option('--monthly <duration>', 'keep monthly backups this long, e.g. P12M; none to stop').argParser(parseRetention))
    .addOption(new Option('--yearly <duration>', 'keep yearly backups this long, e.g. P5Y (at most P10Y); none to stop').argParser(parseRetention))
    .addOption(new Option('--week-of-year <n>', 'the week (1-52) whose backup is kept as the yearly one').argParser(parseWholeNumber))
    .option('--clear', 'remove the policy (existing long-term backups expire at the next retention run)')
    .action(async (name: string, flags: LtrFlags, cmd: Command) => {
      const changes = [flags.weekly, flags.monthly, flags.yearly, flags.weekOfYear].some((v) => v !== undefined);
      if (flags.clear === true && changes) usageError(cmd, '--clear removes the whole policy: give it alone');
      const client = clientFor(cmd);
      const policy = changes || flags.clear === true ? await setLtr(client, name, flags) : await client.getLongTermRetention(name);
      showLtr(cmd, name, policy);
    });

  db.command('ltr-backups')
    .description('list the long-term backups of a database (restore one with geodr db restore NEW --ltr DBID --txid N)')
    .argument('<name>', 'database name')
    .action(async (name: string, _opts: object, cmd: Command) => {
      const backups = await clientFor(cmd).listLongTermBackups(name);
      if (globals(cmd).json === true) return printJson({ value: backups });
      print(table(['KIND', 'TXID', 'TIME', 'KEY'], backups.map((b) => [b.kind, String(b.txid), b.time, b.key])));
    });

  db.command('recoverable')
    .description("databases of the paired region whose backups this region holds (geo-restore them with geodr db geo-restore)")
    .action(async (_opts: object, cmd: Command) => {
      const list = await clientFor(cmd).listRecoverableDatabases();
      if (globals(cmd).json === true) return printJson({ value: list });
      print(
        table(
          ['NAME', 'DB ID', 'REGION', 'SERVER', 'LATEST TXID', 'LATEST TIME', 'EST. DATA LOSS'],
          list.map((d) => [
            d.name,
            d.dbId,
            d.region,
            d.server,
            d.restorePoints.latest === null ? '-' : String(d.restorePoints.latest.txid),
            formatTime(d.restorePoints.latest?.time ?? null),
            d.estimatedDataLossSeconds === null ? '-' : formatDuration(d.estimatedDataLossSeconds),
          ]),
        ),
      );
    });
}

/** geodr backup retention */
export function registerBackupCommands(program: Command): void {
  const backup = program.command('backup').description('backup jobs of the server');

  backup
    .command('retention')
    .description('run the retention job now: delete expired backups, take due long-term ones (it also runs on a schedule)')
    .action(async (_opts: object, cmd: Command) => {
      const r = await clientFor(cmd).runRetention();
      if (globals(cmd).json === true) return printJson(r);
      print(
        keyValues([
          ['objects deleted', String(r.deleted)],
          ['long-term backups taken', String(r.ltrTaken)],
        ]),
      );
    });
}
