/** What every command needs: the global options, a client, value parsers, and exit codes. */
import { CommanderError, InvalidArgumentError, type Command } from 'commander';
import { isGeodrError } from '../errors.js';
import { GeodrApiError, GeodrClient, type IntMode } from '../sdk/index.js';

export interface Globals {
  url: string;
  token?: string;
  json?: boolean;
}

export function globals(cmd: Command): Globals {
  return cmd.optsWithGlobals<Globals>();
}

export function clientFor(cmd: Command, intMode: IntMode = 'number'): GeodrClient {
  const g = globals(cmd);
  return new GeodrClient({ url: g.url, token: g.token, intMode });
}

/** Exit codes; docs/CLI.md and the root --help list them. */
export const EXIT = {
  OK: 0,
  ERROR: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  REFUSED: 4,
  AUTH: 5,
  UNAVAILABLE: 6,
  OPERATION_FAILED: 7,
} as const;

export const EXIT_CODES_HELP = `Exit codes:
  0  success
  1  unexpected error (a bug, or a server-side failure such as INTERNAL or IO_FAILED)
  2  usage error: unknown command or flag, missing or bad value
  3  not found (NOT_FOUND)
  4  refused: the request conflicts or is invalid (CONFLICT, INVALID_ARGUMENT,
     SQL_ERROR, SQL_REFUSED, QUOTA_EXCEEDED, LIMIT_EXCEEDED, TRANSACTION_EXPIRED,
     UNSUPPORTED, ...)
  5  authentication or authorization (UNAUTHENTICATED, FORBIDDEN)
  6  unavailable, try again (server unreachable, UNAVAILABLE, BUSY,
     STATEMENT_TIMEOUT, an --timeout that ran out)
  7  the operation failed or was cancelled (db verify, db restore,
     db geo-restore, op wait)
Errors print one line on stderr: "geodr: CODE: message".`;

/** Ends the command with an exit code after it already said what it had to say. */
export class CliExit extends Error {
  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
  }
}

/** The exit code for an error a command threw. */
export function exitCodeFor(e: unknown): number {
  if (e instanceof CliExit) return e.exitCode;
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  if (e instanceof GeodrApiError) return e.operation !== undefined ? EXIT.OPERATION_FAILED : exitForCode(e.code, e.status, e.retryable);
  if (isGeodrError(e)) return exitForCode(e.code, e.status, e.retryable);
  return EXIT.ERROR;
}

function exitForCode(code: string, status: number, retryable: boolean): number {
  switch (code) {
    case 'NOT_FOUND':
    case 'NO_SNAPSHOT':
      return EXIT.NOT_FOUND;
    case 'UNAUTHENTICATED':
    case 'FORBIDDEN':
      return EXIT.AUTH;
    case 'UNAVAILABLE':
    case 'BUSY':
    case 'STATEMENT_TIMEOUT':
    case 'TIMEOUT':
      return EXIT.UNAVAILABLE;
    case 'CANCELLED':
      return EXIT.OPERATION_FAILED;
  }
  // The rest of the 4xx codes (and 501 UNSUPPORTED, 507 QUOTA_EXCEEDED) refuse the request as asked.
  if ((status >= 400 && status < 500) || status === 501 || status === 507) return EXIT.REFUSED;
  if (retryable && status === 503) return EXIT.UNAVAILABLE;
  return EXIT.ERROR;
}

/** The one stderr line for an error: `geodr: CODE: message`. */
export function errorLine(e: unknown, g: Partial<Globals>): string {
  if (e instanceof GeodrApiError) {
    const hint = e.code === 'UNAUTHENTICATED' && (g.token === undefined || g.token === '') ? ' (give a token with --token or GEODR_TOKEN)' : '';
    return `geodr: ${e.code}: ${e.message}${hint}`;
  }
  if (isGeodrError(e)) return `geodr: ${e.code}: ${e.reason}`;
  return `geodr: ERROR: ${e instanceof Error ? e.message : String(e)}`;
}

// Value parsers for options. Throwing InvalidArgumentError makes commander report a
// usage error naming the option.

export function parseWholeNumber(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw new InvalidArgumentError('expected a whole number, e.g. 10.');
  return Number(value);
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** Bytes, or a number with a unit: 10MiB, 1.5GiB, 1GB (decimal), 512K (binary). "0" means no quota. */
export function parseSize(value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(value.trim());
  const unit = m === null ? undefined : SIZE_UNITS[m[2]!.toLowerCase()];
  if (m === null || unit === undefined) throw new InvalidArgumentError('expected bytes or a size with a unit: 1048576, 10MiB, 1GB, 512K (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).');
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes)) throw new InvalidArgumentError('the size must come to a whole number of bytes below 2^53.');
  return bytes;
}

export function parseUrl(value: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new InvalidArgumentError('expected a URL like http://127.0.0.1:7480.');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new InvalidArgumentError('the URL must start with http:// or https://.');
  return value;
}

export function parseSeconds(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number of seconds.');
  return n;
}

/**
 * A point in time: ISO 8601 (2026-05-01T12:00:00Z; without an offset, the local time of
 * this machine), sent to the server as UTC ISO.
 */
export function parseTime(value: string): string {
  const t = Date.parse(value);
  if (value.trim() === '' || !Number.isFinite(t)) throw new InvalidArgumentError('expected an ISO-8601 time, e.g. 2026-05-01T12:00:00Z.');
  return new Date(t).toISOString();
}

/** For repeatable options: collects every occurrence. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
