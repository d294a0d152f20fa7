/**
 * Shard keys: normalized bytes sort exactly as the keys do (so SQLite's BLOB order is
 * key order), the text form round-trips, and keys that do not fit are refused.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { GeodrError } from '../errors.js';
import { formatKey, inRange, keyText, keyValue, minKey, normalizeKey, parseKeyText, type KeyType } from './keys.js';
import { normalizeServer } from './model.js';

const runs = { numRuns: Number(process.env.GEODR_PROPERTY_RUNS ?? 300) };
const int64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
const cmp = (a: Buffer, b: Buffer): number => Math.sign(Buffer.compare(a, b));

test('property: int keys sort as numbers, across the whole 64-bit range', () => {
  fc.assert(
    fc.property(int64, int64, (a, b) => {
      assert.equal(cmp(normalizeKey('int', a), normalizeKey('int', b)), a < b ? -1 : a > b ? 1 : 0);
    }),
    runs,
  );
});

test('property: string keys sort by code point, binary keys by bytes', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'grapheme' }), (a, b) => {
      const cpa = [...a].map((c) => c.codePointAt(0)!);
      const cpb = [...b].map((c) => c.codePointAt(0)!);
      let want = 0;
      for (let i = 0; i < Math.min(cpa.length, cpb.length) && want === 0; i++) want = Math.sign(cpa[i]! - cpb[i]!);
      if (want === 0) want = Math.sign(cpa.length - cpb.length);
      assert.equal(cmp(normalizeKey('string', a), normalizeKey('string', b)), want);
    }),
    runs,
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 16 }), fc.uint8Array({ maxLength: 16 }), (a, b) => {
      assert.equal(cmp(normalizeKey('binary', a), normalizeKey('binary', b)), cmp(Buffer.from(a), Buffer.from(b)));
    }),
    runs,
  );
});

test('property: the text form round-trips for every key type', () => {
  const check = (type: KeyType, key: bigint | string | Uint8Array): void => {
    const bytes = normalizeKey(type, key);
    const text = keyText(type, bytes);
    assert.deepEqual(parseKeyText(type, text), bytes);
    assert.equal(formatKey(type, key), text);
    assert.deepEqual(normalizeKey(type, keyValue(type, text)), bytes);
  };
  fc.assert(fc.property(int64, (k) => check('int', k)), runs);
  fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 40 }), (k) => check('string', k)), runs);
  fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), (k) => check('binary', k)), runs);
});

test('the minimum key starts every range and inRange is half-open', () => {
  assert.deepEqual(minKey('int'), normalizeKey('int', -(2n ** 63n)));
  assert.deepEqual(minKey('string'), normalizeKey('string', ''));
  const k = (n: number): Buffer => normalizeKey('int', n);
  assert.equal(inRange(k(5), k(5), k(10)), true);
  assert.equal(inRange(k(10), k(5), k(10)), false);
  assert.equal(inRange(k(4), k(5), null), false);
  assert.equal(inRange(k(2 ** 40), k(5), null), true);
  assert.equal(keyValue('int', '9007199254740993'), 9007199254740993n, 'beyond 2^53 stays exact as a bigint');
  assert.equal(keyValue('int', '42'), 42);
});

test('keys that do not fit their type are INVALID_ARGUMENT', () => {
  const bad = (fn: () => unknown, fragment: string): void => {
    assert.throws(fn, (e: unknown) => e instanceof GeodrError && e.code === 'INVALID_ARGUMENT' && e.message.includes(fragment), fragment);
  };
  bad(() => normalizeKey('int', 1.5), 'safe integer');
  bad(() => normalizeKey('int', 2 ** 60), 'safe integer');
  bad(() => normalizeKey('int', 2n ** 63n), '64-bit');
  bad(() => normalizeKey('int', '7'), 'safe integer');
  bad(() => normalizeKey('string', 7), 'must be a string');
  bad(() => normalizeKey('string', 'a\uD800b'), 'lone surrogate');
  bad(() => normalizeKey('string', 'x'.repeat(1025)), 'limit is 1024');
  bad(() => normalizeKey('binary', 'ab'), 'Uint8Array');
  bad(() => parseKeyText('int', '12a'), 'not a decimal integer');
  bad(() => parseKeyText('int', '99999999999999999999'), '64-bit');
  bad(() => parseKeyText('binary', 'abc'), 'even number');
  bad(() => parseKeyText('binary', 'zz'), 'hex');
  bad(() => parseKeyText('string', 5), 'must be a string');
});

test('servers normalize to one spelling; anything else is refused', () => {
  assert.equal(normalizeServer('HTTP://Example.COM:7480/'), 'http://example.com:7480');
  assert.equal(normalizeServer('http://127.0.0.1:7481//'), 'http://127.0.0.1:7481');
  assert.equal(normalizeServer('ActiveCatalog'), 'activecatalog');
  for (const bad of ['', 'http://u:p@host/', 'http://host/?a=1', 'ftp://x', 'has space', '../x']) {
    assert.throws(() => normalizeServer(bad), (e: unknown) => e instanceof GeodrError && e.code === 'INVALID_ARGUMENT', bad);
  }
});
