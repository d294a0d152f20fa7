/** Test helper: a Map-backed vault that keeps the Vault rules (immutability, ordering, error codes). */
import { GeodrError } from '../../errors.js';
import { checkKey, type ListOptions, type Vault, type VaultObject } from '../vault.js';

export class MemVault implements Vault {
  readonly objects = new Map<string, Buffer>();
  constructor(readonly name = 'mem:test') {}

  async put(key: string, body: Uint8Array): Promise<void> {
    checkKey(key);
    if (this.objects.has(key)) throw new GeodrError('CONFLICT', 'object exists', { object: key });
    this.objects.set(key, Buffer.from(body));
  }
  async get(key: string): Promise<Buffer> {
    checkKey(key);
    const b = this.objects.get(key);
    if (b === undefined) throw new GeodrError('NOT_FOUND', 'no such object', { object: key });
    return Buffer.from(b);
  }
  async head(key: string): Promise<VaultObject | undefined> {
    const b = this.objects.get(checkKey(key));
    return b === undefined ? undefined : { key, size: b.length };
  }
  async *list(prefix: string, opts: ListOptions = {}): AsyncIterable<VaultObject> {
    const keys = [...this.objects.keys()].filter((k) => k.startsWith(prefix) && (opts.startAfter === undefined || k > opts.startAfter)).sort();
    for (const k of keys.slice(0, opts.limit ?? keys.length)) yield { key: k, size: this.objects.get(k)!.length };
  }
  async delete(key: string): Promise<void> {
    this.objects.delete(checkKey(key));
  }
}
