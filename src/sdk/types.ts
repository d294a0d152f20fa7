/** The resources of the geodr server API, as the client receives them. */

/** `GET /v1/server`. */
export interface ServerInfo {
  name: string;
  region: string;
  version: string;
  apiVersion: string;
  defaultPool: string;
  databases: number;
  pools: number;
  openDatabases: number;
}

/** Settings of an elastic pool; omitted fields keep their current (or default) value. */
export interface PoolSettings {
  /** 1 – 1,000,000. */
  maxDatabases?: number;
  /** Operations that may run at once in the pool, 1 – 64. */
  maxConcurrentOperations?: number;
  /** Bytes; 0 means no quota. */
  storageQuotaBytes?: number;
}

/** An elastic pool. */
export interface Pool {
  name: string;
  maxDatabases: number;
  maxConcurrentOperations: number;
  storageQuotaBytes: number;
  /** Milliseconds since the epoch. */
  createdAt: number;
  databaseCount: number;
  usedBytes: number;
}

/** How a database is created. Only `Default` (empty) is available today; the others answer UNSUPPORTED. */
export type CreateMode = 'Default' | 'Copy' | 'Secondary' | 'PointInTimeRestore' | 'Restore' | 'Recovery' | 'RestoreLongTermRetentionBackup';

/** A database. */
export interface Database {
  name: string;
  /** Stable id; survives renames. */
  id: string;
  pool: string;
  role: string;
  status: string;
  createMode: string;
  /** ISO 8601. */
  createdAt: string;
  sizeBytes: number;
  txid: number;
  checksum: string;
  epoch: number;
  /** ISO 8601, or null before the first write. */
  lastWriteTime: string | null;
}

/** A deleted database whose files the server keeps. */
export interface DroppedDatabase {
  id: string;
  name: string;
  pool: string;
  /** Milliseconds since the epoch. */
  createdAt: number;
  /** Milliseconds since the epoch. */
  droppedAt: number;
  /** Where the files are, relative to the server's data directory. */
  location: string;
  txid: number;
}

export type OperationState = 'Pending' | 'InProgress' | 'Succeeded' | 'Failed' | 'Cancelled';

/** A long-running operation (e.g. `verifyDatabase`). */
export interface Operation {
  id: string;
  kind: string;
  state: OperationState;
  /** 0 – 100; 100 once Succeeded. */
  percentComplete: number;
  database: string | null;
  pool: string | null;
  /** ISO 8601. */
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
  /** Set when Failed. */
  error: { code: string; message: string } | null;
  /** Set when Succeeded; its shape depends on the kind. */
  result: Record<string, unknown> | null;
  cancelRequested: boolean;
}

/** `GET /healthz` and `GET /readyz`. */
export interface Health {
  /** The process answers. */
  live: boolean;
  /** It accepts SQL (false while starting or draining). */
  ready: boolean;
}
