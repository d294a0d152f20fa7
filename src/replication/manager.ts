/**
 * Active geo-replication on one server: the links of its databases (as primary or
 * secondary), seeding, planned and forced failover, fencing of a deposed primary and
 * its return as a secondary, and failover groups.
 *
 * Roles and epochs. Every role change raises the database's epoch, and the lineage
 * (`epochs`: where each epoch began, at which TXID and checksum) travels with the
 * database to every copy. A copy that meets a newer epoch than its own for the same
 * database has been deposed: a primary fences itself (writes refused), keeps what it
 * wrote alone as a lost-transactions report, and rejoins the new primary as a secondary
 * by rewinding only the pages it changed on its own. See docs/ARCHITECTURE.md
 * "Geo-replication" for the protocol.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { GeodrError, isGeodrError } from '../errors.js';
import { checksumFromHex, checksumHex, encodeRecord, PrimaryDatabase, ReplicaDatabase, takeDiffUnit, takeIncrementalSnapshot, takeSnapshot } from '../engine/index.js';
import type { ServerConfig } from '../server/config.js';
import { DatabaseHost } from '../server/host.js';
import type { OperationContext } from '../server/operations.js';
import type { ServerService } from '../server/service.js';
import type { DatabaseRecord, EpochStart, FailoverGroupRecord, LinkRecord, MetaStore, OperationRecord } from '../server/store.js';
import type { ReplicationHooks, SqlResult, SqlStatement } from '../server/sql.js';
import { parseManagementStatement, querySysViews, readsSysViews, type SysViewData } from '../server/tsql.js';
import { validateName } from '../server/names.js';
import { Peers, peerError } from './peers.js';
import type { LostTransactionsReport, ReplicationLink } from '../sdk/types.js';
import { Sink } from './sink.js';
import { ReplicationSource } from './source.js';

export const MAX_SECONDARIES = 4;
/** How long a sibling's claim of an epoch blocks another forced failover (the claimer may have died). */
const CLAIM_TTL_MS = 10_000;

/** A link as the API and the views show it, and a lost-transactions report: the SDK's wire types. */
export type LinkView = ReplicationLink;
export type LostReport = LostTransactionsReport;

interface Gate {
  reason: string;
  done: Promise<void>;
  open: () => void;
  since: number;
}

export interface ManagerDeps {
  config: ServerConfig;
  store: MetaStore;
  host: DatabaseHost;
  service: ServerService;
  logger: Logger;
}

interface ReplicaHolder {
  replica: ReplicaDatabase;
}

export class ReplicationManager implements ReplicationHooks {
  readonly peers: Peers;
  readonly source: ReplicationSource;
  private readonly replicas = new Map<string, ReplicaHolder>();
  private readonly sinks = new Map<string, Sink>();
  private readonly gates = new Map<string, Gate>();
  private readonly rejoining = new Set<string>();
  /** Epochs claimed for forced failovers, by database: this server's own, or a sibling's. */
  private readonly claims = new Map<string, { epoch: number; server: string; at: number }>();
  /** Primaries fenced by a newer epoch (mirrors `fencedBy` in the store, for the write path). */
  private readonly fencedNames = new Set<string>();
  /** Databases handed to a new primary and being turned into secondaries: writes are answered at once. */
  private readonly movedTo = new Map<string, { server: string; database: string }>();
  private monitor: NodeJS.Timeout | undefined;
  private watchTicks = 0;
  private stopped = false;
  private readonly config: ServerConfig;
  private readonly store: MetaStore;
  private readonly host: DatabaseHost;
  private readonly service: ServerService;
  private readonly logger: Logger;
  /** Called after a database became primary at a new epoch here (the backup service starts the new lineage). */
  onPromoted: ((database: string) => void) | undefined;
  /** Counts for metrics. */
  readonly counters = { failovers: 0, forcedFailovers: 0, rejoins: 0, resyncs: 0, reseeds: 0, fences: 0 };

  constructor(deps: ManagerDeps) {
    this.config = deps.config;
    this.store = deps.store;
    this.host = deps.host;
    this.service = deps.service;
    this.logger = deps.logger.child({ component: 'replication' });
    this.peers = new Peers(deps.config.peers, deps.config.name, deps.config.replication.peerTimeoutMs);
    this.source = new ReplicationSource(deps.store, this.logger, deps.config.replication.heartbeatMs);
    const ops = deps.service.operations;
    ops.register('seedSecondary', async (ctx) => this.runSeed(ctx));
    ops.register('rejoinAsSecondary', async (ctx) => this.runRejoin(ctx));
  }

  private get self(): string {
    return this.config.name;
  }

  /** The URL clients use for a peer (its publicUrl, else the URL this server reaches it at). */
  private peerPublicUrl(name: string): string {
    const p = this.peers.get(name);
    return (p.publicUrl ?? p.url).replace(/\/+$/, '');
  }

  private get rc(): ServerConfig['replication'] {
    return this.config.replication;
  }

  // Lifecycle

  /** Opens every secondary, starts its stream, and checks every linked primary's epoch before it takes writes. */
  start(): void {
    // One query for every link, not one per database: a server may host thousands.
    const linksByDb = new Map<string, LinkRecord[]>();
    for (const l of this.store.listLinks()) linksByDb.set(l.database, [...(linksByDb.get(l.database) ?? []), l]);
    for (const rec of this.store.listDatabases()) {
      if (rec.fencedBy !== null) this.fencedNames.add(rec.name);
      const links = linksByDb.get(rec.name) ?? [];
      if (rec.role === 'secondary') {
        const link = links.find((l) => l.localRole === 'secondary');
        if (link === undefined || link.state === 'SEEDING' || link.state === 'PENDING') continue;
        try {
          this.openReplica(rec);
          this.startSink(rec.name, link);
        } catch (e) {
          this.logger.error({ err: e, database: rec.name }, 'cannot open secondary; re-seeding');
          this.reseed(rec.name, link);
        }
      } else if (rec.fencedBy !== null) {
        if (rec.fencedBy.server !== '') this.scheduleRejoin(rec.name);
        else void this.checkEpoch(rec.name);
      } else if (links.some((l) => l.localRole === 'primary')) {
        // A primary that was away may have been failed over meanwhile: it asks its
        // partners before it takes a write, so it never serves one in a stale epoch.
        this.holdWrites(rec.name, 'checking the epoch with partners after start', this.checkEpoch(rec.name, 3));
      }
    }
    this.monitor = setInterval(() => void this.watch(), 1000);
    this.monitor.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.monitor !== undefined) clearInterval(this.monitor);
    await Promise.all([...this.sinks.values()].map((s) => s.stop()));
    this.sinks.clear();
    this.source.close();
    for (const h of this.replicas.values()) h.replica.close();
    this.replicas.clear();
    for (const g of this.gates.values()) g.open();
  }

  // Hooks for SQL

  replica(name: string): ReplicaDatabase | undefined {
    return this.replicas.get(name)?.replica;
  }

  async beforeWrite(name: string): Promise<void> {
    const gate = this.gates.get(name);
    if (gate !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        gate.done.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), this.config.limits.writeWaitMs);
        }),
      ]);
      clearTimeout(timer);
      if (timedOut) throw new GeodrError('UNAVAILABLE', `writes to ${name} are held: ${gate.reason}`, { database: name });
    }
    const moved = this.movedTo.get(name);
    if (moved !== undefined) {
      throw new GeodrError('READ_ONLY', `database ${name} was failed over to ${moved.database} on ${moved.server}; send writes there`, { database: name, details: { primaryServer: moved.server, primaryDatabase: moved.database } });
    }
    // Only a fenced database or a secondary costs a metadata lookup here.
    if (!this.fencedNames.has(name) && !this.replicas.has(name)) return;
    const rec = this.store.getDatabase(name);
    if (rec?.fencedBy != null) {
      throw new GeodrError('STALE_EPOCH', `database ${name} was failed over to server ${rec.fencedBy.server} (epoch ${rec.fencedBy.epoch}); this copy is stale and takes no writes`, {
        database: name,
        details: { primaryServer: rec.fencedBy.server, epoch: rec.fencedBy.epoch },
      });
    }
    if (rec?.role === 'secondary') throw this.readOnlyError(name);
  }

  readOnlyError(name: string): GeodrError {
    const link = this.store.listLinks(name).find((l) => l.localRole === 'secondary');
    return new GeodrError('READ_ONLY', `database ${name} is a geo-secondary: it serves reads; send writes to its primary${link !== undefined ? ` (${link.partnerDatabase} on ${link.partnerServer})` : ''}`, {
      database: name,
      details: { primaryServer: link?.partnerServer, primaryDatabase: link?.partnerDatabase },
    });
  }

  waitReplicated(name: string, txid: number): Promise<void> {
    return this.source.waitFor(name, txid, { timeoutMs: this.rc.syncTimeoutMs });
  }

  /**
   * The seeds' T-SQL on the SQL endpoint: ALTER DATABASE … ADD/REMOVE SECONDARY,
   * FAILOVER, FORCE_FAILOVER_ALLOW_DATA_LOSS (admin), sp_wait_for_database_copy_sync
   * (anyone who may use the database) and the system views.
   */
  async statement(database: string, stmt: SqlStatement, admin: boolean): Promise<SqlResult | undefined> {
    const m = parseManagementStatement(stmt.sql, database);
    if (m !== undefined) {
      const needAdmin = (): void => {
        if (!admin) throw new GeodrError('FORBIDDEN', 'ALTER DATABASE needs an admin token', { database: m.database });
      };
      const one = (columns: string[], row: Array<string | number | null>): SqlResult => ({ columns, decltypes: columns.map(() => null), rows: [row], rowsAffected: 0, lastInsertRowid: null, txid: 0 });
      switch (m.kind) {
        case 'addSecondary': {
          needAdmin();
          const r = await this.addSecondary(m.database, { partnerServer: m.server, partnerDatabase: m.secondaryDatabase, partnerPool: m.pool });
          return one(['operation_id', 'partner_server', 'partner_database', 'state'], [typeof r.operation.id === 'string' ? r.operation.id : '', r.server, r.database, typeof r.operation.state === 'string' ? r.operation.state : '']);
        }
        case 'removeSecondary': {
          needAdmin();
          const link = this.store.listLinks(m.database).find((l) => l.localRole === 'primary' && l.partnerServer === m.server);
          if (link === undefined) throw new GeodrError('NOT_FOUND', `database ${m.database} has no secondary on server ${m.server}`, { database: m.database });
          const r = await this.removeLink(m.database, link.id);
          return one(['link_guid', 'partner_server', 'partner_database'], [r.removed, r.independent.server, r.independent.database]);
        }
        case 'failover':
        case 'forceFailover': {
          needAdmin();
          const r = m.kind === 'failover' ? await this.failover(m.database) : await this.forceFailover(m.database);
          return one(['database', 'epoch', 'txid', 'duration_ms'], [r.database, r.epoch, r.txid, r.ms]);
        }
        case 'waitForCopySync': {
          const r = await this.waitForCopySync(database, { partnerServer: m.server, partnerDatabase: m.database });
          return one(['txid'], [r.txid]);
        }
      }
    }
    if (readsSysViews(stmt.sql)) {
      if (!admin) throw new GeodrError('FORBIDDEN', 'the system views need an admin token', { database });
      return querySysViews(stmt.sql, stmt.args, stmt.named, this.sysViewData(), this.store.getDatabase(database)?.txid ?? 0, this.config.limits);
    }
    return undefined;
  }

  private sysViewData(): SysViewData {
    return {
      server: this.self,
      links: this.store.listLinks().map((l) => {
        const v = this.linkView(l);
        const rec = this.store.getDatabase(l.database);
        return {
          linkId: l.id,
          database: l.database,
          databaseId: rec?.id,
          localRole: l.localRole,
          partnerServer: l.partnerServer,
          partnerDatabase: l.partnerDatabase,
          state: v.state,
          createdAt: l.createdAt,
          modifiedAt: l.modifiedAt,
          lastReplicatedTxid: v.lastReplicatedTxid,
          lastReplicatedTime: v.lastReplicatedTime === null ? null : Date.parse(v.lastReplicatedTime),
          lagTxids: v.lagTxids,
          lagMs: v.lagMs,
          percentComplete: v.percentComplete,
        };
      }),
      operations: this.service.operations.list({ limit: 1000 }).map((o) => ({
        id: o.id,
        kind: o.kind,
        state: o.state,
        percentComplete: o.percentComplete,
        database: o.database,
        createdAt: o.createdAt,
        startedAt: o.startedAt,
        endedAt: o.endedAt,
        error: o.error === null ? null : { code: o.error.code, message: o.error.message },
      })),
    };
  }

  /** Checks a client's view: a client that saw a newer epoch than this copy has must not write here. */
  checkMinEpoch(name: string, minEpoch: number): void {
    const rec = this.store.getDatabase(name);
    if (rec === undefined) return;
    const epoch = this.epochOf(rec);
    if (minEpoch > epoch) {
      if (rec.role === 'primary') this.holdWrites(name, 'a client saw a newer epoch; checking with partners', this.checkEpoch(name));
      throw new GeodrError('STALE_EPOCH', `the client has seen epoch ${minEpoch} of ${name}; this copy is at epoch ${epoch} and may be a deposed primary`, { database: name, details: { epoch, minEpoch } });
    }
  }

  /** The epoch a database is at now (live from the engine when open). */
  epochOf(rec: DatabaseRecord): number {
    const rep = this.replica(rec.name);
    if (rep !== undefined) return rep.position.epoch;
    const open = this.host.peek(rec.name);
    return open?.db.epoch ?? rec.epoch;
  }

  /** Every role, epoch and fence change goes through here, so the write path can check fences in memory. */
  private setState(name: string, state: Parameters<MetaStore['setReplicationState']>[1]): void {
    this.store.setReplicationState(name, state);
    if (state.fencedBy !== null) this.fencedNames.add(name);
    else this.fencedNames.delete(name);
  }

  private holdWrites(name: string, reason: string, work: Promise<unknown>): void {
    if (this.gates.has(name)) return;
    let open!: () => void;
    const done = new Promise<void>((resolve) => (open = resolve));
    const gate: Gate = { reason, done, open, since: Date.now() };
    this.gates.set(name, gate);
    void work
      .catch((e: unknown) => this.logger.warn({ err: e, database: name }, reason))
      .finally(() => {
        if (this.gates.get(name) === gate) this.gates.delete(name);
        open();
      });
  }

  // Views

  listLinks(name: string): LinkView[] {
    this.service.requireDatabase(name);
    return this.store.listLinks(name).map((l) => this.linkView(l));
  }

  allLinks(): LinkView[] {
    return this.store.listLinks().map((l) => this.linkView(l));
  }

  getLink(name: string, linkId: string): LinkView {
    return this.linkView(this.requireLink(name, linkId));
  }

  private requireLink(name: string, linkId: string): LinkRecord {
    this.service.requireDatabase(name);
    const l = this.store.getLink(linkId);
    if (l === undefined || l.database !== name) throw new GeodrError('NOT_FOUND', `database ${name} has no replication link ${JSON.stringify(linkId)}`, { database: name, details: { link: linkId } });
    return l;
  }

  linkView(l: LinkRecord): LinkView {
    let state = l.state;
    let lastTxid = l.lastTxid;
    let lastTime = l.lastTime;
    let lagTxids = 0;
    let lagMs: number | null = null;
    let bytes = 0;
    let lastError: string | null = null;
    if (l.localRole === 'primary') {
      const p = this.source.progress.get(l.id);
      const open = this.host.peek(l.database);
      const head = open?.db.durableTxid ?? this.store.getDatabase(l.database)?.txid ?? 0;
      if (p !== undefined) {
        lastTxid = p.ackedTxid;
        lastTime = p.ackedTime;
        bytes = p.bytesSent;
        if (state !== 'SEEDING' || p.ackedTxid > 0) state = p.streams > 0 ? 'CATCH_UP' : 'SUSPENDED';
      }
      lagTxids = Math.max(0, head - lastTxid);
      if (lagTxids === 0) lagMs = 0;
      else {
        const firstUnacked = open?.db.txLog.timestampOf(lastTxid + 1);
        lagMs = firstUnacked === undefined ? null : Math.max(0, Date.now() - firstUnacked);
      }
    } else {
      const sink = this.sinks.get(l.database);
      const rep = this.replica(l.database);
      if (rep !== undefined) {
        lastTxid = rep.txid;
        lastTime = rep.position.timestamp;
      }
      if (sink !== undefined) {
        bytes = sink.bytesReceived;
        lastError = sink.lastError ?? null;
        state = sink.connected ? 'CATCH_UP' : 'SUSPENDED';
        lagTxids = Math.max(0, sink.primaryTxid - lastTxid);
        lagMs = lagTxids === 0 ? 0 : sink.primaryTxidTime > 0 ? Math.max(0, sink.primaryTxidTime - lastTime) : null;
        if (!sink.connected && sink.lastHeartbeatAt > 0) lagMs = Math.max(lagMs ?? 0, Date.now() - sink.lastHeartbeatAt);
      }
    }
    return {
      id: l.id,
      database: l.database,
      role: l.localRole === 'primary' ? 'Primary' : 'Secondary',
      partnerServer: l.partnerServer,
      partnerDatabase: l.partnerDatabase,
      partnerRole: l.localRole === 'primary' ? 'Secondary' : 'Primary',
      state,
      createdAt: new Date(l.createdAt).toISOString(),
      modifiedAt: new Date(l.modifiedAt).toISOString(),
      lastReplicatedTxid: lastTxid,
      lastReplicatedTime: lastTime > 0 ? new Date(lastTime).toISOString() : null,
      lagTxids,
      lagMs,
      percentComplete: state === 'SEEDING' ? l.percentComplete : 100,
      bytesTransferred: bytes,
      lastError,
    };
  }

  // Creating links

  /**
   * On the primary's server: adds a secondary of `name` on another server (ALTER
   * DATABASE … ADD SECONDARY ON SERVER). The secondary's server creates the database
   * and seeds it as a queued operation; its operation is returned.
   */
  async addSecondary(name: string, opts: { partnerServer: string; partnerDatabase?: string | undefined; partnerPool?: string | undefined }): Promise<{ operation: Record<string, unknown>; server: string; database: string; serverUrl: string; linkId: string }> {
    const rec = this.service.requireDatabase(name);
    validateName('server', opts.partnerServer);
    if (opts.partnerServer === this.self) throw new GeodrError('INVALID_ARGUMENT', `a secondary must be on another server than its primary (${this.self})`, { database: name });
    if (rec.role !== 'primary') throw new GeodrError('CONFLICT', `database ${name} is a geo-secondary; add secondaries to its primary`, { database: name });
    this.checkCanAddLink(rec, opts.partnerServer);
    this.peers.get(opts.partnerServer);
    const partnerDatabase = opts.partnerDatabase ?? name;
    validateName('database', partnerDatabase);
    // The link is recorded here first (PENDING), so concurrent additions count against the limit.
    const now = Date.now();
    const link: LinkRecord = { id: randomUUID(), database: name, localRole: 'primary', partnerServer: opts.partnerServer, partnerDatabase, state: 'PENDING', createdAt: now, modifiedAt: now, lastTxid: 0, lastTime: 0, percentComplete: 0 };
    this.store.putLink(link);
    const body: Record<string, unknown> = { createMode: 'Secondary', sourceServer: this.self, sourceDatabaseName: name, linkId: link.id };
    if (opts.partnerPool !== undefined) body.elasticPoolName = opts.partnerPool;
    try {
      const operation = await this.peers.call<Record<string, unknown>>(opts.partnerServer, 'PUT', `/v1/databases/${encodeURIComponent(partnerDatabase)}`, { body });
      // The seeding operation lives on the partner: its id and the partner's client URL let a caller follow it.
      return { operation, server: opts.partnerServer, database: partnerDatabase, serverUrl: this.peerPublicUrl(opts.partnerServer), linkId: link.id };
    } catch (e) {
      this.store.deleteLink(link.id);
      throw e;
    }
  }

  private checkCanAddLink(rec: DatabaseRecord, partnerServer: string, linkId?: string): void {
    if (rec.fencedBy !== null) throw new GeodrError('STALE_EPOCH', `database ${rec.name} was failed over; it cannot take secondaries here`, { database: rec.name });
    const links = this.store.listLinks(rec.name).filter((l) => l.localRole === 'primary' && l.id !== linkId);
    if (links.length >= MAX_SECONDARIES) {
      throw new GeodrError('LIMIT_EXCEEDED', `database ${rec.name} already has ${links.length} secondaries; the limit is ${MAX_SECONDARIES}`, { database: rec.name });
    }
    if (links.some((l) => l.partnerServer === partnerServer)) {
      throw new GeodrError('CONFLICT', `database ${rec.name} already has a secondary on server ${partnerServer}`, { database: rec.name, details: { server: partnerServer } });
    }
  }

  /**
   * On the secondary's server: createMode Secondary (a continuously replicated copy) or
   * Copy (a one-time copy that becomes an independent database once seeded).
   */
  createSecondary(name: string, opts: { pool: string; sourceServer?: string | undefined; sourceDatabaseName?: string | undefined; copy: boolean; linkId?: string | undefined }): OperationRecord {
    const mode = opts.copy ? 'Copy' : 'Secondary';
    if (opts.sourceServer === undefined || opts.sourceDatabaseName === undefined) {
      throw new GeodrError('INVALID_ARGUMENT', `createMode ${mode} needs sourceServer and sourceDatabaseName (the primary)`, { database: name });
    }
    validateName('server', opts.sourceServer);
    validateName('database', opts.sourceDatabaseName);
    if (opts.sourceServer === this.self) throw new GeodrError('INVALID_ARGUMENT', `a ${mode === 'Copy' ? 'copy' : 'secondary'} is made from another server; ${this.self} is this one`, { database: name });
    this.peers.get(opts.sourceServer);
    const existing = this.store.getDatabase(name);
    if (existing !== undefined) {
      const link = this.store.listLinks(name).find((l) => l.localRole === 'secondary');
      // Idempotent: the same request again (a retry) reports the seeding already under way.
      if (existing.role === 'secondary' && link?.partnerServer === opts.sourceServer && link.partnerDatabase === opts.sourceDatabaseName) {
        const op = this.service.operations.list({ database: name }).find((o) => o.kind === 'seedSecondary');
        if (op !== undefined) return op;
      }
      throw new GeodrError('CONFLICT', `database ${name} already exists on ${this.self}`, { database: name });
    }
    const pool = this.service.requirePoolRecord(opts.pool);
    this.service.checkPoolRoom(pool, 0);
    const rec = this.service.newRecord(name, pool.name, mode);
    rec.role = 'secondary';
    const now = Date.now();
    const link: LinkRecord = {
      id: opts.linkId ?? randomUUID(),
      database: name,
      localRole: 'secondary',
      partnerServer: opts.sourceServer,
      partnerDatabase: opts.sourceDatabaseName,
      state: 'SEEDING',
      createdAt: now,
      modifiedAt: now,
      lastTxid: 0,
      lastTime: 0,
      percentComplete: 0,
    };
    this.store.transaction(() => {
      this.store.insertDatabase(rec);
      this.store.putLink(link);
    });
    return this.service.operations.submit({
      kind: 'seedSecondary',
      database: name,
      pool: pool.name,
      params: { name, linkId: link.id, partnerServer: link.partnerServer, partnerDatabase: link.partnerDatabase, copy: opts.copy },
    });
  }

  /** On the primary: a secondary registers its link (idempotent by link id). */
  async registerLink(name: string, body: { link: string; server: string; database: string; copy?: boolean }): Promise<{ dbId: string; epoch: number; epochs: EpochStart[] }> {
    const rec = this.service.requireDatabase(name);
    if (rec.role !== 'primary') throw new GeodrError('READ_ONLY', `database ${name} on ${this.self} is not a primary`, { database: name });
    const existing = this.store.getLink(body.link);
    if (existing === undefined && body.copy !== true) this.checkCanAddLink(rec, body.server, body.link);
    const now = Date.now();
    const link: LinkRecord = existing ?? {
      id: body.link,
      database: name,
      localRole: 'primary',
      partnerServer: body.server,
      partnerDatabase: body.database,
      state: 'SEEDING',
      createdAt: now,
      modifiedAt: now,
      lastTxid: 0,
      lastTime: 0,
      percentComplete: 0,
    };
    if (body.copy !== true) {
      this.store.putLink({ ...link, state: link.state === 'PENDING' ? 'SEEDING' : link.state, modifiedAt: now });
      this.source.track(link);
    }
    return this.host.use(name, (t) => ({ dbId: t.db.dbId, epoch: t.db.epoch, epochs: rec.epochs }));
  }

  /** On the primary: a consistent full snapshot for seeding, streamed as a unit file. */
  async serveSnapshot(name: string, linkId: string, reply: FastifyReply): Promise<void> {
    const rec = this.service.requireDatabase(name);
    if (rec.role !== 'primary') throw new GeodrError('READ_ONLY', `database ${name} on ${this.self} is not a primary`, { database: name });
    const dir = path.join(this.config.dataDir, 'tmp', `snapshot-${randomUUID()}`);
    const snap = await this.host.use(name, (t) => takeSnapshot(t.db, dir, { durable: false }));
    const size = fs.statSync(snap.file).size;
    const p = this.source.progress.get(linkId);
    if (p !== undefined) p.seedBytes += size;
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size), 'geodr-txid': String(snap.txid) });
    const stream = fs.createReadStream(snap.file);
    stream.pipe(reply.raw);
    const cleanup = (): void => fs.rmSync(dir, { recursive: true, force: true });
    stream.on('close', cleanup);
    reply.raw.on('close', () => {
      stream.destroy();
      cleanup();
    });
  }

  /** On the primary: serves a secondary's stream (see ReplicationSource.serve). */
  serveStream(name: string, q: { link: string; from: number; epoch: number }, reply: FastifyReply): void {
    const rec = this.service.requireDatabase(name);
    if (rec.fencedBy !== null) throw this.staleError(rec);
    if (rec.role !== 'primary') throw new GeodrError('READ_ONLY', `database ${name} on ${this.self} is a secondary now`, { database: name });
    const link = this.store.getLink(q.link);
    if (link === undefined || link.database !== name || link.localRole !== 'primary') {
      throw new GeodrError('NOT_FOUND', `database ${name} on ${this.self} has no replication link ${q.link}`, { database: name, details: { link: q.link } });
    }
    if (this.gates.has(name) && this.gates.get(name)!.reason.startsWith('checking')) {
      throw new GeodrError('UNAVAILABLE', `database ${name} is checking its epoch with its partners`, { database: name });
    }
    const tenant = this.host.acquire(name);
    try {
      const db = tenant.db;
      if (q.epoch > db.epoch) {
        this.learnNewerEpoch(name, q.epoch, link.partnerServer);
        throw new GeodrError('STALE_EPOCH', `the secondary is at epoch ${q.epoch}, newer than this primary's ${db.epoch}: this copy was deposed`, { database: name });
      }
      for (const e of rec.epochs) {
        if (e.epoch > q.epoch && q.from > e.startTxid) {
          throw new GeodrError('REPLICA_DIVERGED', `the secondary applied TXIDs past ${e.startTxid} in epoch ${q.epoch}, which epoch ${e.epoch} replaced`, { database: name, txid: q.from });
        }
      }
      if (q.from > db.txid) throw new GeodrError('REPLICA_DIVERGED', `the secondary is at TXID ${q.from}, ahead of this primary's ${db.txid}`, { database: name, txid: q.from });
      const first = db.txLog.firstTxid ?? db.txid + 1;
      if (q.from < db.txid && q.from + 1 < first) {
        throw new GeodrError('LOG_GAP', `the local log starts at TXID ${first}; the secondary needs ${q.from + 1} on: it must be re-seeded`, { database: name, txid: q.from });
      }
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store' });
      reply.raw.flushHeaders();
      this.source.serve(tenant, link, q.from, reply.raw, () => this.siblingsOf(name, link.id), () => this.host.release(tenant));
    } catch (e) {
      this.host.release(tenant);
      throw e;
    }
  }

  private siblingsOf(name: string, except: string): Array<{ linkId: string; server: string; database: string }> {
    return this.store
      .listLinks(name)
      .filter((l) => l.localRole === 'primary' && l.id !== except)
      .map((l) => ({ linkId: l.id, server: l.partnerServer, database: l.partnerDatabase }));
  }

  ack(name: string, body: { link: string; txid: number; time: number; epoch: number }): { txid: number } {
    const rec = this.service.requireDatabase(name);
    if (rec.role !== 'primary') throw new GeodrError('READ_ONLY', `database ${name} on ${this.self} is not a primary`, { database: name });
    this.source.ack(body.link, body.txid, body.time);
    return { txid: body.txid };
  }

  /** What a peer needs to decide who is newer: role, epoch, lineage, position. */
  lineage(name: string): { database: string; role: string; epoch: number; epochs: EpochStart[]; txid: number; dbId: string; fencedBy: DatabaseRecord['fencedBy'] } {
    const rec = this.service.requireDatabase(name);
    const rep = this.replica(name);
    const open = this.host.peek(name);
    return {
      database: name,
      role: rec.role,
      epoch: this.epochOf(rec),
      epochs: rec.epochs,
      txid: rep?.txid ?? open?.db.txid ?? rec.txid,
      dbId: rec.dbId,
      fencedBy: rec.fencedBy,
    };
  }

  // Seeding

  private async runSeed(ctx: OperationContext): Promise<Record<string, unknown>> {
    const p = ctx.op.params as { name: string; linkId: string; partnerServer: string; partnerDatabase: string; copy: boolean };
    const rec = this.service.requireDatabase(p.name);
    if (rec.role !== 'secondary') return { database: p.name, alreadySeeded: true };
    const reg = await this.peers.call<{ dbId: string; epoch: number; epochs: EpochStart[] }>(p.partnerServer, 'POST', `/internal/v1/replication/${encodeURIComponent(p.partnerDatabase)}/links`, {
      body: { link: p.linkId, server: this.self, database: p.name, copy: p.copy },
    });
    ctx.checkCancelled();
    ctx.progress(5);
    const tmpDir = path.join(this.config.dataDir, 'tmp');
    fs.mkdirSync(tmpDir, { recursive: true });
    const tmp = path.join(tmpDir, `seed-${ctx.op.id}.full`);
    const res = await this.peers.fetch(p.partnerServer, 'GET', `/internal/v1/replication/${encodeURIComponent(p.partnerDatabase)}/snapshot?link=${encodeURIComponent(p.linkId)}`, {
      stream: true,
      signal: ctx.signal,
      timeoutMs: 60_000,
    });
    if (!res.ok) throw peerError(p.partnerServer, 'snapshot', res.status, await res.text());
    const total = Number(res.headers.get('content-length') ?? 0);
    let got = 0;
    const out = fs.createWriteStream(tmp);
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        got += chunk.length;
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
        if (total > 0) ctx.progress(5 + (85 * got) / total);
      }
      // No fsync: the download is scratch (a crash restarts the seeding); the replica built from it is fsynced.
      await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
      ctx.checkCancelled();
      const paths = this.host.paths(rec.id);
      await this.closeSecondary(p.name);
      fs.rmSync(paths.dir, { recursive: true, force: true });
      fs.mkdirSync(paths.dir, { recursive: true });
      const replica = await ReplicaDatabase.createAsync({ file: paths.file, stateDir: paths.stateDir, name: p.name }, tmp, reg.dbId);
      if (p.copy) {
        replica.close();
        await this.becomeIndependent(p.name, 'Copy');
        return { database: p.name, copiedTxid: replica.txid, bytes: got };
      }
      this.replicas.set(p.name, { replica });
      const link = this.store.getLink(p.linkId)!;
      this.store.transaction(() => {
        this.store.setDbId(p.name, reg.dbId);
        this.setState(p.name, { role: 'secondary', epoch: replica.position.epoch, epochs: reg.epochs, fencedBy: null });
        this.store.putLink({ ...link, state: 'CATCH_UP', modifiedAt: Date.now(), lastTxid: replica.txid, lastTime: replica.position.timestamp, percentComplete: 100 });
      });
      this.startSink(p.name, this.store.getLink(p.linkId)!);
      return { database: p.name, seededTxid: replica.txid, bytes: got };
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }

  private openReplica(rec: DatabaseRecord): ReplicaDatabase {
    const paths = this.host.paths(rec.id);
    const opts = { file: paths.file, stateDir: paths.stateDir, name: rec.name };
    const replica = ReplicaDatabase.resumeConversion(opts) ?? ReplicaDatabase.open(opts);
    this.replicas.set(rec.name, { replica });
    return replica;
  }

  private startSink(name: string, link: LinkRecord): void {
    const holder = this.replicas.get(name);
    if (holder === undefined || this.stopped) return;
    void this.sinks.get(name)?.stop();
    const sink = new Sink(
      { linkId: link.id, database: name, partnerServer: link.partnerServer, partnerDatabase: link.partnerDatabase },
      () => this.replicas.get(name)!.replica,
      this.peers,
      {
        onConnected: () => undefined,
        onApplied: () => undefined,
        onFatal: (e) => {
          this.logger.warn({ err: e, database: name }, 'the secondary cannot continue from its position; resyncing');
          this.sinks.delete(name);
          const l = this.store.listLinks(name).find((x) => x.localRole === 'secondary');
          if (l !== undefined) void this.resync(name, l);
        },
        onStalePrimary: () => undefined,
        onSiblings: (siblings) => this.store.setLinkSiblings(link.id, siblings),
      },
      this.logger,
      { heartbeatMs: this.rc.heartbeatMs, maxBackoffMs: this.rc.maxBackoffMs },
    );
    this.sinks.set(name, sink);
    sink.start();
  }

  private async closeSecondary(name: string): Promise<void> {
    const sink = this.sinks.get(name);
    this.sinks.delete(name);
    await sink?.stop();
    const h = this.replicas.get(name);
    this.replicas.delete(name);
    h?.replica.close();
  }

  /**
   * Brings a secondary that cannot stream from its position (behind the primary's log, or
   * on a lineage a failover replaced) to the primary's state by sending only the pages
   * that differ: it sends its page-hash table, the primary answers with a diff unit, and
   * the replica applies it, verified by checksum. Falls back to a full re-seed.
   */
  private async resync(name: string, link: LinkRecord): Promise<void> {
    if (this.stopped) return;
    const rep = this.replica(name);
    if (rep === undefined || !rep.isOpen) return this.reseed(name, link);
    const file = path.join(rep.stateDir, 'resync.unit');
    try {
      const table = rep.pageHashTable();
      const res = await this.peers.fetch(link.partnerServer, 'POST', `/internal/v1/replication/${encodeURIComponent(link.partnerDatabase)}/diffUnit`, {
        stream: true,
        timeoutMs: 60_000,
        body: { link: link.id, checksum: checksumHex(rep.checksum), hashes: Buffer.from(table.buffer, table.byteOffset, table.byteLength).toString('base64') },
      });
      if (!res.ok) throw peerError(link.partnerServer, 'diffUnit', res.status, await res.text());
      const buf = Buffer.from(await res.arrayBuffer());
      fs.writeFileSync(file, buf);
      const pos = await rep.resyncWhenIdle(file);
      this.counters.resyncs++;
      this.logger.info({ database: name, txid: pos.txid, bytes: buf.length }, 'resynced from the primary by the pages that differed');
      const l = this.store.getLink(link.id) ?? link;
      this.store.putLink({ ...l, state: 'CATCH_UP', modifiedAt: Date.now(), lastTxid: pos.txid, lastTime: pos.timestamp });
      this.startSink(name, this.store.getLink(link.id) ?? l);
    } catch (e) {
      this.logger.warn({ err: e, database: name }, 'resync failed; re-seeding');
      this.reseed(name, link);
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  /** On the primary: the diff unit a secondary's resync applies (see resync). */
  async serveDiffUnit(name: string, body: { link: string; checksum: string; hashes: string }, reply: FastifyReply): Promise<void> {
    const rec = this.service.requireDatabase(name);
    if (rec.role !== 'primary' || rec.fencedBy !== null) throw new GeodrError('READ_ONLY', `database ${name} on ${this.self} is not the primary`, { database: name });
    const link = this.store.getLink(body.link);
    if (link === undefined || link.database !== name || link.localRole !== 'primary') throw new GeodrError('NOT_FOUND', `database ${name} on ${this.self} has no replication link ${body.link}`, { database: name });
    const raw = Buffer.from(body.hashes, 'base64');
    if (raw.length % 8 !== 0) throw new GeodrError('INVALID_ARGUMENT', 'hashes must be 8 bytes a page', { database: name });
    const table = new Uint32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
    const dir = path.join(this.config.dataDir, 'tmp', `diff-${randomUUID()}`);
    const unit = await this.host.use(name, (t) => takeDiffUnit(t.db, { table, checksum: checksumFromHex(body.checksum) }, dir));
    const size = fs.statSync(unit.file).size;
    const p = this.source.progress.get(body.link);
    if (p !== undefined) p.bytesSent += size;
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size), 'geodr-pages': String(unit.pages) });
    const stream = fs.createReadStream(unit.file);
    stream.pipe(reply.raw);
    stream.on('close', () => fs.rmSync(dir, { recursive: true, force: true }));
  }

  /** Starts seeding again from scratch (the copy fell out of the primary's log, or diverged). */
  private reseed(name: string, link: LinkRecord): void {
    if (this.stopped) return;
    this.counters.reseeds++;
    const running = this.service.operations.list({ database: name }).some((o) => o.kind === 'seedSecondary' && (o.state === 'Pending' || o.state === 'InProgress'));
    if (running) return;
    void this.closeSecondary(name).then(() => {
      const rec = this.store.getDatabase(name);
      if (rec === undefined) return;
      this.store.putLink({ ...link, state: 'SEEDING', percentComplete: 0, modifiedAt: Date.now() });
      this.service.operations.submit({
        kind: 'seedSecondary',
        database: name,
        pool: rec.pool,
        params: { name, linkId: link.id, partnerServer: link.partnerServer, partnerDatabase: link.partnerDatabase, copy: false, reseed: true },
      });
    });
  }

  // Removing links

  /**
   * Ends a link (REMOVE SECONDARY). Asked of either side: the secondary becomes an
   * independent, writable database with its own identity; the primary forgets it.
   */
  async removeLink(name: string, linkId: string): Promise<{ removed: string; independent: { server: string; database: string } }> {
    const link = this.requireLink(name, linkId);
    if (link.localRole === 'primary') {
      try {
        await this.peers.call(link.partnerServer, 'POST', `/internal/v1/replication/${encodeURIComponent(link.partnerDatabase)}/detach`, { body: { link: linkId } });
      } catch (e) {
        // A secondary that cannot be reached detaches when it hears the link is gone.
        this.logger.warn({ err: e, database: name, link: linkId }, 'the secondary did not answer; the link is removed here');
      }
      this.forgetLink(linkId);
      return { removed: linkId, independent: { server: link.partnerServer, database: link.partnerDatabase } };
    }
    await this.detach(name, linkId);
    this.peers
      .call(link.partnerServer, 'DELETE', `/internal/v1/replication/${encodeURIComponent(link.partnerDatabase)}/links/${encodeURIComponent(linkId)}`)
      .catch((e: unknown) => this.logger.warn({ err: e, database: name }, 'the primary did not hear that the link was removed'));
    return { removed: linkId, independent: { server: this.self, database: name } };
  }

  forgetLink(linkId: string): void {
    const l = this.store.getLink(linkId);
    if (l === undefined) return;
    this.store.deleteLink(linkId);
    this.source.forget(linkId);
    if (l.localRole === 'primary') this.source.endStreams(l.database, 'the link was removed', 'NOT_FOUND');
  }

  /** On the secondary: the link ends and the copy becomes its own database. */
  async detach(name: string, linkId: string): Promise<{ database: string }> {
    const link = this.requireLink(name, linkId);
    if (link.localRole !== 'secondary') throw new GeodrError('CONFLICT', `database ${name} is the primary of link ${linkId}`, { database: name });
    await this.becomeIndependent(name, undefined);
    this.store.deleteLink(linkId);
    return { database: name };
  }

  private async becomeIndependent(name: string, createMode: string | undefined): Promise<void> {
    await this.closeSecondary(name);
    const rec = this.service.requireDatabase(name);
    const paths = this.host.paths(rec.id);
    // A new identity: two primaries must never ship under one database id.
    fs.rmSync(paths.stateDir, { recursive: true, force: true });
    const made = this.host.createFiles(rec);
    this.store.transaction(() => {
      this.store.setDbId(name, made.dbId);
      this.setState(name, { role: 'primary', epoch: 1, epochs: [], fencedBy: null, createMode });
      for (const l of this.store.listLinks(name)) this.store.deleteLink(l.id);
    });
    this.host.noteSize(name, rec.pool, made.sizeBytes);
    this.service.backup?.markConfigChanged();
  }

  /**
   * Before a database is deleted or renamed here: a primary with secondaries must lose
   * them first (their links name it); deleting a secondary ends its link.
   */
  async beforeRemoval(name: string, action: 'delete' | 'rename'): Promise<void> {
    const rec = this.service.requireDatabase(name);
    const links = this.store.listLinks(name);
    if (rec.role === 'primary' && links.some((l) => l.localRole === 'primary')) {
      throw new GeodrError('CONFLICT', `database ${name} has geo-secondaries (${links.map((l) => l.partnerServer).join(', ')}); remove them before you ${action} it`, { database: name });
    }
    if (rec.role === 'secondary') {
      if (action === 'rename') throw new GeodrError('CONFLICT', `database ${name} is a geo-secondary; its name is its primary's link`, { database: name });
      for (const l of links) {
        this.peers
          .call(l.partnerServer, 'DELETE', `/internal/v1/replication/${encodeURIComponent(l.partnerDatabase)}/links/${encodeURIComponent(l.id)}`)
          .catch((e: unknown) => this.logger.warn({ err: e, database: name }, 'the primary did not hear that its secondary was deleted'));
        this.store.deleteLink(l.id);
      }
      await this.closeSecondary(name);
    }
  }

  // Waiting for the secondaries

  /** sp_wait_for_database_copy_sync: returns once the secondaries (or the named one) have every transaction committed before the call. */
  async waitForCopySync(name: string, opts: { partnerServer?: string | undefined; partnerDatabase?: string | undefined; timeoutMs?: number | undefined }): Promise<{ txid: number; secondaries: LinkView[] }> {
    const rec = this.service.requireDatabase(name);
    if (rec.role !== 'primary') throw new GeodrError('CONFLICT', `database ${name} is a geo-secondary; wait on its primary`, { database: name });
    const links = this.store.listLinks(name).filter((l) => l.localRole === 'primary' && (opts.partnerServer === undefined || l.partnerServer === opts.partnerServer) && (opts.partnerDatabase === undefined || l.partnerDatabase === opts.partnerDatabase));
    if (links.length === 0) throw new GeodrError('NOT_FOUND', `database ${name} has no matching geo-secondary${opts.partnerServer !== undefined ? ` on ${opts.partnerServer}` : ''}`, { database: name });
    const txid = await this.host.use(name, async (t) => {
      t.db.capture();
      await t.db.waitDurable();
      return t.db.txid;
    });
    const timeoutMs = opts.timeoutMs ?? this.rc.syncTimeoutMs;
    await Promise.all(links.map((l) => this.source.waitFor(name, txid, { link: l.id, timeoutMs })));
    return { txid, secondaries: links.map((l) => this.linkView(this.store.getLink(l.id)!)) };
  }

  // Failover

  private secondaryLink(name: string, linkId: string | undefined): { rec: DatabaseRecord; link: LinkRecord } {
    const rec = this.service.requireDatabase(name);
    const link = linkId !== undefined ? this.requireLink(name, linkId) : this.store.listLinks(name).find((l) => l.localRole === 'secondary');
    if (rec.role !== 'secondary' || link === undefined || link.localRole !== 'secondary') {
      throw new GeodrError('CONFLICT', `database ${name} on ${this.self} is not a geo-secondary; fail over from the secondary you want to become the primary`, { database: name });
    }
    if (this.replica(name) === undefined) throw new GeodrError('UNAVAILABLE', `the secondary ${name} is still seeding`, { database: name });
    return { rec, link };
  }

  /**
   * Planned failover, asked of the secondary: the primary holds its writes, this copy
   * catches up to its last TXID, becomes the primary at the next epoch, and the old
   * primary and the other secondaries follow it. Nothing is lost.
   */
  async failover(name: string, linkId?: string): Promise<{ database: string; epoch: number; txid: number; ms: number }> {
    const started = Date.now();
    const { rec, link } = this.secondaryLink(name, linkId);
    const prep = await this.peers.call<{ txid: number; checksum: string; epoch: number; epochs: EpochStart[]; siblings: Array<{ linkId: string; server: string; database: string }> }>(
      link.partnerServer,
      'POST',
      `/internal/v1/replication/${encodeURIComponent(link.partnerDatabase)}/prepareFailover`,
      { body: { link: link.id }, timeoutMs: this.rc.failoverTimeoutMs + this.rc.peerTimeoutMs },
    );
    let promoted: { epoch: number; txid: number };
    try {
      await this.waitApplied(name, prep.txid, this.rc.failoverTimeoutMs);
      promoted = await this.promote(rec, link, Math.max(prep.epoch, this.epochOf(rec)) + 1, 'Secondary');
    } catch (e) {
      await this.peers
        .call(link.partnerServer, 'POST', `/internal/v1/replication/${encodeURIComponent(link.partnerDatabase)}/abortFailover`, { body: { link: link.id } })
        .catch((err: unknown) => this.logger.warn({ err, database: name }, 'could not release the primary after a failed failover; it will ask us'));
      throw e;
    }
    this.counters.failovers++;
    const lineage = this.store.getDatabase(name)!.epochs;
    try {
      await this.peers.call(link.partnerServer, 'POST', `/internal/v1/replication/${encodeURIComponent(link.partnerDatabase)}/completeFailover`, {
        body: { link: link.id, server: this.self, database: name, epoch: promoted.epoch, epochs: lineage },
      });
    } catch (e) {
      // The old primary holds its writes until it hears of this epoch: it asks us when it can.
      this.logger.warn({ err: e, database: name }, 'the old primary did not confirm the failover; it will rejoin when it can');
    }
    this.relinkSiblings(name, prep.siblings, promoted.epoch);
    return { database: name, epoch: promoted.epoch, txid: promoted.txid, ms: Date.now() - started };
  }

  /**
   * Forced failover (allow data loss): this copy becomes the primary at once, at the
   * TXID it has. The old primary, when it is back, learns of the new epoch and rejoins.
   */
  async forceFailover(name: string, linkId?: string): Promise<{ database: string; epoch: number; txid: number; ms: number }> {
    const started = Date.now();
    const { rec, link } = this.secondaryLink(name, linkId);
    // As the last heartbeat named them, kept on disk: a restart since does not forget them.
    const siblings = this.store.linkSiblings(link.id);
    const known = Math.max(this.epochOf(rec), ...rec.epochs.map((e) => e.epoch), this.claims.get(name)?.epoch ?? 0);
    const epoch = known + 1;
    await this.claimEpoch(name, epoch, siblings);
    let promoted: { epoch: number; txid: number };
    try {
      promoted = await this.promote(rec, link, epoch, 'Secondary');
    } finally {
      this.claims.delete(name);
    }
    this.counters.forcedFailovers++;
    // The old primary may be gone: fencing it is waited for briefly (closing the window in
    // which a reachable old primary still takes writes), then left to finish in the background.
    const fenced = this.peers
      .call(link.partnerServer, 'POST', `/internal/v1/replication/${encodeURIComponent(link.partnerDatabase)}/fence`, {
        body: { server: this.self, database: name, epoch: promoted.epoch },
        timeoutMs: this.rc.peerTimeoutMs,
      })
      .catch((e: unknown) => this.logger.info({ err: e, database: name }, 'the old primary was not reachable to fence; it will learn at its return'));
    await Promise.race([fenced, new Promise((r) => setTimeout(r, Math.min(300, this.rc.peerTimeoutMs)).unref())]);
    this.relinkSiblings(name, siblings, promoted.epoch);
    return { database: name, epoch: promoted.epoch, txid: promoted.txid, ms: Date.now() - started };
  }

  /**
   * Before a forced failover: claims the next epoch with every sibling secondary that
   * answers. Two secondaries forced at once would otherwise both take the same epoch and
   * both be primary; with the claim, a sibling that holds (or is making) a claim of its
   * own refuses, and the failover stops with CONFLICT naming it. Siblings that do not
   * answer are not waited for: this protects against two operators, not against a
   * partition that hides the siblings from each other.
   */
  private async claimEpoch(name: string, epoch: number, siblings: Array<{ linkId: string; server: string; database: string }>): Promise<void> {
    const held = this.claims.get(name);
    // Any live claim by a sibling stands, whatever its epoch: that sibling is becoming (or has
    // become) the primary, and this copy is about to be relinked to it.
    if (held !== undefined && held.server !== this.self && Date.now() - held.at < CLAIM_TTL_MS) {
      throw new GeodrError('CONFLICT', `server ${held.server} is failing ${name} over (it claimed epoch ${held.epoch} ${Math.round((Date.now() - held.at) / 1000)} s ago); fail over from one secondary at a time, or retry in ${CLAIM_TTL_MS / 1000} s`, { database: name, details: { server: held.server, epoch: held.epoch } });
    }
    this.claims.set(name, { epoch, server: this.self, at: Date.now() });
    const refusals: string[] = [];
    await Promise.all(
      siblings
        .filter((s) => s.server !== this.self && this.peers.has(s.server))
        .map(async (s) => {
          try {
            await this.peers.call(s.server, 'POST', `/internal/v1/replication/${encodeURIComponent(s.database)}/claimEpoch`, {
              body: { epoch, server: this.self },
              timeoutMs: Math.min(500, this.rc.peerTimeoutMs),
            });
          } catch (e) {
            if (isGeodrError(e, 'CONFLICT')) refusals.push(e.reason);
          }
        }),
    );
    if (refusals.length > 0) {
      this.claims.delete(name);
      throw new GeodrError('CONFLICT', `another secondary is failing ${name} over at the same time: ${refusals.join('; ')}`, { database: name });
    }
  }

  /** A sibling secondary claims the next epoch for a forced failover (see claimEpoch). */
  receiveClaim(name: string, body: { epoch: number; server: string }): { claimed: number } {
    const rec = this.service.requireDatabase(name);
    // A sibling already promoted: a second primary is what the claim exists to prevent.
    if (rec.role === 'primary' && rec.fencedBy === null) throw new GeodrError('CONFLICT', `${this.self} already holds ${name} as primary (epoch ${this.epochOf(rec)})`, { database: name });
    const held = this.claims.get(name);
    if (held !== undefined && held.server !== body.server && Date.now() - held.at < CLAIM_TTL_MS) {
      throw new GeodrError('CONFLICT', `${held.server} claimed epoch ${held.epoch} of ${name} first`, { database: name, details: { server: held.server, epoch: held.epoch } });
    }
    this.claims.set(name, { epoch: body.epoch, server: body.server, at: Date.now() });
    return { claimed: body.epoch };
  }

  private async waitApplied(name: string, txid: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rep = this.replica(name);
      if (rep === undefined) throw new GeodrError('UNAVAILABLE', `secondary ${name} closed during failover`, { database: name });
      if (rep.txid >= txid) return;
      if (Date.now() > deadline) throw new GeodrError('UNAVAILABLE', `secondary ${name} did not reach TXID ${txid} within ${timeoutMs} ms (it is at ${rep.txid})`, { database: name, txid });
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /** Turns this secondary into the primary at `epoch`; the link to the old primary flips to point the other way. */
  private async promote(rec: DatabaseRecord, link: LinkRecord, epoch: number, _from: string): Promise<{ epoch: number; txid: number }> {
    const sink = this.sinks.get(rec.name);
    this.sinks.delete(rec.name);
    await sink?.stop();
    const holder = this.replicas.get(rec.name)!;
    const rep = holder.replica;
    const pos = rep.position;
    const primary = rep.promote({ epoch });
    const start: EpochStart = { epoch: primary.epoch, startTxid: pos.txid, checksum: checksumHex(pos.checksum), server: this.self, time: Date.now() };
    primary.close();
    this.replicas.delete(rec.name);
    this.store.transaction(() => {
      this.setState(rec.name, { role: 'primary', epoch: start.epoch, epochs: [...rec.epochs, start], fencedBy: null });
      this.store.putLink({ ...link, localRole: 'primary', state: 'SUSPENDED', modifiedAt: Date.now(), lastTxid: 0, lastTime: 0 });
    });
    this.source.track({ ...link, localRole: 'primary', lastTxid: 0, lastTime: 0 });
    this.onPromoted?.(rec.name);
    this.logger.info({ database: rec.name, epoch: start.epoch, txid: pos.txid }, 'promoted to primary');
    return { epoch: start.epoch, txid: pos.txid };
  }

  /** Points the old primary's other secondaries at this new primary (they keep their copies). */
  private relinkSiblings(name: string, siblings: Array<{ linkId: string; server: string; database: string }>, epoch: number): void {
    for (const s of siblings) {
      if (s.server === this.self) continue;
      const now = Date.now();
      const l: LinkRecord = { id: s.linkId, database: name, localRole: 'primary', partnerServer: s.server, partnerDatabase: s.database, state: 'SUSPENDED', createdAt: now, modifiedAt: now, lastTxid: 0, lastTime: 0, percentComplete: 100 };
      this.store.putLink(l);
      this.source.track(l);
      this.peers
        .call(s.server, 'POST', `/internal/v1/replication/${encodeURIComponent(s.database)}/relink`, {
          body: { link: s.linkId, server: this.self, database: name, epoch, epochs: this.store.getDatabase(name)!.epochs },
        })
        .catch((e: unknown) => this.logger.warn({ err: e, database: name, secondary: s.server }, 'could not relink a secondary; it will be relinked when it asks'));
    }
  }

  /** On the old primary of a planned failover: hold writes, make everything durable, wait for the secondary to have it. */
  async prepareFailover(name: string, body: { link: string }): Promise<{ txid: number; checksum: string; epoch: number; epochs: EpochStart[]; siblings: Array<{ linkId: string; server: string; database: string }> }> {
    const rec = this.service.requireDatabase(name);
    if (rec.role !== 'primary' || rec.fencedBy !== null) throw new GeodrError('CONFLICT', `database ${name} on ${this.self} is not the primary`, { database: name });
    const link = this.store.getLink(body.link);
    if (link === undefined || link.database !== name || link.localRole !== 'primary') throw new GeodrError('NOT_FOUND', `no replication link ${body.link} on ${name}`, { database: name });
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const existing = this.gates.get(name);
    if (existing !== undefined) throw new GeodrError('CONFLICT', `database ${name} is busy: ${existing.reason}`, { database: name });
    this.gates.set(name, { reason: `failing over to ${link.partnerServer}`, done: held, open: release, since: Date.now() });
    try {
      const tenant = this.host.acquire(name);
      try {
        // The writer lock: in-flight writes finish, new ones wait at the gate.
        await tenant.writer.acquire(this.rc.failoverTimeoutMs, { database: name, operation: 'failover.prepare' });
        let txid: number;
        try {
          tenant.db.capture();
          await tenant.db.waitDurable();
          txid = tenant.db.txid;
        } finally {
          tenant.writer.release();
        }
        await this.source.waitFor(name, txid, { link: body.link, timeoutMs: this.rc.failoverTimeoutMs });
        // The other secondaries get a moment to catch up too, so they follow without re-seeding.
        await this.source.waitFor(name, txid, { all: true, timeoutMs: 250 }).catch(() => undefined);
        return { txid, checksum: checksumHex(tenant.db.checksum), epoch: tenant.db.epoch, epochs: rec.epochs, siblings: this.siblingsOf(name, body.link) };
      } finally {
        this.host.release(tenant);
      }
    } catch (e) {
      this.gates.delete(name);
      release();
      throw e;
    }
  }

  abortFailover(name: string, _body: { link: string }): { released: boolean } {
    const g = this.gates.get(name);
    if (g === undefined || !g.reason.startsWith('failing over')) return { released: false };
    this.gates.delete(name);
    g.open();
    return { released: true };
  }

  /** On the old primary of a planned failover: becomes a secondary of the new primary at the TXID it stopped at. */
  async completeFailover(name: string, body: { link: string; server: string; database: string; epoch: number; epochs: EpochStart[] }): Promise<{ database: string; txid: number }> {
    const rec = this.service.requireDatabase(name);
    if (rec.role === 'secondary') return { database: name, txid: this.replica(name)?.txid ?? rec.txid };
    // Writers held at the gate are answered now (they hold leases the conversion waits for).
    this.movedTo.set(name, { server: body.server, database: body.database });
    const g = this.gates.get(name);
    this.gates.delete(name);
    g?.open();
    try {
      const r = await this.demote(rec, { server: body.server, database: body.database, epoch: body.epoch, epochs: body.epochs, linkId: body.link }, undefined);
      return { database: name, txid: r.txid };
    } finally {
      this.movedTo.delete(name);
    }
  }

  /**
   * Closes the primary and reopens it as a replica following `to`, with `unitFile`
   * (rewind plus catch-up) applied when the histories diverged. The primary's own
   * links end here: the new primary has taken them over.
   */
  private async demote(rec: DatabaseRecord, to: { server: string; database: string; epoch: number; epochs: EpochStart[]; linkId: string }, unit: { file: string } | undefined): Promise<{ txid: number }> {
    const name = rec.name;
    this.source.endStreams(name, `failed over to ${to.server}`, 'READ_ONLY');
    let replica!: ReplicaDatabase;
    await this.host.withExclusive(name, () => {
      const paths = this.host.paths(rec.id);
      const meta = readPosition(paths);
      replica = ReplicaDatabase.convertFromPrimary({ file: paths.file, stateDir: paths.stateDir, name }, { position: meta, epoch: to.epoch, unitFile: unit?.file });
    });
    this.replicas.set(name, { replica });
    const now = Date.now();
    const link: LinkRecord = { id: to.linkId, database: name, localRole: 'secondary', partnerServer: to.server, partnerDatabase: to.database, state: 'CATCH_UP', createdAt: now, modifiedAt: now, lastTxid: replica.txid, lastTime: replica.position.timestamp, percentComplete: 100 };
    this.store.transaction(() => {
      for (const l of this.store.listLinks(name)) {
        this.store.deleteLink(l.id);
        this.source.forget(l.id);
      }
      this.setState(name, { role: 'secondary', epoch: replica.position.epoch, epochs: to.epochs, fencedBy: null });
      this.store.putLink(link);
    });
    this.startSink(name, link);
    this.logger.info({ database: name, primary: to.server, epoch: to.epoch, txid: replica.txid }, 'now a secondary');
    return { txid: replica.txid };
  }

  /** On a secondary: follow another primary (after a failover elsewhere). */
  relink(name: string, body: { link: string; server: string; database: string; epoch: number; epochs: EpochStart[] }): { database: string; txid: number } {
    const rec = this.service.requireDatabase(name);
    if (rec.role !== 'secondary') throw new GeodrError('CONFLICT', `database ${name} on ${this.self} is not a secondary`, { database: name });
    const old = this.store.listLinks(name).find((l) => l.localRole === 'secondary');
    const now = Date.now();
    const link: LinkRecord = { ...(old ?? { createdAt: now, lastTxid: 0, lastTime: 0, percentComplete: 100 }), id: body.link, database: name, localRole: 'secondary', partnerServer: body.server, partnerDatabase: body.database, state: old?.state ?? 'CATCH_UP', modifiedAt: now };
    this.store.transaction(() => {
      if (old !== undefined && old.id !== body.link) this.store.deleteLink(old.id);
      this.store.putLink(link);
      this.setState(name, { role: 'secondary', epoch: rec.epoch, epochs: body.epochs, fencedBy: null });
    });
    // A sibling's claim stays (until it expires) even once it is our primary: a second
    // operator's forced failover racing the first is refused, not turned into a deposal.
    const sink = this.sinks.get(name);
    if (sink !== undefined) {
      sink.target.linkId = body.link;
      sink.retarget(body.server, body.database);
    } else if (link.state !== 'SEEDING') this.startSink(name, link);
    return { database: name, txid: this.replica(name)?.txid ?? 0 };
  }

  // Fencing and rejoining

  private staleError(rec: DatabaseRecord): GeodrError {
    return new GeodrError('STALE_EPOCH', `database ${rec.name} was failed over to ${rec.fencedBy?.server} (epoch ${rec.fencedBy?.epoch}); this copy is stale`, { database: rec.name, details: { ...rec.fencedBy } });
  }

  /** On the old primary: told directly by the new one (forced failover). */
  fence(name: string, body: { server: string; database: string; epoch: number }): { fenced: boolean } {
    const rec = this.service.requireDatabase(name);
    if (rec.role !== 'primary') return { fenced: false };
    return { fenced: this.learnNewerEpoch(name, body.epoch, body.server) };
  }

  /**
   * This primary learned that `server` holds the database at a newer epoch: stop taking
   * writes at once, end the streams, and start rejoining as a secondary.
   */
  learnNewerEpoch(name: string, epoch: number, server: string): boolean {
    const rec = this.store.getDatabase(name);
    if (rec === undefined || rec.role !== 'primary') return false;
    if (epoch <= this.epochOf(rec)) return false;
    if (rec.fencedBy === null || rec.fencedBy.epoch < epoch || (rec.fencedBy.server === '' && server !== '')) {
      this.setState(name, { role: 'primary', epoch: rec.epoch, epochs: rec.epochs, fencedBy: { epoch, server } });
      this.counters.fences++;
      this.logger.warn({ database: name, epoch, server }, 'a newer epoch exists elsewhere: this primary is fenced and will rejoin as a secondary');
    }
    this.source.endStreams(name, `fenced: epoch ${epoch} exists on ${server === '' ? 'another server' : server}`, 'STALE_EPOCH');
    // Without the server's name (the vault told us) the partners are asked who holds it.
    if (server !== '') this.scheduleRejoin(name);
    else void this.checkEpoch(name);
    return true;
  }

  /** The backup vault holds a newer epoch's marker: stop writing at once, then find the new primary. */
  fenceFromVault(name: string, epoch: number): void {
    this.learnNewerEpoch(name, epoch, '');
  }

  private scheduleRejoin(name: string): void {
    if (this.rejoining.has(name) || this.stopped) return;
    const busy = this.service.operations.list({ database: name }).some((o) => o.kind === 'rejoinAsSecondary' && (o.state === 'Pending' || o.state === 'InProgress'));
    if (busy) return;
    this.rejoining.add(name);
    this.service.operations.submit({ kind: 'rejoinAsSecondary', database: name, params: { name } });
  }

  /**
   * The old primary rejoins: find where the histories parted, keep what only this copy
   * has (a report plus files), and take one unit from the new primary that rewinds this
   * copy's own pages and brings it up to date. Falls back to a full re-seed when this
   * copy's log cannot show it shares the new lineage up to the split.
   */
  private async runRejoin(ctx: OperationContext): Promise<Record<string, unknown>> {
    const name = (ctx.op.params as { name: string }).name;
    try {
      const rec = this.service.requireDatabase(name);
      if (rec.role !== 'primary' || rec.fencedBy === null) return { database: name, alreadyRejoined: true };
      const server = rec.fencedBy.server;
      const oldLink = this.store.listLinks(name).find((l) => l.localRole === 'primary' && l.partnerServer === server);
      const partnerDatabase = oldLink?.partnerDatabase ?? name;
      const lin = await this.peers.call<{ role: string; epoch: number; epochs: EpochStart[]; txid: number; dbId: string }>(server, 'GET', `/internal/v1/replication/${encodeURIComponent(partnerDatabase)}/lineage`);
      if (lin.role !== 'primary') throw new GeodrError('UNAVAILABLE', `${server} does not hold ${partnerDatabase} as primary yet`, { database: name });
      ctx.progress(10);
      const myEpoch = this.epochOf(rec);
      const split = lin.epochs.find((e) => e.epoch > myEpoch);
      if (split === undefined) throw new GeodrError('CONFLICT', `${server} shows no epoch newer than ${myEpoch}`, { database: name });
      const linkId = oldLink?.id ?? randomUUID();
      const siblings = this.store.listLinks(name).filter((l) => l.localRole === 'primary' && l.partnerServer !== server);
      // What this copy wrote alone, and whether its history matches the new one up to the split.
      const mine = await this.host.use(name, (t) => {
        const db = t.db;
        const n = db.txid;
        // This copy shares the new history up to the split if its state at that TXID had the
        // checksum the new primary began from: the current state, or the next record's `pre`.
        let matches = false;
        if (split.startTxid === n) matches = checksumHex(db.checksum) === split.checksum;
        else if (split.startTxid < n) {
          try {
            for (const r of db.records(split.startTxid + 1, split.startTxid + 1)) matches = checksumHex(r.pre) === split.checksum;
          } catch (e) {
            if (!isGeodrError(e, 'LOG_GAP')) throw e;
          }
        }
        if (!matches) return { matches, n, pages: [] as number[], lost: undefined };
        const lost = n > split.startTxid ? this.writeLostTail(rec, db, split.startTxid, n, { server, database: partnerDatabase, epoch: lin.epoch }) : undefined;
        const pages = new Set<number>();
        for (const r of db.records(split.startTxid + 1, n)) for (const [p] of r.pages) pages.add(p);
        return { matches, n, pages: [...pages], lost };
      });
      ctx.progress(30);
      if (!mine.matches) return await this.rejoinByResync(rec, server, partnerDatabase, linkId, lin, myEpoch, split.startTxid);
      const paths = this.host.paths(rec.id);
      const unitFile = path.join(paths.stateDir, 'rejoin.unit');
      const res = await this.peers.fetch(server, 'POST', `/internal/v1/replication/${encodeURIComponent(partnerDatabase)}/catchUpUnit`, {
        stream: true,
        timeoutMs: 60_000,
        body: { link: linkId, server: this.self, database: name, since: split.startTxid, sinceChecksum: split.checksum, pages: mine.pages, siblings: siblings.map((s) => ({ linkId: s.id, server: s.partnerServer, database: s.partnerDatabase })) },
      });
      if (!res.ok) {
        const err = peerError(server, 'catchUpUnit', res.status, await res.text());
        if (err.code === 'LOG_GAP') return await this.rejoinByResync(rec, server, partnerDatabase, linkId, lin, myEpoch, split.startTxid);
        throw err;
      }
      const buf = Buffer.from(await res.arrayBuffer());
      ctx.progress(70);
      let unit: { file: string } | undefined;
      if (buf.length > 0) {
        fs.writeFileSync(unitFile, buf);
        const fd = fs.openSync(unitFile, 'r');
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        unit = { file: unitFile };
      }
      try {
        await this.demote(this.store.getDatabase(name)!, { server, database: partnerDatabase, epoch: lin.epoch, epochs: lin.epochs, linkId }, unit);
      } catch (e) {
        if (isGeodrError(e, 'REPLICA_DIVERGED')) return await this.rejoinByReseed(this.store.getDatabase(name)!, server, partnerDatabase, linkId, lin, split.startTxid);
        throw e;
      }
      this.counters.rejoins++;
      return { database: name, primary: server, rewoundPages: mine.pages.length, unitBytes: buf.length, lostTransactions: mine.lost?.id ?? null, txid: this.replica(name)?.txid ?? null };
    } finally {
      this.rejoining.delete(name);
    }
  }

  /**
   * When this copy's own history cannot show what it wrote alone (its log no longer reaches
   * the split) or the new primary's log no longer reaches it: keep the whole old copy for
   * the operator, become a secondary at the old epoch as it stands, and let the stream's
   * refusal start a resync (only the pages that differ move).
   */
  private async rejoinByResync(rec: DatabaseRecord, server: string, partnerDatabase: string, linkId: string, lin: { epoch: number; epochs: EpochStart[] }, oldEpoch: number, split: number): Promise<Record<string, unknown>> {
    const keep = path.join(this.config.dataDir, 'lost', `${rec.name}-${Date.now()}-whole`);
    fs.mkdirSync(keep, { recursive: true });
    const dbCopy = path.join(keep, 'database.sqlite');
    const n = await this.host.use(rec.name, (t) => {
      t.db.checkpoint();
      t.db.read((c) => c.prepare('VACUUM INTO ?').run(dbCopy));
      return t.db.txid;
    });
    const report: LostReport = {
      id: path.basename(keep),
      database: rec.name,
      dbId: rec.dbId,
      divergedAt: split,
      fromTxid: split + 1,
      toTxid: n,
      transactions: -1,
      firstTime: null,
      lastTime: rec.lastWriteTime > 0 ? new Date(rec.lastWriteTime).toISOString() : null,
      pagesChanged: -1,
      epoch: oldEpoch,
      newPrimary: { server, database: partnerDatabase, epoch: lin.epoch },
      createdAt: new Date().toISOString(),
      files: { records: '', database: path.relative(this.config.dataDir, dbCopy) },
    };
    fs.writeFileSync(path.join(keep, 'report.json'), JSON.stringify(report, null, 2) + '\n');
    await this.demote(this.store.getDatabase(rec.name)!, { server, database: partnerDatabase, epoch: oldEpoch, epochs: lin.epochs, linkId }, undefined);
    this.counters.rejoins++;
    return { database: rec.name, primary: server, resync: true, keptAt: path.relative(this.config.dataDir, keep) };
  }

  /** The last resort: keep the whole old copy as lost data, and seed afresh from the new primary. */
  private async rejoinByReseed(rec: DatabaseRecord, server: string, partnerDatabase: string, linkId: string, lin: { epoch: number; epochs: EpochStart[] }, split?: number): Promise<Record<string, unknown>> {
    this.source.endStreams(rec.name, 'rejoining', 'READ_ONLY');
    const keep = path.join(this.config.dataDir, 'lost', `${rec.name}-${Date.now()}-whole`);
    await this.host.withExclusive(rec.name, () => {
      const paths = this.host.paths(rec.id);
      fs.mkdirSync(path.dirname(keep), { recursive: true });
      fs.renameSync(paths.dir, keep);
    });
    // The whole old copy is what may hold lone writes: the report points at it.
    const report: LostReport = {
      id: path.basename(keep),
      database: rec.name,
      dbId: rec.dbId,
      divergedAt: split ?? -1,
      fromTxid: split === undefined ? -1 : split + 1,
      toTxid: rec.txid,
      transactions: split === undefined ? -1 : Math.max(0, rec.txid - split),
      firstTime: null,
      lastTime: rec.lastWriteTime > 0 ? new Date(rec.lastWriteTime).toISOString() : null,
      pagesChanged: -1,
      epoch: rec.epoch,
      newPrimary: { server, database: partnerDatabase, epoch: lin.epoch },
      createdAt: new Date().toISOString(),
      files: { records: path.relative(this.config.dataDir, path.join(keep, 'db.sqlite.geodr', 'log')), database: path.relative(this.config.dataDir, path.join(keep, 'db.sqlite')) },
    };
    fs.writeFileSync(path.join(keep, 'report.json'), JSON.stringify(report, null, 2) + '\n');
    const now = Date.now();
    const link: LinkRecord = { id: linkId, database: rec.name, localRole: 'secondary', partnerServer: server, partnerDatabase, state: 'SEEDING', createdAt: now, modifiedAt: now, lastTxid: 0, lastTime: 0, percentComplete: 0 };
    this.store.transaction(() => {
      for (const l of this.store.listLinks(rec.name)) {
        this.store.deleteLink(l.id);
        this.source.forget(l.id);
      }
      this.setState(rec.name, { role: 'secondary', epoch: lin.epoch, epochs: lin.epochs, fencedBy: null });
      this.store.putLink(link);
    });
    this.service.operations.submit({ kind: 'seedSecondary', database: rec.name, pool: rec.pool, params: { name: rec.name, linkId, partnerServer: server, partnerDatabase, copy: false, reseed: true } });
    this.counters.reseeds++;
    return { database: rec.name, primary: server, reseeded: true, keptAt: path.relative(this.config.dataDir, keep) };
  }

  private writeLostTail(rec: DatabaseRecord, db: PrimaryDatabase, from: number, to: number, newPrimary: { server: string; database: string; epoch: number }): LostReport {
    const id = `${rec.name}-e${db.epoch}-${from + 1}-${to}`;
    const dir = path.join(this.config.dataDir, 'lost', id);
    fs.mkdirSync(dir, { recursive: true });
    const recordsFile = path.join(dir, 'records.bin');
    const fd = fs.openSync(recordsFile, 'w');
    let first: number | null = null;
    let last: number | null = null;
    const pages = new Set<number>();
    let count = 0;
    try {
      for (const r of db.records(from + 1, to)) {
        fs.writeSync(fd, encodeRecord(r));
        first ??= r.timestamp;
        last = r.timestamp;
        for (const [p] of r.pages) pages.add(p);
        count++;
      }
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    // The database as this copy had it, for the operator to open with any SQLite tool.
    db.checkpoint();
    const dbCopy = path.join(dir, 'database.sqlite');
    db.read((c) => c.prepare('VACUUM INTO ?').run(dbCopy));
    const report: LostReport = {
      id,
      database: rec.name,
      dbId: db.dbId,
      divergedAt: from,
      fromTxid: from + 1,
      toTxid: to,
      transactions: count,
      firstTime: first === null ? null : new Date(first).toISOString(),
      lastTime: last === null ? null : new Date(last).toISOString(),
      pagesChanged: pages.size,
      epoch: db.epoch,
      newPrimary,
      createdAt: new Date().toISOString(),
      files: { records: path.relative(this.config.dataDir, recordsFile), database: path.relative(this.config.dataDir, dbCopy) },
    };
    fs.writeFileSync(path.join(dir, 'report.json'), JSON.stringify(report, null, 2) + '\n');
    this.logger.warn({ database: rec.name, lost: report }, 'transactions this copy wrote alone were kept aside');
    return report;
  }

  lostTransactions(): LostReport[] {
    const dir = path.join(this.config.dataDir, 'lost');
    if (!fs.existsSync(dir)) return [];
    const out: LostReport[] = [];
    for (const name of fs.readdirSync(dir).sort()) {
      const f = path.join(dir, name, 'report.json');
      if (fs.existsSync(f)) out.push(JSON.parse(fs.readFileSync(f, 'utf8')) as LostReport);
    }
    return out;
  }

  /** On the new primary: the unit a rejoining old primary applies (its own pages plus everything changed since the split). */
  async serveCatchUpUnit(name: string, body: { link: string; server: string; database: string; since: number; sinceChecksum: string; pages: number[]; siblings: Array<{ linkId: string; server: string; database: string }> }, reply: FastifyReply): Promise<void> {
    const rec = this.service.requireDatabase(name);
    if (rec.role !== 'primary' || rec.fencedBy !== null) throw new GeodrError('READ_ONLY', `database ${name} on ${this.self} is not the primary`, { database: name });
    const dir = path.join(this.config.dataDir, 'tmp', `unit-${randomUUID()}`);
    const unit = await this.host.use(name, (t) => takeIncrementalSnapshot(t.db, body.since, { dir, extraPages: body.pages, sinceChecksum: checksumFromHex(body.sinceChecksum) }));
    const now = Date.now();
    const link: LinkRecord = { id: body.link, database: name, localRole: 'primary', partnerServer: body.server, partnerDatabase: body.database, state: 'CATCH_UP', createdAt: now, modifiedAt: now, lastTxid: 0, lastTime: 0, percentComplete: 100 };
    this.store.putLink({ ...(this.store.getLink(body.link) ?? link), localRole: 'primary', partnerServer: body.server, partnerDatabase: body.database, modifiedAt: now });
    this.source.track(link);
    this.relinkSiblings(name, body.siblings, rec.epoch);
    reply.hijack();
    if (unit === undefined) {
      reply.raw.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '0' });
      reply.raw.end();
      return;
    }
    const size = fs.statSync(unit.file).size;
    const p = this.source.progress.get(body.link);
    if (p !== undefined) p.bytesSent += size;
    reply.raw.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
    const stream = fs.createReadStream(unit.file);
    stream.pipe(reply.raw);
    stream.on('close', () => fs.rmSync(dir, { recursive: true, force: true }));
  }

  /** Asks every partner of a linked primary whether one holds a newer epoch; fences if so. */
  private async checkEpoch(name: string, attempts = 1): Promise<void> {
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (this.stopped) return;
      const rec = this.store.getDatabase(name);
      if (rec === undefined || rec.role !== 'primary' || (rec.fencedBy !== null && rec.fencedBy.server !== '')) return;
      const mine = this.epochOf(rec);
      const partners = this.store.listLinks(name).filter((l) => l.localRole === 'primary');
      let answered = 0;
      await Promise.all(
        partners.map(async (l) => {
          try {
            const lin = await this.peers.call<{ role: string; epoch: number }>(l.partnerServer, 'GET', `/internal/v1/replication/${encodeURIComponent(l.partnerDatabase)}/lineage`);
            answered++;
            if (lin.epoch > mine && lin.role === 'primary') this.learnNewerEpoch(name, lin.epoch, l.partnerServer);
          } catch (e) {
            this.logger.debug({ err: e, database: name, partner: l.partnerServer }, 'epoch check: partner not reachable');
          }
        }),
      );
      if (answered > 0 || partners.length === 0) return;
      // A partner that refuses at once (it is restarting) gets a moment before the next try.
      if (attempt < attempts) await new Promise((r) => setTimeout(r, 250 * attempt).unref());
    }
    this.logger.warn({ database: name }, 'no partner answered the epoch check; taking writes (a partition heals through the periodic check)');
  }

  /**
   * Drops local log segments nobody needs: shipped to the vault, checkpointed into the
   * file, and applied by every secondary — except a secondary more than `maxLagTxids`
   * behind, which is given up on (it re-seeds when it reconnects) so an unreachable
   * secondary cannot fill the disk.
   */
  pruneLogs(): number {
    let removed = 0;
    for (const t of this.host.openTenants()) {
      const db = t.db;
      if (!db.isOpen) continue;
      const rec = this.store.getDatabase(t.name);
      if (rec === undefined || rec.role !== 'primary') continue;
      let floor = Math.min(rec.shippedTxid, db.durableTxid);
      for (const p of this.source.linksOf(t.name)) if (db.txid - p.ackedTxid <= this.rc.maxLagTxids) floor = Math.min(floor, p.ackedTxid);
      const first = db.txLog.firstTxid;
      if (first === undefined || floor < first) continue;
      if (floor > db.checkpointedTxid && t.refs === 0 && !t.writer.locked) db.checkpoint();
      removed += db.txLog.truncateBefore(Math.min(floor, db.checkpointedTxid));
    }
    return removed;
  }

  /** Once a second: a primary whose secondaries went quiet asks them whether one was promoted. */
  private async watch(): Promise<void> {
    if (this.stopped) return;
    const now = Date.now();
    if (++this.watchTicks % 5 === 0) {
      try {
        this.pruneLogs();
      } catch (e) {
        this.logger.warn({ err: e }, 'log pruning failed');
      }
    }
    const byDb = new Map<string, boolean>();
    for (const l of this.store.listLinks()) {
      if (l.localRole !== 'primary') continue;
      const p = this.source.progress.get(l.id);
      const quiet = p === undefined || (p.streams === 0 && now - Math.max(p.lastStreamAt, p.lastAckAt) > 2000);
      if (quiet) byDb.set(l.database, true);
    }
    for (const name of byDb.keys()) {
      const rec = this.store.getDatabase(name);
      // Fenced by the vault alone, it still has to find out which server holds the new epoch.
      if (rec?.role === 'primary' && (rec.fencedBy === null || rec.fencedBy.server === '')) await this.checkEpoch(name);
    }
    // A held failover whose new primary never confirmed: ask it.
    for (const [name, g] of this.gates) {
      if (!g.reason.startsWith('failing over to ')) continue;
      const server = g.reason.slice('failing over to '.length);
      const l = this.store.listLinks(name).find((x) => x.localRole === 'primary' && x.partnerServer === server);
      if (l === undefined) continue;
      try {
        const lin = await this.peers.call<{ role: string; epoch: number }>(server, 'GET', `/internal/v1/replication/${encodeURIComponent(l.partnerDatabase)}/lineage`);
        const rec = this.store.getDatabase(name);
        if (rec === undefined) continue;
        if (lin.role === 'primary' && lin.epoch > this.epochOf(rec)) this.learnNewerEpoch(name, lin.epoch, server);
        else if (lin.role === 'secondary' && now - g.since > this.rc.failoverTimeoutMs * 2) this.abortFailover(name, { link: l.id });
      } catch {
        // still unreachable: writes stay held rather than risk two primaries
      }
    }
  }

  // Failover groups

  /** Creates or updates a failover group on this (primary) server and its partner. */
  async putFailoverGroup(name: string, body: { partnerServer: string; databases: string[] }): Promise<FailoverGroupView> {
    validateName('failover group', name);
    validateName('server', body.partnerServer);
    this.peers.get(body.partnerServer);
    const pairs: Array<{ local: string; partner: string }> = [];
    for (const db of body.databases) {
      const rec = this.service.requireDatabase(db);
      const link = this.store.listLinks(db).find((l) => l.partnerServer === body.partnerServer);
      if (link === undefined) throw new GeodrError('CONFLICT', `database ${db} has no geo-secondary on ${body.partnerServer}; add one first (POST /v1/databases/${db}/replicationLinks)`, { database: db });
      if (rec.role !== 'primary') throw new GeodrError('CONFLICT', `database ${db} is a secondary here; create the group on the primary's server`, { database: db });
      pairs.push({ local: db, partner: link.partnerDatabase });
    }
    const now = Date.now();
    const existing = this.store.getFailoverGroup(name);
    const g: FailoverGroupRecord = { name, partnerServer: body.partnerServer, localRole: 'primary', databases: pairs.map((p) => `${p.local}=${p.partner}`), createdAt: existing?.createdAt ?? now, modifiedAt: now };
    await this.peers.call(body.partnerServer, 'PUT', `/internal/v1/failoverGroups/${encodeURIComponent(name)}`, {
      body: { partnerServer: this.self, databases: pairs.map((p) => `${p.partner}=${p.local}`) },
    });
    this.store.putFailoverGroup(g);
    return this.groupView(g);
  }

  putFailoverGroupMirror(name: string, body: { partnerServer: string; databases: string[] }): { name: string } {
    const now = Date.now();
    const existing = this.store.getFailoverGroup(name);
    this.store.putFailoverGroup({ name, partnerServer: body.partnerServer, localRole: 'secondary', databases: body.databases, createdAt: existing?.createdAt ?? now, modifiedAt: now });
    return { name };
  }

  listFailoverGroups(): FailoverGroupView[] {
    return this.store.listFailoverGroups().map((g) => this.groupView(g));
  }

  getFailoverGroup(name: string): FailoverGroupView {
    return this.groupView(this.requireGroup(name));
  }

  private requireGroup(name: string): FailoverGroupRecord {
    validateName('failover group', name);
    const g = this.store.getFailoverGroup(name);
    if (g === undefined) throw new GeodrError('NOT_FOUND', `failover group ${JSON.stringify(name)} does not exist on ${this.self}`, { details: { group: name } });
    return g;
  }

  async deleteFailoverGroup(name: string): Promise<void> {
    const g = this.requireGroup(name);
    this.store.deleteFailoverGroup(name);
    await this.peers.call(g.partnerServer, 'DELETE', `/internal/v1/failoverGroups/${encodeURIComponent(name)}`).catch(() => undefined);
  }

  deleteFailoverGroupMirror(name: string): void {
    this.store.deleteFailoverGroup(name);
  }

  /**
   * The group's sides follow its databases' roles, so the listeners are right after any
   * failover, planned or forced, whichever server answers.
   */
  private groupView(g: FailoverGroupRecord): FailoverGroupView {
    const pairs = g.databases.map((d) => {
      const [local, partner] = d.split('=') as [string, string];
      return { local, partner };
    });
    const roles = pairs.map((p) => this.store.getDatabase(p.local)?.role ?? 'missing');
    const primaries = roles.filter((r) => r === 'primary').length;
    const localPrimary = primaries * 2 >= roles.length && primaries > 0;
    const selfUrl = this.config.advertiseUrl ?? '';
    const partnerUrl = this.peers.has(g.partnerServer) ? this.peerPublicUrl(g.partnerServer) : '';
    const rw = localPrimary ? { server: this.self, url: selfUrl } : { server: g.partnerServer, url: partnerUrl };
    const ro = localPrimary ? { server: g.partnerServer, url: partnerUrl } : { server: this.self, url: selfUrl };
    return {
      name: g.name,
      server: this.self,
      partnerServer: g.partnerServer,
      role: localPrimary ? 'Primary' : 'Secondary',
      databases: pairs.map((p, i) => ({ database: p.local, partnerDatabase: p.partner, role: roles[i]! })),
      readWriteListener: rw,
      readOnlyListener: ro,
      consistent: primaries === 0 || primaries === roles.length,
      createdAt: new Date(g.createdAt).toISOString(),
      modifiedAt: new Date(g.modifiedAt).toISOString(),
    };
  }

  /** Fails every database of the group over to this server (planned, or forced). */
  async failoverGroup(name: string, force: boolean): Promise<{ group: FailoverGroupView; databases: Array<{ database: string; epoch: number; txid: number }>; ms: number }> {
    const started = Date.now();
    const g = this.requireGroup(name);
    const locals = g.databases.map((d) => d.split('=')[0]!);
    const toMove = locals.filter((d) => this.store.getDatabase(d)?.role === 'secondary');
    if (toMove.length === 0) throw new GeodrError('CONFLICT', `failover group ${name} is already primary on ${this.self}`, { details: { group: name } });
    const results = await Promise.all(toMove.map((d) => (force ? this.forceFailover(d) : this.failover(d))));
    return { group: this.groupView(this.store.getFailoverGroup(name)!), databases: results.map((r) => ({ database: r.database, epoch: r.epoch, txid: r.txid })), ms: Date.now() - started };
  }

  listenerFor(name: string, kind: 'rw' | 'ro'): { server: string; url: string } {
    const v = this.getFailoverGroup(name);
    return kind === 'rw' ? v.readWriteListener : v.readOnlyListener;
  }
}

export interface FailoverGroupView {
  name: string;
  server: string;
  partnerServer: string;
  role: 'Primary' | 'Secondary';
  databases: Array<{ database: string; partnerDatabase: string; role: string }>;
  readWriteListener: { server: string; url: string };
  readOnlyListener: { server: string; url: string };
  /** False while the group's databases are split between the sides (a failover under way or half done). */
  consistent: boolean;
  createdAt: string;
  modifiedAt: string;
}

/** The closed primary's last state, from its files (it is closed: the host holds it exclusively). */
function readPosition(paths: { file: string; stateDir: string }): { txid: number; epoch: number; pageCount: number; checksum: ReturnType<typeof checksumFromHex>; timestamp: number } {
  // Opening and closing the primary reconciles its WAL with its log and checkpoints everything into the file.
  const db = PrimaryDatabase.open({ file: paths.file, stateDir: paths.stateDir });
  try {
    const st = db.status();
    return { txid: st.txid, epoch: st.epoch, pageCount: st.pageCount, checksum: db.checksum, timestamp: st.lastWriteTime };
  } finally {
    db.close();
  }
}
