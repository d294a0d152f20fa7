// Thousands of databases per server rest on this: open lazily, bounded LRU, and an idle
// database holds no file descriptor.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { test } from 'node:test';
import { api } from './testing/http.js';
import { spawnServer } from './testing/spawn.js';

function tenantFds(pid: number): number {
  let n = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`).includes('/databases/')) n++;
    } catch {
      // closed while listing
    }
  }
  return n;
}

test('the LRU bounds open databases and idle ones are closed, releasing every descriptor', { timeout: 60_000 }, async () => {
  const sp = await spawnServer({ config: { limits: { maxOpenDatabases: 3, idleCloseMs: 300 } } });
  try {
    const call = api(sp.url, sp.adminToken);
    const pid = sp.proc.pid!;
    const names = Array.from({ length: 8 }, (_, i) => `lru-${i}`);
    for (const n of names) {
      assert.equal((await call('PUT', `/v1/databases/${n}`, {})).status, 201);
      await call('POST', `/v1/databases/${n}/query`, { sql: 'create table t(x)' });
      await call('POST', `/v1/databases/${n}/query`, { sql: 'insert into t values (?)', args: [n] });
    }
    // Databases whose records are not in the vault yet stay open; once shipped (within about a
    // second) the LRU bound holds again.
    let open = Infinity;
    for (let i = 0; i < 100 && open > 3; i++) {
      open = (await call('GET', '/v1/server')).body.openDatabases;
      if (open > 3) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(open <= 3, `open ${open}`);
    // While a transaction holds a database open, its files are open (so the count below means something).
    const tx = (await call('POST', '/v1/databases/lru-0/transactions', {})).body.transaction as string;
    assert.ok(tenantFds(pid) > 0);
    await call('POST', `/v1/databases/lru-0/transactions/${tx}/rollback`);
    // Every database still answers (reopened on demand), with its data.
    for (const n of names) assert.deepEqual((await call('POST', `/v1/databases/${n}/query`, { sql: 'select x from t' })).body.rows, [[n]]);
    for (let i = 0; i < 100 && (await call('GET', '/v1/server')).body.openDatabases > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal((await call('GET', '/v1/server')).body.openDatabases, 0);
    assert.equal(tenantFds(pid), 0, 'no descriptor of a tenant file stays open');
    const m = (await call('GET', '/metrics')).body as string;
    assert.match(m, /geodr_open_databases\{[^}]*\} 0/);
    // Metadata kept while closed: TXID and size without opening anything.
    const d = (await call('GET', '/v1/databases/lru-0')).body;
    assert.equal(d.txid, 2);
    assert.ok(d.sizeBytes > 0);
    assert.equal((await call('GET', '/v1/server')).body.openDatabases, 0);
  } finally {
    await sp.stop();
    sp.cleanup();
  }
});
