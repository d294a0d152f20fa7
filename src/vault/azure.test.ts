import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { AzureVault } from './azure.js';
import { collect, rejectsWith, vaultConformance } from './conformance.js';
import { startAzurite, type Azurite } from './testing/azurite.js';
import { isGeodrError } from '../errors.js';

let azurite: Azurite;
before(async () => {
  azurite = await startAzurite();
});
after(async () => {
  await azurite?.stop();
});

let containers = 0;
/** A fresh container per opened vault, deleted by cleanup. */
async function freshVault(): Promise<AzureVault> {
  return AzureVault.open({ connectionString: azurite.connectionString, container: `t${process.pid}-${containers++}-${randomBytes(3).toString('hex')}`, createContainer: true });
}

vaultConformance('AzureVault on Azurite', async () => {
  const vault = await freshVault();
  return { vault, cleanup: async () => void (await vault.container.deleteIfExists()) };
});

describe('AzureVault specifics', () => {
  test('name, open without createContainer, and a missing container is VAULT_UNAVAILABLE, not NOT_FOUND', async () => {
    const vault = new AzureVault({ connectionString: azurite.connectionString, container: 'never-created' });
    assert.equal(vault.name, 'azure:never-created');
    await assert.rejects(vault.get('a/b'), (e) => isGeodrError(e, 'VAULT_UNAVAILABLE') && e.context.object === 'a/b');
    await assert.rejects(vault.head('a/b'), (e) => isGeodrError(e, 'VAULT_UNAVAILABLE'));
    await assert.rejects(collect(vault.list('a/')), (e) => isGeodrError(e, 'VAULT_UNAVAILABLE'));
    await assert.rejects(vault.put('a/b', Buffer.from('x')), (e) => isGeodrError(e, 'VAULT_UNAVAILABLE'));
    await assert.rejects(vault.delete('a/b'), (e) => isGeodrError(e, 'VAULT_UNAVAILABLE'));
  });

  test('bad container names and connection strings are INVALID_ARGUMENT', () => {
    for (const container of ['ab', 'Upper', 'a--b', '-ab', 'a_b']) {
      assert.throws(() => new AzureVault({ connectionString: azurite.connectionString, container }), (e) => isGeodrError(e, 'INVALID_ARGUMENT'));
    }
    assert.throws(() => new AzureVault({ connectionString: 'nonsense', container: 'abc' }), (e) => isGeodrError(e, 'INVALID_ARGUMENT'));
  });

  test('when Azurite dies mid-way, operations fail VAULT_UNAVAILABLE (retryable) quickly instead of hanging', async () => {
    const own = await startAzurite(); // its own instance: the rest of the file keeps running on the shared one
    let stopped = false;
    try {
      const vault = await AzureVault.open({ connectionString: own.connectionString, container: 'dies', createContainer: true });
      await vault.put('db/1/a', Buffer.from('before'));
      assert.equal((await vault.get('db/1/a')).toString(), 'before');

      // Hung, not dead: the service accepts connections but never answers. The SDK's
      // per-try timeout bounds the wait (shortened here so the test stays fast).
      const impatient = new AzureVault({ connectionString: own.connectionString, container: 'dies', retryOptions: { maxTries: 2, retryDelayInMs: 50 }, stallTimeoutMs: 1000 });
      process.kill(own.pid, 'SIGSTOP');
      try {
        const t = Date.now();
        await assert.rejects(impatient.get('db/1/a'), (e) => isGeodrError(e, 'VAULT_UNAVAILABLE') && e.retryable);
        assert.ok(Date.now() - t < 5_000, `a hung service held get for ${Date.now() - t} ms`);
      } finally {
        process.kill(own.pid, 'SIGCONT');
      }
      assert.equal((await impatient.get('db/1/a')).toString(), 'before', 'works again once the service answers');

      await own.stop();
      stopped = true;
      const t0 = Date.now();
      const unavailable = (e: unknown): boolean => isGeodrError(e, 'VAULT_UNAVAILABLE') && e.retryable && e.cause !== undefined;
      await assert.rejects(vault.get('db/1/a'), (e) => unavailable(e) && (e as any).context.object === 'db/1/a' && (e as any).context.operation === 'vault.get');
      await assert.rejects(vault.put('db/1/b', Buffer.from('after')), unavailable);
      await assert.rejects(vault.head('db/1/a'), unavailable);
      await assert.rejects(vault.delete('db/1/a'), unavailable);
      await assert.rejects(collect(vault.list('db/')), unavailable);
      await rejectsWith(vault.put('db/../x', Buffer.from('x')), 'INVALID_ARGUMENT'); // checked before any request
      const took = Date.now() - t0;
      assert.ok(took < 10_000, `five failing requests took ${took} ms`);
    } finally {
      if (!stopped) await own.stop();
    }
  });
});
