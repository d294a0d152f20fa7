/**
 * A vault in one Azure Blob Storage container (or Azurite). Thin by design: one blob per
 * key, immutability from the service's `If-None-Match: *` condition, and every failure
 * mapped onto the vault's error codes.
 */
import { BlobServiceClient, RestError, type ContainerClient, type StorageRetryOptions } from '@azure/storage-blob';
import { GeodrError, isGeodrError } from '../errors.js';
import { checkListOptions, checkPrefix } from './fs.js';
import { checkKey, type ListOptions, type Vault, type VaultObject } from './vault.js';

export interface AzureVaultOptions {
  /** A storage connection string (account key or SAS). */
  connectionString: string;
  /** Container name: 3-63 characters of a-z, 0-9 and single hyphens. */
  container: string;
  /** Create the container if it does not exist (on open(), or before the first request). */
  createContainer?: boolean;
  /**
   * Overrides the SDK's per-request retries. The default is deliberately small (2 tries,
   * 10 s each): geodr's callers queue and retry themselves, and a long SDK retry loop
   * would make a dead endpoint look like a hang.
   */
  retryOptions?: StorageRetryOptions;
  /**
   * Abort a request that makes no progress for this long (default 30 s). Needed because
   * the SDK's `tryTimeoutInMs` is only a server-side hint: against a service that accepts
   * the connection and then stops answering, a request would otherwise wait forever.
   * Progress (each uploaded or downloaded chunk) re-arms it, so large objects are fine.
   */
  stallTimeoutMs?: number;
}

const DEFAULT_RETRY: StorageRetryOptions = { maxTries: 2, tryTimeoutInMs: 10_000, retryDelayInMs: 200, maxRetryDelayInMs: 2_000 };
const CONTAINER = /^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$/;
/** Listing pages of this size (the service maximum) keep round trips few. */
const PAGE = 5000;

/**
 * @example
 * const vault = await AzureVault.open({ connectionString, container: 'backups', createContainer: true });
 * await vault.put('db/42/snap/1', bytes);
 */
export class AzureVault implements Vault {
  readonly name: string;
  readonly container: ContainerClient;
  private readonly createContainer: boolean;
  private readonly stallTimeoutMs: number;
  private ready: Promise<void> | undefined;

  constructor(opts: AzureVaultOptions) {
    if (!CONTAINER.test(opts.container)) {
      throw new GeodrError('INVALID_ARGUMENT', `Azure container name ${JSON.stringify(opts.container)} must be 3-63 characters of a-z, 0-9 and single hyphens`, { operation: 'vault.open' });
    }
    this.name = `azure:${opts.container}`;
    let service: BlobServiceClient;
    try {
      service = BlobServiceClient.fromConnectionString(opts.connectionString, { retryOptions: opts.retryOptions ?? DEFAULT_RETRY });
    } catch {
      // The SDK's message may quote the string, account key included.
      throw new GeodrError('INVALID_ARGUMENT', 'the Azure storage connection string is not valid', { operation: 'vault.open', details: { vault: this.name } });
    }
    this.container = service.getContainerClient(opts.container);
    this.createContainer = opts.createContainer === true;
    this.stallTimeoutMs = opts.stallTimeoutMs ?? 30_000;
    if (!(this.stallTimeoutMs > 0)) throw new GeodrError('INVALID_ARGUMENT', `stallTimeoutMs must be positive, got ${this.stallTimeoutMs}`, { operation: 'vault.open' });
  }

  /** Constructs the vault and, if asked, creates its container now so misconfiguration shows at start-up. */
  static async open(opts: AzureVaultOptions): Promise<AzureVault> {
    const vault = new AzureVault(opts);
    await vault.ensureReady();
    return vault;
  }

  /** Creates the container once when `createContainer` is set; a failed attempt is retried on the next call. */
  private ensureReady(): Promise<void> {
    if (!this.createContainer) return Promise.resolve();
    this.ready ??= this.guard('open', this.container.containerName, (w) => this.container.createIfNotExists({ abortSignal: w.signal })).then(
      () => undefined,
      (e: unknown) => {
        this.ready = undefined;
        throw e;
      },
    );
    return this.ready;
  }

  /**
   * Put Blob with `If-None-Match: *`: the service refuses to replace an existing blob
   * (409), even against a concurrent put of the same key.
   *
   * Ambiguous outcome: if the SDK's retry re-sends a put whose first attempt was stored
   * but whose reply was lost, the retry gets CONFLICT for our own object. Callers treat
   * CONFLICT on a retried put as success when get() returns the same bytes.
   */
  async put(key: string, body: Uint8Array): Promise<void> {
    checkKey(key);
    await this.ensureReady();
    await this.guard('put', key, async (w) => {
      try {
        await this.container.getBlockBlobClient(key).upload(body, body.byteLength, { conditions: { ifNoneMatch: '*' }, abortSignal: w.signal, onProgress: () => w.kick() });
      } catch (e) {
        // 409 BlobAlreadyExists is what Azure answers; 412 is the generic failed-condition reply.
        const status = e instanceof RestError ? e.statusCode : undefined;
        const code = errorCode(e);
        if ((status === 409 || status === 412) && (code === undefined || code === 'BlobAlreadyExists' || code === 'ConditionNotMet')) {
          throw new GeodrError('CONFLICT', `${this.name}: object already exists; vault objects are immutable`, { object: key, operation: 'vault.put', details: { vault: this.name } }, { cause: e });
        }
        throw e;
      }
    });
  }

  async get(key: string): Promise<Buffer> {
    checkKey(key);
    await this.ensureReady();
    return this.guard('get', key, async (w) => {
      // maxRetryRequests: the SDK would otherwise resume a broken body up to 5 times.
      const res = await this.container.getBlobClient(key).download(0, undefined, { maxRetryRequests: 1, abortSignal: w.signal, onProgress: () => w.kick() });
      const chunks: Buffer[] = [];
      if (res.readableStreamBody !== undefined) {
        for await (const chunk of res.readableStreamBody) {
          w.kick();
          chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
        }
      }
      const buf = Buffer.concat(chunks);
      if (res.contentLength !== undefined && buf.length !== res.contentLength) {
        // A connection cut mid-body can end the stream early without an error.
        throw new GeodrError('VAULT_UNAVAILABLE', `${this.name}: get returned ${buf.length} of ${res.contentLength} bytes`, { object: key, operation: 'vault.get', details: { vault: this.name } });
      }
      return buf;
    });
  }

  async head(key: string): Promise<VaultObject | undefined> {
    checkKey(key);
    await this.ensureReady();
    try {
      const props = await this.guard('head', key, (w) => this.container.getBlobClient(key).getProperties({ abortSignal: w.signal }));
      return { key, size: props.contentLength ?? 0 };
    } catch (e) {
      if (isGeodrError(e, 'NOT_FOUND')) return undefined;
      throw e;
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    await this.ensureReady();
    try {
      await this.guard('delete', key, (w) => this.container.getBlobClient(key).delete({ abortSignal: w.signal }));
    } catch (e) {
      if (isGeodrError(e, 'NOT_FOUND')) return;
      throw e;
    }
  }

  /**
   * Azure lists a flat namespace in ascending order. `startAfter` is applied here (the
   * service's `startFrom` needs API 2026-04-06, which Azurite does not serve), and the
   * iteration stops as soon as `limit` keys were yielded, so no further pages are fetched.
   */
  async *list(prefix: string, opts?: ListOptions): AsyncIterable<VaultObject> {
    checkPrefix(prefix);
    checkListOptions(opts, prefix);
    const startAfter = opts?.startAfter;
    let left = opts?.limit ?? Infinity;
    if (left <= 0) return;
    await this.ensureReady();
    const pageSize = startAfter === undefined ? Math.min(PAGE, left) : PAGE;
    // One signal for the whole listing; the watchdog only runs while a page is being fetched.
    const w = new Watchdog(this.stallTimeoutMs);
    const pages = this.container.listBlobsFlat({ ...(prefix === '' ? {} : { prefix }), abortSignal: w.signal }).byPage({ maxPageSize: pageSize });
    while (true) {
      let page;
      try {
        w.kick();
        const next = await pages.next();
        if (next.done === true) return;
        page = next.value;
      } catch (e) {
        throw this.mapError('list', prefix, e, w);
      } finally {
        w.stop();
      }
      for (const item of page.segment.blobItems) {
        if (startAfter !== undefined && item.name <= startAfter) continue;
        if (!isKey(item.name)) continue; // blobs written by something else; get() could not name them
        yield { key: item.name, size: item.properties.contentLength ?? 0 };
        if (--left <= 0) return;
      }
    }
  }

  /**
   * 404 of the blob → NOT_FOUND. Everything else — network errors, timeouts, 5xx,
   * throttling, but also a missing container or refused credentials — is
   * VAULT_UNAVAILABLE: reporting a missing container as "no such object" could let a
   * restore conclude that a backup does not exist.
   */
  private mapError(op: string, key: string, e: unknown, w?: Watchdog): GeodrError {
    if (e instanceof GeodrError) return e;
    const status = e instanceof RestError ? e.statusCode : undefined;
    const code = errorCode(e);
    const stalled = w?.fired === true;
    const context = { object: key, operation: `vault.${op}`, details: { vault: this.name, status, code, stalled: stalled || undefined } };
    if (isBlobMissing(e)) return new GeodrError('NOT_FOUND', `${this.name}: no such object`, context, { cause: e });
    const why = stalled
      ? `no progress for ${this.stallTimeoutMs} ms`
      : status === undefined
        ? e instanceof Error ? e.message : String(e)
        : `HTTP ${status}${code === undefined ? '' : ` ${code}`}`;
    return new GeodrError('VAULT_UNAVAILABLE', `${this.name}: ${op} failed: ${why}`, context, { cause: e });
  }

  /** Runs one request under a stall watchdog and maps whatever it throws. */
  private async guard<T>(op: string, key: string, fn: (w: Watchdog) => Promise<T>): Promise<T> {
    const w = new Watchdog(this.stallTimeoutMs);
    w.kick();
    try {
      return await fn(w);
    } catch (e) {
      throw this.mapError(op, key, e, w);
    } finally {
      w.stop();
    }
  }
}

/** Aborts its signal when not kicked for `ms`. */
class Watchdog {
  private readonly ctl = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly ms: number) {}
  get signal(): AbortSignal {
    return this.ctl.signal;
  }
  get fired(): boolean {
    return this.ctl.signal.aborted;
  }
  kick(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.ctl.abort(new Error(`no progress for ${this.ms} ms`)), this.ms);
  }
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** 404 for the blob itself; a 404 ContainerNotFound is a misconfigured vault, not a missing object. */
function isBlobMissing(e: unknown): boolean {
  if (!(e instanceof RestError) || e.statusCode !== 404) return false;
  return errorCode(e) !== 'ContainerNotFound';
}

/**
 * The service's error code. A HEAD reply has no body, so for head() the code only
 * arrives in the `x-ms-error-code` header, which the SDK leaves in `details.errorCode`.
 */
function errorCode(e: unknown): string | undefined {
  if (!(e instanceof RestError)) return undefined;
  if (e.code !== undefined) return e.code;
  const details = e.details as { errorCode?: unknown } | undefined;
  if (typeof details?.errorCode === 'string') return details.errorCode;
  return e.response?.headers.get('x-ms-error-code') ?? undefined;
}

function isKey(name: string): boolean {
  try {
    checkKey(name);
    return true;
  } catch {
    return false;
  }
}
