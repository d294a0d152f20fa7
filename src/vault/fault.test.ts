import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { collect, rejectsWith, vaultConformance } from './conformance.js';
import { FaultVault } from './fault.js';
import { FsVault } from './fs.js';
import { isGeodrError } from '../errors.js';

async function fsVault(): Promise<{ inner: FsVault; cleanup: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'geodr-faultvault-'));
  return { inner: new FsVault(dir), cleanup: () => fsp.rm(dir, { recursive: true, force: true }) };
}

function isInjected(e: unknown, op: string): boolean {
  return isGeodrError(e, 'VAULT_UNAVAILABLE') && e.retryable && e.context.details?.injected === true && e.context.operation === `vault.${op}`;
}

// With nothing switched on the wrapper must be invisible.
vaultConformance('FaultVault(FsVault) with no faults', async () => {
  const { inner, cleanup } = await fsVault();
  return { vault: new FaultVault(inner), cleanup };
});

describe('FaultVault', () => {
  test('failNext fails exactly the next n calls of that op, before the inner vault, and counts them', async () => {
    const { inner, cleanup } = await fsVault();
    try {
      const v = new FaultVault(inner);
      v.failNext('put', 2);
      await assert.rejects(v.put('k/1', Buffer.from('a')), (e) => isInjected(e, 'put'));
      await assert.rejects(v.put('k/1', Buffer.from('a')), (e) => isInjected(e, 'put'));
      assert.equal(await inner.head('k/1'), undefined, 'an injected put failure never reaches the inner vault');
      await v.put('k/1', Buffer.from('a'));
      assert.deepEqual(v.fired, { put: 2, get: 0, head: 0, list: 0, delete: 0 });
      assert.equal(v.calls.put, 3);

      v.failNext('list');
      await assert.rejects(collect(v.list('k/')), (e) => isInjected(e, 'list'));
      assert.equal((await collect(v.list('k/'))).length, 1);
      v.failNext('get');
      v.failNext('head');
      v.failNext('delete');
      await assert.rejects(v.get('k/1'), (e) => isInjected(e, 'get'));
      await assert.rejects(v.head('k/1'), (e) => isInjected(e, 'head'));
      await assert.rejects(v.delete('k/1'), (e) => isInjected(e, 'delete'));
      assert.deepEqual(v.fired, { put: 2, get: 1, head: 1, list: 1, delete: 1 });
      assert.equal(v.firedTotal, 6);
      assert.equal((await v.get('k/1')).toString(), 'a');
    } finally {
      await cleanup();
    }
  });

  test('setUnavailable fails every op while on; bad keys are still INVALID_ARGUMENT', async () => {
    const { inner, cleanup } = await fsVault();
    try {
      const v = new FaultVault(inner, { unavailable: true });
      await assert.rejects(v.put('x/1', Buffer.from('a')), (e) => isInjected(e, 'put'));
      await assert.rejects(v.get('x/1'), (e) => isInjected(e, 'get') && (e as any).context.object === 'x/1');
      await assert.rejects(v.head('x/1'), (e) => isInjected(e, 'head'));
      await assert.rejects(collect(v.list('x/')), (e) => isInjected(e, 'list'));
      await assert.rejects(v.delete('x/1'), (e) => isInjected(e, 'delete'));
      await rejectsWith(v.put('x/../1', Buffer.from('a')), 'INVALID_ARGUMENT');
      await rejectsWith(collect(v.list('../')), 'INVALID_ARGUMENT');
      assert.equal(v.firedTotal, 5);
      v.setUnavailable(false);
      await v.put('x/1', Buffer.from('a'));
      assert.equal((await v.get('x/1')).toString(), 'a');
      assert.equal(v.firedTotal, 5);
    } finally {
      await cleanup();
    }
  });

  test('failRate is seeded: the same seed fails the same calls, only on the chosen ops', async () => {
    const { inner, cleanup } = await fsVault();
    try {
      await inner.put('r/1', Buffer.from('a'));
      const pattern = async (seed: number): Promise<boolean[]> => {
        const v = new FaultVault(inner, { failRate: 0.3, seed, ops: ['get'] });
        const out: boolean[] = [];
        for (let i = 0; i < 200; i++) out.push(await v.get('r/1').then(() => false, (e) => (assert.ok(isInjected(e, 'get')), true)));
        for (let i = 0; i < 50; i++) assert.ok(await v.head('r/1')); // not in ops: never fails
        assert.equal(v.fired.get, out.filter(Boolean).length);
        assert.equal(v.fired.head, 0);
        return out;
      };
      const a = await pattern(7);
      assert.deepEqual(await pattern(7), a);
      const rate = a.filter(Boolean).length / a.length;
      assert.ok(rate > 0.15 && rate < 0.45, `rate ${rate}`);
      assert.notDeepEqual(await pattern(8), a);
      assert.throws(() => new FaultVault(inner, { failRate: 1.5 }), (e) => isGeodrError(e, 'INVALID_ARGUMENT'));
    } finally {
      await cleanup();
    }
  });

  test('failed after write: the object is stored, the caller sees VAULT_UNAVAILABLE, a retry sees CONFLICT with equal bytes', async () => {
    const { inner, cleanup } = await fsVault();
    try {
      const v = new FaultVault(inner);
      v.failNextAfterWrite();
      const body = Buffer.from('segment bytes');
      await assert.rejects(v.put('amb/1', body), (e) => isInjected(e, 'put') && (e as any).context.details.afterWrite === true);
      assert.equal(v.fired.put, 1);
      assert.equal(v.firedAfterWrite, 1);
      assert.ok((await inner.get('amb/1')).equals(body), 'the object is present despite the error');
      // What a caller's retry sees, and how it resolves the ambiguity.
      await rejectsWith(v.put('amb/1', body), 'CONFLICT', 'amb/1');
      assert.ok((await v.get('amb/1')).equals(body));

      const r = new FaultVault(inner, { failAfterWriteRate: 1 });
      await assert.rejects(r.put('amb/2', Buffer.from('x')), (e) => isInjected(e, 'put'));
      assert.equal(r.firedAfterWrite, 1);
      assert.deepEqual(await inner.head('amb/2'), { key: 'amb/2', size: 1 });
    } finally {
      await cleanup();
    }
  });
});
