/**
 * Long-running operations: each has a persistent record (state, percent complete,
 * times, error), runs at most `maxConcurrentOperations` at a time per elastic pool
 * (the rest queue), can be cancelled, and is resumed from the start after a restart.
 * Runners must therefore be idempotent; later issues add restore and seeding runners.
 */
import { GeodrError, isGeodrError } from '../errors.js';
import type { MetaStore, OperationRecord } from './store.js';

export interface OperationContext {
  readonly op: OperationRecord;
  readonly signal: AbortSignal;
  /** Reports progress (0–100); persisted at most every 250 ms. */
  progress(percent: number): void;
  /** Throws CANCELLED if cancel was requested. */
  checkCancelled(): void;
}

export type OperationRunner = (ctx: OperationContext) => Promise<Record<string, unknown> | void>;

export interface SubmitRequest {
  kind: string;
  database?: string | undefined;
  pool?: string | undefined;
  params?: Record<string, unknown>;
}

const FINISHED = new Set(['Succeeded', 'Failed', 'Cancelled']);

export class OperationManager {
  private readonly runners = new Map<string, OperationRunner>();
  private readonly running = new Map<string, AbortController>();
  private readonly queue: string[] = [];
  private stopped = false;
  private readonly idleWaiters = new Set<() => void>();

  constructor(
    private readonly store: MetaStore,
    private readonly poolLimit: (pool: string | null) => number,
    private readonly onChange?: (op: OperationRecord) => void,
  ) {}

  register(kind: string, runner: OperationRunner): void {
    this.runners.set(kind, runner);
  }

  /** Re-queues operations a previous process left unfinished. */
  resume(): number {
    const open = [...this.store.listOperations({ state: 'InProgress', limit: 100_000 }), ...this.store.listOperations({ state: 'Pending', limit: 100_000 })];
    open.sort((a, b) => a.createdAt - b.createdAt);
    for (const op of open) {
      if (op.cancelRequested) {
        this.finish(op, 'Cancelled', null, null);
        continue;
      }
      op.state = 'Pending';
      op.percentComplete = 0;
      op.startedAt = null;
      this.store.updateOperation(op);
      this.queue.push(op.id);
    }
    this.pump();
    return open.length;
  }

  submit(req: SubmitRequest): OperationRecord {
    if (!this.runners.has(req.kind)) throw new GeodrError('INVALID_ARGUMENT', `unknown operation kind ${JSON.stringify(req.kind)}`);
    if (this.stopped) throw new GeodrError('UNAVAILABLE', 'the server is shutting down');
    const op = this.store.insertOperation({
      kind: req.kind,
      state: 'Pending',
      percentComplete: 0,
      database: req.database ?? null,
      pool: req.pool ?? null,
      createdAt: Date.now(),
      startedAt: null,
      endedAt: null,
      error: null,
      params: req.params ?? {},
      result: null,
      cancelRequested: false,
    });
    this.queue.push(op.id);
    this.onChange?.(op);
    this.pump();
    return this.get(op.id);
  }

  get(id: string): OperationRecord {
    const op = this.store.getOperation(id);
    if (op === undefined) throw new GeodrError('NOT_FOUND', `operation ${JSON.stringify(id)} does not exist`, { details: { operation: id } });
    return op;
  }

  list(filter: { state?: string | undefined; database?: string | undefined; limit?: number }): OperationRecord[] {
    return this.store.listOperations(filter);
  }

  /** Requests cancellation. A queued operation is cancelled at once; a running one at its next check. */
  cancel(id: string): OperationRecord {
    const op = this.get(id);
    if (FINISHED.has(op.state)) throw new GeodrError('CONFLICT', `operation ${id} already ${op.state.toLowerCase()}`, { details: { operation: id } });
    op.cancelRequested = true;
    this.store.updateOperation(op);
    const i = this.queue.indexOf(id);
    if (i >= 0) {
      this.queue.splice(i, 1);
      this.finish(op, 'Cancelled', null, null);
    } else this.running.get(id)?.abort(new GeodrError('CANCELLED', 'cancelled by request', { details: { operation: id } }));
    return this.get(id);
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (this.queue.length === 0 && this.running.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.add(r));
  }

  /** Stops starting new work and cancels running operations; they resume at next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.length = 0;
    for (const c of this.running.values()) c.abort(new GeodrError('UNAVAILABLE', 'the server is shutting down'));
    while (this.running.size > 0) await new Promise((r) => setTimeout(r, 10));
  }

  private runningInPool(pool: string | null): number {
    let n = 0;
    for (const id of this.running.keys()) if (this.store.getOperation(id)?.pool === pool) n++;
    return n;
  }

  private pump(): void {
    if (this.stopped) return;
    for (let i = 0; i < this.queue.length; ) {
      const id = this.queue[i]!;
      const op = this.store.getOperation(id);
      if (op === undefined) {
        this.queue.splice(i, 1);
        continue;
      }
      if (this.runningInPool(op.pool) >= this.poolLimit(op.pool)) {
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      this.start(op);
    }
    if (this.queue.length === 0 && this.running.size === 0) {
      for (const w of this.idleWaiters) w();
      this.idleWaiters.clear();
    }
  }

  private start(op: OperationRecord): void {
    const runner = this.runners.get(op.kind);
    const controller = new AbortController();
    this.running.set(op.id, controller);
    op.state = 'InProgress';
    op.startedAt = Date.now();
    this.store.updateOperation(op);
    this.onChange?.(op);
    let lastSaved = 0;
    const ctx: OperationContext = {
      op,
      signal: controller.signal,
      progress: (percent) => {
        op.percentComplete = Math.max(0, Math.min(99, Math.floor(percent)));
        const now = Date.now();
        if (now - lastSaved >= 250) {
          lastSaved = now;
          this.store.updateOperation(op);
        }
      },
      checkCancelled: () => {
        if (controller.signal.aborted) throw controller.signal.reason;
      },
    };
    const work = runner === undefined ? Promise.reject(new GeodrError('UNSUPPORTED', `no runner for operation kind ${op.kind}`)) : Promise.resolve().then(() => runner(ctx));
    work.then(
      (result) => this.finish(op, 'Succeeded', null, result ?? {}),
      (e: unknown) => {
        if (this.stopped && isGeodrError(e, 'UNAVAILABLE')) {
          // Shutting down: leave it InProgress so the next start resumes it.
          this.running.delete(op.id);
          return;
        }
        if (controller.signal.aborted && isGeodrError(controller.signal.reason, 'CANCELLED')) this.finish(op, 'Cancelled', null, null);
        else this.finish(op, 'Failed', e, null);
      },
    ).finally(() => {
      this.running.delete(op.id);
      this.pump();
    });
  }

  private finish(op: OperationRecord, state: OperationRecord['state'], error: unknown, result: Record<string, unknown> | null): void {
    op.state = state;
    op.endedAt = Date.now();
    if (state === 'Succeeded') op.percentComplete = 100;
    op.result = result;
    op.error = error === null ? null : isGeodrError(error) ? { code: error.code, message: error.reason, ...error.context } : { code: 'INTERNAL', message: String((error as Error)?.message ?? error) };
    this.store.updateOperation(op);
    this.onChange?.(op);
  }
}
