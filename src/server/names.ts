/** Names of servers, pools, databases and regions: safe as file names, URL segments and labels. */
import { GeodrError } from '../errors.js';

export type NameKind = 'database' | 'pool' | 'server' | 'region' | 'token' | 'restore point' | 'failover group';

export const MAX_NAME_LENGTH = 128;

/**
 * Names that would be confused with system databases, SQLite schemas, Windows device
 * files, or route segments (`v2`/`v3` are the libSQL protocol paths under a database).
 */
const RESERVED = new Set(['master', 'model', 'msdb', 'tempdb', 'main', 'temp', 'con', 'nul', 'aux', 'prn', 'v2', 'v3', 'v3-protobuf']);

const SHAPE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/**
 * Returns `name` if it is acceptable, else throws INVALID_ARGUMENT saying why.
 *
 * @example
 * validateName('database', 'tenant-42') // 'tenant-42'
 */
export function validateName(kind: NameKind, name: unknown): string {
  if (typeof name !== 'string') throw bad(kind, name, 'must be a string');
  if (name.length === 0) throw bad(kind, name, 'must not be empty');
  if (name.length > MAX_NAME_LENGTH) throw bad(kind, name, `is ${name.length} characters long; the limit is ${MAX_NAME_LENGTH}`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) throw bad(kind, name, 'contains a control character');
  if (name.includes('/') || name.includes('\\')) throw bad(kind, name, 'contains a path separator');
  if (name.includes('..')) throw bad(kind, name, 'contains ".."');
  if (!SHAPE.test(name)) throw bad(kind, name, 'may hold only letters, digits, "_", "-" and ".", and must start with a letter or digit');
  if (RESERVED.has(name.toLowerCase())) throw bad(kind, name, 'is reserved');
  return name;
}

function bad(kind: NameKind, name: unknown, why: string): GeodrError {
  const shown = typeof name === 'string' ? JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}…` : name) : String(name);
  return new GeodrError('INVALID_ARGUMENT', `${kind} name ${shown} ${why}`, { details: { kind } });
}
