/**
 * The global shard map (GSM), the tenant catalog and the inventory, inside the catalog
 * database. Server side: every function runs on a connection inside one read snapshot
 * or one engine write (schema.ts), so each call is atomic and its checks (overlaps,
 * offline shards, pending operations) see exactly the state it changes.
 *
 * Changing a shard map is an operation in three parts. This file does the first: in
 * one transaction it checks the request, applies it to the GSM, and records a
 * pending operation listing the LSM change each shard needs (the rows it changed
 * stay held by it). The client then applies those LSM changes and completes the
 * operation (the third part). An interruption anywhere leaves the pending operation,
 * which replays idempotently; until then other operations refuse the held rows.
 */
import { randomUUID } from 'node:crypto';
import { GeodrError } from '../errors.js';
import type { Connection } from '../engine/index.js';
import { inRange, isKeyType, keyText, minKey, parseKeyText, type KeyType } from './keys.js';
import {
  formatLocation,
  normalizeLocation,
  normalizeServer,
  validateCatalogName,
  type InventoryServer,
  type LocalChange,
  type LocalShardStatus,
  type MapKind,
  type Mapping,
  type OperationStep,
  type PendingOperation,
  type Shard,
  type ShardLocation,
  type ShardMapInfo,
  type Status,
  type Tenant,
} from './model.js';
import { GSM_DDL, GSM_SCHEMA_VERSION, T, isMissingTable, stmt } from './schema.js';

export interface MapRow {
  name: string;
  kind: MapKind;
  key_type: KeyType;
  created_at: number;
}

interface ShardRow {
  id: string;
  map: string;
  server: string;
  database: string;
  status: Status;
  version: number;
  op: string | null;
}

interface MappingRow {
  id: string;
  map: string;
  shard_id: string;
  low: Buffer;
  high: Buffer | null;
  status: Status;
  version: number;
  op: string | null;
}

interface StoredStep extends OperationStep {
  /** Mapping ids the step holds until it is done. */
  locks: string[];
  lockShard: boolean;
}

interface OpRow {
  id: string;
  map: string;
  kind: string;
  created_at: number;
  steps: string;
}

/** Where a mapping goes: its shard (by id or location), and its key (list) or range. */
export interface MappingSpec {
  key?: string;
  low?: string | null;
  high?: string | null;
  status?: Status;
  shardId?: string;
  server?: string;
  database?: string;
}

export type OperationRequest =
  | { kind: 'addShards'; shards: Array<{ server: string; database: string; status?: Status }>; mappings?: MappingSpec[] }
  | { kind: 'removeShard'; shardId?: string; server?: string; database?: string }
  | { kind: 'setShardStatus'; shardId?: string; server?: string; database?: string; status: Status }
  | { kind: 'addMappings'; mappings: MappingSpec[] }
  | { kind: 'removeMapping'; mappingId: string }
  | { kind: 'updateMapping'; mappingId: string; status?: Status; shardId?: string; server?: string; database?: string }
  | { kind: 'splitMapping'; mappingId: string; at: string }
  | { kind: 'mergeMappings'; leftId: string; rightId: string };

export const OPERATION_KINDS = ['addShards', 'removeShard', 'setShardStatus', 'addMappings', 'removeMapping', 'updateMapping', 'splitMapping', 'mergeMappings'] as const;

const iso = (ms: number): string => new Date(ms).toISOString();

function conflict(message: string, details?: Record<string, unknown>): GeodrError {
  return new GeodrError('CONFLICT', message, details === undefined ? {} : { details });
}

function invalid(message: string): GeodrError {
  return new GeodrError('INVALID_ARGUMENT', message);
}

function held(what: string, op: string): GeodrError {
  return conflict(`${what} is held by pending operation ${op}; finish it first (recoverPendingOperations, or resolve the shard's differences)`, { pendingOperation: op });
}

// ---------------------------------------------------------------------------
// Schema and maps

/** Creates the catalog's tables if missing. Returns whether they were created now. */
export function createGsm(conn: Connection, now: number): boolean {
  let existed = true;
  try {
    stmt(conn, `select value from ${T.gsmMeta} where key = 'version'`).get();
  } catch (e) {
    if (!isMissingTable(e)) throw e;
    existed = false;
  }
  conn.exec(GSM_DDL);
  stmt(conn, `insert or ignore into ${T.gsmMeta} (key, value) values ('version', ?), ('createdAt', ?)`).run(String(GSM_SCHEMA_VERSION), iso(now));
  return !existed;
}

/** Throws NOT_FOUND unless the database holds a shard map manager. */
export function requireGsm(conn: Connection, database: string): void {
  let row: { value: string } | undefined;
  try {
    row = stmt(conn, `select value from ${T.gsmMeta} where key = 'version'`).get() as { value: string } | undefined;
  } catch (e) {
    if (!isMissingTable(e)) throw e;
  }
  if (row === undefined) {
    throw new GeodrError('NOT_FOUND', `database ${database} holds no shard map manager; create one first (PUT /v1/databases/${database}/shardMapManager)`, { database });
  }
  if (Number(row.value) > GSM_SCHEMA_VERSION) {
    throw new GeodrError('FORMAT_UNSUPPORTED', `the shard map manager in ${database} has schema version ${row.value}; this build reads up to ${GSM_SCHEMA_VERSION}`, { database });
  }
}

export function getMapRow(conn: Connection, database: string, name: string): MapRow {
  const row = stmt(conn, `select * from ${T.maps} where name = ?`).get(name) as MapRow | undefined;
  if (row === undefined) throw new GeodrError('NOT_FOUND', `shard map ${JSON.stringify(name)} does not exist`, { database, details: { map: name } });
  return row;
}

function mapInfo(conn: Connection, r: MapRow): ShardMapInfo {
  const shards = (stmt(conn, `select count(*) as n from ${T.shards} where map = ?`).get(r.name) as { n: number }).n;
  const mappings = (stmt(conn, `select count(*) as n from ${T.mappings} where map = ?`).get(r.name) as { n: number }).n;
  return { name: r.name, kind: r.kind, keyType: r.key_type, createdAt: iso(r.created_at), shards, mappings };
}

export function listMaps(conn: Connection): ShardMapInfo[] {
  return (stmt(conn, `select * from ${T.maps} order by name`).all() as MapRow[]).map((r) => mapInfo(conn, r));
}

export function getMap(conn: Connection, database: string, name: string): ShardMapInfo {
  return mapInfo(conn, getMapRow(conn, database, name));
}

/** Creates a map; the same request again is answered with the existing map. */
export function createMap(conn: Connection, name: string, kind: MapKind, keyType: KeyType, now: number): { map: ShardMapInfo; created: boolean } {
  validateCatalogName('shard map', name);
  if (kind !== 'list' && kind !== 'range') throw invalid('kind must be list or range');
  if (!isKeyType(keyType)) throw invalid('keyType must be int, string or binary');
  const existing = stmt(conn, `select * from ${T.maps} where name = ?`).get(name) as MapRow | undefined;
  if (existing !== undefined) {
    if (existing.kind !== kind || existing.key_type !== keyType) {
      throw conflict(`shard map ${name} exists as a ${existing.kind} map of ${existing.key_type} keys`, { map: name });
    }
    return { map: mapInfo(conn, existing), created: false };
  }
  stmt(conn, `insert into ${T.maps} (name, kind, key_type, created_at) values (?, ?, ?, ?)`).run(name, kind, keyType, now);
  return { map: mapInfo(conn, stmt(conn, `select * from ${T.maps} where name = ?`).get(name) as MapRow), created: true };
}

export function deleteMap(conn: Connection, database: string, name: string): void {
  const m = getMapRow(conn, database, name);
  const info = mapInfo(conn, m);
  if (info.shards > 0) throw conflict(`shard map ${name} still has ${info.shards} shards; remove them first`);
  if (stmt(conn, `select 1 from ${T.ops} where map = ? limit 1`).get(name) !== undefined) throw conflict(`shard map ${name} has pending operations`);
  const tenants = (stmt(conn, `select count(*) as n from ${T.tenants} where map = ?`).get(name) as { n: number }).n;
  if (tenants > 0) throw conflict(`${tenants} tenants of the catalog use shard map ${name}`);
  stmt(conn, `delete from ${T.maps} where name = ?`).run(name);
}

// ---------------------------------------------------------------------------
// Reads

function shardView(r: ShardRow): Shard {
  return { id: r.id, map: r.map, server: r.server, database: r.database, status: r.status, version: r.version, pendingOperation: r.op };
}

function mappingView(type: KeyType, r: MappingRow): Mapping {
  return {
    id: r.id,
    map: r.map,
    shardId: r.shard_id,
    low: keyText(type, r.low),
    high: r.high === null ? null : keyText(type, r.high),
    status: r.status,
    version: r.version,
    pendingOperation: r.op,
  };
}

/** Shards of `map` (every map when undefined), optionally only those at `location`. */
export function listShards(conn: Connection, map: string | undefined, location?: ShardLocation): Shard[] {
  const rows = (
    location === undefined
      ? map === undefined
        ? stmt(conn, `select * from ${T.shards} order by map, server, database`).all()
        : stmt(conn, `select * from ${T.shards} where map = ? order by server, database`).all(map)
      : map === undefined
        ? stmt(conn, `select * from ${T.shards} where server = ? and database = ? order by map`).all(location.server, location.database)
        : stmt(conn, `select * from ${T.shards} where map = ? and server = ? and database = ?`).all(map, location.server, location.database)
  ) as ShardRow[];
  return rows.map(shardView);
}

/** Shards whose server is `server`, across maps (what a failover moves). */
export function shardsOnServer(conn: Connection, server: string, map?: string): Shard[] {
  const rows = (
    map === undefined
      ? stmt(conn, `select * from ${T.shards} where server = ? order by map, database`).all(server)
      : stmt(conn, `select * from ${T.shards} where server = ? and map = ? order by database`).all(server, map)
  ) as ShardRow[];
  return rows.map(shardView);
}

export function listMappings(conn: Connection, map: MapRow, shardId?: string): Mapping[] {
  const rows = (
    shardId === undefined
      ? stmt(conn, `select * from ${T.mappings} where map = ? order by low`).all(map.name)
      : stmt(conn, `select * from ${T.mappings} where map = ? and shard_id = ? order by low`).all(map.name, shardId)
  ) as MappingRow[];
  return rows.map((r) => mappingView(map.key_type, r));
}

function findMappingRow(conn: Connection, map: MapRow, key: Buffer): MappingRow | undefined {
  if (map.kind === 'list') return stmt(conn, `select * from ${T.mappings} where map = ? and low = ?`).get(map.name, key) as MappingRow | undefined;
  const r = stmt(conn, `select * from ${T.mappings} where map = ? and low <= ? order by low desc limit 1`).get(map.name, key) as MappingRow | undefined;
  return r !== undefined && inRange(key, r.low, r.high) ? r : undefined;
}

/** The mapping covering `key` and its shard, or undefined. */
export function lookup(conn: Connection, map: MapRow, key: Buffer): { mapping: Mapping; shard: Shard } | undefined {
  const r = findMappingRow(conn, map, key);
  if (r === undefined) return undefined;
  const s = stmt(conn, `select * from ${T.shards} where id = ?`).get(r.shard_id) as ShardRow | undefined;
  if (s === undefined) throw new GeodrError('INTERNAL', `mapping ${r.id} names shard ${r.shard_id}, which is not in the GSM`);
  return { mapping: mappingView(map.key_type, r), shard: shardView(s) };
}

// ---------------------------------------------------------------------------
// Operations

function rangeText(map: MapRow, low: Buffer, high: Buffer | null): string {
  if (map.kind === 'list') return `key ${keyText(map.key_type, low)}`;
  return `[${keyText(map.key_type, low)}, ${high === null ? '∞' : keyText(map.key_type, high)})`;
}

/** The existing mapping that overlaps [low, high) (list: equals low), if any. Ranges never overlap, so the one starting last before `high` is the only candidate. */
function overlapping(conn: Connection, map: MapRow, low: Buffer, high: Buffer | null): MappingRow | undefined {
  if (map.kind === 'list') return stmt(conn, `select * from ${T.mappings} where map = ? and low = ?`).get(map.name, low) as MappingRow | undefined;
  const c = (
    high === null
      ? stmt(conn, `select * from ${T.mappings} where map = ? order by low desc limit 1`).get(map.name)
      : stmt(conn, `select * from ${T.mappings} where map = ? and low < ? order by low desc limit 1`).get(map.name, high)
  ) as MappingRow | undefined;
  return c !== undefined && (c.high === null || Buffer.compare(c.high, low) > 0) ? c : undefined;
}

function parseSpec(map: MapRow, spec: MappingSpec, where: string): { low: Buffer; high: Buffer | null } {
  if (map.kind === 'list') {
    if (spec.key === undefined || spec.low !== undefined || spec.high !== undefined) throw invalid(`${where}: a mapping of list map ${map.name} is one key: give "key" (not low/high)`);
    return { low: parseKeyText(map.key_type, spec.key, `${where}.key`), high: null };
  }
  if (spec.key !== undefined) throw invalid(`${where}: a mapping of range map ${map.name} is a range: give "low" and "high" (not key)`);
  const low = spec.low === undefined || spec.low === null ? minKey(map.key_type) : parseKeyText(map.key_type, spec.low, `${where}.low`);
  const high = spec.high === undefined || spec.high === null ? null : parseKeyText(map.key_type, spec.high, `${where}.high`);
  if (high !== null && Buffer.compare(low, high) >= 0) throw invalid(`${where}: low must be below high (the range is [low, high))`);
  return { low, high };
}

function findShard(conn: Connection, map: MapRow, ref: { shardId?: string | undefined; server?: string | undefined; database?: string | undefined }, where: string): ShardRow {
  if (ref.shardId !== undefined) {
    const r = stmt(conn, `select * from ${T.shards} where id = ? and map = ?`).get(ref.shardId, map.name) as ShardRow | undefined;
    if (r === undefined) throw new GeodrError('NOT_FOUND', `${where}: shard ${ref.shardId} is not in shard map ${map.name}`);
    return r;
  }
  if (ref.server === undefined && ref.database === undefined) throw invalid(`${where}: name the shard by shardId, or by server and database`);
  const loc = normalizeLocation(ref);
  const r = stmt(conn, `select * from ${T.shards} where map = ? and server = ? and database = ?`).get(map.name, loc.server, loc.database) as ShardRow | undefined;
  if (r === undefined) throw new GeodrError('NOT_FOUND', `${where}: ${formatLocation(loc)} is not a shard of map ${map.name}; add it first`, { details: { ...loc } });
  return r;
}

function mappingRow(conn: Connection, map: MapRow, id: unknown, where: string): MappingRow {
  if (typeof id !== 'string' || id === '') throw invalid(`${where} must be a mapping id`);
  const r = stmt(conn, `select * from ${T.mappings} where id = ? and map = ?`).get(id, map.name) as MappingRow | undefined;
  if (r === undefined) throw new GeodrError('NOT_FOUND', `mapping ${id} is not in shard map ${map.name}`);
  return r;
}

/** The pending operation with an LSM change still to make on `shardId`, if any. */
function pendingChangeOn(conn: Connection, shardId: string): string | undefined {
  for (const op of stmt(conn, `select * from ${T.ops}`).all() as OpRow[]) {
    if ((JSON.parse(op.steps) as StoredStep[]).some((s) => s.shardId === shardId && s.change !== null)) return op.id;
  }
  return undefined;
}

function checkStatus(s: unknown, where: string): Status {
  if (s !== 'online' && s !== 'offline') throw invalid(`${where} must be online or offline`);
  return s;
}

/** Steps of an operation under construction, one per shard. */
class Plan {
  readonly steps = new Map<string, StoredStep>();
  constructor(private readonly map: MapRow) {}

  on(shard: ShardRow): StoredStep & { change: LocalChange } {
    let s = this.steps.get(shard.id);
    if (s === undefined) {
      s = {
        index: this.steps.size,
        shardId: shard.id,
        map: this.map.name,
        server: shard.server,
        database: shard.database,
        change: { map: this.map.name, shardId: shard.id, kind: this.map.kind, keyType: this.map.key_type },
        resolve: null,
        locks: [],
        lockShard: false,
      };
      this.steps.set(shard.id, s);
    }
    return s as StoredStep & { change: LocalChange };
  }

  put(shard: ShardRow, r: MappingRow): void {
    const s = this.on(shard);
    (s.change.put ??= []).push({ id: r.id, low: keyText(this.map.key_type, r.low), high: r.high === null ? null : keyText(this.map.key_type, r.high), status: r.status, version: r.version });
    s.locks.push(r.id);
  }

  remove(shard: ShardRow, id: string): void {
    (this.on(shard).change.remove ??= []).push(id);
  }
}

/**
 * Part one of a shard map change: checks, applies it to the GSM, records the pending
 * operation. Returns the operation (its steps name each shard's current location; null
 * when the request changes nothing) and what the change created or changed.
 */
export function runOperation(conn: Connection, database: string, mapName: string, req: OperationRequest, now: number): { operation: PendingOperation | null; result: Record<string, unknown> } {
  const map = getMapRow(conn, database, mapName);
  const opId = randomUUID();
  const plan = new Plan(map);
  const shardById = (id: string): ShardRow => stmt(conn, `select * from ${T.shards} where id = ?`).get(id) as ShardRow;
  const insertMapping = (shard: ShardRow, low: Buffer, high: Buffer | null, status: Status, where: string): MappingRow => {
    if (shard.status !== 'online') throw conflict(`${where}: shard ${formatLocation(shard)} is offline; mappings go to online shards only`, { shardId: shard.id });
    if (shard.op !== null && shard.op !== opId) throw held(`shard ${formatLocation(shard)}`, shard.op);
    const clash = overlapping(conn, map, low, high);
    if (clash !== undefined) {
      throw conflict(`${where}: ${rangeText(map, low, high)} overlaps mapping ${clash.id} ${rangeText(map, clash.low, clash.high)}`, { conflictsWith: clash.id });
    }
    const r: MappingRow = { id: randomUUID(), map: map.name, shard_id: shard.id, low, high, status, version: 1, op: opId };
    stmt(conn, `insert into ${T.mappings} (id, map, shard_id, low, high, status, version, op) values (?, ?, ?, ?, ?, ?, ?, ?)`).run(r.id, r.map, r.shard_id, low, high, status, 1, opId);
    plan.put(shard, r);
    return r;
  };
  const touch = (r: MappingRow, what = `mapping ${r.id}`): void => {
    if (r.op !== null) throw held(what, r.op);
  };
  let result: Record<string, unknown>;

  switch (req.kind) {
    case 'addShards': {
      if (!Array.isArray(req.shards)) throw invalid('shards must be an array');
      const added: ShardRow[] = [];
      for (const [i, spec] of req.shards.entries()) {
        const loc = normalizeLocation(spec);
        const status = spec.status === undefined ? 'online' : checkStatus(spec.status, `shards[${i}].status`);
        const existing = stmt(conn, `select * from ${T.shards} where map = ? and server = ? and database = ?`).get(map.name, loc.server, loc.database) as ShardRow | undefined;
        if (existing !== undefined) throw conflict(`shards[${i}]: ${formatLocation(loc)} is already shard ${existing.id} of map ${map.name}`, { shardId: existing.id });
        const r: ShardRow = { id: randomUUID(), map: map.name, server: loc.server, database: loc.database, status, version: 1, op: opId };
        stmt(conn, `insert into ${T.shards} (id, map, server, database, status, version, op) values (?, ?, ?, ?, ?, 1, ?)`).run(r.id, r.map, r.server, r.database, status, opId);
        const step = plan.on(r);
        step.change.shardStatus = status;
        step.lockShard = true;
        added.push(r);
      }
      const mappings: MappingRow[] = [];
      for (const [i, spec] of (req.mappings ?? []).entries()) {
        const shard = findShard(conn, map, spec, `mappings[${i}]`);
        const { low, high } = parseSpec(map, spec, `mappings[${i}]`);
        mappings.push(insertMapping(shard, low, high, spec.status === undefined ? 'online' : checkStatus(spec.status, `mappings[${i}].status`), `mappings[${i}]`));
      }
      result = { shards: added.map((r) => shardView({ ...r, op: opId })), mappings: mappings.map((r) => mappingView(map.key_type, r)) };
      break;
    }
    case 'removeShard': {
      const shard = findShard(conn, map, req, 'removeShard');
      if (shard.op !== null) throw held(`shard ${formatLocation(shard)}`, shard.op);
      const n = (stmt(conn, `select count(*) as n from ${T.mappings} where shard_id = ?`).get(shard.id) as { n: number }).n;
      if (n > 0) throw conflict(`shard ${formatLocation(shard)} still holds ${n} mappings; remove or move them first`, { shardId: shard.id });
      const pending = pendingChangeOn(conn, shard.id);
      if (pending !== undefined) throw held(`shard ${formatLocation(shard)}`, pending);
      stmt(conn, `delete from ${T.shards} where id = ?`).run(shard.id);
      plan.on(shard).change.dropShard = true;
      result = { removed: shardView(shard) };
      break;
    }
    case 'setShardStatus': {
      const shard = findShard(conn, map, req, 'setShardStatus');
      const status = checkStatus(req.status, 'status');
      if (shard.op !== null) throw held(`shard ${formatLocation(shard)}`, shard.op);
      const pending = pendingChangeOn(conn, shard.id);
      if (pending !== undefined) throw held(`shard ${formatLocation(shard)}`, pending);
      stmt(conn, `update ${T.shards} set status = ?, version = version + 1, op = ? where id = ?`).run(status, opId, shard.id);
      const step = plan.on(shard);
      step.change.shardStatus = status;
      step.lockShard = true;
      result = { shard: shardView({ ...shard, status, version: shard.version + 1, op: opId }) };
      break;
    }
    case 'addMappings': {
      if (!Array.isArray(req.mappings) || req.mappings.length === 0) throw invalid('mappings must be a non-empty array');
      const rows = req.mappings.map((spec, i) => {
        const shard = findShard(conn, map, spec, `mappings[${i}]`);
        const { low, high } = parseSpec(map, spec, `mappings[${i}]`);
        return insertMapping(shard, low, high, spec.status === undefined ? 'online' : checkStatus(spec.status, `mappings[${i}].status`), `mappings[${i}]`);
      });
      result = { mappings: rows.map((r) => mappingView(map.key_type, r)) };
      break;
    }
    case 'removeMapping': {
      const m = mappingRow(conn, map, req.mappingId, 'mappingId');
      touch(m);
      if (m.status !== 'offline') throw conflict(`mapping ${m.id} is online; take it offline before removing it (so nothing writes to it meanwhile)`, { mappingId: m.id });
      stmt(conn, `delete from ${T.mappings} where id = ?`).run(m.id);
      plan.remove(shardById(m.shard_id), m.id);
      result = { removed: mappingView(map.key_type, m) };
      break;
    }
    case 'updateMapping': {
      const m = mappingRow(conn, map, req.mappingId, 'mappingId');
      touch(m);
      const status = req.status === undefined ? m.status : checkStatus(req.status, 'status');
      const from = shardById(m.shard_id);
      const moving = req.shardId !== undefined || req.server !== undefined || req.database !== undefined;
      const to = moving ? findShard(conn, map, req, 'updateMapping') : from;
      if (to.id !== from.id) {
        // The data moves between databases outside geodr: nothing may write while it does.
        if (m.status !== 'offline' || status !== 'offline') {
          throw conflict(`mapping ${m.id} must be offline to move to another shard, and stay offline in the same request; bring it online afterwards`, { mappingId: m.id });
        }
        if (to.status !== 'online') throw conflict(`shard ${formatLocation(to)} is offline; mappings go to online shards only`, { shardId: to.id });
        if (to.op !== null) throw held(`shard ${formatLocation(to)}`, to.op);
      } else if (status === m.status) {
        // Nothing to change: no operation (and no LSM step) at all.
        return { operation: null, result: { mapping: mappingView(map.key_type, m) } };
      }
      const next: MappingRow = { ...m, shard_id: to.id, status, version: m.version + 1, op: opId };
      stmt(conn, `update ${T.mappings} set shard_id = ?, status = ?, version = ?, op = ? where id = ?`).run(to.id, status, next.version, opId, m.id);
      plan.put(to, next);
      if (to.id !== from.id) {
        plan.remove(from, m.id);
        plan.on(from).locks.push(m.id);
      }
      result = { mapping: mappingView(map.key_type, next) };
      break;
    }
    case 'splitMapping': {
      if (map.kind !== 'range') throw invalid(`shard map ${map.name} is a list map; only range mappings split`);
      const m = mappingRow(conn, map, req.mappingId, 'mappingId');
      touch(m);
      const at = parseKeyText(map.key_type, req.at, 'at');
      if (!(Buffer.compare(m.low, at) < 0 && (m.high === null || Buffer.compare(at, m.high) < 0))) {
        throw invalid(`split point ${keyText(map.key_type, at)} must lie strictly inside mapping ${m.id} ${rangeText(map, m.low, m.high)}`);
      }
      const shard = shardById(m.shard_id);
      stmt(conn, `delete from ${T.mappings} where id = ?`).run(m.id);
      plan.remove(shard, m.id);
      const left = insertSplit(conn, m, m.low, at, opId);
      const right = insertSplit(conn, m, at, m.high, opId);
      plan.put(shard, left);
      plan.put(shard, right);
      result = { removed: m.id, mappings: [mappingView(map.key_type, left), mappingView(map.key_type, right)] };
      break;
    }
    case 'mergeMappings': {
      if (map.kind !== 'range') throw invalid(`shard map ${map.name} is a list map; only range mappings merge`);
      const l = mappingRow(conn, map, req.leftId, 'leftId');
      const r = mappingRow(conn, map, req.rightId, 'rightId');
      if (l.id === r.id) throw invalid('a mapping cannot merge with itself');
      touch(l);
      touch(r);
      if (l.high === null || !l.high.equals(r.low)) throw conflict(`mappings ${l.id} ${rangeText(map, l.low, l.high)} and ${r.id} ${rangeText(map, r.low, r.high)} are not adjacent (left.high must equal right.low)`);
      if (l.shard_id !== r.shard_id) throw conflict(`mappings ${l.id} and ${r.id} are on different shards; move one first`);
      if (l.status !== r.status) throw conflict(`mappings ${l.id} and ${r.id} differ in status (${l.status}, ${r.status})`);
      const shard = shardById(l.shard_id);
      stmt(conn, `delete from ${T.mappings} where id in (?, ?)`).run(l.id, r.id);
      plan.remove(shard, l.id);
      plan.remove(shard, r.id);
      const merged = insertSplit(conn, l, l.low, r.high, opId);
      plan.put(shard, merged);
      result = { removed: [l.id, r.id], mapping: mappingView(map.key_type, merged) };
      break;
    }
    default:
      throw invalid(`unknown operation kind ${JSON.stringify((req as { kind?: unknown }).kind)}; expected one of ${OPERATION_KINDS.join(', ')}`);
  }

  const steps = [...plan.steps.values()];
  stmt(conn, `insert into ${T.ops} (id, map, kind, created_at, steps) values (?, ?, ?, ?, ?)`).run(opId, map.name, req.kind, now, JSON.stringify(steps));
  return { operation: operationView(conn, { id: opId, map: map.name, kind: req.kind, created_at: now, steps: JSON.stringify(steps) }), result };
}

/** A new mapping [low, high) inheriting `from`'s shard and status (split halves, merges). */
function insertSplit(conn: Connection, from: MappingRow, low: Buffer, high: Buffer | null, opId: string): MappingRow {
  const r: MappingRow = { id: randomUUID(), map: from.map, shard_id: from.shard_id, low, high, status: from.status, version: 1, op: opId };
  stmt(conn, `insert into ${T.mappings} (id, map, shard_id, low, high, status, version, op) values (?, ?, ?, ?, ?, ?, ?, ?)`).run(r.id, r.map, r.shard_id, low, high, r.status, 1, opId);
  return r;
}

function operationView(conn: Connection, op: OpRow): PendingOperation {
  const steps = JSON.parse(op.steps) as StoredStep[];
  return {
    id: op.id,
    map: op.map,
    kind: op.kind,
    createdAt: iso(op.created_at),
    steps: steps.map((s) => {
      // Steps follow their shard: after a failover it lives elsewhere.
      const cur = stmt(conn, `select server, database from ${T.shards} where id = ?`).get(s.shardId) as ShardLocation | undefined;
      return { index: s.index, shardId: s.shardId, map: s.map, server: cur?.server ?? s.server, database: cur?.database ?? s.database, change: s.change, resolve: s.resolve };
    }),
  };
}

export function listOperations(conn: Connection, map?: string, id?: string): PendingOperation[] {
  const rows = (
    id !== undefined
      ? stmt(conn, `select * from ${T.ops} where id = ?`).all(id)
      : map === undefined
        ? stmt(conn, `select * from ${T.ops} order by created_at, id`).all()
        : stmt(conn, `select * from ${T.ops} where map = ? order by created_at, id`).all(map)
  ) as OpRow[];
  return rows.map((r) => operationView(conn, r));
}

/** Keeps only `keep` of an operation's steps (deleting it when none are left) and releases the rows only the dropped steps held. */
function narrowOperation(conn: Connection, op: OpRow, keep: (s: StoredStep) => boolean): void {
  const steps = JSON.parse(op.steps) as StoredStep[];
  const remaining = steps.filter(keep);
  if (remaining.length === steps.length) return;
  const locks = new Set(remaining.flatMap((s) => s.locks));
  const shardLocks = new Set(remaining.filter((s) => s.lockShard).map((s) => s.shardId));
  for (const r of stmt(conn, `select id from ${T.mappings} where op = ?`).all(op.id) as Array<{ id: string }>) {
    if (!locks.has(r.id)) stmt(conn, `update ${T.mappings} set op = null where id = ?`).run(r.id);
  }
  for (const r of stmt(conn, `select id from ${T.shards} where op = ?`).all(op.id) as Array<{ id: string }>) {
    if (!shardLocks.has(r.id)) stmt(conn, `update ${T.shards} set op = null where id = ?`).run(r.id);
  }
  if (remaining.length === 0) stmt(conn, `delete from ${T.ops} where id = ?`).run(op.id);
  else stmt(conn, `update ${T.ops} set steps = ? where id = ?`).run(JSON.stringify(remaining), op.id);
}

/**
 * Part three: the LSM steps are done, except `failedSteps`, which stay pending (with
 * the rows they hold). Completing an operation that is gone answers `completed` too:
 * a client whose first answer was lost repeats the call.
 */
export function completeOperation(conn: Connection, id: string, failedSteps: readonly number[]): { completed: boolean; remainingSteps: number } {
  const op = stmt(conn, `select * from ${T.ops} where id = ?`).get(id) as OpRow | undefined;
  if (op === undefined) return { completed: true, remainingSteps: 0 };
  const failed = new Set(failedSteps);
  narrowOperation(conn, op, (s) => failed.has(s.index));
  return { completed: failed.size === 0, remainingSteps: failed.size === 0 ? 0 : (JSON.parse(op.steps) as StoredStep[]).filter((s) => failed.has(s.index)).length };
}

// ---------------------------------------------------------------------------
// Recovery: the GSM side of detach, attach, relocate and reconcile

/** Removes the shards at `location` (of `map`, or of every map) and their mappings; pending steps on them are dropped. */
export function detachShards(conn: Connection, location: ShardLocation, map?: string): Shard[] {
  const shards = listShards(conn, map, location);
  for (const s of shards) {
    stmt(conn, `delete from ${T.mappings} where shard_id = ?`).run(s.id);
    stmt(conn, `delete from ${T.shards} where id = ?`).run(s.id);
  }
  if (shards.length > 0) {
    const ids = new Set(shards.map((s) => s.id));
    for (const op of stmt(conn, `select * from ${T.ops}`).all() as OpRow[]) narrowOperation(conn, op, (s) => !ids.has(s.shardId));
  }
  return shards;
}

export interface AttachSpec {
  map: string;
  shardId: string;
  kind: MapKind;
  keyType: KeyType;
  status: LocalShardStatus;
}

/**
 * Adds shards at `location` as their LSM describes them (same id), creating a map the
 * GSM lacks. Attaching what is already attached there is a no-op; a shard id attached
 * elsewhere, or a location holding another shard of the map, is a CONFLICT.
 */
export function attachShards(conn: Connection, location: ShardLocation, specs: readonly AttachSpec[], now: number): Array<Shard & { attached: boolean }> {
  const out: Array<Shard & { attached: boolean }> = [];
  for (const spec of specs) {
    const { map } = createMap(conn, spec.map, spec.kind, spec.keyType, now);
    const byId = stmt(conn, `select * from ${T.shards} where id = ?`).get(spec.shardId) as ShardRow | undefined;
    if (byId !== undefined) {
      if (byId.map === map.name && byId.server === location.server && byId.database === location.database) {
        out.push({ ...shardView(byId), attached: false });
        continue;
      }
      throw conflict(`shard ${spec.shardId} is attached at ${formatLocation(byId)} in map ${byId.map}; detach it there first`, { shardId: spec.shardId });
    }
    const here = listShards(conn, map.name, location)[0];
    if (here !== undefined) throw conflict(`${formatLocation(location)} already holds shard ${here.id} of map ${map.name}; detach it first`, { shardId: here.id });
    const status: Status = spec.status === 'offline' ? 'offline' : 'online';
    stmt(conn, `insert into ${T.shards} (id, map, server, database, status, version, op) values (?, ?, ?, ?, ?, 1, null)`).run(spec.shardId, map.name, location.server, location.database, status);
    out.push({ id: spec.shardId, map: map.name, server: location.server, database: location.database, status, version: 1, pendingOperation: null, attached: true });
  }
  return out;
}

/**
 * Moves shards to new locations in one transaction (a failover's detach and attach of
 * each, keeping its id and mappings). With `reconcile`, records a pending operation
 * whose steps reconcile each moved shard trusting its LSM, so an interrupted rebuild
 * finishes when run again.
 */
export function relocateShards(
  conn: Connection,
  moves: ReadonlyArray<{ shardId: string; server: string; database: string }>,
  reconcile: boolean,
  now: number,
): { moved: Shard[]; skipped: Array<{ shardId: string; reason: string }>; operation: PendingOperation | null } {
  const moved: ShardRow[] = [];
  const skipped: Array<{ shardId: string; reason: string }> = [];
  for (const mv of moves) {
    const loc = normalizeLocation(mv);
    const r = stmt(conn, `select * from ${T.shards} where id = ?`).get(mv.shardId) as ShardRow | undefined;
    if (r === undefined) {
      skipped.push({ shardId: mv.shardId, reason: 'not in the GSM' });
      continue;
    }
    if (r.server === loc.server && r.database === loc.database) {
      skipped.push({ shardId: r.id, reason: 'already there' });
      continue;
    }
    const there = listShards(conn, r.map, loc)[0];
    if (there !== undefined) {
      skipped.push({ shardId: r.id, reason: `${formatLocation(loc)} already holds shard ${there.id} of map ${r.map}` });
      continue;
    }
    stmt(conn, `update ${T.shards} set server = ?, database = ?, version = version + 1 where id = ?`).run(loc.server, loc.database, r.id);
    moved.push({ ...r, server: loc.server, database: loc.database, version: r.version + 1 });
  }
  let operation: PendingOperation | null = null;
  if (reconcile && moved.length > 0) {
    const id = randomUUID();
    const steps: StoredStep[] = moved.map((r, index) => ({ index, shardId: r.id, map: r.map, server: r.server, database: r.database, change: null, resolve: 'KeepShardMapping', locks: [], lockShard: false }));
    const row: OpRow = { id, map: moved[0]!.map, kind: 'relocate', created_at: now, steps: JSON.stringify(steps) };
    stmt(conn, `insert into ${T.ops} (id, map, kind, created_at, steps) values (?, ?, ?, ?, ?)`).run(row.id, row.map, row.kind, row.created_at, row.steps);
    operation = operationView(conn, row);
  }
  return { moved: moved.map(shardView), skipped, operation };
}

export interface ReconcileRequest {
  map: string;
  shardId: string;
  server: string;
  database: string;
  status?: Status;
  mappings: Array<{ id: string; low: string; high: string | null; status: Status; version: number }>;
}

/**
 * Makes the GSM's mappings of one shard exactly `mappings` (what a resolution decided).
 * A mapping that would overlap another shard's mapping, or whose id belongs to another
 * shard, is not added: it is returned as a conflict (the GSM's other shards win).
 */
export function reconcileShard(conn: Connection, database: string, req: ReconcileRequest): { shard: Shard; mappings: Mapping[]; conflicts: Array<{ id: string; reason: string }> } {
  const map = getMapRow(conn, database, req.map);
  const loc = normalizeLocation(req);
  const shard = stmt(conn, `select * from ${T.shards} where id = ? and map = ?`).get(req.shardId, map.name) as ShardRow | undefined;
  if (shard === undefined) throw new GeodrError('NOT_FOUND', `shard ${req.shardId} is not in shard map ${map.name}`);
  if (shard.server !== loc.server || shard.database !== loc.database) {
    throw conflict(`shard ${shard.id} is at ${formatLocation(shard)}, not ${formatLocation(loc)}; detect the differences again`, { shardId: shard.id });
  }
  const existing = stmt(conn, `select * from ${T.mappings} where shard_id = ?`).all(shard.id) as MappingRow[];
  for (const m of existing) if (m.op !== null) throw held(`mapping ${m.id}`, m.op);
  const pending = pendingChangeOn(conn, shard.id);
  if (pending !== undefined) throw held(`shard ${formatLocation(shard)}`, pending);
  stmt(conn, `delete from ${T.mappings} where shard_id = ?`).run(shard.id);
  const conflicts: Array<{ id: string; reason: string }> = [];
  for (const [i, m] of req.mappings.entries()) {
    const low = parseKeyText(map.key_type, m.low, `mappings[${i}].low`);
    const high = m.high === null ? null : parseKeyText(map.key_type, m.high, `mappings[${i}].high`);
    if (map.kind === 'list' && high !== null) throw invalid(`mappings[${i}]: a list mapping has no high bound`);
    if (high !== null && Buffer.compare(low, high) >= 0) throw invalid(`mappings[${i}]: low must be below high`);
    const status = checkStatus(m.status, `mappings[${i}].status`);
    if (!Number.isSafeInteger(m.version) || m.version < 1) throw invalid(`mappings[${i}].version must be a positive integer`);
    const other = stmt(conn, `select * from ${T.mappings} where id = ?`).get(m.id) as MappingRow | undefined;
    if (other !== undefined) {
      conflicts.push({ id: m.id, reason: `mapping ${m.id} belongs to shard ${other.shard_id}` });
      continue;
    }
    const clash = overlapping(conn, map, low, high);
    if (clash !== undefined) {
      conflicts.push({ id: m.id, reason: `${rangeText(map, low, high)} overlaps mapping ${clash.id} on shard ${clash.shard_id}` });
      continue;
    }
    stmt(conn, `insert into ${T.mappings} (id, map, shard_id, low, high, status, version, op) values (?, ?, ?, ?, ?, ?, ?, null)`).run(m.id, map.name, shard.id, low, high, status, m.version);
  }
  if (req.status !== undefined && req.status !== shard.status) {
    stmt(conn, `update ${T.shards} set status = ?, version = version + 1 where id = ?`).run(checkStatus(req.status, 'status'), shard.id);
  }
  const after = stmt(conn, `select * from ${T.shards} where id = ?`).get(shard.id) as ShardRow;
  return { shard: shardView(after), mappings: listMappings(conn, map, shard.id), conflicts };
}

// ---------------------------------------------------------------------------
// Tenant catalog

interface TenantRow {
  name: string;
  map: string;
  key: Buffer;
  pool: string | null;
  last_restored_txid: number | null;
  last_restored_at: number | null;
  last_repatriated_txid: number | null;
  last_repatriated_at: number | null;
  created_at: number;
  updated_at: number;
}

function tenantView(conn: Connection, database: string, r: TenantRow): Tenant {
  const map = getMapRow(conn, database, r.map);
  const hit = lookup(conn, map, r.key);
  let pool = r.pool;
  if (hit !== undefined) {
    const inv = stmt(conn, `select pool from ${T.invDatabases} where server = ? and name = ?`).get(hit.shard.server, hit.shard.database) as { pool: string } | undefined;
    if (inv !== undefined) pool = inv.pool;
  }
  return {
    name: r.name,
    map: r.map,
    key: keyText(map.key_type, r.key),
    pool,
    server: hit?.shard.server ?? null,
    database: hit?.shard.database ?? null,
    shardId: hit?.shard.id ?? null,
    mappingId: hit?.mapping.id ?? null,
    status: hit === undefined ? 'unmapped' : hit.mapping.status === 'online' && hit.shard.status === 'online' ? 'online' : 'offline',
    lastRestored: r.last_restored_txid === null ? null : { txid: r.last_restored_txid, time: iso(r.last_restored_at ?? 0) },
    lastRepatriated: r.last_repatriated_txid === null ? null : { txid: r.last_repatriated_txid, time: iso(r.last_repatriated_at ?? 0) },
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
}

export function listTenants(conn: Connection, database: string): Tenant[] {
  return (stmt(conn, `select * from ${T.tenants} order by name`).all() as TenantRow[]).map((r) => tenantView(conn, database, r));
}

export function getTenant(conn: Connection, database: string, name: string): Tenant {
  const r = stmt(conn, `select * from ${T.tenants} where name = ?`).get(name) as TenantRow | undefined;
  if (r === undefined) throw new GeodrError('NOT_FOUND', `tenant ${JSON.stringify(name)} is not in the catalog`, { details: { tenant: name } });
  return tenantView(conn, database, r);
}

/** Registers (or updates) a tenant's key and pool; the mapping itself is a shard map operation. */
export function putTenant(conn: Connection, database: string, name: string, body: { map: string; key: string; pool?: string | null }, now: number): { tenant: Tenant; created: boolean } {
  validateCatalogName('tenant', name);
  const map = getMapRow(conn, database, body.map);
  const key = parseKeyText(map.key_type, body.key, 'key');
  const taken = stmt(conn, `select name from ${T.tenants} where map = ? and key = ? and name <> ?`).get(map.name, key, name) as { name: string } | undefined;
  if (taken !== undefined) throw conflict(`key ${body.key} of map ${map.name} belongs to tenant ${taken.name}`);
  const existing = stmt(conn, `select * from ${T.tenants} where name = ?`).get(name) as TenantRow | undefined;
  if (existing === undefined) {
    stmt(conn, `insert into ${T.tenants} (name, map, key, pool, created_at, updated_at) values (?, ?, ?, ?, ?, ?)`).run(name, map.name, key, body.pool ?? null, now, now);
  } else {
    stmt(conn, `update ${T.tenants} set map = ?, key = ?, pool = ?, updated_at = ? where name = ?`).run(map.name, key, body.pool === undefined ? existing.pool : body.pool, now, name);
  }
  return { tenant: getTenant(conn, database, name), created: existing === undefined };
}

export function patchTenant(
  conn: Connection,
  database: string,
  name: string,
  patch: { pool?: string | null; lastRestored?: { txid: number; time?: string }; lastRepatriated?: { txid: number; time?: string } },
  now: number,
): Tenant {
  getTenant(conn, database, name);
  const when = (t: string | undefined, what: string): number => {
    if (t === undefined) return now;
    const ms = Date.parse(t);
    if (!Number.isFinite(ms)) throw invalid(`${what}.time must be an ISO-8601 time`);
    return ms;
  };
  if (patch.pool !== undefined) stmt(conn, `update ${T.tenants} set pool = ? where name = ?`).run(patch.pool, name);
  if (patch.lastRestored !== undefined) {
    stmt(conn, `update ${T.tenants} set last_restored_txid = ?, last_restored_at = ? where name = ?`).run(patch.lastRestored.txid, when(patch.lastRestored.time, 'lastRestored'), name);
  }
  if (patch.lastRepatriated !== undefined) {
    stmt(conn, `update ${T.tenants} set last_repatriated_txid = ?, last_repatriated_at = ? where name = ?`).run(patch.lastRepatriated.txid, when(patch.lastRepatriated.time, 'lastRepatriated'), name);
  }
  stmt(conn, `update ${T.tenants} set updated_at = ? where name = ?`).run(now, name);
  return getTenant(conn, database, name);
}

export function deleteTenant(conn: Connection, database: string, name: string): Tenant {
  const t = getTenant(conn, database, name);
  stmt(conn, `delete from ${T.tenants} where name = ?`).run(name);
  return t;
}

// ---------------------------------------------------------------------------
// Inventory

/** Replaces everything recorded about one server with what a sync just read from it. */
export function putInventory(conn: Connection, inv: Omit<InventoryServer, 'syncedAt'>, now: number): InventoryServer {
  const server = normalizeServer(inv.server);
  for (const t of [T.invPools, T.invDatabases, T.invServers]) stmt(conn, `delete from ${t} where server = ?`).run(server);
  stmt(conn, `insert into ${T.invServers} (server, name, region, version, synced_at) values (?, ?, ?, ?, ?)`).run(server, inv.name, inv.region, inv.version, now);
  for (const p of inv.pools) stmt(conn, `insert into ${T.invPools} (server, name, settings) values (?, ?, ?)`).run(server, p.name, JSON.stringify(p.settings));
  for (const d of inv.databases) stmt(conn, `insert into ${T.invDatabases} (server, name, pool, settings) values (?, ?, ?, ?)`).run(server, d.name, d.pool, JSON.stringify(d.settings));
  return getInventory(conn).find((s) => s.server === server)!;
}

export function getInventory(conn: Connection): InventoryServer[] {
  const servers = stmt(conn, `select * from ${T.invServers} order by server`).all() as Array<{ server: string; name: string; region: string; version: string; synced_at: number }>;
  return servers.map((s) => ({
    server: s.server,
    name: s.name,
    region: s.region,
    version: s.version,
    syncedAt: iso(s.synced_at),
    pools: (stmt(conn, `select name, settings from ${T.invPools} where server = ? order by name`).all(s.server) as Array<{ name: string; settings: string }>).map((p) => ({
      name: p.name,
      settings: JSON.parse(p.settings) as Record<string, unknown>,
    })),
    databases: (stmt(conn, `select name, pool, settings from ${T.invDatabases} where server = ? order by name`).all(s.server) as Array<{ name: string; pool: string; settings: string }>).map((d) => ({
      name: d.name,
      pool: d.pool,
      settings: JSON.parse(d.settings) as Record<string, unknown>,
    })),
  }));
}
