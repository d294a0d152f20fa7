import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { GeodrError, isGeodrError } from '../errors.js';
import { CodecVault } from './codec.js';
import { databaseOf, gapFreeRecordsTxid, GeoCopier } from './geo.js';
import { batchKey } from './layout.js';
import type { ListOptions, Vault, VaultObject } from './vault.js';
import { MemVault } from './testing/memory.js';


/** Wraps a vault: while `down`, or when `failPut` says so, calls fail VAULT_UNAVAILABLE; counts the failures it injected. */
class FlakyVault implements Vault {
  down = false;
  failPut: (key: string) => boolean = () => false;
  putDelayMs = 0;
  injected = 0;
  puts = 0;
  constructor(readonly inner: Vault) {}
  get name(): string {
    return `flaky(${this.inner.name})`;
  }
  private check(key: string, extra = false): void {
    if (this.down || extra) {
      this.injected++;
      throw new GeodrError('VAULT_UNAVAILABLE', 'injected outage', { object: key });
    }
  }
  async put(key: string, body: Uint8Array): Promise<void> {
    this.check(key, this.failPut(key));
    this.puts++;
    if (this.putDelayMs > 0) await sleep(this.putDelayMs);
    return this.inner.put(key, body);
  }
  async get(key: string): Promise<Buffer> {
    this.check(key);
    return this.inner.get(key);
  }
  async head(key: string): Promise<VaultObject | undefined> {
    this.check(key);
    return this.inner.head(key);
  }
  async *list(prefix: string, opts?: ListOptions): AsyncIterable<VaultObject> {
    this.check(prefix);
    yield* this.inner.list(prefix, opts);
  }
  async delete(key: string): Promise<void> {
    this.check(key);
    return this.inner.delete(key);
  }
}

async function until(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function recordKey(db: string, n: number): string {
  return `databases/${db}/records/${String(n).padStart(12, '0')}`;
}

function sameObjects(a: MemVault, b: MemVault, prefix = 'databases/'): boolean {
  const keys = [...a.objects.keys()].filter((k) => k.startsWith(prefix));
  return keys.every((k) => b.objects.get(k)?.equals(a.objects.get(k)!) === true);
}

describe('GeoCopier', () => {
  test('notified keys arrive at the target, byte for byte', async () => {
    const source = new MemVault('mem:west');
    const target = new MemVault('mem:east');
    const errors: unknown[] = [];
    const geo = new GeoCopier({ source, target, intervalMs: 10, onError: (e) => errors.push(e) });
    geo.start();
    try {
      for (let i = 0; i < 60; i++) {
        const key = recordKey(['a', 'b', 'c'][i % 3]!, i);
        await source.put(key, randomBytes(100 + i));
        geo.notify(key);
      }
      await until('all copies', () => target.objects.size === 60);
      assert.ok(sameObjects(source, target));
      assert.deepEqual(errors, []);
    } finally {
      await geo.stop();
    }
  });

  test('syncOnce copies what the target lacks and reports the count', async () => {
    const source = new MemVault();
    const target = new MemVault();
    for (let i = 0; i < 20; i++) await source.put(recordKey('a', i), Buffer.from(`r${i}`));
    await source.put('other/not-copied', Buffer.from('x'));
    for (let i = 0; i < 20; i += 4) await target.put(recordKey('a', i), Buffer.from(`r${i}`));
    const geo = new GeoCopier({ source, target, concurrency: 3 });
    assert.equal(await geo.syncOnce(), 15);
    assert.ok(sameObjects(source, target));
    assert.equal(target.objects.has('other/not-copied'), false);
    assert.equal(await geo.syncOnce(), 0);
    assert.equal(geo.status().get('databases/a')!.lastKey, recordKey('a', 19));
  });

  test('a target that is down for a while catches up with nothing lost', async () => {
    const source = new MemVault();
    const inner = new MemVault();
    const target = new FlakyVault(inner);
    const errors: unknown[] = [];
    const geo = new GeoCopier({ source, target, intervalMs: 10, maxBackoffMs: 40, fullScanMs: 60_000, onError: (e) => errors.push(e) });
    geo.start();
    try {
      target.down = true;
      for (let i = 0; i < 40; i++) {
        const key = recordKey(i % 2 === 0 ? 'a' : 'b', i);
        await source.put(key, randomBytes(64));
        geo.notify(key);
      }
      await until('retries', () => target.injected >= 80);
      assert.equal(inner.objects.size, 0);
      assert.ok(errors.every((e) => isGeodrError(e, 'VAULT_UNAVAILABLE')), String(errors[0]));
      const during = geo.status();
      assert.equal(during.get('databases/a')!.pending, 20);
      assert.equal(during.get('databases/b')!.pending, 20);
      assert.ok(during.get('databases/a')!.oldestPendingAt! <= Date.now());
      target.down = false;
      await until('catch-up', () => inner.objects.size === 40);
      assert.ok(sameObjects(source, inner));
      const after = geo.status();
      assert.equal(after.get('databases/a')!.pending, 0);
      assert.equal(after.get('databases/a')!.oldestPendingAt, undefined);
    } finally {
      await geo.stop();
    }
  });

  test('intermittent put failures and a listing outage still end with every object copied', async () => {
    const source = new MemVault();
    const inner = new MemVault();
    const target = new FlakyVault(inner);
    let calls = 0;
    target.failPut = () => ++calls % 3 !== 0; // two of every three puts fail
    const scanErrors: string[] = [];
    const geo = new GeoCopier({ source, target, intervalMs: 5, maxBackoffMs: 20, fullScanMs: 30, onError: (_e, key) => key === 'databases/' && scanErrors.push(key) });
    for (let i = 0; i < 30; i++) await source.put(recordKey(`d${i % 5}`, i), randomBytes(32));
    // Never notified: only the scans can find these (as after a restart).
    target.down = true;
    geo.start();
    try {
      await until('a failed scan', () => scanErrors.length > 0);
      target.down = false;
      await until('reconciled', () => inner.objects.size === 30);
      assert.ok(sameObjects(source, inner));
      assert.ok(target.injected > 30);
    } finally {
      await geo.stop();
    }
  });

  test('status() groups by database and reports the last copied key', async () => {
    const source = new MemVault();
    const target = new MemVault();
    const geo = new GeoCopier({ source, target, concurrency: 1 });
    for (const [db, n] of [['x', 1], ['x', 2], ['y', 7]] as const) {
      await source.put(recordKey(db, n), Buffer.from('p'));
      geo.notify(recordKey(db, n));
    }
    await source.put('databases/z', Buffer.from('a two-segment key is its own group'));
    geo.notify('databases/z');
    const before = geo.status();
    assert.deepEqual(before.get('databases/x'), { lastKey: '', lastByKind: {}, lastCopiedAt: 0, pending: 2, firstPendingByKind: { records: recordKey('x', 1) }, oldestPendingAt: before.get('databases/x')!.oldestPendingAt });
    const t0 = Date.now();
    assert.equal(await geo.syncOnce(), 4);
    const s = geo.status();
    assert.deepEqual([...s.keys()].sort(), ['databases/x', 'databases/y', 'databases/z']);
    assert.equal(s.get('databases/x')!.lastKey, recordKey('x', 2));
    assert.equal(s.get('databases/y')!.lastKey, recordKey('y', 7));
    assert.equal(s.get('databases/z')!.lastKey, 'databases/z');
    for (const v of s.values()) {
      assert.equal(v.pending, 0);
      assert.ok(v.lastCopiedAt >= t0);
    }
    assert.equal(databaseOf('databases/abc/snapshots/1'), 'databases/abc');
    assert.deepEqual({ ...s.get('databases/x')!.lastByKind }, { records: recordKey('x', 2) });
    assert.deepEqual({ ...s.get('databases/z')!.lastByKind }, {});
  });

  test('lastByKind keeps the last record key apart from later-sorting snapshots and descriptors', async () => {
    const source = new MemVault();
    const target = new MemVault();
    const geo = new GeoCopier({ source, target });
    for (const key of [recordKey('d', 1), recordKey('d', 2), 'databases/d/snapshots/0002.full', 'databases/d/meta/0001.json']) await source.put(key, Buffer.from('x'));
    assert.equal(await geo.syncOnce(), 4);
    const s = geo.status().get('databases/d')!;
    assert.equal(s.lastKey, 'databases/d/snapshots/0002.full');
    assert.deepEqual({ ...s.lastByKind }, { meta: 'databases/d/meta/0001.json', records: recordKey('d', 2), snapshots: 'databases/d/snapshots/0002.full' });
  });

  test('a batch copied ahead of a retried one: the gap is named, and the gap-free TXID stays below it until the retry lands', async () => {
    const source = new MemVault();
    const target = new FlakyVault(new MemVault());
    const batches = [batchKey('g', 1, 10, 1000), batchKey('g', 11, 20, 2000), batchKey('g', 21, 30, 3000)];
    let refuse = true;
    target.failPut = (key) => refuse && key === batches[1];
    const geo = new GeoCopier({ source, target, intervalMs: 10, maxBackoffMs: 20 });
    for (const key of batches) {
      await source.put(key, Buffer.from('p'));
      geo.notify(key);
    }
    geo.start();
    try {
      await until('1 and 3 copied, 2 retrying', () => {
        const st = geo.status().get('databases/g');
        return st !== undefined && st.lastByKind.records === batches[2] && st.pending === 1 && target.injected > 0;
      });
      const gap = geo.status().get('databases/g')!;
      assert.equal(gap.firstPendingByKind.records, batches[1], 'batch 2 is still pending: the copy has a gap there');
      assert.equal(gapFreeRecordsTxid(gap), 10, 'the paired copy holds every batch only up to TXID 10');
      refuse = false;
      await until('2 copied', () => geo.status().get('databases/g')!.pending === 0);
      assert.deepEqual(geo.status().get('databases/g')!.firstPendingByKind, {});
      assert.equal(gapFreeRecordsTxid(geo.status().get('databases/g')), 30);
      assert.equal(gapFreeRecordsTxid(undefined), 0);
    } finally {
      await geo.stop();
    }
  });

  test('a target CONFLICT with the same size is success; a different size is VAULT_CORRUPT, not retried', async () => {
    const source = new MemVault();
    const target = new MemVault();
    const errors: Array<[unknown, string]> = [];
    const geo = new GeoCopier({ source, target, intervalMs: 10, onError: (e, key) => errors.push([e, key]) });
    await source.put(recordKey('a', 1), Buffer.from('same'));
    await target.put(recordKey('a', 1), Buffer.from('same'));
    await source.put(recordKey('a', 2), Buffer.from('longer body'));
    await target.put(recordKey('a', 2), Buffer.from('short'));
    geo.notify(recordKey('a', 1));
    geo.notify(recordKey('a', 2));
    geo.start();
    try {
      await until('both settled', () => (geo.status().get('databases/a')?.pending ?? 1) === 0);
      assert.equal(geo.status().get('databases/a')!.lastKey, recordKey('a', 1));
      await until('start-up scan', () => errors.length >= 2);
      // Reported by the copy and by the start-up scan; never for the equal-size key.
      for (const [e, key] of errors) {
        assert.equal(key, recordKey('a', 2));
        assert.ok(isGeodrError(e, 'VAULT_CORRUPT') && e.context.object === key && /11 bytes.*5/.test(e.message), String(e));
      }
      assert.deepEqual(target.objects.get(recordKey('a', 2)), Buffer.from('short'));
      // Every scan reports the mismatch again; nothing overwrites the target's object.
      const seen = errors.length;
      assert.equal(await geo.syncOnce(), 0);
      assert.equal(errors.length, seen + 1);
      assert.deepEqual(target.objects.get(recordKey('a', 2)), Buffer.from('short'));
    } finally {
      await geo.stop();
    }
  });

  test('raw bytes are copied: encrypted objects stay encrypted and read back with the keyring', async () => {
    const keyring = { active: 'k1', keys: new Map([['k1', randomBytes(32)]]) };
    const sourceRaw = new MemVault();
    const targetRaw = new MemVault();
    const west = new CodecVault(sourceRaw, { compression: 'brotli', keyring });
    const body = Buffer.from('tenant rows '.repeat(100));
    await west.put(recordKey('a', 1), body);
    const geo = new GeoCopier({ source: sourceRaw, target: targetRaw });
    assert.equal(await geo.syncOnce(), 1);
    assert.deepEqual(targetRaw.objects.get(recordKey('a', 1)), sourceRaw.objects.get(recordKey('a', 1)));
    assert.ok(!targetRaw.objects.get(recordKey('a', 1))!.includes('tenant rows'));
    assert.deepEqual(await new CodecVault(targetRaw, { compression: 'none', keyring }).get(recordKey('a', 1)), body);
  });

  test('deletes are not propagated; a key gone from the source is skipped quietly', async () => {
    const source = new MemVault();
    const target = new MemVault();
    const errors: unknown[] = [];
    const geo = new GeoCopier({ source, target, onError: (e) => errors.push(e) });
    await source.put(recordKey('a', 1), Buffer.from('1'));
    assert.equal(await geo.syncOnce(), 1);
    await source.delete(recordKey('a', 1));
    assert.equal(await geo.syncOnce(), 0);
    assert.ok(target.objects.has(recordKey('a', 1)));
    geo.notify(recordKey('a', 2)); // never written (or already deleted by retention)
    geo.start();
    try {
      await until('skipped', () => geo.status().get('databases/a')!.pending === 0);
      assert.deepEqual(errors, []);
    } finally {
      await geo.stop();
    }
  });

  test('a restarted copier finds what the stopped one left queued', async () => {
    const source = new MemVault();
    const inner = new MemVault();
    const target = new FlakyVault(inner);
    target.down = true;
    const first = new GeoCopier({ source, target, intervalMs: 10 });
    first.start();
    for (let i = 0; i < 5; i++) {
      await source.put(recordKey('a', i), Buffer.from(`${i}`));
      first.notify(recordKey('a', i));
    }
    await until('failures', () => target.injected >= 5);
    await first.stop();
    assert.equal(first.status().get('databases/a')!.pending, 5);
    target.down = false;
    const second = new GeoCopier({ source, target, intervalMs: 10 });
    second.start(); // the start-up scan reconciles
    try {
      await until('reconciled', () => inner.objects.size === 5);
    } finally {
      await second.stop();
    }
  });

  test('stop() waits for copies in flight and starts no new ones', async () => {
    const source = new MemVault();
    const inner = new MemVault();
    const target = new FlakyVault(inner);
    target.putDelayMs = 50;
    const geo = new GeoCopier({ source, target, concurrency: 2 });
    geo.start();
    for (let i = 0; i < 6; i++) {
      await source.put(recordKey('a', i), Buffer.from('x'));
      geo.notify(recordKey('a', i));
    }
    await until('in flight', () => target.puts === 2);
    await geo.stop();
    assert.equal(inner.objects.size, 2);
    await sleep(80);
    assert.equal(inner.objects.size, 2);
    assert.equal(geo.status().get('databases/a')!.pending, 4);
  });

  test("prefix '' copies every key, not only databases/", async () => {
    const source = new MemVault();
    const target = new MemVault();
    await source.put('servers/s1/config/0001.json', Buffer.from('{}'));
    await source.put(recordKey('a', 1), Buffer.from('r'));
    const geo = new GeoCopier({ source, target, prefix: '' });
    assert.equal(await geo.syncOnce(), 2);
    assert.deepEqual([...target.objects.keys()].sort(), [recordKey('a', 1), 'servers/s1/config/0001.json']);
    geo.notify('restorepoints/before-upgrade/0001.json'); // any key is in scope
    assert.equal(geo.status().get('restorepoints/before-upgrade')!.pending, 1);
  });

  test('bad arguments are INVALID_ARGUMENT', () => {
    const v = new MemVault();
    const geo = new GeoCopier({ source: v, target: new MemVault() });
    assert.throws(() => geo.notify('other/x'), (e) => isGeodrError(e, 'INVALID_ARGUMENT') && e.context.object === 'other/x');
    assert.throws(() => geo.notify('databases/../x'), (e) => isGeodrError(e, 'INVALID_ARGUMENT'));
    assert.throws(() => new GeoCopier({ source: v, target: v }), /same vault/);
    assert.throws(() => new GeoCopier({ source: v, target: new MemVault(), concurrency: 0 }), /INVALID_ARGUMENT/);
    assert.throws(() => new GeoCopier({ source: v, target: new MemVault(), intervalMs: -1 }), /INVALID_ARGUMENT/);
  });
});
