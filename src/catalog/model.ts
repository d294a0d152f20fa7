/**
 * The catalog's resources as they travel between the server and its clients: shard
 * maps, shards, mappings, local shard maps, pending operations, recovery tokens,
 * tenants and inventory. Keys travel as text (see keys.ts). Shared by the server
 * and the SDK; nothing here does I/O.
 */
import { GeodrError } from '../errors.js';
import { validateName } from '../server/names.js';
import type { KeyType } from './keys.js';

/** `list`: each mapping is one key; `range`: each mapping is a half-open key range [low, high). */
export type MapKind = 'list' | 'range';
export type Status = 'online' | 'offline';
/** An LSM's shard status; `detached` fences a copy the GSM no longer points at (routing refuses it). */
export type LocalShardStatus = Status | 'detached';

/** Where a shard lives: a server (its URL, or a name an application resolves) and a database on it. */
export interface ShardLocation {
  server: string;
  database: string;
}

export interface ShardMapInfo {
  name: string;
  kind: MapKind;
  keyType: KeyType;
  createdAt: string;
  shards: number;
  mappings: number;
}

/** A shard as the global shard map (GSM) records it. */
export interface Shard extends ShardLocation {
  id: string;
  map: string;
  status: Status;
  version: number;
  /** The pending operation that holds this shard, if any. */
  pendingOperation: string | null;
}

/**
 * A mapping as the GSM records it. For a list map `low` is the key and `high` is null;
 * for a range map it covers [low, high), `high` null meaning no upper bound.
 */
export interface Mapping {
  id: string;
  map: string;
  shardId: string;
  low: string;
  high: string | null;
  status: Status;
  /** Rises at every change; routing validates a cached mapping by id and version. */
  version: number;
  pendingOperation: string | null;
}

/** A mapping as a local shard map (LSM) records it. */
export interface LocalMapping {
  id: string;
  low: string;
  high: string | null;
  status: Status;
  version: number;
}

/** One shard map's part of a database's LSM. */
export interface LocalShard {
  map: string;
  shardId: string;
  kind: MapKind;
  keyType: KeyType;
  status: LocalShardStatus;
  /** Rises at every change to this map's part of the LSM. */
  version: number;
  mappings: LocalMapping[];
}

export interface LocalShardMap {
  database: string;
  maps: LocalShard[];
}

/**
 * A change to one map's part of an LSM; every change is idempotent, so a pending
 * operation can be replayed. The shard row is created if missing (with
 * `shardStatus`, else online) and left as it is otherwise, unless `shardStatus` is set.
 */
export interface LocalChange {
  map: string;
  shardId: string;
  kind: MapKind;
  keyType: KeyType;
  shardStatus?: LocalShardStatus;
  /** Removes this map's shard row and every mapping (the rest of the change is ignored). */
  dropShard?: boolean;
  /** Mapping ids to delete (missing ones are ignored). */
  remove?: string[];
  /** Mappings to upsert by id; a row at the same `low` with another id is replaced. */
  put?: LocalMapping[];
  /** The map's mappings become exactly `put`. */
  replace?: boolean;
}

/** One step of a pending operation: an LSM change, or a reconciliation, on one shard. */
export interface OperationStep {
  index: number;
  shardId: string;
  map: string;
  /** The shard's current location (or the one it had when the step was planned, if the shard is gone). */
  server: string;
  database: string;
  change: LocalChange | null;
  resolve: MappingDifferenceResolution | null;
}

/**
 * An operation whose GSM part is done and whose LSM steps may not be: written before
 * any LSM changes, removed once they all are. Replaying it finishes it.
 */
export interface PendingOperation {
  id: string;
  map: string;
  kind: string;
  createdAt: string;
  steps: OperationStep[];
}

/** Which side to trust when the GSM and an LSM disagree. */
export type MappingDifferenceResolution = 'KeepShardMapping' | 'KeepGlobalMapping';
export const RESOLUTIONS: readonly MappingDifferenceResolution[] = ['KeepShardMapping', 'KeepGlobalMapping'];

export type DifferenceKind =
  /** The LSM has the map, the GSM has no shard at this location. */
  | 'ShardNotInGlobal'
  /** The GSM has a shard here, the LSM has nothing for the map. */
  | 'ShardNotInLocal'
  /** Both have a shard here, with different ids. */
  | 'ShardIdDiffers'
  | 'ShardStatusDiffers'
  | 'MappingOnlyInGlobal'
  | 'MappingOnlyInLocal'
  /** Same id, different range, status or version. */
  | 'MappingDiffers'
  /** An interrupted operation has unfinished steps on this shard. */
  | 'PendingOperation';

export interface MappingDifference {
  kind: DifferenceKind;
  mappingId?: string;
  operationId?: string;
  global?: { shardId?: string; status?: string; low?: string; high?: string | null; version?: number };
  local?: { shardId?: string; status?: string; low?: string; high?: string | null; version?: number };
}

/**
 * What {@link RecoveryManager.detectMappingDifferences} found for one shard map at one
 * location. Plain data: it can be printed, stored and passed to another process;
 * resolving reads both sides again, so a token never applies stale facts.
 */
export interface RecoveryToken {
  map: string;
  location: ShardLocation;
  /** The shard id at this location (the GSM's, else the LSM's). */
  shardId: string | null;
  differences: MappingDifference[];
  detectedAt: string;
}

/** A tenant of the catalog: its key in a shard map, and where that key routes today. */
export interface Tenant {
  name: string;
  map: string;
  key: string;
  /** From the inventory when the tenant's database is in it, else as registered. */
  pool: string | null;
  server: string | null;
  database: string | null;
  shardId: string | null;
  mappingId: string | null;
  /** online when the mapping and its shard are online; unmapped when no mapping covers the key. */
  status: Status | 'unmapped';
  lastRestored: { txid: number; time: string } | null;
  lastRepatriated: { txid: number; time: string } | null;
  createdAt: string;
  updatedAt: string;
}

export interface InventoryServer {
  /** The server as the sync reached it (its URL). */
  server: string;
  name: string;
  region: string;
  version: string;
  syncedAt: string;
  pools: Array<{ name: string; settings: Record<string, unknown> }>;
  databases: Array<{ name: string; pool: string; settings: Record<string, unknown> }>;
}

const MAP_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Shard map and tenant names: the shape of database names. */
export function validateCatalogName(kind: 'shard map' | 'tenant', name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > 128 || !MAP_NAME.test(name) || name.includes('..')) {
    throw new GeodrError('INVALID_ARGUMENT', `${kind} name ${JSON.stringify(typeof name === 'string' ? name.slice(0, 40) : name)} must be 1-128 letters, digits, "_", "-" or "." starting with a letter or digit`);
  }
  return name;
}

/**
 * The canonical form of a shard's server: a URL becomes scheme://host[:port][/path]
 * (lower-case host, no trailing slash); anything else must be a name (an alias the
 * application resolves), kept in lower case.
 */
export function normalizeServer(server: unknown): string {
  if (typeof server !== 'string' || server.length === 0 || server.length > 1000) {
    throw new GeodrError('INVALID_ARGUMENT', 'a shard server must be a URL (http://host:port) or a server name');
  }
  if (/^https?:\/\//i.test(server)) {
    let u: URL;
    try {
      u = new URL(server);
    } catch {
      throw new GeodrError('INVALID_ARGUMENT', `shard server ${JSON.stringify(server.slice(0, 80))} is not a valid URL`);
    }
    if (u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') {
      throw new GeodrError('INVALID_ARGUMENT', `shard server ${JSON.stringify(server.slice(0, 80))} must not carry credentials, a query or a fragment`);
    }
    return `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
  }
  try {
    return validateName('server', server).toLowerCase();
  } catch {
    throw new GeodrError('INVALID_ARGUMENT', `shard server ${JSON.stringify(server.slice(0, 80))} is neither an http(s) URL nor a server name`);
  }
}

/** Validates and normalizes a location. */
export function normalizeLocation(loc: { server?: unknown; database?: unknown } | undefined): ShardLocation {
  if (loc === undefined || loc === null || typeof loc !== 'object') throw new GeodrError('INVALID_ARGUMENT', 'a shard location needs a server and a database');
  return { server: normalizeServer(loc.server), database: validateName('database', loc.database) };
}

export function locationKey(loc: ShardLocation): string {
  return `${loc.server}\u0000${loc.database}`;
}

export function formatLocation(loc: ShardLocation): string {
  return `${loc.server}/${loc.database}`;
}
