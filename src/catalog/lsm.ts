/**
 * The local shard map (LSM) inside one database: which shard of which map this
 * database is, and the mappings it holds. Server side; every function runs on a
 * connection inside a read snapshot or an engine write (schema.ts).
 */
import { GeodrError } from '../errors.js';
import type { Connection } from '../engine/index.js';
import { inRange, isKeyType, keyText, parseKeyText, type KeyType } from './keys.js';
import type { LocalChange, LocalMapping, LocalShard, LocalShardMap, LocalShardStatus, MapKind, Status } from './model.js';
import { LSM_DDL, T, isMissingTable, stmt } from './schema.js';

interface ShardRow {
  map: string;
  shard_id: string;
  kind: MapKind;
  key_type: KeyType;
  status: LocalShardStatus;
  version: number;
}

interface MappingRow {
  id: string;
  map: string;
  low: Buffer;
  high: Buffer | null;
  status: Status;
  version: number;
}

function mappingView(type: KeyType, r: MappingRow): LocalMapping {
  return { id: r.id, low: keyText(type, r.low), high: r.high === null ? null : keyText(type, r.high), status: r.status, version: r.version };
}

function shardView(conn: Connection, s: ShardRow): LocalShard {
  const rows = stmt(conn, `select * from ${T.lsmMappings} where map = ? order by low`).all(s.map) as MappingRow[];
  return { map: s.map, shardId: s.shard_id, kind: s.kind, keyType: s.key_type, status: s.status, version: s.version, mappings: rows.map((r) => mappingView(s.key_type, r)) };
}

/** The LSM of this database (only `map` when given); empty when it never held one. */
export function readLsm(conn: Connection, database: string, map?: string): LocalShardMap {
  try {
    const shards = (map === undefined ? stmt(conn, `select * from ${T.lsmShards} order by map`).all() : stmt(conn, `select * from ${T.lsmShards} where map = ?`).all(map)) as ShardRow[];
    return { database, maps: shards.map((s) => shardView(conn, s)) };
  } catch (e) {
    if (isMissingTable(e)) return { database, maps: [] };
    throw e;
  }
}

function shardRow(conn: Connection, map: string): ShardRow | undefined {
  try {
    return stmt(conn, `select * from ${T.lsmShards} where map = ?`).get(map) as ShardRow | undefined;
  } catch (e) {
    if (isMissingTable(e)) return undefined;
    throw e;
  }
}

/** The LSM's mapping `id` of `map`, or the one covering `key`, with the shard row. */
export function lookupLsm(conn: Connection, map: string, by: { mappingId?: string; key?: string }): { shard: Omit<LocalShard, 'mappings'>; mapping: LocalMapping | null } | undefined {
  const s = shardRow(conn, map);
  if (s === undefined) return undefined;
  const shard = { map: s.map, shardId: s.shard_id, kind: s.kind, keyType: s.key_type, status: s.status, version: s.version };
  let row: MappingRow | undefined;
  if (by.mappingId !== undefined) {
    row = stmt(conn, `select * from ${T.lsmMappings} where id = ? and map = ?`).get(by.mappingId, map) as MappingRow | undefined;
    if (row !== undefined && by.key !== undefined && !covers(s.kind, row, parseKeyText(s.key_type, by.key))) row = undefined;
  } else if (by.key !== undefined) {
    const key = parseKeyText(s.key_type, by.key);
    row = stmt(conn, `select * from ${T.lsmMappings} where map = ? and low <= ? order by low desc limit 1`).get(map, key) as MappingRow | undefined;
    if (row !== undefined && !covers(s.kind, row, key)) row = undefined;
  }
  return { shard, mapping: row === undefined ? null : mappingView(s.key_type, row) };
}

function covers(kind: MapKind, row: MappingRow, key: Buffer): boolean {
  return kind === 'list' ? row.low.equals(key) : inRange(key, row.low, row.high);
}

export interface Expectation {
  map: string;
  mappingId: string;
  version: number;
  key: string;
}

/**
 * Checks that this database owns `key` through mapping `mappingId` at `version`, online.
 * Returns the map's LSM version (a reader compares it after its statements ran);
 * throws MAPPING_STALE saying why not.
 */
export function checkLsm(conn: Connection, database: string, e: Expectation): number {
  const stale = (reason: string, message: string): GeodrError =>
    new GeodrError('MAPPING_STALE', message, { database, details: { reason, map: e.map, mappingId: e.mappingId, version: e.version } });
  const s = shardRow(conn, e.map);
  if (s === undefined) throw stale('not-a-shard', `this database is not a shard of map ${e.map}`);
  if (s.status !== 'online') throw stale(`shard-${s.status}`, `this database's shard of map ${e.map} is ${s.status}`);
  const row = stmt(conn, `select * from ${T.lsmMappings} where id = ? and map = ?`).get(e.mappingId, e.map) as MappingRow | undefined;
  if (row === undefined) throw stale('mapping-gone', `this database holds no mapping ${e.mappingId} of map ${e.map}`);
  if (row.version !== e.version) throw stale('version', `mapping ${e.mappingId} is at version ${row.version} here, not ${e.version}`);
  if (!covers(s.kind, row, parseKeyText(s.key_type, e.key))) throw stale('key-outside', `mapping ${e.mappingId} does not cover key ${e.key}`);
  if (row.status !== 'online') throw stale('mapping-offline', `mapping ${e.mappingId} is offline here`);
  return s.version;
}

/** The LSM version of `map` (0 when absent). */
export function lsmVersion(conn: Connection, map: string): number {
  return shardRow(conn, map)?.version ?? 0;
}

const STATUSES = new Set(['online', 'offline']);
const SHARD_STATUSES = new Set(['online', 'offline', 'detached']);

/** Checks a change's shape before anything is written. */
export function validateChange(c: LocalChange, where: string): void {
  const bad = (why: string): never => {
    throw new GeodrError('INVALID_ARGUMENT', `${where} ${why}`);
  };
  if (typeof c.map !== 'string' || c.map === '') bad('needs a map');
  if (typeof c.shardId !== 'string' || c.shardId === '') bad('needs a shardId');
  if (c.kind !== 'list' && c.kind !== 'range') bad('kind must be list or range');
  if (!isKeyType(c.keyType)) bad('keyType must be int, string or binary');
  if (c.shardStatus !== undefined && !SHARD_STATUSES.has(c.shardStatus)) bad('shardStatus must be online, offline or detached');
  for (const [i, m] of (c.put ?? []).entries()) {
    const low = parseKeyText(c.keyType, m.low, `${where}.put[${i}].low`);
    if (c.kind === 'list' && m.high !== null) bad(`put[${i}]: a list mapping has no high bound`);
    if (m.high !== null && Buffer.compare(low, parseKeyText(c.keyType, m.high, `${where}.put[${i}].high`)) >= 0) bad(`put[${i}]: low must be below high`);
    if (!STATUSES.has(m.status)) bad(`put[${i}].status must be online or offline`);
    if (!Number.isSafeInteger(m.version) || m.version < 1) bad(`put[${i}].version must be a positive integer`);
  }
}

/**
 * Applies changes in one transaction (the caller's write). Idempotent: replaying a
 * change leaves the same rows. Refuses (CONFLICT) a change for another shard id or
 * key type than the database already holds for that map: it would mix two shards.
 * Returns each map's new LSM version.
 */
export function applyLsm(conn: Connection, database: string, changes: readonly LocalChange[]): Record<string, number> {
  conn.exec(LSM_DDL);
  const versions: Record<string, number> = {};
  for (const c of changes) {
    const row = shardRow(conn, c.map);
    if (c.dropShard === true) {
      if (row !== undefined && row.shard_id !== c.shardId) {
        throw new GeodrError('CONFLICT', `this database is shard ${row.shard_id} of map ${c.map}, not ${c.shardId}; nothing was dropped`, { database });
      }
      stmt(conn, `delete from ${T.lsmMappings} where map = ?`).run(c.map);
      stmt(conn, `delete from ${T.lsmShards} where map = ?`).run(c.map);
      versions[c.map] = 0;
      continue;
    }
    let version: number;
    const creates = (c.put?.length ?? 0) > 0 || c.shardStatus !== undefined || c.replace === true;
    if (row === undefined && !creates) {
      // Only removals, and the map is not here: a replay after the shard was dropped must not bring its row back.
      versions[c.map] = 0;
      continue;
    }
    if (row === undefined) {
      version = 1;
      stmt(conn, `insert into ${T.lsmShards} (map, shard_id, kind, key_type, status, version) values (?, ?, ?, ?, ?, 1)`).run(c.map, c.shardId, c.kind, c.keyType, c.shardStatus ?? 'online');
    } else {
      if (row.shard_id !== c.shardId) throw new GeodrError('CONFLICT', `this database is shard ${row.shard_id} of map ${c.map}, not ${c.shardId}`, { database, details: { map: c.map, shardId: row.shard_id } });
      if (row.kind !== c.kind || row.key_type !== c.keyType) throw new GeodrError('CONFLICT', `map ${c.map} is a ${row.kind} map of ${row.key_type} keys here, not ${c.kind} of ${c.keyType}`, { database });
      version = row.version + 1;
      stmt(conn, `update ${T.lsmShards} set status = ?, version = ? where map = ?`).run(c.shardStatus ?? row.status, version, c.map);
    }
    if (c.replace === true) stmt(conn, `delete from ${T.lsmMappings} where map = ?`).run(c.map);
    for (const id of c.remove ?? []) stmt(conn, `delete from ${T.lsmMappings} where id = ? and map = ?`).run(id, c.map);
    for (const m of c.put ?? []) {
      const low = parseKeyText(c.keyType, m.low);
      const high = m.high === null ? null : parseKeyText(c.keyType, m.high);
      // Whatever starts at the same key is superseded by this mapping.
      stmt(conn, `delete from ${T.lsmMappings} where map = ? and low = ? and id <> ?`).run(c.map, low, m.id);
      stmt(conn, `insert or replace into ${T.lsmMappings} (id, map, low, high, status, version) values (?, ?, ?, ?, ?, ?)`).run(m.id, c.map, low, high, m.status, m.version);
    }
    versions[c.map] = version;
  }
  return versions;
}
