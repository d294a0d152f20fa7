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
 * the {@link RestoreMode}s build it from backups (`GeodrClient.restoreDatabase`); `Secondary`
 * (a readable geo-secondary) and `Copy` (a one-time copy) seed it from a primary on another
 * server (`GeodrClient.createSecondary`). All but `Default` answer with an operation.
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
    /** The paired vault holds every records batch up to this TXID (copies may finish out of order; this is the gap-free end). */
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

// Geo-replication

/** Where a link stands: `SEEDING` (the first copy), `CATCH_UP` (streaming), `SUSPENDED` (the partner is not reachable), `PENDING`. */
export type ReplicationLinkState = 'PENDING' | 'SEEDING' | 'CATCH_UP' | 'SUSPENDED';

/** A replication link as one side sees it (`sys.geo_replication_links` and `sys.dm_geo_replication_link_status`). */
export interface ReplicationLink {
  id: string;
  database: string;
  /** The role of this side's database. */
  role: 'Primary' | 'Secondary';
  partnerServer: string;
  partnerDatabase: string;
  partnerRole: 'Primary' | 'Secondary';
  state: ReplicationLinkState;
  /** ISO 8601. */
  createdAt: string;
  modifiedAt: string;
  /** The newest TXID the secondary applied. */
  lastReplicatedTxid: number;
  /** The primary's commit time of that TXID, ISO 8601; null before the first. */
  lastReplicatedTime: string | null;
  /** Transactions the secondary lacks. */
  lagTxids: number;
  /** How far behind the secondary is, ms; null when it cannot be told (the primary's log no longer has the time). */
  lagMs: number | null;
  /** Seeding progress, 0-100; 100 once seeded. */
  percentComplete: number;
  /** Bytes sent (primary side) or received (secondary side) since the server started. */
  bytesTransferred: number;
  /** Why the stream last failed (secondary side), or null. */
  lastError: string | null;
}

/** Options of `GeodrClient.addSecondary`. */
export interface AddSecondaryOptions {
  /** The server (one of the primary's peers) that will hold the secondary. */
  partnerServer: string;
  /** Its name there; default: the primary's name. */
  partnerDatabase?: string;
  /** Its elastic pool there; default: that server's default pool. */
  partnerElasticPoolName?: string;
}

/** What `GeodrClient.addSecondary` answers: the seeding operation, which runs on (and is polled on) the partner server. */
export interface AddSecondaryResult {
  operation: Operation;
  /** The partner server, by name. */
  server: string;
  /** The secondary's name on it. */
  database: string;
  /** The partner server's URL for clients (follow the seeding operation there). */
  serverUrl: string;
  /** The new link's id (the same on both servers). */
  linkId: string;
}

/** Options of `GeodrClient.createSecondary`, asked of the server that will hold the copy. */
export interface CreateSecondaryOptions {
  /** The server holding the primary (one of this server's peers), by name. */
  sourceServer: string;
  /** The primary database there. */
  sourceDatabaseName: string;
  /** Elastic pool of the new database; default: this server's default pool. */
  elasticPoolName?: string;
  /** A one-time copy (createMode `Copy`) that becomes an independent database once seeded, instead of a continuously replicated secondary. */
  copy?: boolean;
}

/** What removing a link answers: the link id, and the database that is now independent and writable. */
export interface RemovedLink {
  removed: string;
  independent: { server: string; database: string };
}

/** What a failover (planned or forced) answers, from the new primary. */
export interface FailoverResult {
  database: string;
  /** The new epoch: every copy at an older one is fenced. */
  epoch: number;
  /** The TXID the new primary starts its epoch at. */
  txid: number;
  /** How long the failover took on the server, ms. */
  ms: number;
}

/** Options of `GeodrClient.waitForCopySync`. */
export interface WaitForCopySyncOptions {
  /** Wait only for the secondary on this server (default: every secondary). */
  partnerServer?: string;
  partnerDatabase?: string;
  /** The server's limit, 1-600000 ms (default: its `replication.syncTimeoutMs`); past it the call fails with REPLICATION_TIMEOUT. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** What `GeodrClient.waitForCopySync` answers: the primary's TXID when the call arrived, now on every secondary waited for. */
export interface CopySyncResult {
  txid: number;
  secondaries: ReplicationLink[];
}

/**
 * What a deposed primary wrote alone, kept when it rejoined the new primary: TXIDs
 * `fromTxid`-`toTxid` (after `divergedAt`, where the histories parted) never reached
 * the new primary. The records and the database as that copy last had it are kept
 * as files (paths relative to the server's data directory).
 */
export interface LostTransactionsReport {
  id: string;
  database: string;
  dbId: string;
  divergedAt: number;
  fromTxid: number;
  toTxid: number;
  transactions: number;
  /** Commit times of the first and last lost transaction, ISO 8601. */
  firstTime: string | null;
  lastTime: string | null;
  pagesChanged: number;
  /** The epoch the lost transactions were written in. */
  epoch: number;
  newPrimary: { server: string; database: string; epoch: number };
  /** ISO 8601. */
  createdAt: string;
  files: { records: string; database: string };
}

/** A listener alias's target: the server a failover group's `rw` or `ro` listener points at. */
export interface ListenerTarget {
  server: string;
  url: string;
}

/** `rw` points at the side whose databases are primaries, `ro` at the other. */
export type ListenerKind = 'rw' | 'ro';

/** A failover group, as one of its two servers sees it. */
export interface FailoverGroup {
  name: string;
  /** The server answering. */
  server: string;
  partnerServer: string;
  /** This server's side: `Primary` when most of the group's databases are primaries here. */
  role: 'Primary' | 'Secondary';
  /** The group's databases here, their names on the partner, and their role here (`primary`, `secondary`, or `missing`). */
  databases: Array<{ database: string; partnerDatabase: string; role: string }>;
  readWriteListener: ListenerTarget;
  readOnlyListener: ListenerTarget;
  /** False while the databases are split between the sides (a failover under way or half done). */
  consistent: boolean;
  /** ISO 8601. */
  createdAt: string;
  modifiedAt: string;
}

/** Settings of a failover group, given on its primary side. */
export interface FailoverGroupSettings {
  /** The other side; every database needs a geo-secondary there. */
  partnerServer: string;
  /** Databases of this server that fail over together. */
  databases: string[];
}

/** What a group failover answers: the group afterwards, and each database that moved. */
export interface FailoverGroupFailoverResult {
  group: FailoverGroup;
  databases: Array<{ database: string; epoch: number; txid: number }>;
  ms: number;
}

/**
 * How a SQL write is acknowledged. `local` (the server's default): once durable in the
 * primary's log. `sync`: also once a geo-secondary applied it; if none confirms within
 * the server's `replication.syncTimeoutMs` the call fails with REPLICATION_TIMEOUT
 * (`context.txid` holds the TXID: it is committed on the primary, not rolled back).
 */
export type Durability = 'sync' | 'local';

/**
 * A point in a database's history as a client saw it: the epoch of the copy that
 * answered and the TXID its answer reflected. Ordered by epoch, then TXID (see
 * `GeodrClient` "Consistency").
 */
export interface Position {
  epoch: number;
  txid: number;
}
