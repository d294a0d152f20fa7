// The operation framework on a real metadata store: per-pool queueing, progress,
// cancel (queued and running), and resumption by a new manager after a "restart".
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { tempDir } from '../engine/testing/helpers.js';
import { GeodrError } from '../errors.js';
import { OperationManager, type OperationContext } from './operations.js';
import { MetaStore } from './store.js';

/** A runner that waits until released, reporting progress; honours cancel. */
function gatedRunner() {
  const gates = new Map<string, () => void>();
  const started: string[] = [];
  const runner = async (ctx: OperationContext) => {
    started.push(ctx.op.id);
    ctx.progress(40);
    await new Promise<void>((resolve, reject) => {
      gates.set(ctx.op.id, resolve);
      ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error));
    });
    ctx.checkCancelled();
    return { done: ctx.op.params.n };
  };
  return { runner, gates, started };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(cond(), 'condition not reached');
}

test('per-pool limits queue work; cancel works queued and running; results persist', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const store = new MetaStore(path.join(dir, 'server.db'));
  t.after(() => store.close());
  const ops = new OperationManager(store, (pool) => (pool === 'p1' ? 1 : 2));
  const g = gatedRunner();
  ops.register('work', g.runner);
  const a = ops.submit({ kind: 'work', pool: 'p1', params: { n: 1 } });
  const b = ops.submit({ kind: 'work', pool: 'p1', params: { n: 2 } });
  const c = ops.submit({ kind: 'work', pool: 'p1', params: { n: 3 } });
  const other = ops.submit({ kind: 'work', pool: 'p2', params: { n: 4 } });
  await until(() => g.started.length === 2);
  assert.deepEqual(new Set(g.started), new Set([a.id, other.id]), 'one at a time in p1; p2 runs beside it');
  assert.equal(ops.get(a.id).state, 'InProgress');
  assert.equal(ops.get(b.id).state, 'Pending');

  assert.equal(ops.cancel(c.id).state, 'Cancelled', 'a queued operation is cancelled at once');
  ops.cancel(a.id);
  await until(() => ops.get(a.id).state === 'Cancelled');
  await until(() => g.started.includes(b.id));
  assert.ok(!g.started.includes(c.id), 'the cancelled one never started');
  g.gates.get(b.id)!();
  g.gates.get(other.id)!();
  await ops.idle();
  const done = ops.get(b.id);
  assert.equal(done.state, 'Succeeded');
  assert.equal(done.percentComplete, 100);
  assert.deepEqual(done.result, { done: 2 });
  assert.throws(() => ops.cancel(b.id), (e) => e instanceof GeodrError && e.code === 'CONFLICT');
  assert.throws(() => ops.get('nope'), (e) => e instanceof GeodrError && e.code === 'NOT_FOUND');
  assert.throws(() => ops.submit({ kind: 'unknown' }), (e) => e instanceof GeodrError && e.code === 'INVALID_ARGUMENT');
});

test('a failing runner records its error code; unfinished work resumes after a restart', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, 'server.db');
  let store = new MetaStore(file);
  let ops = new OperationManager(store, () => 1);
  const g = gatedRunner();
  ops.register('work', g.runner);
  ops.register('fail', async () => {
    throw new GeodrError('INTEGRITY_CHECK_FAILED', 'boom', { database: 'd' });
  });
  const f = ops.submit({ kind: 'fail', pool: 'x' });
  await until(() => ops.get(f.id).state === 'Failed');
  assert.equal(ops.get(f.id).error?.code, 'INTEGRITY_CHECK_FAILED');
  const running = ops.submit({ kind: 'work', pool: 'x', params: { n: 7 } });
  const queued = ops.submit({ kind: 'work', pool: 'x', params: { n: 8 } });
  await until(() => g.started.includes(running.id));
  await until(() => store.getOperation(running.id)!.percentComplete === 40);
  // The process "dies": the manager is dropped without finishing anything.
  await ops.stop();
  store.close();
  assert.equal(new MetaStore(file).getOperation(running.id)!.state, 'InProgress');

  store = new MetaStore(file);
  t.after(() => store.close());
  ops = new OperationManager(store, () => 1);
  const g2 = gatedRunner();
  ops.register('work', g2.runner);
  assert.equal(ops.resume(), 2);
  await until(() => g2.started.includes(running.id));
  assert.equal(ops.get(queued.id).state, 'Pending', 'resumed in the original order, limits still apply');
  g2.gates.get(running.id)!();
  await until(() => g2.started.includes(queued.id));
  g2.gates.get(queued.id)!();
  await ops.idle();
  assert.equal(ops.get(running.id).state, 'Succeeded');
  assert.deepEqual(ops.get(queued.id).result, { done: 8 });
});
