/**
 * A chaos wrapper around a real vault: injects VAULT_UNAVAILABLE failures at a seeded
 * rate, on demand, or for everything while "unavailable", and counts what it injected
 * so a test can assert that the fault it relies on really fired.
 */
import { GeodrError } from '../errors.js';
import { checkPrefix } from './fs.js';
import { checkKey, type ListOptions, type Vault, type VaultObject } from './vault.js';

export type VaultOp = 'put' | 'get' | 'head' | 'list' | 'delete';

export const VAULT_OPS: readonly VaultOp[] = ['put', 'get', 'head', 'list', 'delete'];

export interface FaultOptions {
  /** Probability (0..1) that a call of one of `ops` fails before reaching the inner vault. */
  failRate?: number;
  /**
   * Probability (0..1) that a put reaches the inner vault, succeeds there, and the caller
   * still gets VAULT_UNAVAILABLE (the reply was "lost"). See {@link FaultVault.put}.
   */
  failAfterWriteRate?: number;
  /** Seed of the PRNG behind the rates, so a failing run can be replayed. */
  seed?: number;
  /** Operations `failRate` applies to; all by default. */
  ops?: VaultOp[];
  /** Start with the whole vault unreachable. */
  unavailable?: boolean;
}

function zeroCounts(): Record<VaultOp, number> {
  return { put: 0, get: 0, head: 0, list: 0, delete: 0 };
}

function checkRate(name: string, r: number | undefined): number {
  const v = r ?? 0;
  if (!(v >= 0 && v <= 1)) throw new GeodrError('INVALID_ARGUMENT', `${name} must be between 0 and 1, got ${String(r)}`, { operation: 'vault.fault' });
  return v;
}

/**
 * @example
 * const vault = new FaultVault(new FsVault(dir), { failRate: 0.2, seed: 7 });
 * await shipper.run(vault);
 * assert.ok(vault.fired.put > 0); // the test really exercised a failed put
 */
export class FaultVault implements Vault {
  readonly name: string;
  readonly seed: number;
  /** Injected failures per operation (after-write failures count under `put` too). */
  readonly fired: Record<VaultOp, number> = zeroCounts();
  /** Of `fired.put`, how many were after a successful inner write. */
  firedAfterWrite = 0;
  /** Calls per operation, injected or not. */
  readonly calls: Record<VaultOp, number> = zeroCounts();

  private readonly failRate: number;
  private readonly failAfterWriteRate: number;
  private readonly ops: ReadonlySet<VaultOp>;
  private unavailable: boolean;
  private readonly pending: Record<VaultOp, number> = zeroCounts();
  private pendingAfterWrite = 0;
  private state: number;

  constructor(
    readonly inner: Vault,
    opts: FaultOptions = {},
  ) {
    this.name = `fault(${inner.name})`;
    this.failRate = checkRate('failRate', opts.failRate);
    this.failAfterWriteRate = checkRate('failAfterWriteRate', opts.failAfterWriteRate);
    this.ops = new Set(opts.ops ?? VAULT_OPS);
    this.unavailable = opts.unavailable === true;
    this.seed = (opts.seed ?? 0x9e3779b9) >>> 0;
    this.state = this.seed;
  }

  /** While on, every operation fails as if the backend were unreachable. */
  setUnavailable(on: boolean): void {
    this.unavailable = on;
  }

  /** The next `n` calls of `op` fail before reaching the inner vault, whatever the rate. */
  failNext(op: VaultOp, n = 1): void {
    this.pending[op] += n;
  }

  /** The next `n` puts are stored by the inner vault but reported as failed. */
  failNextAfterWrite(n = 1): void {
    this.pendingAfterWrite += n;
  }

  /** Total injected failures. */
  get firedTotal(): number {
    return VAULT_OPS.reduce((sum, op) => sum + this.fired[op], 0);
  }

  /** mulberry32: small, seeded, good enough to pick which calls fail. */
  private random(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  private injected(op: VaultOp, object: string, afterWrite = false): GeodrError {
    this.fired[op]++;
    if (afterWrite) this.firedAfterWrite++;
    const what = afterWrite ? 'stored, but the reply was lost' : this.unavailable ? 'vault unavailable' : 'request failed';
    return new GeodrError('VAULT_UNAVAILABLE', `${this.name}: injected fault: ${op} ${what}`, {
      object,
      operation: `vault.${op}`,
      details: { vault: this.inner.name, injected: true, afterWrite },
    });
  }

  /** Throws an injected failure if this call of `op` is chosen to fail before any I/O. */
  private before(op: VaultOp, object: string): void {
    this.calls[op]++;
    if (this.unavailable) throw this.injected(op, object);
    if (this.pending[op] > 0) {
      this.pending[op]--;
      throw this.injected(op, object);
    }
    if (this.failRate > 0 && this.ops.has(op) && this.random() < this.failRate) throw this.injected(op, object);
  }

  /**
   * The after-write fault is the ambiguous outcome every real backend can produce (a
   * timeout after the service stored the object): the caller sees VAULT_UNAVAILABLE,
   * its retry meets CONFLICT, and it must treat that CONFLICT as success only after
   * get() returns exactly the bytes it meant to write (anything else is a real conflict).
   */
  async put(key: string, body: Uint8Array): Promise<void> {
    checkKey(key); // a bad key is INVALID_ARGUMENT before anything else, as in every backend
    this.before('put', key);
    const lose = this.pendingAfterWrite > 0 || (this.failAfterWriteRate > 0 && this.random() < this.failAfterWriteRate);
    await this.inner.put(key, body);
    if (lose) {
      if (this.pendingAfterWrite > 0) this.pendingAfterWrite--;
      throw this.injected('put', key, true);
    }
  }

  async get(key: string): Promise<Buffer> {
    checkKey(key);
    this.before('get', key);
    return this.inner.get(key);
  }

  async head(key: string): Promise<VaultObject | undefined> {
    checkKey(key);
    this.before('head', key);
    return this.inner.head(key);
  }

  async *list(prefix: string, opts?: ListOptions): AsyncIterable<VaultObject> {
    checkPrefix(prefix);
    this.before('list', prefix);
    yield* this.inner.list(prefix, opts);
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    this.before('delete', key);
    return this.inner.delete(key);
  }
}
