/**
 * GRS: asynchronous copy of a region's vault objects to its paired region's vault.
 *
 * Two paths feed the copy, so nothing depends on one alone:
 * - `notify(key)` after each put to the source queues that key; copies start at once
 *   (up to `concurrency` at a time), which keeps geo lag near one round trip;
 * - a full scan (`syncOnce`, run at `start()` and every `fullScanMs`) lists source and
 *   target under the prefix and copies whatever the target lacks: keys written while
 *   the copier was down, notifications lost in a crash, keys whose copy was dropped.
 *
 * Copies are raw bytes (`source.get` → `target.put`): nothing is decoded, so encrypted
 * objects stay encrypted and the paired region needs the same keyring to read them.
 *
 * Failure handling: a failed copy (typically VAULT_UNAVAILABLE) is reported through
 * `onError` and stays queued, retried with exponential backoff (from `intervalMs` up to
 * `maxBackoffMs`, with jitter); nothing is dropped. Objects are immutable, so a target
 * CONFLICT means the object is already there: the copy counts as done when the sizes
 * agree, and is reported as VAULT_CORRUPT (and not retried) when they do not. A key
 * that is gone from the source when its turn comes (retention deleted it) is skipped.
 *
 * Epoch markers go first: before an object of epoch > 1 (a batch or snapshot of a promoted
 * primary, src/vault/lineage.ts) is copied, its epoch's marker is copied if the target lacks
 * it. Copies finish in any order (retries, concurrency), and without the marker a reader of
 * the target would have to infer where the new lineage starts; with it, the target's old
 * primary is fenced and its orphaned records are recognised from the first new object on.
 *
 * Deletes are NOT propagated: retention deletes on both sides explicitly, so a delete
 * in one region (a bug, an operator's mistake, ransomware) never destroys the other
 * region's copy.
 *
 * Limits: each copy holds one whole object in memory (the Vault interface has no
 * streams), so peak memory is about `concurrency` × the largest object; the queue lives
 * in memory and is rebuilt by the scan after a restart; a scan lists both vaults in full.
 */
import { GeodrError, isGeodrError } from '../errors.js';
import { epochKey, parseBatchKey, parseSnapshotKey } from './layout.js';
import { checkKey, type Vault } from './vault.js';

export interface GeoCopierOptions {
  /** This region's vault. */
  source: Vault;
  /** The paired region's vault. */
  target: Vault;
  /** Only keys under this prefix are copied. Default `databases/`. */
  prefix?: string | undefined;
  /** Retry timer period and the first backoff step. Default 500 ms. */
  intervalMs?: number | undefined;
  /** Period of the full reconciling scan. Default 60 s. */
  fullScanMs?: number | undefined;
  /** Copies in flight at once. Default 8. */
  concurrency?: number | undefined;
  /** Longest wait between retries of one key. Default 30 s. */
  maxBackoffMs?: number | undefined;
  /** Every failed copy or scan (key is the object, or the prefix for a scan). Must not throw. */
  onError?: ((e: unknown, key: string) => void) | undefined;
  /** Clock, for tests. Default Date.now. */
  now?: (() => number) | undefined;
}

/** Copy progress of one database (keys grouped by their first two segments, e.g. `databases/<dbId>`). */
export interface GeoCopyStatus {
  /** The greatest key copied so far (keys sort by position within a database); '' when none yet. */
  lastKey: string;
  /**
   * The greatest key copied per kind, the third key segment (`records`, `snapshots`, `meta`,
   * `ltr` in the vault layout), for keys of four or more segments. A copy that finished
   * early (its predecessor being retried) moves these ahead of a gap: for the TXID the
   * copy holds without one, use {@link gapFreeRecordsTxid}.
   */
  lastByKind: Record<string, string>;
  /** When the latest copy for this database finished (ms since epoch); 0 when none yet. */
  lastCopiedAt: number;
  /** Keys queued, retrying or in flight. */
  pending: number;
  /**
   * The smallest pending key per kind (as `lastByKind`): everything of that kind below it
   * that was ever queued has been copied, so `firstPendingByKind.records` bounds what the
   * paired vault can restore without a gap.
   */
  firstPendingByKind: Record<string, string>;
  /** When the oldest pending key was queued; undefined when nothing is pending. Lag = now - this. */
  oldestPendingAt: number | undefined;
}

type Outcome = 'copied' | 'failed' | 'gone' | 'corrupt' | 'cancelled';

interface Entry {
  key: string;
  state: 'ready' | 'delayed' | 'inflight';
  queuedAt: number;
  attempts: number;
  notBefore: number;
  /** syncOnce calls waiting for this key's next attempt. */
  waiters: Array<(o: Outcome) => void>;
}

/**
 * Copies vault objects from a region to its paired region.
 *
 * @example
 * const geo = new GeoCopier({ source: localVault, target: pairedVault, onError: (e, key) => log.warn({ err: e, key }, 'geo copy') });
 * geo.start();
 * await localVault.put(key, bytes); geo.notify(key);
 * // ...
 * await geo.stop();
 */
export class GeoCopier {
  readonly source: Vault;
  readonly target: Vault;
  readonly prefix: string;
  private readonly intervalMs: number;
  private readonly fullScanMs: number;
  private readonly concurrency: number;
  private readonly maxBackoffMs: number;
  private readonly onError: ((e: unknown, key: string) => void) | undefined;
  private readonly now: () => number;

  private readonly entries = new Map<string, Entry>();
  /** Keys to try now, in order; stale items (entry gone or no longer ready) are skipped. */
  private ready: string[] = [];
  private readyHead = 0;
  private readonly delayed = new Set<string>();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly copied = new Map<string, { lastKey: string; lastCopiedAt: number; lastByKind: Record<string, string> }>();
  /** Epoch marker keys known to be in the target (markers are immutable and never deleted). */
  private readonly markersThere = new Set<string>();

  private started = false;
  private stopping = false;
  private syncActive = 0;
  private tickTimer: NodeJS.Timeout | undefined;
  private scanTimer: NodeJS.Timeout | undefined;
  private scan: Promise<void> | undefined;

  constructor(opts: GeoCopierOptions) {
    this.source = opts.source;
    this.target = opts.target;
    if (this.source === this.target) throw new GeodrError('INVALID_ARGUMENT', `geo copy source and target are the same vault (${this.source.name})`);
    this.prefix = opts.prefix ?? 'databases/';
    if (this.prefix !== '') checkKey(this.prefix.endsWith('/') ? this.prefix.slice(0, -1) : this.prefix);
    this.intervalMs = positive('intervalMs', opts.intervalMs ?? 500);
    this.fullScanMs = positive('fullScanMs', opts.fullScanMs ?? 60_000);
    this.maxBackoffMs = positive('maxBackoffMs', opts.maxBackoffMs ?? 30_000);
    this.concurrency = opts.concurrency ?? 8;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) throw new GeodrError('INVALID_ARGUMENT', `geo copy concurrency must be a positive integer, got ${this.concurrency}`);
    this.onError = opts.onError;
    this.now = opts.now ?? Date.now;
  }

  /**
   * Queues a key just written to the source. Cheap and synchronous; copying starts at
   * once when the copier is started (before `start()` keys wait in the queue).
   * INVALID_ARGUMENT for a malformed key or one outside the prefix: that is a caller bug,
   * and ignoring it would silently leave the object uncopied until the next scan.
   */
  notify(key: string): void {
    checkKey(key);
    if (!key.startsWith(this.prefix)) throw new GeodrError('INVALID_ARGUMENT', `geo copy covers keys under ${JSON.stringify(this.prefix)}`, { object: key });
    if (this.entries.has(key)) return; // already queued, retrying or in flight
    this.enqueue(key);
    this.pump();
  }

  /** Starts copying the queue, the retry timer and the periodic full scan (one runs at once). */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.tickTimer = setInterval(() => this.tick(), this.intervalMs);
    this.tickTimer.unref();
    this.scanTimer = setInterval(() => this.scheduledScan(), this.fullScanMs);
    this.scanTimer.unref();
    this.scheduledScan();
    this.pump();
  }

  /**
   * Stops the timers and starts no new copy; resolves when the copies in flight have
   * finished. Queued keys stay queued (for a later `start()`; after a restart the scan
   * finds them again).
   */
  async stop(): Promise<void> {
    this.started = false;
    clearInterval(this.tickTimer);
    clearInterval(this.scanTimer);
    this.tickTimer = undefined;
    this.scanTimer = undefined;
    this.stopping = true;
    try {
      // A scan waiting on keys that will not be tried now must not hang the stop.
      for (const e of this.entries.values()) if (e.state !== 'inflight') release(e, 'cancelled');
      await Promise.all(this.inflight.values());
      await this.scan;
    } finally {
      this.stopping = false;
    }
    this.pump(); // a syncOnce the caller runs by hand may still be waiting for its keys
  }

  /**
   * Reconciles once: lists source and target under the prefix, copies every key the
   * target lacks (including queued ones, at once) and resolves with how many keys are
   * now copied (a CONFLICT of equal size counts). Keys whose copy failed stay queued
   * and were reported through onError; a listing failure rejects (VAULT_UNAVAILABLE).
   * Size mismatches between the two sides are reported as VAULT_CORRUPT.
   * Works whether or not the copier is started.
   */
  async syncOnce(): Promise<number> {
    return this.reconcile(false);
  }

  /** Copy progress per database prefix (see {@link GeoCopyStatus}). */
  status(): Map<string, GeoCopyStatus> {
    const out = new Map<string, GeoCopyStatus>();
    for (const [db, c] of this.copied) out.set(db, { lastKey: c.lastKey, lastByKind: { ...c.lastByKind }, lastCopiedAt: c.lastCopiedAt, pending: 0, firstPendingByKind: {}, oldestPendingAt: undefined });
    for (const e of this.entries.values()) {
      const db = databaseOf(e.key);
      let s = out.get(db);
      if (s === undefined) {
        s = { lastKey: '', lastByKind: {}, lastCopiedAt: 0, pending: 0, firstPendingByKind: {}, oldestPendingAt: undefined };
        out.set(db, s);
      }
      s.pending++;
      const kind = kindOf(e.key);
      if (kind !== undefined) {
        const first = s.firstPendingByKind[kind];
        if (first === undefined || e.key < first) s.firstPendingByKind[kind] = e.key;
      }
      s.oldestPendingAt = s.oldestPendingAt === undefined ? e.queuedAt : Math.min(s.oldestPendingAt, e.queuedAt);
    }
    return out;
  }

  private enqueue(key: string): Entry {
    const e: Entry = { key, state: 'ready', queuedAt: this.now(), attempts: 0, notBefore: 0, waiters: [] };
    this.entries.set(key, e);
    this.ready.push(key);
    return e;
  }

  private makeReady(e: Entry): void {
    if (e.state !== 'delayed') return;
    this.delayed.delete(e.key);
    e.state = 'ready';
    this.ready.push(e.key);
  }

  /** Starts copies while there is room. Runs when started, or while a syncOnce waits. */
  private pump(): void {
    if (this.stopping || (!this.started && this.syncActive === 0)) return;
    while (this.inflight.size < this.concurrency && this.readyHead < this.ready.length) {
      const key = this.ready[this.readyHead++]!;
      const e = this.entries.get(key);
      if (e === undefined || e.state !== 'ready') continue;
      this.launch(e);
    }
    if (this.readyHead > 1024 && this.readyHead * 2 > this.ready.length) {
      this.ready = this.ready.slice(this.readyHead);
      this.readyHead = 0;
    }
  }

  private launch(e: Entry): void {
    e.state = 'inflight';
    const done = this.copy(e.key).then((outcome) => this.settle(e, outcome));
    this.inflight.set(e.key, done);
    void done.finally(() => {
      this.inflight.delete(e.key);
      this.pump();
    });
  }

  private settle(e: Entry, outcome: Outcome): void {
    if (outcome === 'failed') {
      e.attempts++;
      e.state = 'delayed';
      const step = Math.min(this.maxBackoffMs, this.intervalMs * 2 ** Math.min(e.attempts - 1, 30));
      e.notBefore = this.now() + step * (0.5 + Math.random() * 0.5);
      this.delayed.add(e.key);
    } else {
      this.entries.delete(e.key);
      if (outcome === 'copied') this.recordCopy(e.key);
    }
    release(e, outcome);
  }

  private recordCopy(key: string): void {
    const db = databaseOf(key);
    let c = this.copied.get(db);
    if (c === undefined) {
      c = { lastKey: '', lastCopiedAt: 0, lastByKind: Object.create(null) as Record<string, string> };
      this.copied.set(db, c);
    }
    if (key > c.lastKey) c.lastKey = key;
    c.lastCopiedAt = this.now();
    const kind = kindOf(key);
    if (kind !== undefined) {
      const prev = c.lastByKind[kind];
      if (prev === undefined || key > prev) c.lastByKind[kind] = key;
    }
  }

  /** Copies the marker of the key's epoch first when the key is an object of epoch > 1 (see above). */
  private async markerFirst(key: string): Promise<void> {
    const ref = parseBatchKey(key) ?? parseSnapshotKey(key);
    const segments = key.split('/');
    if (ref === undefined || ref.epoch <= 1 || segments[0] !== 'databases' || segments.length < 4) return;
    const marker = epochKey(segments[1]!, ref.epoch);
    if (this.markersThere.has(marker)) return;
    if ((await this.target.head(marker)) === undefined) {
      let body: Buffer;
      try {
        body = await this.source.get(marker);
      } catch (e) {
        // No marker to copy: readers infer the epoch's start from its objects.
        if (isGeodrError(e, 'NOT_FOUND')) return;
        throw e;
      }
      try {
        await this.target.put(marker, body);
        this.recordCopy(marker);
      } catch (e) {
        if (!isGeodrError(e, 'CONFLICT')) throw e;
      }
    }
    this.markersThere.add(marker);
  }

  /** One attempt; never rejects. */
  private async copy(key: string): Promise<Outcome> {
    try {
      await this.markerFirst(key);
      let body: Buffer;
      try {
        body = await this.source.get(key);
      } catch (e) {
        if (isGeodrError(e, 'NOT_FOUND')) return 'gone';
        throw e;
      }
      try {
        await this.target.put(key, body);
        return 'copied';
      } catch (e) {
        if (!isGeodrError(e, 'CONFLICT')) throw e;
        const there = await this.target.head(key);
        if (there === undefined) {
          throw new GeodrError('VAULT_UNAVAILABLE', `target ${this.target.name} answered CONFLICT but holds no such object; will retry`, { object: key, operation: 'geo.copy' }, { cause: e });
        }
        if (there.size === body.length) return 'copied';
        this.report(this.sizeMismatch(key, body.length, there.size), key);
        return 'corrupt';
      }
    } catch (e) {
      this.report(e, key);
      return 'failed';
    }
  }

  private sizeMismatch(key: string, sourceSize: number, targetSize: number): GeodrError {
    return new GeodrError(
      'VAULT_CORRUPT',
      `geo copy differs in size: ${this.source.name} holds ${sourceSize} bytes, ${this.target.name} ${targetSize}`,
      { object: key, operation: 'geo.copy', details: { sourceSize, targetSize } },
    );
  }

  private tick(): void {
    const now = this.now();
    for (const key of this.delayed) {
      const e = this.entries.get(key);
      if (e === undefined) this.delayed.delete(key);
      else if (e.notBefore <= now) this.makeReady(e);
    }
    this.pump();
  }

  private scheduledScan(): void {
    if (this.scan !== undefined) return;
    this.scan = this.reconcile(true).then(
      () => undefined,
      (e: unknown) => this.report(e, this.prefix),
    );
    void this.scan.finally(() => {
      this.scan = undefined;
    });
  }

  private async reconcile(fromTimer: boolean): Promise<number> {
    this.syncActive++;
    try {
      const missing = await this.missingKeys();
      if (fromTimer && !this.started) return 0;
      const waits: Array<Promise<Outcome>> = [];
      for (const key of missing) {
        const e = this.entries.get(key) ?? this.enqueue(key);
        this.makeReady(e); // an explicit reconcile retries now, whatever the backoff said
        waits.push(new Promise<Outcome>((resolve) => e.waiters.push(resolve)));
      }
      this.pump();
      const outcomes = await Promise.all(waits);
      return outcomes.filter((o) => o === 'copied').length;
    } finally {
      this.syncActive--;
    }
  }

  /** Source keys the target lacks; merges the two ascending listings without holding either. */
  private async missingKeys(): Promise<string[]> {
    const missing: string[] = [];
    const targetKeys = this.target.list(this.prefix)[Symbol.asyncIterator]();
    try {
      let t = await targetKeys.next();
      for await (const s of this.source.list(this.prefix)) {
        while (t.done !== true && t.value.key < s.key) t = await targetKeys.next();
        if (t.done !== true && t.value.key === s.key) {
          if (t.value.size !== s.size) this.report(this.sizeMismatch(s.key, s.size, t.value.size), s.key);
          continue;
        }
        missing.push(s.key);
      }
    } finally {
      await targetKeys.return?.();
    }
    return missing;
  }

  private report(e: unknown, key: string): void {
    try {
      this.onError?.(e, key);
    } catch {
      // A throwing error handler must not stop the copier; the failure itself is retried anyway.
    }
  }
}

function release(e: Entry, outcome: Outcome): void {
  const waiters = e.waiters;
  e.waiters = [];
  for (const w of waiters) w(outcome);
}

/**
 * The TXID up to which the copy holds every records batch: the last batch copied, capped
 * below the first batch still pending (copies finish in any order). 0 when none.
 */
export function gapFreeRecordsTxid(s: GeoCopyStatus | undefined): number {
  const last = parseBatchKey(s?.lastByKind.records ?? '')?.last ?? 0;
  const firstPending = parseBatchKey(s?.firstPendingByKind.records ?? '');
  return Math.max(0, firstPending === undefined ? last : Math.min(last, firstPending.first - 1));
}

/** The third key segment (`records`, `snapshots`, …) for keys of four or more segments. */
function kindOf(key: string): string | undefined {
  const segments = key.split('/');
  return segments.length >= 4 ? segments[2] : undefined;
}

/** The first two key segments: `databases/<dbId>`. */
export function databaseOf(key: string): string {
  const first = key.indexOf('/');
  if (first < 0) return key;
  const second = key.indexOf('/', first + 1);
  return second < 0 ? key : key.slice(0, second);
}

function positive(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw new GeodrError('INVALID_ARGUMENT', `geo copy ${name} must be a positive number of milliseconds, got ${v}`);
  return v;
}
