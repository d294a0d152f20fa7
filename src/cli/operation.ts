/** geodr op list|show|cancel|wait, and the wait-with-progress that db verify shares. */
import { Option, type Command } from 'commander';
import { GeodrApiError, type GeodrClient, type Operation, type OperationState } from '../sdk/index.js';
import { clientFor, globals, parseSeconds } from './context.js';
import { formatTime, keyValues, print, printJson, ProgressBar, table } from './format.js';

const STATES: OperationState[] = ['Pending', 'InProgress', 'Succeeded', 'Failed', 'Cancelled'];

export function showOperation(cmd: Command, op: Operation): void {
  if (globals(cmd).json === true) return printJson(op);
  const pairs: Array<[string, string]> = [
    ['id', op.id],
    ['kind', op.kind],
    ['state', op.state],
    ['progress', `${op.percentComplete}%`],
    ['database', op.database ?? '-'],
    ['pool', op.pool ?? '-'],
    ['created', formatTime(op.createdAt)],
    ['started', formatTime(op.startedAt)],
    ['ended', formatTime(op.endedAt)],
  ];
  if (op.cancelRequested) pairs.push(['cancel requested', 'yes']);
  if (op.error !== null) pairs.push(['error', op.error.message.startsWith(`${op.error.code}: `) ? op.error.message : `${op.error.code}: ${op.error.message}`]);
  if (op.result !== null) for (const [k, v] of Object.entries(op.result)) pairs.push([`result.${k}`, typeof v === 'string' ? v : JSON.stringify(v)]);
  print(keyValues(pairs));
}

/**
 * Waits for an operation, drawing progress on stderr, then prints it. A Failed or
 * Cancelled operation is printed too, then rethrown (exit code 7).
 */
export async function waitAndShow(cmd: Command, client: GeodrClient, id: string, timeoutSeconds: number | undefined): Promise<void> {
  const bar = new ProgressBar();
  let last: Operation | undefined;
  try {
    last = await client.waitForOperation(id, {
      intervalMs: 200,
      timeoutMs: timeoutSeconds === undefined ? undefined : timeoutSeconds * 1000,
      onProgress: (op) => {
        last = op;
        bar.update(op);
      },
    });
  } catch (e) {
    bar.finish(last);
    if (e instanceof GeodrApiError && e.operation !== undefined) showOperation(cmd, e.operation);
    throw e;
  }
  bar.finish(last);
  showOperation(cmd, last);
}

export const timeoutOption = (): Option =>
  new Option('--timeout <seconds>', 'stop waiting after this long (exit code 6); the operation keeps running').argParser(parseSeconds);

export function registerOperationCommands(program: Command): void {
  const op = program.command('op').description('long-running operations: list, show, cancel, wait');

  op.command('list')
    .description('list operations, newest first')
    .addOption(new Option('--state <state>', 'only operations in this state').choices(STATES))
    .option('--database <name>', 'only operations on this database')
    .action(async (opts: { state?: OperationState; database?: string }, cmd: Command) => {
      const ops = await clientFor(cmd).listOperations({ state: opts.state, database: opts.database });
      if (globals(cmd).json === true) return printJson({ value: ops });
      print(table(['ID', 'KIND', 'STATE', 'PROGRESS', 'DATABASE', 'CREATED'], ops.map((o) => [o.id, o.kind, o.state, `${o.percentComplete}%`, o.database ?? '-', formatTime(o.createdAt)])));
    });

  op.command('show')
    .description('show an operation')
    .argument('<id>', 'operation id')
    .action(async (id: string, _opts: object, cmd: Command) => showOperation(cmd, await clientFor(cmd).getOperation(id)));

  op.command('cancel')
    .description('request cancellation of an operation')
    .argument('<id>', 'operation id')
    .action(async (id: string, _opts: object, cmd: Command) => showOperation(cmd, await clientFor(cmd).cancelOperation(id)));

  op.command('wait')
    .description('wait for an operation to finish, showing progress on stderr')
    .argument('<id>', 'operation id')
    .addOption(timeoutOption())
    .action(async (id: string, opts: { timeout?: number }, cmd: Command) => waitAndShow(cmd, clientFor(cmd), id, opts.timeout));
}
