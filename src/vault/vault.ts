/**
 * The vault: object storage for a region's backups. The interface is deliberately
 * narrow (like Litestream's replica client) so backends stay thin; everything that
 * works for any backend (encryption, compression, geo-copy, fault injection) wraps it.
 *
 * Rules every backend keeps:
 * - Keys are `/`-separated paths of [A-Za-z0-9._-] segments; no empty or `.`/`..` segment.
 * - Objects are immutable: put() of an existing key fails CONFLICT (callers write new keys).
 * - list() yields keys under a prefix in ascending byte order, optionally only those > startAfter.
 * - A missing object is NOT_FOUND; an unreachable or failing backend is VAULT_UNAVAILABLE
 *   (retryable); both name the key in `context.object`.
 */
import { GeodrError } from '../errors.js';

export interface VaultObject {
  key: string;
  size: number;
}

export interface ListOptions {
  /** Only keys strictly greater than this. */
  startAfter?: string;
  /** Stop after this many keys. */
  limit?: number;
}

export interface Vault {
  /** For errors and logs, e.g. `fs:/var/geodr/vault` or `azure:backups`. */
  readonly name: string;
  /** Stores a new object; CONFLICT if the key exists. Durable when it resolves. */
  put(key: string, body: Uint8Array): Promise<void>;
  /** The object's bytes; NOT_FOUND if missing. */
  get(key: string): Promise<Buffer>;
  /** Size of an object, or undefined if missing. */
  head(key: string): Promise<VaultObject | undefined>;
  /** Keys under `prefix`, ascending. */
  list(prefix: string, opts?: ListOptions): AsyncIterable<VaultObject>;
  /** Removes an object; a missing one is fine. */
  delete(key: string): Promise<void>;
}

const SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Throws INVALID_ARGUMENT for a key that breaks the key rule. */
export function checkKey(key: string): string {
  if (key.length === 0 || key.length > 1024) throw keyError(key, 'must be 1 to 1024 characters');
  for (const seg of key.split('/')) {
    if (seg === '' || seg === '.' || seg === '..' || !SEGMENT.test(seg)) throw keyError(key, 'segments must be non-empty [A-Za-z0-9._-], not "." or ".."');
  }
  return key;
}

function keyError(key: string, why: string): GeodrError {
  return new GeodrError('INVALID_ARGUMENT', `vault key ${JSON.stringify(key.slice(0, 100))} ${why}`, { object: key.slice(0, 200) });
}
