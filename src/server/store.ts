/**
 * The server's own metadata: pools, databases, dropped databases and operations, in a
 * SQLite file (`<dataDir>/server.db`) beside the tenants. It is written with
 * synchronous=FULL: a pool or database the API acknowledged must exist after a crash.
 */
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { GeodrError } from '../errors.js';

export interface PoolRecord {
  name: string;
  maxDatabases: number;
  maxConcurrentOperations: number;
  /** 0 = no quota. */
  storageQuotaBytes: number;
  createdAt: number;
}

export type DatabaseRole = 'primary' | 'secondary';

export interface DatabaseRecord {
  name: string;
  /** Stable id: names the directory, survives renames. */
  id: string;
  pool: string;
  role: DatabaseRole;
  createMode: string;
  createdAt: number;
  /** Logical size (pages × page size) when last observed. */
  sizeBytes: number;
  txid: number;
  checksum: string;
  epoch: number;
  lastWriteTime: number;
  /** The engine's database id: names the database's objects in the vault. */
  dbId: string;
  /** Last TXID the vault is known to hold. */
  shippedTxid: number;
  /** Short-term retention (PITR window), days. */
  retentionDays: number;
  /** Long-term retention policy (ISO-8601 durations), or null. */
  ltr: LtrPolicy | null;
  /** Last scheduled restore test: when, to which TXID, and its error if it failed. */
  verifiedAt: number;
  verifiedTxid: number;
  verifiedError: string | null;
  /** Where each epoch of this database's history began (the lineage), oldest first. */
  epochs: EpochStart[];
  /**
   * Set on a primary that learned a newer epoch exists elsewhere (it was failed over
   * while cut off): it refuses writes until it has rejoined as a secondary.
   */
  fencedBy: { epoch: number; server: string } | null;
}

export interface EpochStart {
  epoch: number;
  /** The TXID the epoch's first primary was promoted at: its records start after it. */
  startTxid: number;
  /** The database checksum at startTxid (hex). */
  checksum: string;
  server: string;
  time: number;
}

/** One side of a geo-replication link, as this server sees it. */
export interface LinkRecord {
  id: string;
  database: string;
  /** The role of the local database in this link. */
  localRole: DatabaseRole;
  partnerServer: string;
  partnerDatabase: string;
  state: LinkState;
  createdAt: number;
  modifiedAt: number;
  /** Newest TXID the secondary has applied and acknowledged. */
  lastTxid: number;
  /** Commit time (on the primary) of lastTxid. */
  lastTime: number;
  percentComplete: number;
}

export type LinkState = 'PENDING' | 'SEEDING' | 'CATCH_UP' | 'SUSPENDED';

export interface FailoverGroupRecord {
  name: string;
  partnerServer: string;
  /** The role of this server's side. */
  localRole: DatabaseRole;
  databases: string[];
  createdAt: number;
  modifiedAt: number;
}

export interface LtrPolicy {
  weekly: string | null;
  monthly: string | null;
  yearly: string | null;
  weekOfYear: number;
}

export interface DroppedRecord {
  id: string;
  name: string;
  pool: string;
  createdAt: number;
  droppedAt: number;
  /** Where the files now live, relative to the data directory. */
  location: string;
  txid: number;
  dbId: string;
  retentionDays: number;
}

export type OperationState = 'Pending' | 'InProgress' | 'Succeeded' | 'Failed' | 'Cancelled';

export interface OperationRecord {
  id: string;
  kind: string;
  state: OperationState;
  percentComplete: number;
  database: string | null;
  pool: string | null;
  createdAt: number;
  startedAt: number | null;
  endedAt: number | null;
  /** The error's code, its message without the code prefix, and its context (database, TXID, ...). */
  error: ({ code: string; message: string } & Record<string, unknown>) | null;
  params: Record<string, unknown>;
  result: Record<string, unknown> | null;
  cancelRequested: boolean;
}

const SCHEMA = `
create table if not exists pools (
  name text primary key, max_databases integer not null, max_concurrent_operations integer not null,
  storage_quota_bytes integer not null, created_at integer not null) strict;
create table if not exists databases (
  name text primary key, id text not null unique, pool text not null references pools(name), role text not null,
  create_mode text not null, created_at integer not null, size_bytes integer not null default 0,
  txid integer not null default 0, checksum text not null default '', epoch integer not null default 1,
  last_write_time integer not null default 0) strict;
create index if not exists databases_by_pool on databases(pool);
create table if not exists dropped_databases (
  id text primary key, name text not null, pool text not null, created_at integer not null,
  dropped_at integer not null, location text not null, txid integer not null) strict;
create table if not exists operations (
  id text primary key, kind text not null, state text not null, percent_complete integer not null,
  database_name text, pool text, created_at integer not null, started_at integer, ended_at integer,
  error text, params text not null, result text, cancel_requested integer not null default 0) strict;
create index if not exists operations_by_state on operations(state);
create table if not exists replication_links (
  id text primary key, database_name text not null, local_role text not null, partner_server text not null,
  partner_database text not null, state text not null, created_at integer not null, modified_at integer not null,
  last_txid integer not null default 0, last_time integer not null default 0, percent_complete integer not null default 0) strict;
create index if not exists replication_links_by_database on replication_links(database_name);
create table if not exists failover_groups (
  name text primary key, partner_server text not null, local_role text not null, databases text not null,
  created_at integer not null, modified_at integer not null) strict;
`;

/** Columns added after the first release of the schema: added in place when missing. */
const ADDED_COLUMNS: Array<[string, string, string]> = [
  ['databases', 'db_id', "text not null default ''"],
  ['databases', 'shipped_txid', 'integer not null default 0'],
  ['databases', 'retention_days', 'integer not null default 7'],
  ['databases', 'ltr', 'text'],
  ['databases', 'verified_at', 'integer not null default 0'],
  ['databases', 'verified_txid', 'integer not null default 0'],
  ['databases', 'verified_error', 'text'],
  ['databases', 'epochs', "text not null default '[]'"],
  ['databases', 'fenced_by', 'text'],
  ['dropped_databases', 'db_id', "text not null default ''"],
  ['dropped_databases', 'retention_days', 'integer not null default 7'],
  ['replication_links', 'siblings', "text not null default '[]'"],
];

type Row = Record<string, unknown>;

export class MetaStore {
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();

  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.exec(SCHEMA);
    for (const [table, column, decl] of ADDED_COLUMNS) {
      const cols = (this.db.prepare(`select name from pragma_table_info('${table}')`).all() as Array<{ name: string }>).map((c) => c.name);
      if (!cols.includes(column)) this.db.exec(`alter table ${table} add column ${column} ${decl}`);
    }
  }

  /**
   * Prepared once per statement text: every SQL request looks up its database (and, when
   * writing, its pool), and preparing costs more than running these one-row queries.
   */
  private sql(text: string): Database.Statement {
    let st = this.statements.get(text);
    if (st === undefined) {
      st = this.db.prepare(text);
      this.statements.set(text, st);
    }
    return st;
  }

  close(): void {
    this.db.close();
  }

  /** Runs fn in one transaction. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  // Pools

  listPools(): PoolRecord[] {
    return (this.sql('select * from pools order by name').all() as Row[]).map(toPool);
  }

  getPool(name: string): PoolRecord | undefined {
    const row = this.sql('select * from pools where name = ?').get(name) as Row | undefined;
    return row && toPool(row);
  }

  putPool(p: PoolRecord): void {
    this.sql(
        `insert into pools values (@name, @maxDatabases, @maxConcurrentOperations, @storageQuotaBytes, @createdAt)
         on conflict(name) do update set max_databases = excluded.max_databases,
           max_concurrent_operations = excluded.max_concurrent_operations, storage_quota_bytes = excluded.storage_quota_bytes`,
      )
      .run(p);
  }

  deletePool(name: string): void {
    this.sql('delete from pools where name = ?').run(name);
  }

  countDatabases(pool: string): number {
    return (this.sql('select count(*) n from databases where pool = ?').get(pool) as { n: number }).n;
  }

  poolUsedBytes(pool: string): number {
    return (this.sql('select coalesce(sum(size_bytes), 0) n from databases where pool = ?').get(pool) as { n: number }).n;
  }

  // Databases

  listDatabases(pool?: string): DatabaseRecord[] {
    const rows = pool === undefined ? this.sql('select * from databases order by name').all() : this.sql('select * from databases where pool = ? order by name').all(pool);
    return (rows as Row[]).map(toDatabase);
  }

  getDatabase(name: string): DatabaseRecord | undefined {
    const row = this.sql('select * from databases where name = ?').get(name) as Row | undefined;
    return row && toDatabase(row);
  }

  insertDatabase(d: DatabaseRecord): void {
    this.sql(
        `insert into databases (name, id, pool, role, create_mode, created_at, size_bytes, txid, checksum, epoch, last_write_time, db_id, shipped_txid, retention_days, ltr, epochs, fenced_by)
         values (@name, @id, @pool, @role, @createMode, @createdAt, @sizeBytes, @txid, @checksum, @epoch, @lastWriteTime, @dbId, @shippedTxid, @retentionDays, @ltrJson, @epochsJson, @fencedJson)`,
      )
      .run({ ...d, ltrJson: d.ltr === null ? null : JSON.stringify(d.ltr), epochsJson: JSON.stringify(d.epochs), fencedJson: d.fencedBy === null ? null : JSON.stringify(d.fencedBy) });
  }

  /** A role change: role, epoch, lineage and fence in one update. */
  setReplicationState(name: string, s: { role: DatabaseRole; epoch: number; epochs: EpochStart[]; fencedBy: { epoch: number; server: string } | null; createMode?: string }): void {
    // A new role or epoch starts a new lineage in the vault: what was shipped before says nothing about it.
    this.sql(
      `update databases set shipped_txid = case when role != @role or epoch != @epoch then 0 else shipped_txid end,
         role = @role, epoch = @epoch, epochs = @epochs, fenced_by = @fencedBy, create_mode = coalesce(@createMode, create_mode) where name = @name`,
    ).run({
      name,
      role: s.role,
      epoch: s.epoch,
      epochs: JSON.stringify(s.epochs),
      fencedBy: s.fencedBy === null ? null : JSON.stringify(s.fencedBy),
      createMode: s.createMode ?? null,
    });
  }

  /** Points a database record at new files (a re-seeded secondary). */
  setDatabaseFiles(name: string, id: string, dbId: string): void {
    this.sql('update databases set id = ?, db_id = ? where name = ?').run(id, dbId, name);
  }

  // Replication links

  listLinks(database?: string): LinkRecord[] {
    const rows = database === undefined ? this.sql('select * from replication_links order by database_name, created_at').all() : this.sql('select * from replication_links where database_name = ? order by created_at').all(database);
    return (rows as Row[]).map(toLink);
  }

  getLink(id: string): LinkRecord | undefined {
    const row = this.sql('select * from replication_links where id = ?').get(id) as Row | undefined;
    return row && toLink(row);
  }

  putLink(l: LinkRecord): void {
    this.sql(
        `insert into replication_links (id, database_name, local_role, partner_server, partner_database, state, created_at, modified_at, last_txid, last_time, percent_complete)
         values (@id, @database, @localRole, @partnerServer, @partnerDatabase, @state, @createdAt, @modifiedAt, @lastTxid, @lastTime, @percentComplete)
         on conflict(id) do update set database_name = excluded.database_name, local_role = excluded.local_role, partner_server = excluded.partner_server,
           partner_database = excluded.partner_database, state = excluded.state, modified_at = excluded.modified_at, last_txid = excluded.last_txid,
           last_time = excluded.last_time, percent_complete = excluded.percent_complete`,
      )
      .run(l);
  }

  /**
   * On a secondary: the primary's other secondaries, as its heartbeats last named them.
   * Kept on disk so a forced failover after a restart (no heartbeat since) still claims
   * its epoch with them.
   */
  setLinkSiblings(id: string, siblings: Array<{ linkId: string; server: string; database: string }>): void {
    this.sql('update replication_links set siblings = ? where id = ?').run(JSON.stringify(siblings), id);
  }

  linkSiblings(id: string): Array<{ linkId: string; server: string; database: string }> {
    const row = this.sql('select siblings from replication_links where id = ?').get(id) as { siblings: string } | undefined;
    return row === undefined ? [] : (JSON.parse(row.siblings) as Array<{ linkId: string; server: string; database: string }>);
  }

  /** Progress only: cheap enough to run at every acknowledgement batch. */
  setLinkProgress(id: string, lastTxid: number, lastTime: number): void {
    this.sql('update replication_links set last_txid = ?, last_time = ? where id = ? and last_txid <= ?').run(lastTxid, lastTime, id, lastTxid);
  }

  deleteLink(id: string): void {
    this.sql('delete from replication_links where id = ?').run(id);
  }

  // Failover groups

  listFailoverGroups(): FailoverGroupRecord[] {
    return (this.sql('select * from failover_groups order by name').all() as Row[]).map(toGroup);
  }

  getFailoverGroup(name: string): FailoverGroupRecord | undefined {
    const row = this.sql('select * from failover_groups where name = ?').get(name) as Row | undefined;
    return row && toGroup(row);
  }

  putFailoverGroup(g: FailoverGroupRecord): void {
    this.sql(
        `insert into failover_groups values (@name, @partnerServer, @localRole, @databasesJson, @createdAt, @modifiedAt)
         on conflict(name) do update set partner_server = excluded.partner_server, local_role = excluded.local_role,
           databases = excluded.databases, modified_at = excluded.modified_at`,
      )
      .run({ ...g, databasesJson: JSON.stringify(g.databases) });
  }

  deleteFailoverGroup(name: string): void {
    this.sql('delete from failover_groups where name = ?').run(name);
  }

  /** Records what an open database last reported. */
  updateDatabaseState(name: string, s: { sizeBytes: number; txid: number; checksum: string; epoch: number; lastWriteTime: number }): void {
    this.sql('update databases set size_bytes = @sizeBytes, txid = @txid, checksum = @checksum, epoch = @epoch, last_write_time = @lastWriteTime where name = @name')
      .run({ ...s, name });
  }

  setVerified(name: string, at: number, txid: number, error: string | null): void {
    this.sql('update databases set verified_at = ?, verified_txid = ?, verified_error = ? where name = ?').run(at, txid, error, name);
  }

  setDbId(name: string, dbId: string): void {
    this.sql('update databases set db_id = ? where name = ?').run(dbId, name);
  }

  setShippedTxid(name: string, txid: number): void {
    this.sql('update databases set shipped_txid = ? where name = ? and shipped_txid < ?').run(txid, name, txid);
  }

  setRetention(name: string, retentionDays: number, ltr: LtrPolicy | null): void {
    this.sql('update databases set retention_days = ?, ltr = ? where name = ?').run(retentionDays, ltr === null ? null : JSON.stringify(ltr), name);
  }

  setDatabasePool(name: string, pool: string): void {
    this.sql('update databases set pool = ? where name = ?').run(pool, name);
  }

  renameDatabase(from: string, to: string): void {
    this.sql('update databases set name = ? where name = ?').run(to, from);
  }

  deleteDatabase(name: string): void {
    this.sql('delete from databases where name = ?').run(name);
  }

  // Dropped databases

  insertDropped(d: DroppedRecord): void {
    this.sql(
        'insert into dropped_databases (id, name, pool, created_at, dropped_at, location, txid, db_id, retention_days) values (@id, @name, @pool, @createdAt, @droppedAt, @location, @txid, @dbId, @retentionDays)',
      )
      .run(d);
  }

  listDropped(): DroppedRecord[] {
    return (this.sql('select * from dropped_databases order by dropped_at').all() as Row[]).map((r) => ({
      id: String(r.id),
      name: String(r.name),
      pool: String(r.pool),
      createdAt: Number(r.created_at),
      droppedAt: Number(r.dropped_at),
      location: String(r.location),
      txid: Number(r.txid),
      dbId: r.db_id as string,
      retentionDays: Number(r.retention_days),
    }));
  }

  // Operations

  insertOperation(o: Omit<OperationRecord, 'id'> & { id?: string }): OperationRecord {
    const op: OperationRecord = { ...o, id: o.id ?? randomUUID() };
    this.sql(
        `insert into operations values (@id, @kind, @state, @percentComplete, @database, @pool, @createdAt, @startedAt, @endedAt,
          @error, @params, @result, @cancelRequested)`,
      )
      .run(operationRow(op));
    return op;
  }

  updateOperation(op: OperationRecord): void {
    this.sql(
        `update operations set state = @state, percent_complete = @percentComplete, started_at = @startedAt, ended_at = @endedAt,
          error = @error, result = @result, cancel_requested = @cancelRequested, database_name = @database where id = @id`,
      )
      .run(operationRow(op));
  }

  getOperation(id: string): OperationRecord | undefined {
    const row = this.sql('select * from operations where id = ?').get(id) as Row | undefined;
    return row && toOperation(row);
  }

  listOperations(filter: { state?: string | undefined; database?: string | undefined; limit?: number } = {}): OperationRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.state !== undefined) {
      where.push('state = ?');
      args.push(filter.state);
    }
    if (filter.database !== undefined) {
      where.push('database_name = ?');
      args.push(filter.database);
    }
    const sql = `select * from operations ${where.length > 0 ? `where ${where.join(' and ')}` : ''} order by created_at desc, id limit ?`;
    return (this.sql(sql).all(...args, filter.limit ?? 1000) as Row[]).map(toOperation);
  }

  countOperationsByState(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const r of this.sql('select state, count(*) n from operations group by state').all() as Array<{ state: string; n: number }>) out[r.state] = r.n;
    return out;
  }
}

function toPool(r: Row): PoolRecord {
  return {
    name: String(r.name),
    maxDatabases: Number(r.max_databases),
    maxConcurrentOperations: Number(r.max_concurrent_operations),
    storageQuotaBytes: Number(r.storage_quota_bytes),
    createdAt: Number(r.created_at),
  };
}

function toDatabase(r: Row): DatabaseRecord {
  return {
    name: String(r.name),
    id: String(r.id),
    pool: String(r.pool),
    role: String(r.role) as DatabaseRole,
    createMode: String(r.create_mode),
    createdAt: Number(r.created_at),
    sizeBytes: Number(r.size_bytes),
    txid: Number(r.txid),
    checksum: String(r.checksum),
    epoch: Number(r.epoch),
    lastWriteTime: Number(r.last_write_time),
    dbId: r.db_id as string,
    shippedTxid: Number(r.shipped_txid),
    retentionDays: Number(r.retention_days),
    ltr: r.ltr === null || r.ltr === undefined ? null : (JSON.parse(r.ltr as string) as LtrPolicy),
    verifiedAt: Number(r.verified_at ?? 0),
    verifiedTxid: Number(r.verified_txid ?? 0),
    verifiedError: (r.verified_error as string | null | undefined) ?? null,
    epochs: JSON.parse((r.epochs as string | undefined) ?? '[]') as EpochStart[],
    fencedBy: r.fenced_by === null || r.fenced_by === undefined ? null : (JSON.parse(r.fenced_by as string) as { epoch: number; server: string }),
  };
}

function toLink(r: Row): LinkRecord {
  return {
    id: String(r.id),
    database: String(r.database_name),
    localRole: String(r.local_role) as DatabaseRole,
    partnerServer: String(r.partner_server),
    partnerDatabase: String(r.partner_database),
    state: String(r.state) as LinkState,
    createdAt: Number(r.created_at),
    modifiedAt: Number(r.modified_at),
    lastTxid: Number(r.last_txid),
    lastTime: Number(r.last_time),
    percentComplete: Number(r.percent_complete),
  };
}

function toGroup(r: Row): FailoverGroupRecord {
  return {
    name: String(r.name),
    partnerServer: String(r.partner_server),
    localRole: String(r.local_role) as DatabaseRole,
    databases: JSON.parse(String(r.databases)) as string[],
    createdAt: Number(r.created_at),
    modifiedAt: Number(r.modified_at),
  };
}

function operationRow(op: OperationRecord): Record<string, unknown> {
  return {
    ...op,
    error: op.error === null ? null : JSON.stringify(op.error),
    params: JSON.stringify(op.params),
    result: op.result === null ? null : JSON.stringify(op.result),
    cancelRequested: op.cancelRequested ? 1 : 0,
  };
}

function toOperation(r: Row): OperationRecord {
  const parse = (v: unknown): never | Record<string, unknown> | null => {
    if (v === null || v === undefined) return null;
    try {
      return JSON.parse(v as string) as Record<string, unknown>;
    } catch (e) {
      throw new GeodrError('RECORD_CORRUPT', 'an operation record in server.db is not valid JSON', { object: 'server.db', details: { id: r.id } }, { cause: e });
    }
  };
  return {
    id: String(r.id),
    kind: String(r.kind),
    state: String(r.state) as OperationState,
    percentComplete: Number(r.percent_complete),
    database: r.database_name === null ? null : (r.database_name as string),
    pool: r.pool === null ? null : (r.pool as string),
    createdAt: Number(r.created_at),
    startedAt: r.started_at === null ? null : Number(r.started_at),
    endedAt: r.ended_at === null ? null : Number(r.ended_at),
    error: parse(r.error) as OperationRecord['error'],
    params: parse(r.params) ?? {},
    result: parse(r.result),
    cancelRequested: Number(r.cancel_requested) === 1,
  };
}
