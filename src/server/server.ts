/**
 * One `geodr server` process: metadata store, database host, operations, and the HTTP
 * app, with an orderly start (lock the data directory, recover, resume operations)
 * and shutdown (stop taking requests, finish in-flight ones, sync and close every
 * database). SIGKILL at any point loses nothing acknowledged: writes are acknowledged
 * only once durable in their log, and metadata with synchronous=FULL.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { statementDeadlines } from '../engine/index.js';
import { GeodrError } from '../errors.js';
import { Authenticator } from './auth.js';
import type { ServerConfig } from './config.js';
import { DatabaseHost } from './host.js';
import { buildApp } from './http.js';
import { ServerMetrics } from './metrics.js';
import { OperationManager } from './operations.js';
import { ServerService } from './service.js';
import { MetaStore } from './store.js';
import { BackupService } from './backup.js';
import { ReplicationManager } from '../replication/manager.js';
import { VERSION } from '../version.js';

export interface StartOptions {
  logger?: Logger;
}

export class GeodrServer {
  private ready = false;
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly config: ServerConfig,
    readonly service: ServerService,
    readonly app: FastifyInstance,
    readonly logger: Logger,
    private readonly releaseLock: () => void,
  ) {}

  /** The base URL it listens on, e.g. http://127.0.0.1:7480 */
  url = '';

  static async start(config: ServerConfig, opts: StartOptions = {}): Promise<GeodrServer> {
    const logger =
      opts.logger ??
      pino({
        level: config.logLevel,
        base: { server: config.name, region: config.region },
        // Tokens never reach the log, whatever a future log line includes.
        redact: { paths: ['req.headers.authorization', 'headers.authorization', '*.secret', 'tokens[*].secret', 'authToken'], censor: '[redacted]' },
      });
    fs.mkdirSync(config.dataDir, { recursive: true });
    const releaseLock = lockDataDir(config.dataDir);
    try {
      const store = new MetaStore(path.join(config.dataDir, 'server.db'));
      const backupRef: { current?: BackupService } = {};
      const replicationRef: { current?: ReplicationManager } = {};
      const host = new DatabaseHost({
        dataDir: config.dataDir,
        store,
        maxOpenDatabases: config.limits.maxOpenDatabases,
        idleCloseMs: config.limits.idleCloseMs,
        writeWaitMs: config.limits.writeWaitMs,
        durability: config.durability,
        groupCommitMs: config.groupCommitMs,
        logSegmentBytes: config.limits.logSegmentBytes,
        checkpointFrames: config.limits.checkpointFrames,
        onError: (err, database) => logger.error({ err, database }, 'closing a database failed'),
        keepOpen: (t) => backupRef.current?.mustStayOpen(t) ?? false,
        beforeExclusive: (name) => replicationRef.current?.source.endStreams(name, 'the database is being changed', 'UNAVAILABLE'),
      });
      const operations = new OperationManager(store, (pool) => (pool === null ? 4 : (store.getPool(pool)?.maxConcurrentOperations ?? 1)), (op) =>
        logger.info({ operation: op.id, kind: op.kind, state: op.state, database: op.database }, 'operation'),
      );
      const service = new ServerService(config.dataDir, store, host, operations);
      const backup = await BackupService.open(config, store, host, logger);
      backupRef.current = backup;
      service.backup = backup;
      service.defaultRetentionDays = config.backup.retentionDays;
      service.recover();
      service.ensurePool(config.defaultPool);
      const replication = new ReplicationManager({ config, store, host, service, logger });
      replicationRef.current = replication;
      service.replication = replication;
      // A promotion starts a new lineage in the vault; the vault's newer marker fences a deposed primary.
      replication.onPromoted = (name) => {
        backup.beginEpoch(name).catch((err: unknown) => logger.warn({ err, database: name }, 'could not begin the new epoch in the vault; the shipper writes the marker before its first object'));
      };
      backup.onStaleEpoch((name, epoch) => replication.fenceFromVault(name, epoch));
      const metrics = new ServerMetrics(
        () => host,
        () => store,
        { server: config.name, region: config.region },
        () => backupRef.current,
      );
      metrics.addReplication(() => replicationRef.current);
      const server: { current?: GeodrServer } = {};
      const app = await buildApp({
        config,
        service,
        sql: { host, store, limits: config.limits, onStatement: (database, write) => metrics.statements.inc({ database, kind: write ? 'write' : 'read' }), replication },
        auth: new Authenticator(config.tokens),
        metrics,
        logger,
        version: VERSION,
        isReady: () => server.current?.ready ?? false,
        replication,
      });
      const s = new GeodrServer(config, service, app, logger, releaseLock);
      server.current = s;
      await app.listen({ host: config.host, port: config.port });
      const addr = app.server.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : config.port;
      s.url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
      config.advertiseUrl ??= s.url;
      replication.start();
      const resumed = operations.resume();
      backup.start();
      s.ready = true;
      logger.info({ url: s.url, dataDir: config.dataDir, databases: store.listDatabases().length, resumedOperations: resumed, version: VERSION }, 'server ready');
      if (!statementDeadlines()) {
        logger.warn('the statement-deadline extension is not built (no C compiler at npm run build): a statement is stopped at its deadline only when it yields a row');
      }
      return s;
    } catch (e) {
      releaseLock();
      throw e;
    }
  }

  /**
   * Drains: /readyz turns 503, new SQL is refused, in-flight requests finish, operations
   * stop (to resume at next start), every database syncs its log and closes.
   */
  shutdown(): Promise<void> {
    this.stopping ??= (async () => {
      this.ready = false;
      this.logger.info('draining');
      try {
        // Replication streams are long-lived responses: end them, or close would wait for them forever.
        this.service.replication?.source.endStreams(undefined, 'the server is shutting down', 'UNAVAILABLE');
        await this.closeHttp();
        await this.service.operations.stop();
        await this.service.replication?.stop();
        await this.service.backup?.stop();
        await this.service.host.closeAll();
        this.service.store.close();
      } finally {
        this.releaseLock();
        this.logger.info('stopped');
      }
    })();
    return this.stopping;
  }

  /**
   * Closes the HTTP server once in-flight requests are answered. Node closes idle
   * keep-alive connections once, when closing starts; a connection whose request ends
   * later would stay open until the client drops it (up to the 72 s keep-alive its
   * responses advertised), holding the exit. So requests that arrive while draining are
   * answered with `Connection: close`, idle connections are swept until the server has
   * closed, and past the deadline the rest are cut.
   */
  private async closeHttp(): Promise<void> {
    const http = this.app.server;
    const closeAfter = (_req: unknown, res: { setHeader(name: string, value: string): unknown }): void => {
      res.setHeader('connection', 'close');
    };
    http.prependListener('request', closeAfter);
    const sweep = setInterval(() => http.closeIdleConnections(), 100);
    const deadline = setTimeout(() => {
      this.logger.warn({ deadlineMs: DRAIN_DEADLINE_MS }, 'requests still running at the drain deadline: closing their connections');
      http.closeAllConnections();
    }, DRAIN_DEADLINE_MS);
    try {
      await this.app.close();
    } finally {
      clearInterval(sweep);
      clearTimeout(deadline);
      http.off('request', closeAfter);
    }
  }
}

/** How long in-flight requests get to finish once draining starts. */
const DRAIN_DEADLINE_MS = 10_000;

/**
 * One server per data directory: a second one would open the same databases with a
 * second writer. The lock file holds the owner's pid; a lock whose process is gone
 * (after kill -9) is taken over.
 */
function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, 'server.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      let released = false;
      return () => {
        if (released) return;
        released = true;
        fs.rmSync(file, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(fs.readFileSync(file, 'utf8'));
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new GeodrError('CONFLICT', `another server (pid ${pid}) is using data directory ${dataDir}`, { object: file });
      }
      fs.rmSync(file, { force: true });
    }
  }
  throw new GeodrError('CONFLICT', `could not lock data directory ${dataDir}`, { object: file });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
