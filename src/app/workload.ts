/**
 * The sample multi-tenant app's workload: each tenant (a venue) has its own database
 * holding events and ticket purchases; customers buy tickets at random venues.
 */
import type { GeodrClient } from '../sdk/index.js';
import { GeodrApiError } from '../sdk/index.js';

const SCHEMA = [
  'create table if not exists events (id integer primary key, name text not null, date text not null, seats integer not null, sold integer not null default 0)',
  'create table if not exists tickets (id integer primary key, event_id integer not null references events(id), customer text not null, price real not null, purchased_at text not null)',
];

const EVENTS = ['Opening night', 'Jazz quartet', 'Chamber orchestra', 'Comedy evening', 'Season finale'];
const CUSTOMERS = ['ada', 'brook', 'chen', 'dara', 'emil', 'fatima', 'goran', 'hana', 'ivo', 'june'];

export interface TenantStats {
  tenant: string;
  tickets: number;
  txid: number;
}

/** Creates the tenant databases (if missing) in `pool` and their schema and events. */
export async function provisionTenants(client: GeodrClient, tenants: readonly string[], pool: string): Promise<void> {
  for (const tenant of tenants) {
    try {
      await client.createDatabase(tenant, { pool });
    } catch (e) {
      if (!(e instanceof GeodrApiError && e.code === 'CONFLICT')) throw e;
    }
    await client.batch(tenant, SCHEMA);
    const existing = await client.query(tenant, 'select count(*) from events');
    if (Number(existing.rows[0]![0]) === 0) {
      await client.batch(
        tenant,
        EVENTS.map((name, i) => ({ sql: 'insert into events(name, date, seats) values (?, ?, ?)', params: [name, new Date(Date.now() + (i + 1) * 86_400_000).toISOString().slice(0, 10), 500] })),
      );
    }
  }
}

/** One purchase: a ticket and the event's sold count, atomically. */
export async function buyTicket(client: GeodrClient, tenant: string, rand: () => number): Promise<number> {
  const event = 1 + Math.floor(rand() * EVENTS.length);
  const customer = CUSTOMERS[Math.floor(rand() * CUSTOMERS.length)]!;
  const [, ticket] = await client.batch(tenant, [
    { sql: 'update events set sold = sold + 1 where id = ?', params: [event] },
    { sql: 'insert into tickets(event_id, customer, price, purchased_at) values (?, ?, ?, ?)', params: [event, customer, 20 + Math.floor(rand() * 80), new Date().toISOString()] },
  ]);
  return ticket!.txid;
}

export async function tenantStats(client: GeodrClient, tenants: readonly string[]): Promise<TenantStats[]> {
  return Promise.all(
    tenants.map(async (tenant) => {
      const r = await client.query(tenant, 'select count(*) from tickets');
      const db = await client.getDatabase(tenant);
      return { tenant, tickets: Number(r.rows[0]![0]), txid: db.txid };
    }),
  );
}
