/**
 * CodecVault: compression and client-side encryption for any vault backend.
 *
 * Default compression: brotli at quality 5. Measured with bench/vault-codec.ts (16 MiB of
 * real SQLite page images from an ~8 MiB database of text, integers, JSON and indexes,
 * as 16-page records plus one full snapshot; one object at a time on one core of a
 * 2-vCPU VM, Node 20):
 *
 *   variant         stored/plain  encode MiB/s  decode MiB/s
 *   none            1.000         ~2000         ~6000
 *   gzip (6)        0.325         ~60           ~245
 *   deflate (6)     0.325         ~59           ~220-300
 *   gzip-1          0.360         ~120          ~220-320
 *   brotli-3        0.330         ~125          ~205-265
 *   brotli-4        0.315         ~71           ~200
 *   brotli (5)      0.289         ~48           ~210
 *   brotli-7        0.284         ~25-28        ~225-260
 *   AES-256-GCM adds ~0.5 ms per MiB (~1.7-2 GiB/s): negligible next to any compression.
 *
 * Vault bytes are paid for three times: stored for the whole PITR retention, copied to
 * the paired region (GRS egress), and read back on every restore. brotli-5 stores 11%
 * less than gzip at its default level and 20% less than gzip-1, while its encode speed
 * (~48 MiB/s per core, and the async zlib calls spread over the libuv pool) is far above
 * what shipping needs: 1,000 small transactions/s at ~3 pages each is ~12 MiB/s. Decode
 * speed is within 15% across all compressors, so the choice barely moves restore time.
 * Quality 6+ buys under 1% more for half the speed; gzip/deflate are kept for
 * operators who prefer them (and objects remain readable whatever the setting).
 *
 * Object envelope, format version 1 (all integers big-endian):
 *
 *   offset  size  field
 *   0       4     magic "GDRV" (0x47 0x44 0x52 0x56)
 *   4       1     format version: 1
 *   5       1     compression of the body's payload: 0 none, 1 gzip, 2 brotli, 3 deflate (zlib format)
 *   6       1     encryption: 0 none, 1 AES-256-GCM
 *   7       1     key id length L: 0 when unencrypted, 1..64 when encrypted
 *   8       L     key id, UTF-8, [A-Za-z0-9._-] (names the keyring entry; never key material)
 *   8+L     12    nonce, random per object                 } encrypted objects only
 *   20+L    16    GCM authentication tag                   }
 *   H       ...   body (H = 8+L, or 36+L when encrypted); encrypted as a whole when encryption = 1
 *
 *   body:
 *   0       4     CRC-32 (zlib.crc32) of the plaintext, i.e. of the bytes put() was given
 *   4       8     plaintext length in bytes
 *   12      ...   payload: the plaintext, compressed as the compression byte says
 *
 * Compress, then encrypt (ciphertext does not compress). The additional authenticated
 * data of AES-256-GCM is bytes [0, H-16) of the envelope (every header field but the
 * tag) followed by the UTF-8 object key, so a header edited or an object copied under
 * another key fails authentication. The CRC and length sit inside the encrypted body:
 * a CRC of the plaintext in clear would let anyone test a guess of the contents.
 * The CRC checks unencrypted objects end to end (a flipped bit after compression
 * shows up as a decompression failure or a CRC mismatch); the length bounds the
 * decompressor's output, so a damaged or hostile object cannot inflate without limit.
 *
 * Errors on read: wrong magic, unknown version/compression/encryption byte, truncation,
 * decompression failure, length or CRC mismatch → VAULT_CORRUPT naming the object; no
 * keyring, a key id the keyring lacks, or a failed GCM authentication (wrong key,
 * damaged ciphertext, object moved to another key) → KEY_UNAVAILABLE naming the object
 * and the key id. Wrong bytes are never returned (short of a 1-in-2^32 CRC-32 collision
 * for an unencrypted object).
 *
 * Every object carries its own compression byte and key id, so changing the
 * configured compression or rotating the active key never affects reading old objects.
 * Because the object key is authenticated, an encrypted object cannot be renamed: moving
 * one to another key means decode and re-encode. Nonces are random (96 bits), which is
 * safe for about 2^32 objects per key; rotate the active key well before that.
 */
import { constants as bufferConstants } from 'node:buffer';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { GeodrError } from '../errors.js';
import { checkKeyring, KEY_ID, type Keyring } from './keys.js';
import { checkKey, type ListOptions, type Vault, type VaultObject } from './vault.js';

export type Compression = 'none' | 'gzip' | 'brotli' | 'deflate';

export const COMPRESSIONS: readonly Compression[] = ['none', 'gzip', 'brotli', 'deflate'];
/** What {@link CodecVault} uses when the configuration names none (see the measurements above). */
export const DEFAULT_COMPRESSION: Compression = 'brotli';
/** Levels used unless overridden: zlib level for gzip/deflate, quality for brotli. */
export const DEFAULT_LEVELS: Readonly<Record<Compression, number>> = { none: 0, gzip: 6, brotli: 5, deflate: 6 };

export const ENVELOPE_MAGIC = Buffer.from('GDRV', 'latin1');
export const ENVELOPE_VERSION = 1;
const FIXED = 8;
const NONCE = 12;
const TAG = 16;
const BODY_PREFIX = 12;
const COMPRESSION_CODES: Readonly<Record<Compression, number>> = { none: 0, gzip: 1, brotli: 2, deflate: 3 };
const ENCRYPTION_NONE = 0;
const ENCRYPTION_AES_256_GCM = 1;
// Big objects (full snapshots) are hashed and ciphered in slices with a turn of the
// event loop between them, so one multi-GiB object does not stall every request.
const SLICE = 4 * 1024 * 1024;
const MAX_LENGTH = bufferConstants.MAX_LENGTH;

const gzip = promisify(zlib.gzip);
const gunzip = promisify(zlib.gunzip);
const deflate = promisify(zlib.deflate);
const inflate = promisify(zlib.inflate);
const brotliCompress = promisify(zlib.brotliCompress);
const brotliDecompress = promisify(zlib.brotliDecompress);

export interface CodecOptions {
  compression: Compression;
  /** Encrypts new objects with the active key; needed to read encrypted ones. */
  keyring?: Keyring | undefined;
  /** zlib level (gzip, deflate: 1-9) or brotli quality (0-11); defaults in {@link DEFAULT_LEVELS}. */
  level?: number | undefined;
}

/** What an envelope header says, without decoding the body. */
export interface EnvelopeInfo {
  compression: Compression;
  /** The key id for encrypted objects, undefined otherwise. */
  keyId: string | undefined;
  /** Bytes of header before the body. */
  headerSize: number;
}

/**
 * A vault that compresses and optionally encrypts on put and verifies and decodes
 * on get; list, head and delete pass through (sizes are the stored, encoded sizes).
 *
 * @example
 * const vault = new CodecVault(new FsVault('/var/geodr/vault'), {
 *   compression: DEFAULT_COMPRESSION,
 *   keyring: loadKeyring({ file: '/etc/geodr/vault-keys.json' }),
 * });
 */
export class CodecVault implements Vault {
  readonly name: string;
  private readonly opts: CodecOptions;

  constructor(
    readonly inner: Vault,
    opts: CodecOptions,
  ) {
    checkOptions(opts);
    this.opts = { ...opts };
    const enc = opts.keyring === undefined ? '' : `+aes-256-gcm(${opts.keyring.active})`;
    this.name = `${inner.name}+${opts.compression}${enc}`;
  }

  async put(key: string, body: Uint8Array): Promise<void> {
    checkKey(key);
    const encoded = await encodeObject(key, body, this.opts);
    await this.inner.put(key, encoded);
  }

  async get(key: string): Promise<Buffer> {
    const stored = await this.inner.get(key);
    return decodeObject(key, stored, this.opts.keyring);
  }

  head(key: string): Promise<VaultObject | undefined> {
    return this.inner.head(key);
  }

  list(prefix: string, opts?: ListOptions): AsyncIterable<VaultObject> {
    return this.inner.list(prefix, opts);
  }

  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
}

function checkOptions(opts: CodecOptions): void {
  if (!COMPRESSIONS.includes(opts.compression)) {
    throw new GeodrError('INVALID_ARGUMENT', `vault compression must be one of ${COMPRESSIONS.join(', ')}, got ${JSON.stringify(opts.compression)}`);
  }
  if (opts.level !== undefined) {
    const max = opts.compression === 'brotli' ? 11 : 9;
    const min = opts.compression === 'brotli' ? 0 : 1;
    if (opts.compression === 'none' || !Number.isInteger(opts.level) || opts.level < min || opts.level > max) {
      throw new GeodrError('INVALID_ARGUMENT', `vault compression level for ${opts.compression} must be an integer ${min}-${max}${opts.compression === 'none' ? ' (none has no level)' : ''}, got ${opts.level}`);
    }
  }
  if (opts.keyring !== undefined) checkKeyring(opts.keyring);
}

/**
 * Encodes `plaintext` for storage under `key` (the key is authenticated, not stored).
 * Exposed for tools and the codec benchmark; {@link CodecVault} is the usual way in.
 */
export async function encodeObject(key: string, plaintext: Uint8Array, opts: CodecOptions): Promise<Buffer> {
  const payload = await compress(plaintext, opts.compression, opts.level ?? DEFAULT_LEVELS[opts.compression]);
  const prefix = Buffer.alloc(BODY_PREFIX);
  prefix.writeUInt32BE(await crcOf(plaintext), 0);
  writeU64(prefix, 4, plaintext.length);

  const keyring = opts.keyring;
  const keyId = keyring === undefined ? undefined : Buffer.from(keyring.active, 'utf8');
  const idLength = keyId?.length ?? 0;
  const headerSize = FIXED + idLength + (keyId === undefined ? 0 : NONCE + TAG);
  const header = Buffer.alloc(headerSize);
  ENVELOPE_MAGIC.copy(header, 0);
  header[4] = ENVELOPE_VERSION;
  header[5] = COMPRESSION_CODES[opts.compression];
  header[6] = keyId === undefined ? ENCRYPTION_NONE : ENCRYPTION_AES_256_GCM;
  header[7] = idLength;
  if (keyring === undefined || keyId === undefined) return Buffer.concat([header, prefix, payload]);

  keyId.copy(header, FIXED);
  randomBytes(NONCE).copy(header, FIXED + idLength);
  const secret = keyring.keys.get(keyring.active);
  if (secret === undefined) throw new GeodrError('KEY_UNAVAILABLE', `active key ${JSON.stringify(keyring.active)} is not in the keyring`, { object: key, details: { keyId: keyring.active } });
  const cipher = createCipheriv('aes-256-gcm', secret, header.subarray(FIXED + idLength, FIXED + idLength + NONCE), { authTagLength: TAG });
  cipher.setAAD(additionalData(header, key));
  const parts: Buffer[] = [header, cipher.update(prefix)];
  for (let off = 0; off < payload.length; off += SLICE) {
    if (off > 0) await yieldToLoop();
    parts.push(cipher.update(payload.subarray(off, off + SLICE)));
  }
  parts.push(cipher.final());
  cipher.getAuthTag().copy(header, headerSize - TAG);
  return Buffer.concat(parts);
}

/**
 * Reads an envelope's header (magic, version, compression, key id) without touching
 * the body; VAULT_CORRUPT when it is not a well-formed version-1 header. Useful to
 * find which key ids objects still need before retiring a key.
 */
export function describeObject(key: string, stored: Uint8Array): EnvelopeInfo {
  const corrupt = (why: string): GeodrError => new GeodrError('VAULT_CORRUPT', why, { object: key, details: { storedBytes: stored.length } });
  if (stored.length < FIXED) throw corrupt(`truncated: ${stored.length} bytes is shorter than the ${FIXED}-byte envelope header`);
  if (!ENVELOPE_MAGIC.equals(stored.subarray(0, 4))) throw corrupt('bad magic: not a geodr vault object (GDRV)');
  if (stored[4] !== ENVELOPE_VERSION) throw corrupt(`envelope version ${stored[4]}; this build reads ${ENVELOPE_VERSION}`);
  const compression = COMPRESSIONS.find((c) => COMPRESSION_CODES[c] === stored[5]);
  if (compression === undefined) throw corrupt(`unknown compression code ${stored[5]}`);
  const encryption = stored[6]!;
  const idLength = stored[7]!;
  if (encryption === ENCRYPTION_NONE) {
    if (idLength !== 0) throw corrupt(`unencrypted object with a key id length of ${idLength}`);
    if (stored.length < FIXED + BODY_PREFIX) throw corrupt(`truncated: ${stored.length} bytes, body prefix incomplete`);
    return { compression, keyId: undefined, headerSize: FIXED };
  }
  if (encryption !== ENCRYPTION_AES_256_GCM) throw corrupt(`unknown encryption code ${encryption}`);
  const headerSize = FIXED + idLength + NONCE + TAG;
  if (stored.length < headerSize + BODY_PREFIX) throw corrupt(`truncated: ${stored.length} bytes, header and body prefix need ${headerSize + BODY_PREFIX}`);
  const keyId = Buffer.from(stored.subarray(FIXED, FIXED + idLength)).toString('utf8');
  if (!KEY_ID.test(keyId)) throw corrupt(`malformed key id in the envelope (${idLength} bytes)`);
  return { compression, keyId, headerSize };
}

/**
 * Verifies and decodes an object stored under `key`. Throws VAULT_CORRUPT or
 * KEY_UNAVAILABLE (see the module comment); never returns bytes that differ from
 * what was put.
 */
export async function decodeObject(key: string, stored: Uint8Array, keyring: Keyring | undefined): Promise<Buffer> {
  const info = describeObject(key, stored);
  const { keyId, headerSize } = info;
  const raw = Buffer.from(stored.buffer, stored.byteOffset, stored.length);
  let body: Buffer;
  if (keyId === undefined) {
    body = raw.subarray(headerSize);
  } else {
    const unavailable = (why: string): GeodrError => new GeodrError('KEY_UNAVAILABLE', why, { object: key, details: { keyId } });
    if (keyring === undefined) throw unavailable(`object is encrypted with key ${JSON.stringify(keyId)} and no keyring is configured`);
    const secret = keyring.keys.get(keyId);
    if (secret === undefined) throw unavailable(`object is encrypted with key ${JSON.stringify(keyId)}, which the keyring does not hold (it has ${[...keyring.keys.keys()].join(', ')})`);
    const nonceAt = headerSize - TAG - NONCE;
    const decipher = createDecipheriv('aes-256-gcm', secret, raw.subarray(nonceAt, nonceAt + NONCE), { authTagLength: TAG });
    decipher.setAAD(additionalData(raw.subarray(0, headerSize), key));
    decipher.setAuthTag(raw.subarray(headerSize - TAG, headerSize));
    const parts: Buffer[] = [];
    for (let off = headerSize; off < raw.length; off += SLICE) {
      if (off > headerSize) await yieldToLoop();
      parts.push(decipher.update(raw.subarray(off, off + SLICE)));
    }
    try {
      parts.push(decipher.final());
    } catch {
      // GCM cannot tell a wrong key from damaged bytes; either way nothing decrypted is released.
      throw unavailable(`decryption with key ${JSON.stringify(keyId)} failed authentication: the key is wrong, or the object is damaged or was stored under another name`);
    }
    body = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    if (body.length < BODY_PREFIX) throw new GeodrError('VAULT_CORRUPT', `decrypted body of ${body.length} bytes lacks its ${BODY_PREFIX}-byte prefix`, { object: key, details: { keyId } });
  }
  const expectedCrc = body.readUInt32BE(0);
  const length = readU64(body, 4);
  const corrupt = (why: string, cause?: unknown): GeodrError =>
    new GeodrError('VAULT_CORRUPT', why, { object: key, details: { compression: info.compression, storedBytes: stored.length, plaintextBytes: length } }, { cause });
  if (length >= MAX_LENGTH) throw corrupt(`plaintext length ${length} exceeds what one buffer can hold`);
  let plaintext: Buffer;
  try {
    plaintext = await decompress(body.subarray(BODY_PREFIX), info.compression, length);
  } catch (e) {
    throw corrupt(`${info.compression} payload does not decompress: ${(e as Error).message}`, e);
  }
  if (plaintext.length !== length) throw corrupt(`plaintext is ${plaintext.length} bytes, the envelope says ${length}`);
  const actualCrc = await crcOf(plaintext);
  if (actualCrc !== expectedCrc) throw corrupt(`CRC-32 mismatch: stored ${hex(expectedCrc)}, computed ${hex(actualCrc)}`);
  return plaintext;
}

async function compress(data: Uint8Array, compression: Compression, level: number): Promise<Buffer> {
  switch (compression) {
    case 'none':
      return Buffer.from(data.buffer, data.byteOffset, data.length);
    case 'gzip':
      return gzip(data, { level });
    case 'deflate':
      return deflate(data, { level });
    case 'brotli':
      return brotliCompress(data, {
        params: {
          [zlib.constants.BROTLI_PARAM_QUALITY]: level,
          [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length,
        },
      });
  }
}

async function decompress(data: Buffer, compression: Compression, length: number): Promise<Buffer> {
  // One byte of headroom past the promised length: a longer output then fails with
  // ERR_BUFFER_TOO_LARGE instead of being cut silently, and 0 is not a legal limit.
  const maxOutputLength = length + 1;
  // Output chunks sized to the object (up to 4 MiB): zlib's 16 KiB default made brotli
  // decode of a large snapshot run at 206 MiB/s instead of 495 (measured by bench/backup.ts).
  const chunkSize = Math.max(64 << 10, Math.min(4 << 20, length + 1));
  switch (compression) {
    case 'none':
      return data;
    case 'gzip':
      return gunzip(data, { maxOutputLength, chunkSize });
    case 'deflate':
      return inflate(data, { maxOutputLength, chunkSize });
    case 'brotli':
      return brotliDecompress(data, { maxOutputLength, chunkSize });
  }
}

function additionalData(header: Buffer, key: string): Buffer {
  return Buffer.concat([header.subarray(0, header.length - TAG), Buffer.from(key, 'utf8')]);
}

async function crcOf(data: Uint8Array): Promise<number> {
  let crc = 0;
  for (let off = 0; off < data.length; off += SLICE) {
    if (off > 0) await yieldToLoop();
    crc = zlib.crc32(data.subarray(off, off + SLICE), crc);
  }
  return crc;
}

function writeU64(buf: Buffer, off: number, v: number): void {
  buf.writeUInt32BE(Math.floor(v / 0x100000000), off);
  buf.writeUInt32BE(v >>> 0, off + 4);
}

function readU64(buf: Buffer, off: number): number {
  return buf.readUInt32BE(off) * 0x100000000 + buf.readUInt32BE(off + 4);
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}
