/**
 * Process entry of `geodr server`: reads the configuration (file, GEODR_* environment,
 * flags), starts the server, and drains on SIGTERM/SIGINT. Exit codes: 0 after a clean
 * drain, 2 for a configuration error, 1 for anything else.
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { isGeodrError } from '../errors.js';
import { loadConfig, type ServerConfig } from './config.js';
import { GeodrServer } from './server.js';

export const SERVER_FLAGS = {
  config: { type: 'string', short: 'c' },
  name: { type: 'string' },
  region: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string', short: 'p' },
  'data-dir': { type: 'string', short: 'd' },
  durability: { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const SERVER_USAGE = `Usage: geodr server [--config FILE] [options]

Starts a geodr server. Settings come from the JSON config file, then GEODR_*
environment variables, then these flags:
  -c, --config FILE      JSON configuration file
      --name NAME        server name (GEODR_NAME)
      --region NAME      region name (GEODR_REGION)
      --host ADDR        listen address (GEODR_HOST, default 127.0.0.1)
  -p, --port N           listen port (GEODR_PORT, default 7480; 0 picks one)
  -d, --data-dir DIR     data directory (GEODR_DATA_DIR)
      --durability MODE  group | commit (GEODR_DURABILITY)
      --log-level LEVEL  fatal|error|warn|info|debug|trace|silent (GEODR_LOG_LEVEL)
GEODR_ADMIN_TOKEN adds an admin bearer token.`;

/** Parses server flags into a validated configuration (throws INVALID_ARGUMENT). */
export function configFromArgs(argv: string[], env: Record<string, string | undefined>): ServerConfig | 'help' {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: SERVER_FLAGS, strict: true, allowPositionals: false });
  } catch (e) {
    throw Object.assign(new Error(`${(e as Error).message}\n\n${SERVER_USAGE}`), { usage: true });
  }
  const v = parsed.values;
  if (v.help === true) return 'help';
  let port: number | undefined;
  if (v.port !== undefined) {
    port = Number(v.port);
    if (!Number.isInteger(port)) throw Object.assign(new Error(`--port ${JSON.stringify(v.port)} is not an integer`), { usage: true });
  }
  return loadConfig({
    file: v.config,
    env,
    overrides: { name: v.name, region: v.region, host: v.host, port, dataDir: v['data-dir'], durability: v.durability, logLevel: v['log-level'] },
  });
}

export async function runServer(argv: string[]): Promise<number> {
  let config: ServerConfig | 'help';
  try {
    config = configFromArgs(argv, process.env);
  } catch (e) {
    process.stderr.write(`geodr server: ${(e as Error).message}\n`);
    return 2;
  }
  if (config === 'help') {
    process.stdout.write(`${SERVER_USAGE}\n`);
    return 0;
  }
  let server: GeodrServer;
  try {
    server = await GeodrServer.start(config);
  } catch (e) {
    process.stderr.write(`geodr server: ${(e as Error).message}\n`);
    return isGeodrError(e, 'INVALID_ARGUMENT') ? 2 : 1;
  }
  return new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      server.logger.info({ signal }, 'signal received');
      server.shutdown().then(
        () => resolve(0),
        (e: unknown) => {
          server.logger.error({ err: e }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

// Run when executed directly (also through a symlinked bin or a path with spaces).
if (process.argv[1] !== undefined && pathToFileURL(realpathSync(process.argv[1])).href === import.meta.url) {
  runServer(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`geodr server: ${String(e)}\n`);
      process.exit(1);
    },
  );
}
