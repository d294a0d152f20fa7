/**
 * A vault in a local (or mounted) directory: each key is a file, each `/` a directory,
 * so `db/42/snap/0001` lives at `<root>/db/42/snap/0001` and an operator can read the
 * vault with `ls`.
 *
 * Limitation of that layout: a key cannot also be a directory on the way to another
 * key (`a/b` and `a/b/c` cannot both exist). Such a put fails CONFLICT with
 * `details.reason = 'path-collision'` instead of a confusing I/O error. Object stores
 * have no such limit; geodr's own key scheme never nests an object under another.
 */
import { randomBytes } from 'node:crypto';
import type { Dirent } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { GeodrError } from '../errors.js';
import { checkKey, type ListOptions, type Vault, type VaultObject } from './vault.js';

const SEGMENT = /^[A-Za-z0-9._-]+$/;
const PARTIAL_SEGMENT = /^[A-Za-z0-9._-]*$/;

/**
 * Checks a list() prefix: every full segment must be a valid key segment, the last
 * (partial) one may be empty or any run of key characters. Throws INVALID_ARGUMENT;
 * a `..` segment would otherwise let the fs backend read outside its root.
 * (Shared by the backends; it belongs next to `checkKey` in vault.ts.)
 */
export function checkPrefix(prefix: string): string {
  const bad = (why: string): GeodrError =>
    new GeodrError('INVALID_ARGUMENT', `vault prefix ${JSON.stringify(prefix.slice(0, 100))} ${why}`, { object: prefix.slice(0, 200), operation: 'vault.list' });
  if (prefix.length > 1024) throw bad('must be at most 1024 characters');
  const segs = prefix.split('/');
  const last = segs.pop()!;
  for (const seg of segs) {
    if (seg === '.' || seg === '..' || !SEGMENT.test(seg)) throw bad('segments must be non-empty [A-Za-z0-9._-], not "." or ".."');
  }
  if (!PARTIAL_SEGMENT.test(last)) throw bad('may only contain [A-Za-z0-9._-/]');
  return prefix;
}

/** Throws INVALID_ARGUMENT unless `limit` is undefined or a non-negative integer. */
export function checkListOptions(opts: ListOptions | undefined, prefix: string): void {
  const limit = opts?.limit;
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 0)) {
    throw new GeodrError('INVALID_ARGUMENT', `list limit must be a non-negative integer, got ${String(limit)}`, { object: prefix, operation: 'vault.list' });
  }
}

function errno(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}

/** ENOENT/ENOTDIR: the object (or a directory on its path) is not there. */
function isMissing(e: unknown): boolean {
  const c = errno(e);
  return c === 'ENOENT' || c === 'ENOTDIR';
}

export class FsVault implements Vault {
  readonly name: string;
  readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
    this.name = `fs:${this.root}`;
  }

  private file(key: string): string {
    return path.join(this.root, ...key.split('/'));
  }

  private unavailable(op: string, key: string, cause: unknown, what = 'failed'): GeodrError {
    const msg = cause instanceof Error ? cause.message : String(cause);
    return new GeodrError('VAULT_UNAVAILABLE', `${this.name}: ${op} ${what}: ${msg}`, { object: key, operation: `vault.${op}`, details: { vault: this.name, errno: errno(cause) } }, { cause });
  }

  async put(key: string, body: Uint8Array): Promise<void> {
    checkKey(key);
    const final = this.file(key);
    const dir = path.dirname(final);
    try {
      // mkdir returns the first directory it created; each new directory's entry in its
      // parent must be made durable too, or a crash could lose the object's whole path.
      const created = await fsp.mkdir(dir, { recursive: true });
      if (created !== undefined) {
        // Every directory that gained an entry: created's parent down to dir's parent
        // (dir itself is synced after the link).
        const chain = [path.dirname(created), created];
        const below = path.relative(created, dir).split(path.sep).filter((s) => s !== '');
        for (const seg of below.slice(0, -1)) chain.push(path.join(chain[chain.length - 1]!, seg));
        for (const d of chain) await syncDir(d);
      }
    } catch (e) {
      if ((errno(e) === 'EEXIST' || errno(e) === 'ENOTDIR') && (await isDir(this.root))) throw this.collision(key, e);
      throw this.unavailable('put', key, e, 'could not create directories');
    }

    // The temp name contains `~`, which no key segment may, so a leftover temp file
    // can never be mistaken for (or collide with) an object, whatever crash left it.
    const tmp = path.join(dir, `.tmp-${randomBytes(6).toString('hex')}~`);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(tmp, 'wx');
    } catch (e) {
      throw this.unavailable('put', key, e, 'could not create its temp file');
    }
    try {
      try {
        await fh.writeFile(body);
        await fh.sync();
      } finally {
        await fh.close();
      }
      // link() publishes the complete, synced file atomically and, unlike rename(),
      // refuses to replace an existing key: that is what makes objects immutable
      // even against a concurrent put of the same key.
      await fsp.link(tmp, final);
    } catch (e) {
      if (errno(e) === 'EEXIST') {
        if (await isDir(final)) throw this.collision(key, e);
        throw new GeodrError('CONFLICT', `${this.name}: object already exists; vault objects are immutable`, { object: key, operation: 'vault.put', details: { vault: this.name } }, { cause: e });
      }
      throw this.unavailable('put', key, e);
    } finally {
      await fsp.unlink(tmp).catch(() => undefined);
    }
    try {
      await syncDir(dir);
    } catch (e) {
      // The object is visible but maybe not durable: report it as failed. A retry
      // then meets CONFLICT, which callers resolve by comparing bytes.
      throw this.unavailable('put', key, e, 'could not sync its directory');
    }
  }

  private collision(key: string, cause: unknown): GeodrError {
    return new GeodrError(
      'CONFLICT',
      `${this.name}: key collides with another key's path (the fs vault cannot hold both "a/b" and "a/b/c")`,
      { object: key, operation: 'vault.put', details: { vault: this.name, reason: 'path-collision' } },
      { cause },
    );
  }

  async get(key: string): Promise<Buffer> {
    checkKey(key);
    try {
      return await fsp.readFile(this.file(key));
    } catch (e) {
      if (isMissing(e) || errno(e) === 'EISDIR') {
        throw new GeodrError('NOT_FOUND', `${this.name}: no such object`, { object: key, operation: 'vault.get', details: { vault: this.name } }, { cause: e });
      }
      throw this.unavailable('get', key, e);
    }
  }

  async head(key: string): Promise<VaultObject | undefined> {
    checkKey(key);
    try {
      const st = await fsp.stat(this.file(key));
      return st.isFile() ? { key, size: st.size } : undefined;
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw this.unavailable('head', key, e);
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    const file = this.file(key);
    try {
      await fsp.unlink(file);
    } catch (e) {
      // EISDIR/EPERM on a directory: there is no object by that name, which is fine.
      if (isMissing(e) || errno(e) === 'EISDIR') return;
      if (errno(e) === 'EPERM' && (await fsp.lstat(file).catch(() => undefined))?.isDirectory() === true) return;
      throw this.unavailable('delete', key, e);
    }
    // Empty parent directories are kept: removing them would race with a concurrent
    // put that has just created them and is about to write its temp file there.
    try {
      await syncDir(path.dirname(file));
    } catch (e) {
      throw this.unavailable('delete', key, e, 'could not sync its directory');
    }
  }

  /**
   * Depth-first walk of only the directory the prefix names (never the whole vault),
   * in ascending key order, skipping subtrees that lie entirely at or before
   * `startAfter`, and stopping at `limit`.
   */
  async *list(prefix: string, opts?: ListOptions): AsyncIterable<VaultObject> {
    checkPrefix(prefix);
    checkListOptions(opts, prefix);
    const startAfter = opts?.startAfter;
    let left = opts?.limit ?? Infinity;
    if (left <= 0) return;
    const cut = prefix.lastIndexOf('/') + 1;
    const dirKey = prefix.slice(0, cut); // '' or ends with '/'
    const namePrefix = prefix.slice(cut);

    for await (const obj of this.walk(dirKey, namePrefix, prefix, startAfter)) {
      yield obj;
      if (--left <= 0) return;
    }
  }

  /** Keys under directory `keyDir` (`''` or ending in `/`) whose first name starts with `filter`, in key order. */
  private async *walk(keyDir: string, filter: string, prefix: string, startAfter: string | undefined): AsyncGenerator<VaultObject> {
    const entries = await this.readDir(keyDir, prefix);
    // Sort by key order: a directory `d` holds keys `d/...`, so it sorts as `d/`
    // (`a.b` < `a/x` < `ab`), which plain name order would get wrong.
    const items: Array<{ sortKey: string; key: string; dir: boolean }> = [];
    for (const ent of entries) {
      if (!ent.name.startsWith(filter) || !SEGMENT.test(ent.name) || ent.name === '.' || ent.name === '..') continue; // temp files and strays
      const key = keyDir + ent.name;
      if (ent.isDirectory()) items.push({ sortKey: `${key}/`, key, dir: true });
      else if (ent.isFile()) items.push({ sortKey: key, key, dir: false });
    }
    items.sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
    for (const it of items) {
      if (it.dir) {
        // Every key below starts with `key/`; skip the subtree if all of them are <= startAfter.
        if (startAfter !== undefined && it.sortKey <= startAfter && !startAfter.startsWith(it.sortKey)) continue;
        yield* this.walk(it.sortKey, '', prefix, startAfter);
      } else {
        if (startAfter !== undefined && it.key <= startAfter) continue;
        const st = await fsp.stat(this.file(it.key)).catch((e: unknown) => {
          if (isMissing(e)) return undefined; // deleted while we listed
          throw this.unavailable('list', it.key, e);
        });
        if (st === undefined) continue;
        yield { key: it.key, size: st.size };
      }
    }
  }

  private async readDir(keyDir: string, prefix: string): Promise<Dirent[]> {
    try {
      return await fsp.readdir(path.join(this.root, ...keyDir.split('/').filter((s) => s !== '')), { withFileTypes: true });
    } catch (e) {
      if (isMissing(e)) return []; // nothing under this prefix (yet)
      throw this.unavailable('list', prefix, e);
    }
  }
}

async function isDir(p: string): Promise<boolean> {
  return (await fsp.stat(p).catch(() => undefined))?.isDirectory() === true;
}

/** fsync a directory so that links and unlinks in it survive a power cut. */
async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
