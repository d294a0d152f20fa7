// ORMs on @libsql/client work against a geodr database unchanged: Drizzle and Kysely.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createClient, type Client } from '@libsql/client';
import { LibsqlDialect } from '@libsql/kysely-libsql';
import { eq, sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/libsql';
import { integer, sqliteTable, text } from 'drizzle-orm/sqlite-core';
import { Kysely } from 'kysely';
import { api } from './testing/http.js';
import { spawnServer, type ServerProcess } from './testing/spawn.js';

let sp: ServerProcess;
let client: Client;

before(async () => {
  sp = await spawnServer();
  const call = api(sp.url, sp.adminToken);
  for (const db of ['drizzle', 'kysely']) assert.equal((await call('PUT', `/v1/databases/${db}`, {})).status, 201);
});

after(async () => {
  client?.close();
  await sp.stop();
  sp.cleanup();
});

const tickets = sqliteTable('tickets', {
  id: integer('id').primaryKey(),
  customer: text('customer').notNull(),
  seats: integer('seats').notNull(),
});

test('Drizzle: schema, inserts, queries, and a transaction that rolls back on error', async () => {
  client = createClient({ url: `${sp.url}/v1/databases/drizzle/`, authToken: sp.adminToken });
  const db = drizzle(client);
  await db.run(sql`create table tickets (id integer primary key, customer text not null, seats integer not null)`);
  await db.insert(tickets).values([
    { customer: 'ada', seats: 2 },
    { customer: 'brook', seats: 4 },
  ]);
  const rows = await db.select().from(tickets).where(eq(tickets.customer, 'brook'));
  assert.deepEqual(rows, [{ id: 2, customer: 'brook', seats: 4 }]);
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.insert(tickets).values({ customer: 'chen', seats: 1 });
      await tx.insert(tickets).values({ id: 1, customer: 'dup', seats: 1 }); // primary key clash
    }),
  );
  await db.transaction(async (tx) => {
    await tx.update(tickets).set({ seats: 3 }).where(eq(tickets.customer, 'ada'));
  });
  const all = await db.select().from(tickets).orderBy(tickets.id);
  assert.deepEqual(
    all.map((r) => [r.customer, r.seats]),
    [
      ['ada', 3],
      ['brook', 4],
    ],
    'the failed transaction left nothing behind',
  );
});

interface KyselyDb {
  venues: { id: number; name: string; capacity: number };
}

test('Kysely: schema builder, inserts, joins-free queries and transactions', async () => {
  const c = createClient({ url: `${sp.url}/v1/databases/kysely/`, authToken: sp.adminToken });
  // The dialect takes a ready client; geodr's URL names the database, so any client version works.
  const k = new Kysely<KyselyDb>({ dialect: new LibsqlDialect({ client: c as never }) });
  try {
    await k.schema.createTable('venues').addColumn('id', 'integer', (col) => col.primaryKey()).addColumn('name', 'text', (col) => col.notNull()).addColumn('capacity', 'integer', (col) => col.notNull()).execute();
    await k.insertInto('venues').values([{ id: 1, name: 'hall', capacity: 500 }, { id: 2, name: 'club', capacity: 120 }]).execute();
    await k.transaction().execute(async (tx) => {
      await tx.updateTable('venues').set({ capacity: 130 }).where('id', '=', 2).execute();
    });
    await assert.rejects(
      k.transaction().execute(async (tx) => {
        await tx.insertInto('venues').values({ id: 3, name: 'tent', capacity: 50 }).execute();
        await tx.insertInto('venues').values({ id: 1, name: 'dup', capacity: 1 }).execute();
      }),
    );
    const rows = await k.selectFrom('venues').selectAll().orderBy('id').execute();
    assert.deepEqual(rows, [
      { id: 1, name: 'hall', capacity: 500 },
      { id: 2, name: 'club', capacity: 130 },
    ]);
  } finally {
    await k.destroy();
  }
});
