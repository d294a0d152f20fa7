/**
 * The keyring for client-side vault encryption ({@link CodecVault}): AES-256 keys
 * by id, one of them active for new objects. Old keys stay in the ring so objects
 * written before a rotation remain readable; the key id travels in each object's
 * envelope, so readers pick the right key without guessing.
 *
 * Two sources, exactly one at a time:
 * - a JSON key file: `{"active": "k2", "keys": {"k1": "<base64 of 32 bytes>", "k2": "..."}}`
 * - the environment variable `GEODR_VAULT_KEY="<keyId>:<base64 of 32 bytes>"` (one key, active).
 *
 * Every error names the problem, the file and the key id, and never the key
 * material: JSON parser messages are dropped (V8 quotes the input in them) and no
 * error carries a cause that could.
 */
import { readFileSync } from 'node:fs';
import { GeodrError } from '../errors.js';

export interface Keyring {
  /** Id of the key new objects are encrypted with. */
  active: string;
  /** Every key that may be needed to read: id → 32-byte AES-256 key. */
  keys: Map<string, Buffer>;
}

export const KEY_ENV = 'GEODR_VAULT_KEY';
export const KEY_BYTES = 32;
/** Key ids are stored in object envelopes (one length byte) and appear in errors and logs. */
export const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;
// Standard base64 (padding optional); Buffer.from(s, 'base64') would silently skip junk.
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

export interface LoadKeyringOptions {
  /** Path of a JSON key file. */
  file?: string | undefined;
  /** Environment to read {@link KEY_ENV} from; defaults to `process.env`. */
  env?: Record<string, string | undefined> | undefined;
}

/**
 * Loads the keyring from a key file or from `GEODR_VAULT_KEY`; undefined when
 * neither is given (the vault is then unencrypted). Setting both is refused, so an
 * operator never believes one key is in use while the other is.
 *
 * @example
 * const keyring = loadKeyring({ file: '/etc/geodr/vault-keys.json' });
 * const vault = new CodecVault(inner, { compression: 'gzip', keyring });
 */
export function loadKeyring(opts: LoadKeyringOptions = {}): Keyring | undefined {
  const env = opts.env ?? process.env;
  const fromEnv = env[KEY_ENV];
  const envSet = fromEnv !== undefined && fromEnv.trim() !== '';
  if (opts.file !== undefined && envSet) {
    throw invalid(`both a key file (${opts.file}) and ${KEY_ENV} are set; use one`);
  }
  if (opts.file !== undefined) return loadKeyFile(opts.file);
  if (envSet) return parseEnvKey(fromEnv);
  return undefined;
}

/** Throws INVALID_ARGUMENT unless `ring` is usable: the active id present, every key 32 bytes, ids well formed. */
export function checkKeyring(ring: Keyring, where = 'keyring'): Keyring {
  if (!(ring.keys instanceof Map) || ring.keys.size === 0) throw invalid(`${where} holds no keys`);
  for (const [id, key] of ring.keys) {
    checkKeyId(id, where);
    if (!Buffer.isBuffer(key) || key.length !== KEY_BYTES) {
      throw invalid(`${where}: key ${JSON.stringify(id)} is ${Buffer.isBuffer(key) ? key.length : 'not a buffer of'} bytes; AES-256 needs ${KEY_BYTES}`, id);
    }
  }
  if (typeof ring.active !== 'string' || !ring.keys.has(ring.active)) {
    throw invalid(`${where}: active key ${JSON.stringify(String(ring.active))} is not among the keys (${[...ring.keys.keys()].join(', ')})`);
  }
  return ring;
}

function loadKeyFile(file: string): Keyring {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    // The errno error names only the path and the failing call: safe to keep as the cause.
    throw new GeodrError('INVALID_ARGUMENT', `cannot read key file ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`, { object: file }, { cause: e });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    // Deliberately no cause and no parser message: V8 quotes the surrounding input, i.e. key material.
    throw invalid(`key file ${file} is not valid JSON`, undefined, file);
  }
  const where = `key file ${file}`;
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw invalid(`${where} must hold a JSON object {"active": ..., "keys": {...}}`, undefined, file);
  const { active, keys } = doc as { active?: unknown; keys?: unknown };
  if (typeof active !== 'string') throw invalid(`${where}: "active" must be a key id string`, undefined, file);
  if (typeof keys !== 'object' || keys === null || Array.isArray(keys)) throw invalid(`${where}: "keys" must be an object of key id → base64 key`, undefined, file);
  const ring: Keyring = { active, keys: new Map() };
  for (const [id, value] of Object.entries(keys)) {
    checkKeyId(id, where, file);
    ring.keys.set(id, decodeKey(value, id, where, file));
  }
  return checkKeyring(ring, where);
}

function parseEnvKey(value: string): Keyring {
  const where = `${KEY_ENV}`;
  const colon = value.indexOf(':');
  if (colon < 0) throw invalid(`${where} must be "<keyId>:<base64 of ${KEY_BYTES} bytes>"`);
  const id = value.slice(0, colon).trim();
  checkKeyId(id, where);
  const key = decodeKey(value.slice(colon + 1), id, where);
  return { active: id, keys: new Map([[id, key]]) };
}

function checkKeyId(id: string, where: string, file?: string): void {
  if (!KEY_ID.test(id)) {
    // A long malformed id is likely a key pasted into the wrong place (id and key swapped):
    // name short ids, only measure long ones.
    const shown = id.length < 40 ? JSON.stringify(id) : `of ${id.length} characters (not shown: it may be key material)`;
    throw invalid(`${where}: key id ${shown} is not 1 to 64 of [A-Za-z0-9._-]`, id.length < 40 ? id : undefined, file);
  }
}

function decodeKey(value: unknown, id: string, where: string, file?: string): Buffer {
  if (typeof value !== 'string') throw invalid(`${where}: key ${JSON.stringify(id)} must be a base64 string`, id, file);
  const text = value.trim();
  if (!BASE64.test(text)) throw invalid(`${where}: key ${JSON.stringify(id)} is not valid base64`, id, file);
  const key = Buffer.from(text, 'base64');
  if (key.length !== KEY_BYTES) throw invalid(`${where}: key ${JSON.stringify(id)} is ${key.length} bytes; AES-256 needs ${KEY_BYTES}`, id, file);
  return key;
}

function invalid(message: string, keyId?: string, file?: string): GeodrError {
  return new GeodrError('INVALID_ARGUMENT', message, { object: file, details: keyId === undefined ? undefined : { keyId } });
}
