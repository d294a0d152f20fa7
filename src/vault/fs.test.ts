import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import fsPromises from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { collect, rejectsWith, vaultConformance } from './conformance.js';
import { FsVault } from './fs.js';

async function tempRoot(base = os.tmpdir()): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(base, 'geodr-fsvault-'));
  return { dir, cleanup: () => fsp.rm(dir, { recursive: true, force: true }) };
}

/** Every file name under `dir`, relative, recursively. */
async function files(dir: string): Promise<string[]> {
  const out = await fsp.readdir(dir, { recursive: true, withFileTypes: true });
  return out.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort();
}

vaultConformance('FsVault', async () => {
  const { dir, cleanup } = await tempRoot();
  return { vault: new FsVault(path.join(dir, 'vault')), cleanup };
});

describe('FsVault specifics', () => {
  test('name and layout: segments are directories, no temp files left after puts', async () => {
    const { dir, cleanup } = await tempRoot();
    try {
      const vault = new FsVault(dir);
      assert.equal(vault.name, `fs:${dir}`);
      await vault.put('db/42/snap/0001', Buffer.from('s1'));
      await vault.put('db/42/log/0001-0009', Buffer.from('l1'));
      await Promise.allSettled([vault.put('db/42/snap/0001', Buffer.from('dup')), vault.put('db/43/x', Buffer.from('x'))]);
      assert.deepEqual(await files(dir), ['db/42/log/0001-0009', 'db/42/snap/0001', 'db/43/x']);
      assert.equal(await fsp.readFile(path.join(dir, 'db/42/snap/0001'), 'utf8'), 's1');
    } finally {
      await cleanup();
    }
  });

  test('a put interrupted before publishing leaves no visible object', async () => {
    const { dir, cleanup } = await tempRoot();
    try {
      const vault = new FsVault(dir);
      await vault.put('db/1/a', Buffer.from('a'));
      // What a crash between write and link leaves behind: a temp file named as put names them.
      await fsp.writeFile(path.join(dir, 'db/1/.tmp-0123456789ab~'), 'half-written');
      await fsp.mkdir(path.join(dir, 'db/2'), { recursive: true });
      await fsp.writeFile(path.join(dir, 'db/2/.tmp-ba9876543210~'), 'half-written');
      assert.deepEqual(await collect(vault.list('')), [{ key: 'db/1/a', size: 1 }]);
      assert.deepEqual(await collect(vault.list('db/1/.tmp')), []);
      assert.deepEqual(await collect(vault.list('db/2/')), []);
      assert.equal(await vault.head('db/2/b'), undefined);
      // The temp name is not a valid key, so no get/head can ever reach it...
      await rejectsWith(vault.get('db/1/.tmp-0123456789ab~'), 'INVALID_ARGUMENT');
      // ...and a key that merely starts with ".tmp-" is an ordinary object.
      await vault.put('db/1/.tmp-real', Buffer.from('real'));
      assert.deepEqual((await collect(vault.list('db/1/'))).map((o) => o.key), ['db/1/.tmp-real', 'db/1/a']);
      // A later put into the same directory still works.
      await vault.put('db/2/b', Buffer.from('b'));
      assert.deepEqual((await collect(vault.list('db/2/'))).map((o) => o.key), ['db/2/b']);
    } finally {
      await cleanup();
    }
  });

  test('a key that is another key\'s directory is a clear CONFLICT, not an I/O error', async () => {
    const { dir, cleanup } = await tempRoot();
    try {
      const vault = new FsVault(dir);
      await vault.put('a/b', Buffer.from('file'));
      await assert.rejects(vault.put('a/b/c', Buffer.from('x')), (e: any) => e.code === 'CONFLICT' && e.context.details.reason === 'path-collision' && e.context.object === 'a/b/c');
      await vault.put('d/e/f', Buffer.from('x'));
      await assert.rejects(vault.put('d/e', Buffer.from('x')), (e: any) => e.code === 'CONFLICT' && e.context.details.reason === 'path-collision');
      await rejectsWith(vault.get('a/b/c'), 'NOT_FOUND', 'a/b/c');
      assert.equal(await vault.head('d/e'), undefined);
      await vault.delete('d/e'); // a directory is no object: nothing to delete
      assert.deepEqual((await collect(vault.list(''))).map((o) => o.key), ['a/b', 'd/e/f']);
    } finally {
      await cleanup();
    }
  });

  test('list of one prefix reads only its subtree among 10,000 database prefixes', async () => {
    // 10,000 directories take seconds to create and remove on some ext4 disks but
    // milliseconds in tmpfs; what is measured here (which directories list reads) does
    // not depend on the file system, so use tmpfs when the machine has one.
    const { dir, cleanup } = await tempRoot(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
    try {
      const vault = new FsVault(dir);
      await vault.put('db/d04242/snap/0001', Buffer.from('one'));
      await vault.put('db/d04242/snap/0002', Buffer.from('two'));
      // The other 9,999 prefixes are laid out directly: puts with fsyncs would only slow the test.
      for (let d = 0; d < 10_000; d++) if (d !== 4242) mkdirSync(path.join(dir, 'db', `d${String(d).padStart(5, '0')}`));
      // Which directories a listing reads, counted at fs.promises.readdir (what FsVault calls).
      const counted = async (prefix: string): Promise<string[]> => {
        const dirs: string[] = [];
        const original = fsPromises.readdir;
        fsPromises.readdir = ((p: string, ...rest: unknown[]) => {
          dirs.push(path.relative(dir, p));
          return (original as (...a: unknown[]) => unknown)(p, ...rest);
        }) as typeof original;
        syncBuiltinESMExports();
        try {
          await collect(vault.list(prefix));
        } finally {
          fsPromises.readdir = original;
          syncBuiltinESMExports();
        }
        return dirs;
      };
      const one = await counted('db/d04242/');
      const whole = await counted(''); // what list would cost if it walked the vault
      assert.ok(whole.length > 10_000, `the whole vault is ${whole.length} directories`);
      assert.ok(one.length <= 3, `list of one prefix read ${one.join(', ')}`);
      for (const d of one) assert.ok(d.startsWith(path.join('db', 'd04242')) || d === 'db', `list of one prefix read ${d}`);
      assert.deepEqual((await collect(vault.list('db/d04242/'))).map((o) => o.key), ['db/d04242/snap/0001', 'db/d04242/snap/0002']);
      assert.deepEqual((await collect(vault.list('db/d0424'))).map((o) => o.key), ['db/d04242/snap/0001', 'db/d04242/snap/0002']);
      assert.deepEqual((await collect(vault.list('db/', { limit: 1 }))).map((o) => o.key), ['db/d04242/snap/0001']);
    } finally {
      await cleanup();
    }
  });

  test('I/O failures are VAULT_UNAVAILABLE (retryable) with the cause; bad keys still INVALID_ARGUMENT', async () => {
    const { dir, cleanup } = await tempRoot();
    try {
      // The root is a file: every request fails at the file system.
      const root = path.join(dir, 'not-a-dir');
      await fsp.writeFile(root, 'x');
      const vault = new FsVault(root);
      await assert.rejects(vault.put('a/b', Buffer.from('x')), (e: any) => e.code === 'VAULT_UNAVAILABLE' && e.retryable && e.cause !== undefined && e.context.object === 'a/b' && e.context.operation === 'vault.put');
      await rejectsWith(vault.put('a/../b', Buffer.from('x')), 'INVALID_ARGUMENT');
      await rejectsWith(vault.get('a b'), 'INVALID_ARGUMENT');
    } finally {
      await cleanup();
    }
  });
});
