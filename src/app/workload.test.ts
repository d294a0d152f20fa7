// The sample workload keeps each tenant consistent: tickets sold equal the events' counters.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GeodrClient } from '../sdk/index.js';
import { spawnServer } from '../server/testing/spawn.js';
import { buyTicket, provisionTenants, tenantStats } from './workload.js';

test('provisioning is idempotent and every purchase is atomic per tenant', { timeout: 60_000 }, async () => {
  const sp = await spawnServer();
  try {
    const client = new GeodrClient({ url: sp.url, token: sp.adminToken });
    const tenants = ['venue-a', 'venue-b', 'venue-c'];
    await provisionTenants(client, tenants, 'default');
    await provisionTenants(client, tenants, 'default');
    let seed = 7;
    const rand = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    await Promise.all(Array.from({ length: 60 }, (_, i) => buyTicket(client, tenants[i % 3]!, rand)));
    const stats = await tenantStats(client, tenants);
    assert.equal(stats.reduce((n, s) => n + s.tickets, 0), 60);
    for (const t of tenants) {
      const r = await client.query(t, 'select (select count(*) from tickets) = (select sum(sold) from events), (select count(*) from events)');
      assert.deepEqual(r.rows[0], [1, 5], t);
    }
  } finally {
    await sp.stop();
    sp.cleanup();
  }
});
