/**
 * One test body for every vault backend: each backend's test file calls
 * {@link vaultConformance} with a factory, so the fs vault and Azure Blob (on Azurite)
 * are held to exactly the same rules (those listed in vault.ts).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isGeodrError, type ErrorCode } from '../errors.js';
import type { ListOptions, Vault, VaultObject } from './vault.js';

export interface OpenedVault {
  vault: Vault;
  cleanup: () => Promise<void>;
}

const TIMEOUT = 20_000;

/** All of a listing, in the order the vault yielded it. */
export async function collect(it: AsyncIterable<VaultObject>): Promise<VaultObject[]> {
  const out: VaultObject[] = [];
  for await (const o of it) out.push(o);
  return out;
}

/** Asserts that `p` rejects with a GeodrError of `code` that names `object` (when given). */
export async function rejectsWith(p: Promise<unknown>, code: ErrorCode, object?: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isGeodrError(e), `expected a GeodrError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (object !== undefined) assert.equal(e.context.object, object, e.message);
    return true;
  });
}

/** Runs `fn` over `items` with at most `n` in flight. */
export async function pool<T>(items: readonly T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** Byte-order compare; keys are ASCII, where UTF-16 order is byte order. */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** What list() must return: the sorted filter of everything stored. */
function expected(all: ReadonlyMap<string, number>, prefix: string, opts: ListOptions = {}): VaultObject[] {
  return [...all]
    .filter(([k]) => k.startsWith(prefix) && (opts.startAfter === undefined || k > opts.startAfter))
    .sort(([a], [b]) => cmp(a, b))
    .slice(0, opts.limit ?? Infinity)
    .map(([key, size]) => ({ key, size }));
}

// Few distinct characters, so generated keys share prefixes and collide on the
// characters that sort around `/` ('-' and '.' below it, digits and letters above).
const segment = fc.string({ unit: fc.constantFrom('a', 'b', '-', '.', '_', '0', 'Z'), minLength: 1, maxLength: 3 }).filter((s) => s !== '.' && s !== '..');
const keyArb = fc.array(segment, { minLength: 1, maxLength: 3 }).map((segs) => segs.join('/'));
/**
 * Key sets in which no key is a directory of another (`a/b` with `a/b/c`): the fs
 * vault cannot hold both (see fs.ts), and geodr never writes such pairs.
 */
const keySet = fc.uniqueArray(keyArb, { maxLength: 25 }).map((keys) => keys.filter((k) => !keys.some((o) => o.startsWith(`${k}/`))));
/** A prefix: some generated key cut anywhere (so partial segments and trailing `/` occur). */
const prefixArb = fc.oneof(fc.constant(''), fc.tuple(keyArb, fc.nat()).map(([k, n]) => k.slice(0, n % (k.length + 1))));
const queryArb = fc.record({
  prefix: prefixArb,
  startAfter: fc.option(prefixArb, { nil: undefined }),
  limit: fc.option(fc.nat(30), { nil: undefined }),
});

/**
 * Registers the conformance tests for one backend. `open` gives a fresh, empty vault
 * for each test and a cleanup that removes it.
 *
 * @example
 * vaultConformance('FsVault', async () => {
 *   const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'vault-'));
 *   return { vault: new FsVault(dir), cleanup: () => fsp.rm(dir, { recursive: true }) };
 * });
 */
export function vaultConformance(label: string, open: () => Promise<OpenedVault>): void {
  async function withVault(fn: (vault: Vault) => Promise<void>): Promise<void> {
    const { vault, cleanup } = await open();
    try {
      await fn(vault);
    } finally {
      await cleanup();
    }
  }

  describe(`vault conformance: ${label}`, { timeout: 60_000 }, () => {
    test('put then get returns the same bytes; head gives the size (property)', { timeout: TIMEOUT }, () =>
      withVault(async (vault) => {
        let n = 0;
        await fc.assert(
          fc.asyncProperty(fc.uint8Array({ maxLength: 2048 }), keyArb, async (bytes, key) => {
            const k = `rt${n++}/${key}`;
            await vault.put(k, bytes);
            const got = await vault.get(k);
            assert.ok(Buffer.isBuffer(got), 'get returns a Buffer');
            assert.ok(got.equals(bytes));
            assert.deepEqual(await vault.head(k), { key: k, size: bytes.length });
          }),
          { numRuns: 40 },
        );
      }),
    );

    test('empty and 1 MiB objects round-trip', { timeout: TIMEOUT }, () =>
      withVault(async (vault) => {
        const big = randomBytes(1024 * 1024 + 7);
        await vault.put('sizes/empty', new Uint8Array(0));
        await vault.put('sizes/big', big);
        assert.equal((await vault.get('sizes/empty')).length, 0);
        assert.ok((await vault.get('sizes/big')).equals(big));
        assert.deepEqual(await collect(vault.list('sizes/')), [
          { key: 'sizes/big', size: big.length },
          { key: 'sizes/empty', size: 0 },
        ]);
      }),
    );

    test('objects are immutable: a second put is CONFLICT and the first bytes stay', { timeout: TIMEOUT }, () =>
      withVault(async (vault) => {
        await vault.put('imm/a', Buffer.from('first'));
        await rejectsWith(vault.put('imm/a', Buffer.from('second, longer')), 'CONFLICT', 'imm/a');
        await rejectsWith(vault.put('imm/a', Buffer.from('first')), 'CONFLICT', 'imm/a'); // even with equal bytes
        assert.equal((await vault.get('imm/a')).toString(), 'first');
        assert.deepEqual(await vault.head('imm/a'), { key: 'imm/a', size: 5 });
      }),
    );

    test('concurrent puts of one key: exactly one wins, the rest are CONFLICT', { timeout: TIMEOUT }, () =>
      withVault(async (vault) => {
        const bodies = Array.from({ length: 8 }, (_, i) => Buffer.from(`writer ${i} `.repeat(100 + i)));
        const results = await Promise.allSettled(bodies.map((b) => vault.put('race/one', b)));
        const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        assert.equal(won.length, 1, `winners: ${won.join(',')}`);
        for (const r of results) {
          if (r.status === 'rejected') assert.ok(isGeodrError(r.reason, 'CONFLICT'), String(r.reason));
        }
        assert.ok((await vault.get('race/one')).equals(bodies[won[0]!]!));
      }),
    );

    test('concurrent puts of different keys all land', { timeout: TIMEOUT }, () =>
      withVault(async (vault) => {
        const keys = Array.from({ length: 64 }, (_, i) => `conc/k${String(i).padStart(2, '0')}/obj`);
        await Promise.all(keys.map((k) => vault.put(k, Buffer.from(k))));
        const listed = await collect(vault.list('conc/'));
        assert.deepEqual(listed.map((o) => o.key), [...keys].sort(cmp));
        for (const k of keys) assert.equal((await vault.get(k)).toString(), k);
      }),
    );

    test('get of a missing key is NOT_FOUND naming the key; head is undefined', { timeout: TIMEOUT }, () =>
      withVault(async (vault) => {
        await rejectsWith(vault.get('missing/obj'), 'NOT_FOUND', 'missing/obj');
        await assert.rejects(vault.get('missing/obj'), (e: unknown) => isGeodrError(e) && e.context.operation === 'vault.get' && !e.retryable);
        assert.equal(await vault.head('missing/obj'), undefined);
        await vault.put('missing/other', Buffer.from('x'));
        await rejectsWith(vault.get('missing/obj'), 'NOT_FOUND', 'missing/obj');
        await rejectsWith(vault.get('missing'), 'NOT_FOUND', 'missing'); // a "directory" is not an object
        assert.equal(await vault.head('missing'), undefined);
      }),
    );

    test('delete removes, is idempotent, and frees the key for a new put', { timeout: TIMEOUT }, () =>
      withVault(async (vault) => {
        await vault.put('del/a', Buffer.from('one'));
        await vault.put('del/b', Buffer.from('two'));
        await vault.delete('del/a');
        await vault.delete('del/a');
        await vault.delete('del/never');
        await vault.delete('nothing/here/at/all');
        await rejectsWith(vault.get('del/a'), 'NOT_FOUND', 'del/a');
        assert.equal(await vault.head('del/a'), undefined);
        assert.deepEqual(await collect(vault.list('del/')), [{ key: 'del/b', size: 3 }]);
        await vault.put('del/a', Buffer.from('again'));
        assert.equal((await vault.get('del/a')).toString(), 'again');
      }),
    );

    test('list orders keys by bytes, across "/" and the characters around it', { timeout: TIMEOUT }, () =>
      withVault(async (vault) => {
        const keys = ['o/a-1', 'o/a.1', 'o/a/1', 'o/a/1.x', 'o/a0', 'o/aZ', 'o/a_', 'o/aa', 'o/A', 'o/a/-/z'];
        for (const k of [...keys].reverse()) await vault.put(k, Buffer.from(k));
        assert.deepEqual((await collect(vault.list('o/'))).map((o) => o.key), [...keys].sort(cmp));
        assert.deepEqual((await collect(vault.list(''))).map((o) => o.key), [...keys].sort(cmp));
        assert.deepEqual(await collect(vault.list('nothing/')), []);
      }),
    );

    test('keys are not confused across prefixes (a/b vs a/bc)', { timeout: TIMEOUT }, () =>
      withVault(async (vault) => {
        await vault.put('p/a/b', Buffer.from('b'));
        await vault.put('p/a/bc', Buffer.from('bc'));
        await vault.put('q/a/b/1', Buffer.from('b1'));
        await vault.put('q/a/bc/1', Buffer.from('bc1'));
        const keys = async (prefix: string, opts?: ListOptions): Promise<string[]> => (await collect(vault.list(prefix, opts))).map((o) => o.key);
        assert.deepEqual(await keys('p/a/b'), ['p/a/b', 'p/a/bc']);
        assert.deepEqual(await keys('p/a/b/'), []);
        assert.deepEqual(await keys('p/a/bc'), ['p/a/bc']);
        assert.deepEqual(await keys('q/a/b/'), ['q/a/b/1']);
        assert.deepEqual(await keys('q/a/b'), ['q/a/b/1', 'q/a/bc/1']);
        assert.deepEqual(await keys('q/a/b', { startAfter: 'q/a/b/1' }), ['q/a/bc/1']);
        assert.deepEqual(await keys('q/a/b', { startAfter: 'q/a/b/' }), ['q/a/b/1', 'q/a/bc/1']);
        assert.deepEqual(await keys('q/a/b', { startAfter: 'q/a/b0' }), ['q/a/bc/1']);
        assert.equal((await vault.get('p/a/b')).toString(), 'b');
        assert.equal((await vault.get('p/a/bc')).toString(), 'bc');
      }),
    );

    test('list equals the sorted filter of what was put, for any prefix, startAfter and limit (property)', { timeout: 40_000 }, () =>
      withVault(async (vault) => {
        let run = 0;
        await fc.assert(
          fc.asyncProperty(keySet, fc.array(queryArb, { minLength: 1, maxLength: 6 }), async (keys, queries) => {
            const ns = `l${run++}/`;
            const all = new Map(keys.map((k, i) => [ns + k, i]));
            await pool([...all], 16, ([k, size]) => vault.put(k, new Uint8Array(size)));
            for (const q of queries) {
              const opts: ListOptions = { startAfter: q.startAfter === undefined ? undefined : ns + q.startAfter, limit: q.limit };
              assert.deepEqual(await collect(vault.list(ns + q.prefix, opts)), expected(all, ns + q.prefix, opts), JSON.stringify({ prefix: ns + q.prefix, ...opts }));
            }
          }),
          { numRuns: 30 },
        );
      }),
    );

    test('bad keys and prefixes are INVALID_ARGUMENT before any I/O', { timeout: TIMEOUT }, () =>
      withVault(async (vault) => {
        const bad = ['', '..', '.', 'a/../b', 'a/./b', 'a//b', '/a', 'a/', 'a b', 'a/b c', 'ä', 'a\\b', 'a:b', 'x'.repeat(1025)];
        for (const key of bad) {
          await rejectsWith(vault.put(key, Buffer.from('x')), 'INVALID_ARGUMENT');
          await rejectsWith(vault.get(key), 'INVALID_ARGUMENT');
          await rejectsWith(vault.head(key), 'INVALID_ARGUMENT');
          await rejectsWith(vault.delete(key), 'INVALID_ARGUMENT');
        }
        for (const prefix of ['../', 'a/../', 'a/./', 'a//', '/a', 'a b', './', '..\\x']) {
          await rejectsWith(collect(vault.list(prefix)), 'INVALID_ARGUMENT');
        }
        await rejectsWith(collect(vault.list('a/', { limit: -1 })), 'INVALID_ARGUMENT');
        await rejectsWith(collect(vault.list('a/', { limit: 1.5 })), 'INVALID_ARGUMENT');
        assert.deepEqual(await collect(vault.list('')), [], 'nothing was written');
        // Partial segments that merely look like dots are fine as prefixes (`..x` is a valid segment).
        await vault.put('dots/..x', Buffer.from('d'));
        assert.deepEqual((await collect(vault.list('dots/..'))).map((o) => o.key), ['dots/..x']);
      }),
    );

    test('2,000 keys across 100 prefixes: one prefix lists only its own keys', { timeout: 40_000 }, () =>
      withVault(async (vault) => {
        const keys: string[] = [];
        for (let d = 0; d < 100; d++) for (let s = 0; s < 20; s++) keys.push(`big/db${String(d).padStart(3, '0')}/seg/${String(s).padStart(4, '0')}`);
        await pool(keys, 32, (k) => vault.put(k, Buffer.from(k)));
        const only = await collect(vault.list('big/db042/'));
        assert.deepEqual(only.map((o) => o.key), keys.filter((k) => k.startsWith('big/db042/')));
        assert.equal((await collect(vault.list('big/db04'))).length, 200);
        assert.equal((await collect(vault.list('big/db1'))).length, 0);
        assert.deepEqual((await collect(vault.list('big/', { limit: 3 }))).map((o) => o.key), keys.slice(0, 3));
        assert.deepEqual((await collect(vault.list('big/', { startAfter: 'big/db098/seg/0019' }))).map((o) => o.key), keys.slice(99 * 20));
        assert.equal((await collect(vault.list(''))).length, 2000);
      }),
    );
  });
}
