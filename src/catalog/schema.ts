/**
 * The reserved tables of the catalog, and the server-side helpers that read and write
 * them through the engine. Every table name starts with the SQL guard's reserved
 * prefix, so tenant SQL (JSON endpoint and libSQL) can neither read nor change them;
 * they live in ordinary databases, so they are backed up, restored and replicated
 * with the database that holds them.
 *
 * GSM (global shard map) tables sit in the catalog database; LSM (local shard map)
 * tables in every shard database. Keys are stored normalized (keys.ts), as BLOBs.
 */
import type Database from 'better-sqlite3';
import type { Connection } from '../engine/index.js';
import type { Tenant } from '../server/host.js';
import { translate, type SqlContext } from '../server/sql.js';
import { RESERVED_TABLE_PREFIX } from '../server/sqlguard.js';

export const GSM_SCHEMA_VERSION = 1;

export const T = {
  gsmMeta: `${RESERVED_TABLE_PREFIX}gsm_meta`,
  maps: `${RESERVED_TABLE_PREFIX}gsm_maps`,
  shards: `${RESERVED_TABLE_PREFIX}gsm_shards`,
  mappings: `${RESERVED_TABLE_PREFIX}gsm_mappings`,
  ops: `${RESERVED_TABLE_PREFIX}gsm_ops`,
  tenants: `${RESERVED_TABLE_PREFIX}tenants`,
  invServers: `${RESERVED_TABLE_PREFIX}inv_servers`,
  invPools: `${RESERVED_TABLE_PREFIX}inv_pools`,
  invDatabases: `${RESERVED_TABLE_PREFIX}inv_databases`,
  lsmShards: `${RESERVED_TABLE_PREFIX}lsm_shards`,
  lsmMappings: `${RESERVED_TABLE_PREFIX}lsm_mappings`,
} as const;

/**
 * `op` on shards and mappings names the pending operation holding the row: other
 * operations refuse to touch it until that one is finished. The unique (map, low)
 * index holds for both kinds of map: list keys are unique, and ranges do not overlap.
 */
export const GSM_DDL = `
create table if not exists ${T.gsmMeta} (key text primary key, value text not null);
create table if not exists ${T.maps} (name text primary key, kind text not null, key_type text not null, created_at integer not null);
create table if not exists ${T.shards} (
  id text primary key, map text not null, server text not null, database text not null,
  status text not null, version integer not null, op text, unique (map, server, database));
create index if not exists ${T.shards}_location on ${T.shards} (server, database);
create table if not exists ${T.mappings} (
  id text primary key, map text not null, shard_id text not null, low blob not null, high blob,
  status text not null, version integer not null, op text);
create unique index if not exists ${T.mappings}_low on ${T.mappings} (map, low);
create index if not exists ${T.mappings}_shard on ${T.mappings} (shard_id);
create table if not exists ${T.ops} (id text primary key, map text not null, kind text not null, created_at integer not null, steps text not null);
create table if not exists ${T.tenants} (
  name text primary key, map text not null, key blob not null, pool text,
  last_restored_txid integer, last_restored_at integer, last_repatriated_txid integer, last_repatriated_at integer,
  created_at integer not null, updated_at integer not null);
create table if not exists ${T.invServers} (server text primary key, name text not null, region text not null, version text not null, synced_at integer not null);
create table if not exists ${T.invPools} (server text not null, name text not null, settings text not null, primary key (server, name));
create table if not exists ${T.invDatabases} (server text not null, name text not null, pool text not null, settings text not null, primary key (server, name));
`;

/** One row per shard map this database is a shard of; `version` rises at every change to that map's rows. */
export const LSM_DDL = `
create table if not exists ${T.lsmShards} (map text primary key, shard_id text not null, kind text not null, key_type text not null, status text not null, version integer not null);
create table if not exists ${T.lsmMappings} (id text primary key, map text not null, low blob not null, high blob, status text not null, version integer not null);
create unique index if not exists ${T.lsmMappings}_low on ${T.lsmMappings} (map, low);
`;

// Statements are prepared once per connection: a reopened database has a new connection.
const statements = new WeakMap<Connection, Map<string, Database.Statement>>();

/** A cached prepared statement on `conn` (plain numbers, not bigints: versions and TXIDs stay below 2^53). */
export function stmt(conn: Connection, sql: string): Database.Statement {
  let m = statements.get(conn);
  if (m === undefined) {
    m = new Map();
    statements.set(conn, m);
  }
  let s = m.get(sql);
  if (s === undefined) {
    s = conn.prepare(sql);
    m.set(sql, s);
  }
  return s;
}

/** True for SQLite's "no such table" on one of the reserved tables: the schema was never created there. */
export function isMissingTable(e: unknown): boolean {
  return e instanceof Error && (e as { code?: string }).code === 'SQLITE_ERROR' && /no such table: __geodr_/.test(e.message);
}

/** Reads `name` in one snapshot, on the database's read connection. */
export async function readDatabase<R>(ctx: SqlContext, name: string, fn: (conn: Connection, t: Tenant) => R): Promise<R> {
  return ctx.host.use(name, (t) =>
    t.db.read((conn) => {
      stmt(conn, 'BEGIN').run();
      try {
        return fn(conn, t);
      } finally {
        if (conn.inTransaction) stmt(conn, 'COMMIT').run();
      }
    }),
  );
}

/**
 * Writes `name` through the engine exactly as tenant SQL does: the database's writer
 * lock, one captured transaction, acknowledged once durable. Catalog writes are exempt
 * from the pool's storage quota (they are small, and recovery must not fail on a full pool).
 */
export async function writeDatabase<R>(ctx: SqlContext, name: string, fn: (conn: Connection, t: Tenant) => R, operation = 'catalog.write'): Promise<{ result: R; txid: number }> {
  const host = ctx.host;
  const t = host.acquire(name);
  try {
    if (!t.writer.tryAcquire()) await t.writer.acquire(ctx.limits.writeWaitMs, { database: name, operation });
    let w: { result: R; txid: number };
    try {
      host.applyQuota(t, 0);
      w = t.db.write((conn) => fn(conn, t));
      host.noteWrite(t);
    } catch (e) {
      throw translate(e, name);
    } finally {
      t.writer.release();
    }
    await t.db.waitDurable(w.txid);
    return w;
  } finally {
    host.release(t);
  }
}
