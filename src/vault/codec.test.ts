import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { GeodrError, isGeodrError } from '../errors.js';
import { CodecVault, COMPRESSIONS, DEFAULT_COMPRESSION, decodeObject, describeObject, encodeObject, type Compression } from './codec.js';
import { KEY_ENV, loadKeyring, type Keyring } from './keys.js';
import type { VaultObject } from './vault.js';
import { MemVault } from './testing/memory.js';


function ring(active: string, ...ids: string[]): Keyring {
  return { active, keys: new Map([active, ...ids].map((id) => [id, randomBytes(32)])) };
}

/** Semi-compressible bytes, like page images: runs of text and zeros between random stretches. */
function pagesLike(n: number, seed = 1): Buffer {
  const out = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const block = Math.floor(i / 512) % 4;
    out[i] = block === 0 ? 0 : block === 1 ? 'customer invoice shipped '.charCodeAt(i % 25) : x >>> 24;
  }
  return out;
}

/** Fails unless `err` is `code` and none of the keys' material appears anywhere in it. */
function assertCodeNoSecret(err: unknown, code: string, keys: Buffer[]): true {
  assert.ok(isGeodrError(err), `expected a GeodrError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  let text = `${err.message} ${JSON.stringify(err)} ${JSON.stringify(err.context)}`;
  for (let c: unknown = err.cause; c !== undefined && c !== null; c = (c as { cause?: unknown }).cause) text += ` ${c instanceof Error ? `${c.name}: ${c.message}` : JSON.stringify(c)}`;
  for (const k of keys) {
    for (const form of [k.toString('base64'), k.toString('base64url'), k.toString('hex'), k.toString('base64').slice(0, 16)]) {
      assert.ok(!text.includes(form), `error text contains key material: ${text}`);
    }
  }
  return true;
}

describe('CodecVault', () => {
  test('round trip: random bytes × every compression × with and without encryption', async () => {
    const keyring = ring('k1');
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 20_000 }), fc.constantFrom(...COMPRESSIONS), fc.boolean(), fc.boolean(), async (bytes, compression, encrypt, compressible) => {
        const inner = new MemVault();
        const vault = new CodecVault(inner, { compression, keyring: encrypt ? keyring : undefined });
        const body = compressible ? Buffer.concat([Buffer.from(bytes), pagesLike(bytes.length)]) : Buffer.from(bytes);
        const key = `databases/db/records/${String(n++).padStart(8, '0')}`;
        await vault.put(key, body);
        assert.deepEqual(await vault.get(key), body);
        const info = describeObject(key, inner.objects.get(key)!);
        assert.equal(info.compression, compression);
        assert.equal(info.keyId, encrypt ? 'k1' : undefined);
      }),
      { numRuns: 150 },
    );
  });

  test('big objects (past the 4 MiB slices) round trip for every compression, encrypted', async () => {
    const keyring = ring('big');
    const body = Buffer.concat([pagesLike(5 * 1024 * 1024 + 7), randomBytes(4 * 1024 * 1024)]);
    for (const compression of COMPRESSIONS) {
      const vault = new CodecVault(new MemVault(), { compression, keyring });
      await vault.put('databases/db/snapshot', body);
      assert.ok((await vault.get('databases/db/snapshot')).equals(body), compression);
    }
  });

  test('compression shrinks page-like data; encryption does not grow it beyond the header', async () => {
    const body = pagesLike(64 * 1024);
    const inner = new MemVault();
    const plain = new CodecVault(inner, { compression: 'none' });
    await plain.put('a/none', body);
    assert.equal(inner.objects.get('a/none')!.length, body.length + 8 + 12);
    const enc = new CodecVault(inner, { compression: 'none', keyring: ring('k1') });
    await enc.put('a/enc', body);
    assert.equal(inner.objects.get('a/enc')!.length, body.length + 8 + 2 + 12 + 16 + 12);
    const packed = new CodecVault(inner, { compression: DEFAULT_COMPRESSION });
    await packed.put('a/packed', body);
    assert.ok(inner.objects.get('a/packed')!.length < body.length * 0.8);
  });

  test('objects stay readable whatever the current compression setting', async () => {
    const inner = new MemVault();
    const body = pagesLike(10_000);
    for (const c of COMPRESSIONS) await new CodecVault(inner, { compression: c }).put(`x/${c}`, body);
    for (const reader of COMPRESSIONS) {
      const vault = new CodecVault(inner, { compression: reader });
      for (const c of COMPRESSIONS) assert.deepEqual(await vault.get(`x/${c}`), body);
    }
  });

  test('a flipped byte anywhere is VAULT_CORRUPT or KEY_UNAVAILABLE, never wrong bytes', async () => {
    const keyring = ring('k1');
    const body = pagesLike(1500, 7);
    const codes = new Map<string, number>();
    for (const compression of COMPRESSIONS) {
      for (const encrypt of [false, true]) {
        const key = 'databases/db/records/0001';
        const opts = { compression, keyring: encrypt ? keyring : undefined };
        const good = await encodeObject(key, body, opts);
        for (let pos = 0; pos < good.length; pos++) {
          for (const mask of [1 << pos % 8, ((pos * 131) % 255) + 1]) {
            const bad = Buffer.from(good);
            bad[pos]! ^= mask;
            let out: Buffer | undefined;
            let err: unknown;
            try {
              out = await decodeObject(key, bad, keyring);
            } catch (e) {
              err = e;
            }
            if (out !== undefined) {
              // Only bits no decoder reads (deflate padding, gzip's mtime/OS fields) may change harmlessly.
              assert.ok(out.equals(body), `${compression}${encrypt ? '+aes' : ''}: flip at ${pos} returned wrong bytes`);
              codes.set('harmless', (codes.get('harmless') ?? 0) + 1);
              continue;
            }
            assert.ok(isGeodrError(err, 'VAULT_CORRUPT') || isGeodrError(err, 'KEY_UNAVAILABLE'), `${compression} flip at ${pos}: ${String(err)}`);
            assert.equal(err.context.object, key);
            codes.set(err.code, (codes.get(err.code) ?? 0) + 1);
            if (encrypt && pos >= 10) assert.equal(err.code, 'KEY_UNAVAILABLE', `authenticated byte ${pos}`);
          }
        }
        // Truncation at every length is detected too.
        for (let len = 0; len < good.length; len += 1 + Math.floor(len / 50)) {
          await assert.rejects(decodeObject(key, good.subarray(0, len), keyring), (e) => isGeodrError(e, 'VAULT_CORRUPT') || isGeodrError(e, 'KEY_UNAVAILABLE'));
        }
      }
    }
    assert.ok((codes.get('VAULT_CORRUPT') ?? 0) > 1000 && (codes.get('KEY_UNAVAILABLE') ?? 0) > 1000, JSON.stringify([...codes]));
    assert.ok((codes.get('harmless') ?? 0) < 100, JSON.stringify([...codes]));
  });

  test('structural damage names the object: magic, version, codes', async () => {
    const key = 'a/b';
    const good = await encodeObject(key, Buffer.from('hello'), { compression: 'gzip' });
    const cases: Array<[string, (b: Buffer) => void, RegExp]> = [
      ['magic', (b) => (b[0] = 0x58), /bad magic/],
      ['version', (b) => (b[4] = 2), /envelope version 2/],
      ['compression', (b) => (b[5] = 9), /unknown compression code 9/],
      ['encryption', (b) => (b[6] = 7), /unknown encryption code 7/],
      ['key id length', (b) => (b[7] = 3), /key id length of 3/],
    ];
    for (const [what, damage, message] of cases) {
      const bad = Buffer.from(good);
      damage(bad);
      await assert.rejects(decodeObject(key, bad, undefined), (e) => isGeodrError(e, 'VAULT_CORRUPT') && message.test(e.message) && e.context.object === key, what);
    }
    await assert.rejects(decodeObject(key, Buffer.alloc(0), undefined), /VAULT_CORRUPT: truncated/);
  });

  test('the wrong key for an id is KEY_UNAVAILABLE naming the id, without key material', async () => {
    const writer = ring('k1');
    const reader: Keyring = { active: 'k1', keys: new Map([['k1', randomBytes(32)]]) };
    const inner = new MemVault();
    await new CodecVault(inner, { compression: 'gzip', keyring: writer }).put('databases/d/1', pagesLike(5000));
    await assert.rejects(new CodecVault(inner, { compression: 'gzip', keyring: reader }).get('databases/d/1'), (e) => {
      assertCodeNoSecret(e, 'KEY_UNAVAILABLE', [writer.keys.get('k1')!, reader.keys.get('k1')!]);
      const g = e as GeodrError;
      assert.equal(g.context.object, 'databases/d/1');
      assert.deepEqual(g.context.details, { keyId: 'k1' });
      assert.match(g.message, /"k1"/);
      return true;
    });
  });

  test('an unknown key id or no keyring at all is KEY_UNAVAILABLE naming the id', async () => {
    const writer = ring('k2');
    const inner = new MemVault();
    await new CodecVault(inner, { compression: 'brotli', keyring: writer }).put('databases/d/1', Buffer.from('secret rows'));
    const other = ring('k1');
    await assert.rejects(new CodecVault(inner, { compression: 'brotli', keyring: other }).get('databases/d/1'), (e) => {
      assertCodeNoSecret(e, 'KEY_UNAVAILABLE', [writer.keys.get('k2')!, other.keys.get('k1')!]);
      assert.match((e as Error).message, /"k2", which the keyring does not hold \(it has k1\)/);
      return true;
    });
    await assert.rejects(new CodecVault(inner, { compression: 'brotli' }).get('databases/d/1'), (e) => {
      assertCodeNoSecret(e, 'KEY_UNAVAILABLE', [writer.keys.get('k2')!]);
      assert.match((e as Error).message, /"k2" and no keyring is configured/);
      return true;
    });
  });

  test('an object copied under another key fails to decrypt', async () => {
    const keyring = ring('k1');
    const inner = new MemVault();
    const vault = new CodecVault(inner, { compression: 'none', keyring });
    await vault.put('databases/a/records/1', Buffer.from('tenant a page'));
    await inner.put('databases/b/records/1', await inner.get('databases/a/records/1'));
    await assert.rejects(vault.get('databases/b/records/1'), (e) => isGeodrError(e, 'KEY_UNAVAILABLE') && e.context.object === 'databases/b/records/1');
    assert.deepEqual(await vault.get('databases/a/records/1'), Buffer.from('tenant a page'));
  });

  test('key rotation: new objects use the active key, old ones stay readable', async () => {
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    const inner = new MemVault();
    await new CodecVault(inner, { compression: 'gzip', keyring: { active: 'k1', keys: new Map([['k1', k1]]) } }).put('r/old', Buffer.from('old'));
    const rotated = new CodecVault(inner, { compression: 'gzip', keyring: { active: 'k2', keys: new Map([['k1', k1], ['k2', k2]]) } });
    await rotated.put('r/new', Buffer.from('new'));
    assert.equal(describeObject('r/new', inner.objects.get('r/new')!).keyId, 'k2');
    assert.deepEqual(await rotated.get('r/old'), Buffer.from('old'));
    assert.deepEqual(await rotated.get('r/new'), Buffer.from('new'));
    // An unencrypted object is readable with or without a keyring.
    await new CodecVault(inner, { compression: 'none' }).put('r/plain', Buffer.from('plain'));
    assert.deepEqual(await rotated.get('r/plain'), Buffer.from('plain'));
  });

  test('list, head and delete pass through; errors of the inner vault pass through', async () => {
    const inner = new MemVault();
    const vault = new CodecVault(inner, { compression: 'gzip' });
    await vault.put('p/1', Buffer.alloc(1000));
    await vault.put('p/2', Buffer.alloc(10));
    const listed: VaultObject[] = [];
    for await (const o of vault.list('p/')) listed.push(o);
    assert.deepEqual(listed.map((o) => o.key), ['p/1', 'p/2']);
    assert.equal((await vault.head('p/1'))!.size, inner.objects.get('p/1')!.length);
    await assert.rejects(vault.put('p/1', Buffer.alloc(1)), (e) => isGeodrError(e, 'CONFLICT'));
    await assert.rejects(vault.get('p/3'), (e) => isGeodrError(e, 'NOT_FOUND'));
    await assert.rejects(vault.put('p/../x', Buffer.alloc(1)), (e) => isGeodrError(e, 'INVALID_ARGUMENT'));
    await vault.delete('p/1');
    assert.equal(await vault.head('p/1'), undefined);
    assert.match(vault.name, /^mem:test\+gzip$/);
  });

  test('bad options are INVALID_ARGUMENT', () => {
    const inner = new MemVault();
    assert.throws(() => new CodecVault(inner, { compression: 'zstd' as Compression }), /INVALID_ARGUMENT: vault compression must be one of/);
    assert.throws(() => new CodecVault(inner, { compression: 'gzip', level: 12 }), /INVALID_ARGUMENT/);
    assert.throws(() => new CodecVault(inner, { compression: 'none', level: 3 }), /INVALID_ARGUMENT/);
    const key = randomBytes(32);
    assert.throws(
      () => new CodecVault(inner, { compression: 'gzip', keyring: { active: 'k9', keys: new Map([['k1', key]]) } }),
      (e) => assertCodeNoSecret(e, 'INVALID_ARGUMENT', [key]) && /active key "k9" is not among the keys \(k1\)/.test((e as Error).message),
    );
    const short = randomBytes(16);
    assert.throws(
      () => new CodecVault(inner, { compression: 'gzip', keyring: { active: 'k1', keys: new Map([['k1', short]]) } }),
      (e) => assertCodeNoSecret(e, 'INVALID_ARGUMENT', [short]) && /"k1" is 16 bytes/.test((e as Error).message),
    );
  });
});

describe('loadKeyring', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'geodr-keys-'));
  const k1 = randomBytes(32);
  const k2 = randomBytes(32);
  const file = (name: string, text: string): string => {
    const p = path.join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  const none = {};

  test('reads a key file with several keys and an active one', () => {
    const ring = loadKeyring({ file: file('ok.json', JSON.stringify({ active: 'k2', keys: { k1: k1.toString('base64'), k2: k2.toString('base64') } })), env: none })!;
    assert.equal(ring.active, 'k2');
    assert.deepEqual([...ring.keys.keys()], ['k1', 'k2']);
    assert.ok(ring.keys.get('k1')!.equals(k1) && ring.keys.get('k2')!.equals(k2));
  });

  test('reads GEODR_VAULT_KEY; nothing configured is undefined; both configured is refused', () => {
    const ring = loadKeyring({ env: { [KEY_ENV]: `prod-2024.a:${k1.toString('base64')}` } })!;
    assert.equal(ring.active, 'prod-2024.a');
    assert.ok(ring.keys.get('prod-2024.a')!.equals(k1));
    assert.equal(loadKeyring({ env: none }), undefined);
    assert.equal(loadKeyring({ env: { [KEY_ENV]: '  ' } }), undefined);
    const f = file('both.json', JSON.stringify({ active: 'k1', keys: { k1: k1.toString('base64') } }));
    assert.throws(
      () => loadKeyring({ file: f, env: { [KEY_ENV]: `k1:${k1.toString('base64')}` } }),
      (e) => assertCodeNoSecret(e, 'INVALID_ARGUMENT', [k1]) && /use one/.test((e as Error).message),
    );
  });

  test('every problem is INVALID_ARGUMENT naming the problem and key id, never the key', () => {
    const b1 = k1.toString('base64');
    const cases: Array<[string, () => unknown, RegExp, Buffer[]]> = [
      ['unreadable file', () => loadKeyring({ file: path.join(dir, 'missing.json'), env: none }), /cannot read key file .*missing\.json: ENOENT/, []],
      // The syntax error sits right next to the key: V8's message would quote it.
      ['bad JSON', () => loadKeyring({ file: file('bad.json', `{"active": "k1", "keys": {"k1": "${b1}" x}}`), env: none }), /is not valid JSON/, [k1]],
      ['not an object', () => loadKeyring({ file: file('arr.json', '[1]'), env: none }), /must hold a JSON object/, []],
      ['wrong length', () => loadKeyring({ file: file('len.json', JSON.stringify({ active: 'k1', keys: { k1: k1.subarray(0, 24).toString('base64') } })), env: none }), /key "k1" is 24 bytes; AES-256 needs 32/, [k1.subarray(0, 24)]],
      ['bad base64', () => loadKeyring({ file: file('b64.json', JSON.stringify({ active: 'k1', keys: { k1: `${b1.slice(0, 20)}!!${b1.slice(22)}` } })), env: none }), /key "k1" is not valid base64/, [k1]],
      ['not a string', () => loadKeyring({ file: file('num.json', JSON.stringify({ active: 'k1', keys: { k1: 7 } })), env: none }), /key "k1" must be a base64 string/, []],
      ['unknown active id', () => loadKeyring({ file: file('act.json', JSON.stringify({ active: 'k3', keys: { k1: b1 } })), env: none }), /active key "k3" is not among the keys \(k1\)/, [k1]],
      ['no keys', () => loadKeyring({ file: file('empty.json', JSON.stringify({ active: 'k1', keys: {} })), env: none }), /holds no keys/, []],
      ['bad key id charset', () => loadKeyring({ file: file('id.json', JSON.stringify({ active: 'k 1', keys: { 'k 1': b1 } })), env: none }), /key id "k 1" is not 1 to 64 of/, [k1]],
      // Id and key swapped: the "id" is key material and must not be echoed.
      ['swapped id and key', () => loadKeyring({ file: file('swap.json', JSON.stringify({ active: b1, keys: { [b1]: 'k1' } })), env: none }), /key id of 44 characters \(not shown/, [k1]],
      ['env without id', () => loadKeyring({ env: { [KEY_ENV]: b1 } }), /GEODR_VAULT_KEY must be "<keyId>:<base64 of 32 bytes>"/, [k1]],
      ['env bad id', () => loadKeyring({ env: { [KEY_ENV]: `k/1:${b1}` } }), /key id "k\/1"/, [k1]],
      ['env short key', () => loadKeyring({ env: { [KEY_ENV]: `k1:${k1.subarray(0, 31).toString('base64')}` } }), /key "k1" is 31 bytes/, [k1.subarray(0, 31)]],
    ];
    for (const [what, run, message, secrets] of cases) {
      assert.throws(run, (e) => assertCodeNoSecret(e, 'INVALID_ARGUMENT', secrets) && message.test((e as Error).message), what);
    }
  });

  test('cleanup', () => rmSync(dir, { recursive: true, force: true }));
});
