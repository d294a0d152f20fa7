/** geodr server (runs a server) and geodr info (asks one). */
import type { Command } from 'commander';
import { clientFor, CliExit, globals } from './context.js';
import { keyValues, print, printJson } from './format.js';

export function registerServerCommands(program: Command): void {
  program
    .command('server')
    .description('run a geodr server (see geodr server --help for its flags)')
    // Every argument, --help included, goes to the server's own parser untouched.
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .action(async (_opts: object, cmd: Command) => {
      // Imported on use: the server pulls in fastify and SQLite, which no other command needs.
      const { runServer } = await import('../server/main.js');
      const code = await runServer(cmd.args);
      if (code !== 0) throw new CliExit(code);
    });

  program
    .command('info')
    .description("show the server's name, region, version and counts")
    .action(async (_opts: object, cmd: Command) => {
      const s = await clientFor(cmd).server();
      if (globals(cmd).json === true) return printJson(s);
      print(
        keyValues([
          ['url', globals(cmd).url],
          ['name', s.name],
          ['region', s.region],
          ['version', s.version],
          ['api version', s.apiVersion],
          ['default pool', s.defaultPool],
          ['pools', String(s.pools)],
          ['databases', String(s.databases)],
          ['open databases', String(s.openDatabases)],
        ]),
      );
    });
}
