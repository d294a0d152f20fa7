/**
 * Draining closes keep-alive connections: a client that keeps its connections open
 * (as fetch does, for as long as the server's Keep-Alive header allows: 72 s) must not
 * hold a stopping server's exit. A request in flight when SIGTERM arrives is answered,
 * and its connection is closed by the server afterwards.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { api } from './testing/http.js';
import { spawnServer } from './testing/spawn.js';

function post(url: string, token: string, body: unknown): Promise<{ status: number }> {
  // fetch (undici) keeps each connection for as long as the server's Keep-Alive header allows.
  return fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) }).then(async (r) => {
    await r.arrayBuffer();
    return { status: r.status };
  });
}

test('SIGTERM with requests in flight on keep-alive connections: they are answered, the server closes the connections and exits', { timeout: 60_000 }, async () => {
  const sp = await spawnServer();
  try {
    const call = api(sp.url, sp.adminToken);
    assert.equal((await call('PUT', '/v1/databases/d1', {})).status, 201);
    assert.equal((await call('POST', '/v1/databases/d1/query', { sql: 'create table t(k integer primary key)' })).status, 200);
    // Writes wait for durability, so several are in flight on open connections at once.
    let acked = 0;
    const outcomes = Array.from({ length: 200 }, (_, k) =>
      post(`${sp.url}/v1/databases/d1/query`, sp.adminToken, { sql: 'insert into t values (?)', args: [k] }).then(
        (r) => {
          if (r.status === 200) acked++;
          return r.status;
        },
        () => 'reset',
      ),
    );
    for (let i = 0; acked === 0 && i < 10_000; i++) await new Promise((r) => setTimeout(r, 1));
    // 'close' (the pipes drained), not 'exit': output() is read right after.
    const exited = new Promise<number | null>((resolve) => sp.proc.once('close', (code) => resolve(code)));
    sp.proc.kill('SIGTERM');
    const statuses = await Promise.all(outcomes);
    // Answered in full if the server had read it, else refused as the server was closing.
    for (const s of statuses) assert.ok(s === 200 || s === 503 || s === 'reset', `status ${s}`);
    assert.ok(acked > 0);
    // The client never closes its connections; the server must, and exit. Without that
    // this waits for the 72 s keep-alive its responses advertised, past the bound below.
    const code = await Promise.race([exited, new Promise<'held'>((r) => setTimeout(() => r('held'), 30_000).unref())]);
    assert.equal(code, 0, 'the server exited cleanly instead of waiting for its clients to hang up');
    assert.match(sp.output(), /"msg":"stopped"/);
  } finally {
    if (sp.proc.exitCode === null) await sp.kill();
    sp.cleanup();
  }
});
