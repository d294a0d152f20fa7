/**
 * The `geodr` command line: builds the commander program (so tests and other entry
 * points can run it in-process) and maps outcomes to exit codes.
 */
import { Command, CommanderError, Option } from 'commander';
import { VERSION } from '../version.js';
import { registerBackupCommands } from './backup.js';
import { registerCatalogCommands } from './catalog.js';
import { CliExit, EXIT_CODES_HELP, errorLine, exitCodeFor, parseUrl, type Globals } from './context.js';
import { registerDatabaseCommands } from './db.js';
import { registerOperationCommands } from './operation.js';
import { registerPoolCommands } from './pool.js';
import { registerReplicationCommands } from './replication.js';
import { registerServerCommands } from './server.js';
import { registerSqlCommand } from './sql.js';

export const DEFAULT_URL = 'http://127.0.0.1:7480';

const ENVIRONMENT_HELP = `Environment:
  GEODR_URL    server URL (like --url)
  GEODR_TOKEN  bearer token (like --token)`;

/**
 * The program with every command group. `extra` adds more groups (main.ts passes the
 * `dev` group's registration); it runs last, before the program is returned.
 */
export function buildProgram(extra?: (program: Command) => void): Command {
  const program = new Command('geodr');
  // Settings first: commands created with .command() copy them from their parent.
  program
    .exitOverride()
    .configureOutput({
      // Usage errors as one line, like every other error: "geodr: USAGE: ...".
      outputError: (str, write) => write(`geodr: USAGE: ${str.replace(/^error: /, '').trimEnd()}\n`),
    })
    .showSuggestionAfterError()
    .description('geodr: business continuity for database-per-tenant SQLite apps.')
    .version(VERSION, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .addOption(new Option('--url <url>', 'server URL').env('GEODR_URL').default(DEFAULT_URL).argParser(parseUrl))
    .addOption(new Option('--token <token>', 'bearer token').env('GEODR_TOKEN'))
    .option('--json', "print the API's JSON instead of tables")
    .addHelpText('after', `\n${ENVIRONMENT_HELP}\n\n${EXIT_CODES_HELP}\n\nSee docs/CLI.md for every command with examples.`);

  registerServerCommands(program);
  registerPoolCommands(program);
  registerDatabaseCommands(program);
  registerSqlCommand(program);
  registerOperationCommands(program);
  registerBackupCommands(program);
  registerCatalogCommands(program);
  registerReplicationCommands(program);

  // ---------------------------------------------------------------------------
  // Extension point: more command groups register here. main.ts passes the `dev`
  // group (geodr dev up|down|status) from src/deploy/cli.ts's registerDevCommands.
  extra?.(program);
  // ---------------------------------------------------------------------------

  return program;
}

/** Runs the CLI on `argv` (as process.argv: node, script, args...) and returns the exit code. */
export async function run(argv: readonly string[], extra?: (program: Command) => void): Promise<number> {
  const program = buildProgram(extra);
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (e) {
    const code = exitCodeFor(e);
    // Commander already printed its usage errors and help; CliExit said its piece.
    if (code !== 0 && !(e instanceof CommanderError) && !(e instanceof CliExit)) process.stderr.write(`${errorLine(e, program.opts<Partial<Globals>>())}\n`);
    return code;
  }
}
