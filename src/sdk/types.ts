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

/**
 * How a database is created. `Default` creates an empty one (`GeodrClient.createDatabase`);
 * the {@link RestoreMode}s build it from backups (`GeodrClient.restoreDatabase`); `Copy`
 * and `Secondary` answer UNSUPPORTED until geo-replication arrives.
 */
export type CreateMode = 'Default' | 'Copy' | 'Secondary' | RestoreMode;

/**
 * The create modes that restore from backups, as an operation:
 * - `PointInTimeRestore`: a database of this server, to a time or TXID in its retention window;
 * - `Restore`: a deleted database (see `GeodrClient.listDroppedDatabases`);
 * - `RestoreLongTermRetentionBackup`: a long-term backup (see `GeodrClient.listLongTermBackups`);
 * - `Recovery`: geo-restore of a database of the paired region from this region's copy
 *   of its backups (see `GeodrClient.listRecoverableDatabases`).
 */
export type RestoreMode = 'PointInTimeRestore' | 'Restore' | 'Recovery' | 'RestoreLongTermRetentionBackup';

/** A database. */
export interface Database {
  name: string;
  /** Stable id; survives renames. */
  id: string;
  /** The engine's database id (32 hex digits): names its backups in the vault; survives renames. */
  dbId: string;
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
  /** The point-in-time restore window, days (see `GeodrClient.setShortTermRetention`). */
  retentionDays: number;
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
  /** The engine's database id: names its backups in the vault. */
  dbId: string;
  /** How long after the drop its backups are kept, days. */
  retentionDays: number;
}

/** A point the database can be restored to. */
export interface RestorePoint {
  txid: number;
  /** Commit time, ISO 8601. */
  time: string;
}

/** Where continuous backup of one database stands. */
export interface BackupStatus {
  /** The region's vault, e.g. `fs:/var/lib/geodr/vault`. */
  vault: string;
  /** The last TXID the vault holds. */
  shippedTxid: number;
  /** Records committed locally that the vault does not hold yet. */
  unshippedRecords: number;
  /** Commit time of the last record in the vault, ISO 8601. */
  lastShippedCommitTime: string | null;
  /** Estimated loss if the region were lost now: time since the oldest unshipped commit, or 0. */
  estimatedDataLossSeconds: number;
  /** The copy in the paired region's vault; null without a paired vault. */
  geo: {
    vault: string;
    lastCopiedKey: string | null;
    /** ISO 8601. */
    lastCopiedAt: string | null;
    /** Objects waiting to be copied. */
    pending: number;
    /** The last TXID the paired vault holds. */
    copiedTxid: number;
  } | null;
  /** Consecutive shipping failures. */
  failures: number;
  /** Why shipping stopped, when it did; null while it runs. */
  halted: string | null;
}

/** `GET /v1/databases/{db}/restorePoints`: the restore window and the backup's progress. */
export interface RestorePoints {
  database: string;
  dbId: string;
  /** Null until the first snapshot reaches the vault. */
  earliest: RestorePoint | null;
  latest: RestorePoint | null;
  backup: BackupStatus;
}

/** Options of `GeodrClient.restoreDatabase`. */
export interface RestoreOptions {
  mode: RestoreMode;
  /** Elastic pool of the new database (default: the server's default pool). */
  pool?: string;
  /** PointInTimeRestore: the database of this server to restore. */
  sourceDatabaseName?: string;
  /**
   * Restore: the dropped database's `id` or `dbId`; Recovery and
   * RestoreLongTermRetentionBackup: the database's `dbId`.
   */
  sourceDatabaseId?: string;
  /** Restore to the last commit at or before this time (give `time` or `txid`, not both). */
  time?: Date | string;
  /** Restore to exactly this TXID; for RestoreLongTermRetentionBackup, the long-term backup's TXID (required). */
  txid?: number;
}

/** The long-term retention policy of a database: ISO-8601 durations (`P12W`, `P12M`, `P5Y`), or null for none. */
export interface LongTermRetentionPolicy {
  weeklyRetention: string | null;
  monthlyRetention: string | null;
  yearlyRetention: string | null;
  /** The week (1-52) whose backup is kept as the yearly one. */
  weekOfYear: number;
}

/** A long-term backup in the vault. */
export interface LongTermBackup {
  /** The TXID it holds; restore it with `restoreDatabase(…, { mode: 'RestoreLongTermRetentionBackup', txid })`. */
  txid: number;
  /** ISO 8601. */
  time: string;
  kind: 'weekly' | 'monthly' | 'yearly';
  /** Its object key in the vault. */
  key: string;
}

/** A database of the paired region whose backups this region's vault holds (geo-restorable with mode `Recovery`). */
export interface RecoverableDatabase {
  dbId: string;
  name: string;
  /** The server and region it lived on. */
  server: string;
  region: string;
  pool: string;
  pageSize: number;
  /** Milliseconds since the epoch. */
  createdAt: number;
  /** Milliseconds since the epoch; set when it was deleted on its server. */
  droppedAt?: number;
  retentionDays: number;
  ltr: { weekly: string | null; monthly: string | null; yearly: string | null; weekOfYear: number } | null;
  restorePoints: { earliest: RestorePoint | null; latest: RestorePoint | null };
  /** Seconds since the latest restore point: what a geo-restore now would lose at most, as far as this region knows; null without one. */
  estimatedDataLossSeconds: number | null;
  /** Descriptor format version. */
  format: number;
}

/** What one run of the retention job did. */
export interface RetentionResult {
  /** Vault objects deleted (expired snapshots, record batches, long-term backups). */
  deleted: number;
  /** Long-term backups taken. */
  ltrTaken: number;
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
