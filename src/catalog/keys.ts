/**
 * Shard keys. A shard map has one key type; keys of every type are compared as
 * normalized bytes, so SQLite's BLOB order (memcmp) is the key order and a range
 * lookup is one indexed `low <= key` probe:
 *
 *   int     64-bit signed integer, stored as 8 big-endian bytes with the sign bit
 *           flipped (so -1 sorts before 0)
 *   string  UTF-8 bytes (code point order, case-sensitive)
 *   binary  the bytes themselves
 *
 * On the wire and on the command line a key is text: an int as decimal digits, a
 * string as itself, binary as lower-case hex. Shared by the server and the SDK (pure).
 */
import { GeodrError } from '../errors.js';

export const KEY_TYPES = ['int', 'string', 'binary'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

/** A key as an application passes it: int keys as number or bigint, string keys as string, binary as bytes. */
export type ShardKey = number | bigint | string | Uint8Array;

/** String and binary keys longer than this are refused (they sit in indexes on every lookup). */
export const MAX_KEY_BYTES = 1024;

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const SIGN = 2n ** 63n;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function invalid(message: string): GeodrError {
  return new GeodrError('INVALID_ARGUMENT', message);
}

export function isKeyType(v: unknown): v is KeyType {
  return typeof v === 'string' && (KEY_TYPES as readonly string[]).includes(v);
}

/** The smallest key of a type: where an open-ended range (low omitted) starts. */
export function minKey(type: KeyType): Buffer {
  return type === 'int' ? Buffer.alloc(8) : Buffer.alloc(0);
}

/** Normalizes an application key; throws INVALID_ARGUMENT when it does not fit the type. */
export function normalizeKey(type: KeyType, key: ShardKey): Buffer {
  switch (type) {
    case 'int': {
      let v: bigint;
      if (typeof key === 'bigint') v = key;
      else if (typeof key === 'number' && Number.isSafeInteger(key)) v = BigInt(key);
      else throw invalid(`an int shard key must be a safe integer or a bigint, not ${describe(key)}`);
      if (v < INT64_MIN || v > INT64_MAX) throw invalid(`int shard key ${v} is outside the 64-bit range`);
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(v + SIGN);
      return b;
    }
    case 'string': {
      if (typeof key !== 'string') throw invalid(`a string shard key must be a string, not ${describe(key)}`);
      // UTF-8 would turn a lone surrogate into U+FFFD, making two different keys equal.
      if (LONE_SURROGATE.test(key)) throw invalid('a string shard key must be well-formed Unicode (it holds a lone surrogate)');
      const b = Buffer.from(key, 'utf8');
      if (b.length > MAX_KEY_BYTES) throw invalid(`string shard key is ${b.length} bytes in UTF-8; the limit is ${MAX_KEY_BYTES}`);
      return b;
    }
    case 'binary': {
      if (!(key instanceof Uint8Array)) throw invalid(`a binary shard key must be a Uint8Array, not ${describe(key)}`);
      if (key.byteLength > MAX_KEY_BYTES) throw invalid(`binary shard key is ${key.byteLength} bytes; the limit is ${MAX_KEY_BYTES}`);
      return Buffer.from(key);
    }
  }
}

/** Parses the text form of a key (decimal, the string, hex) into normalized bytes. */
export function parseKeyText(type: KeyType, text: unknown, what = 'key'): Buffer {
  if (typeof text !== 'string') throw invalid(`${what} must be a string (the text form of a ${type} key), not ${describe(text)}`);
  switch (type) {
    case 'int':
      if (!/^-?\d{1,20}$/.test(text)) throw invalid(`${what} ${JSON.stringify(clip(text))} is not a decimal integer (the map's keys are int)`);
      return normalizeKey('int', BigInt(text));
    case 'string':
      return normalizeKey('string', text);
    case 'binary':
      if (!/^(?:[0-9a-fA-F]{2})*$/.test(text)) throw invalid(`${what} ${JSON.stringify(clip(text))} is not hex with an even number of digits (the map's keys are binary)`);
      return normalizeKey('binary', Buffer.from(text, 'hex'));
  }
}

/** The text form of normalized key bytes. */
export function keyText(type: KeyType, bytes: Uint8Array): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (type) {
    case 'int':
      if (b.length !== 8) throw new GeodrError('INTERNAL', `an int key is stored as 8 bytes, found ${b.length}`);
      return (b.readBigUInt64BE() - SIGN).toString();
    case 'string':
      return b.toString('utf8');
    case 'binary':
      return b.toString('hex');
  }
}

/** The text form of an application key. */
export function formatKey(type: KeyType, key: ShardKey): string {
  return keyText(type, normalizeKey(type, key));
}

/** Text to the value an application uses: int as number when safe (else bigint), string, binary as bytes. */
export function keyValue(type: KeyType, text: string): ShardKey {
  switch (type) {
    case 'int': {
      const v = BigInt(text);
      return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    case 'string':
      return text;
    case 'binary':
      return new Uint8Array(Buffer.from(text, 'hex'));
  }
}

/** True when `key` lies in [low, high); `high` null is unbounded. */
export function inRange(key: Uint8Array, low: Uint8Array, high: Uint8Array | null): boolean {
  return Buffer.compare(low, key) <= 0 && (high === null || Buffer.compare(key, high) < 0);
}

function clip(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v instanceof Uint8Array) return 'bytes';
  if (typeof v === 'number') return Number.isInteger(v) ? `the unsafe integer ${v}` : `the number ${v}`;
  return typeof v;
}
