/**
 * The HTTP surface of a server: management API (pools, databases, operations), SQL
 * endpoint (JSON, and libSQL's Hrana-over-HTTP), health, metrics and OpenAPI.
 * Handlers validate shapes with JSON schema (unknown fields are refused, not dropped)
 * and call {@link ServerService} or {@link SqlSession}; every error leaves as
 * `{ "error": { code, message, retryable, ... } }` with the code's HTTP status.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import type { Logger } from 'pino';
import { GeodrError, isGeodrError } from '../errors.js';
import { requireAdmin, requireDatabaseAccess, type Authenticator, type Principal } from './auth.js';
import type { ServerConfig } from './config.js';
import { HranaEndpoint } from './hrana.js';
import type { ServerMetrics } from './metrics.js';
import { validateName } from './names.js';
import type { ServerService } from './service.js';
import { SqlSession, type SessionOptions, type SqlContext } from './sql.js';
import { resultView, toStatement } from './values.js';
import { registerCatalogRoutes } from '../catalog/routes.js';
import type { DatabaseRecord, OperationRecord } from './store.js';
import type { ReplicationManager } from '../replication/manager.js';
import { registerReplicationRoutes } from '../replication/routes.js';

export const API_VERSION = '2026-11-01';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

export interface AppDeps {
  config: ServerConfig;
  service: ServerService;
  sql: SqlContext;
  auth: Authenticator;
  metrics: ServerMetrics;
  logger: Logger;
  version: string;
  /** False while starting and draining: /readyz answers 503 and new SQL is refused. */
  isReady: () => boolean;
  replication?: ReplicationManager;
}

const NAME = { type: 'string', minLength: 1, maxLength: 200 } as const;
const dbParams = { type: 'object', properties: { db: NAME }, required: ['db'] } as const;
const poolParams = { type: 'object', properties: { pool: NAME }, required: ['pool'] } as const;
const opParams = { type: 'object', properties: { id: { type: 'string', maxLength: 100 } }, required: ['id'] } as const;
const txParams = { type: 'object', properties: { db: NAME, tx: { type: 'string', maxLength: 100 } }, required: ['db', 'tx'] } as const;

const sqlValueSchema = {
  description: 'null, number, string, boolean, {"$integer": "…"}, {"$real": n} or {"$blob": "<base64>"}',
} as const;
const statementSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['sql'],
  properties: {
    sql: { type: 'string', minLength: 1 },
    args: { type: 'array', items: sqlValueSchema },
    named: { type: 'object', additionalProperties: sqlValueSchema },
  },
} as const;
const poolBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    maxDatabases: { type: 'integer', minimum: 1, maximum: 1_000_000 },
    maxConcurrentOperations: { type: 'integer', minimum: 1, maximum: 64 },
    storageQuotaBytes: { type: 'integer', minimum: 0, description: '0 means no quota' },
  },
} as const;

type Req = FastifyRequest;

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, service, auth, metrics } = deps;
  const app = Fastify({
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- pino's Logger and fastify's logger type differ in generics
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: config.limits.requestBytes,
    // Unknown fields are an error, never silently dropped; types are not coerced in bodies.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
    genReqId: () => randomUUID(),
    // Long names reach validateName, which says what is wrong, instead of a bare 414.
    routerOptions: { maxParamLength: 1000 },
    // Per-request lines would dominate the log at thousands of statements a second.
    logController: new LogController({ disableRequestLogging: true }),
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'geodr server API', version: API_VERSION, description: 'Management API and SQL endpoint of one geodr server.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });

  app.addHook('onResponse', async (req, reply) => {
    metrics.httpRequests.inc({ method: req.method, route: req.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) });
    if (reply.statusCode >= 500) req.log.warn({ method: req.method, url: req.routeOptions.url, status: reply.statusCode }, 'request failed');
  });

  const open = new Set(['/healthz', '/readyz', '/openapi.json']);
  app.addHook('onRequest', async (req) => {
    if (open.has(req.url.split('?')[0]!)) return;
    req.principal = auth.authenticate(req.headers.authorization);
  });

  app.setErrorHandler((err: unknown, req, reply) => {
    const g = toGeodrError(err);
    if (g.status >= 500) req.log.error({ err: g, code: g.code }, 'request error');
    if (/\/v[23]\/pipeline$/.test(req.url.split('?')[0]!)) {
      // libSQL clients read {message, code} only from a body typed exactly application/json.
      void reply
        .status(g.status)
        .header('content-type', 'application/json')
        .send(Buffer.from(JSON.stringify({ message: g.message, code: g.code })));
      return;
    }
    void reply.status(g.status).send({ error: g.toJSON() });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: new GeodrError('NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`).toJSON() });
  });

  const admin = (req: Req): void => requireAdmin(req.principal!);
  const dbAccess = (req: Req, db: string): DatabaseRecord => {
    validateName('database', db);
    const rec = service.store.getDatabase(db);
    requireDatabaseAccess(req.principal!, db, rec?.pool);
    if (rec === undefined) throw new GeodrError('NOT_FOUND', `database ${JSON.stringify(db)} does not exist`, { database: db });
    return rec;
  };
  const ready = (): void => {
    if (!deps.isReady()) throw new GeodrError('UNAVAILABLE', 'the server is starting or shutting down');
  };
  /**
   * Per-request SQL options from headers, the same for the JSON endpoint and libSQL's:
   * `Geodr-Durability: sync` waits for a geo-secondary; `Geodr-Min-Epoch: n` refuses a
   * copy older than an epoch the client has already seen. Every answer says the epoch.
   */
  const sqlOptions = (req: Req, reply: FastifyReply, rec: DatabaseRecord): SessionOptions => {
    const db = rec.name;
    const d = req.headers['geodr-durability'];
    if (d !== undefined && d !== 'sync' && d !== 'local') throw new GeodrError('INVALID_ARGUMENT', `header Geodr-Durability must be "sync" or "local", got ${JSON.stringify(d)}`, { database: db });
    void reply.header('geodr-epoch', String(deps.replication?.epochOf(rec) ?? rec.epoch));
    if (rec.dbId !== '') void reply.header('geodr-db-id', rec.dbId);
    const me = req.headers['geodr-min-epoch'];
    if (me !== undefined) {
      const n = Number(me);
      if (typeof me !== 'string' || !Number.isSafeInteger(n) || n < 0) throw new GeodrError('INVALID_ARGUMENT', `header Geodr-Min-Epoch must be a non-negative integer, got ${JSON.stringify(me)}`, { database: db });
      // An epoch seen of another database under this name (re-created, restored into place) says nothing about this one.
      const sameDatabase = req.headers['geodr-db-id'] === undefined || req.headers['geodr-db-id'] === rec.dbId;
      if (sameDatabase) deps.replication?.checkMinEpoch(db, n);
    }
    return { durability: d === 'sync' ? 'sync' : 'local', admin: req.principal!.role === 'admin' };
  };

  // Health

  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async (_req, reply) => {
    if (!deps.isReady()) return reply.status(503).send({ status: 'unavailable' });
    return { status: 'ready' };
  });
  app.get('/metrics', { schema: { hide: true } }, async (req, reply) => {
    admin(req);
    const body = await metrics.registry.metrics();
    return reply.type(metrics.registry.contentType).send(body);
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  // Server

  app.get('/v1/server', { schema: { summary: 'This server: name, region, version, counts.', tags: ['server'] } }, async () => ({
    name: config.name,
    region: config.region,
    version: deps.version,
    apiVersion: API_VERSION,
    defaultPool: config.defaultPool,
    databases: service.store.listDatabases().length,
    pools: service.store.listPools().length,
    openDatabases: service.host.openCount,
  }));

  // Elastic pools

  app.get('/v1/elasticPools', { schema: { summary: 'List elastic pools.', tags: ['pools'] } }, async (req) => {
    admin(req);
    return { value: service.listPools() };
  });
  app.get<{ Params: { pool: string } }>('/v1/elasticPools/:pool', { schema: { summary: 'Get an elastic pool.', tags: ['pools'], params: poolParams } }, async (req) => {
    admin(req);
    return service.getPool(req.params.pool);
  });
  app.put<{ Params: { pool: string }; Body: { maxDatabases?: number; maxConcurrentOperations?: number; storageQuotaBytes?: number } }>(
    '/v1/elasticPools/:pool',
    { schema: { summary: 'Create or update an elastic pool.', tags: ['pools'], params: poolParams, body: poolBody } },
    async (req, reply) => {
      admin(req);
      const { pool, created } = service.putPool(req.params.pool, req.body ?? {});
      return reply.status(created ? 201 : 200).send(pool);
    },
  );
  app.patch<{ Params: { pool: string }; Body: { maxDatabases?: number; maxConcurrentOperations?: number; storageQuotaBytes?: number } }>(
    '/v1/elasticPools/:pool',
    { schema: { summary: 'Update an elastic pool.', tags: ['pools'], params: poolParams, body: poolBody } },
    async (req) => {
      admin(req);
      service.getPool(req.params.pool);
      return service.putPool(req.params.pool, req.body ?? {}).pool;
    },
  );
  app.delete<{ Params: { pool: string } }>('/v1/elasticPools/:pool', { schema: { summary: 'Delete an empty elastic pool.', tags: ['pools'], params: poolParams } }, async (req, reply) => {
    admin(req);
    service.deletePool(req.params.pool, config.defaultPool);
    return reply.status(204).send();
  });

  // Databases

  app.get<{ Querystring: { pool?: string } }>(
    '/v1/databases',
    { schema: { summary: 'List databases (the ones a data token may use).', tags: ['databases'], querystring: { type: 'object', additionalProperties: false, properties: { pool: NAME } } } },
    async (req) => {
      const p = req.principal!;
      const all = service.listDatabases(req.query.pool);
      return { value: p.role === 'admin' ? all : all.filter((d) => p.databases.has(d.name) || p.pools.has(d.pool)) };
    },
  );
  app.get<{ Params: { db: string } }>('/v1/databases/:db', { schema: { summary: 'Get a database: role, pool, size, TXID, checksum, epoch, last write.', tags: ['databases'], params: dbParams } }, async (req) => {
    dbAccess(req, req.params.db);
    return service.getDatabase(req.params.db);
  });
  app.put<{
    Params: { db: string };
    Body: { createMode?: string; elasticPoolName?: string; sourceServer?: string; linkId?: string; sourceDatabaseName?: string; sourceDatabaseId?: string; restorePointInTime?: string; restorePointTxid?: number };
  }>(
    '/v1/databases/:db',
    {
      schema: {
        summary: 'Create a database. Default creates an empty one (201; repeating the same request answers 200). PointInTimeRestore, Restore, Recovery and RestoreLongTermRetentionBackup restore from backups (202 and an operation). Secondary (a readable geo-secondary of sourceServer/sourceDatabaseName, seeded as an operation) and Copy (a one-time copy that becomes independent) answer 202 too.',
        tags: ['databases'],
        params: dbParams,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            createMode: { type: 'string', description: 'Default | Copy | Secondary | PointInTimeRestore | Restore | Recovery | RestoreLongTermRetentionBackup' },
            elasticPoolName: NAME,
            sourceServer: { ...NAME, description: 'Secondary, Copy: the server holding the primary (one of this server\'s peers)' },
            linkId: { type: 'string', pattern: '^[0-9a-f-]{36}$', description: 'Secondary: set by the primary\'s server when the secondary is added there' },
            sourceDatabaseName: { ...NAME, description: 'PointInTimeRestore: the database on this server to restore; Secondary, Copy: the primary on sourceServer' },
            sourceDatabaseId: { type: 'string', maxLength: 64, description: 'Restore, Recovery, RestoreLongTermRetentionBackup: the database id (restorableDroppedDatabases, recoverableDatabases)' },
            restorePointInTime: { type: 'string', maxLength: 64, description: 'ISO-8601 time to restore to (default: the latest point)' },
            restorePointTxid: { type: 'integer', minimum: 0, description: 'exact TXID to restore to (or the long-term backup to restore)' },
          },
        },
      },
    },
    async (req, reply) => {
      admin(req);
      const body = req.body ?? {};
      const r = service.createDatabase(req.params.db, { ...body, pool: body.elasticPoolName ?? config.defaultPool });
      if ('operation' in r) return accepted(reply, r.operation);
      return reply.status(r.created ? 201 : 200).send(r.view);
    },
  );
  app.patch<{ Params: { db: string }; Body: { elasticPoolName?: string } }>(
    '/v1/databases/:db',
    {
      schema: {
        summary: 'Move a database to another elastic pool.',
        tags: ['databases'],
        params: dbParams,
        body: { type: 'object', additionalProperties: false, required: ['elasticPoolName'], properties: { elasticPoolName: NAME } },
      },
    },
    async (req) => {
      admin(req);
      return service.moveDatabase(req.params.db, req.body.elasticPoolName!);
    },
  );
  app.post<{ Params: { db: string }; Body: { newName: string } }>(
    '/v1/databases/:db/rename',
    {
      schema: {
        summary: 'Rename a database.',
        tags: ['databases'],
        params: dbParams,
        body: { type: 'object', additionalProperties: false, required: ['newName'], properties: { newName: NAME } },
      },
    },
    async (req) => {
      admin(req);
      return service.renameDatabase(req.params.db, req.body.newName);
    },
  );
  app.delete<{ Params: { db: string } }>(
    '/v1/databases/:db',
    { schema: { summary: 'Delete a database. Its files move to dropped/<id> and it is listed as a restorable dropped database.', tags: ['databases'], params: dbParams } },
    async (req) => {
      admin(req);
      return service.deleteDatabase(req.params.db);
    },
  );
  app.post<{ Params: { db: string } }>(
    '/v1/databases/:db/verify',
    { schema: { summary: 'Start an operation that recomputes the checksum and runs integrity_check.', tags: ['databases'], params: dbParams } },
    async (req, reply) => {
      admin(req);
      const op = service.verifyDatabase(req.params.db);
      return accepted(reply, op);
    },
  );
  app.get('/v1/restorableDroppedDatabases', { schema: { summary: 'Databases deleted from this server whose files are kept.', tags: ['databases'] } }, async (req) => {
    admin(req);
    return { value: service.listDropped() };
  });

  // Backups and restores

  const backup = (): NonNullable<typeof service.backup> => {
    if (service.backup === undefined) throw new GeodrError('UNSUPPORTED', 'this server has no backup vault');
    return service.backup;
  };
  app.get<{ Params: { db: string } }>(
    '/v1/databases/:db/restorePoints',
    { schema: { summary: 'Earliest and latest restore points, and where shipping to the vault (and its geo copy) stands.', tags: ['backup'], params: dbParams } },
    async (req) => {
      dbAccess(req, req.params.db);
      const rec = service.requireDatabase(req.params.db);
      const points = await backup().restorePointsOf(rec.dbId);
      const live = service.getDatabase(req.params.db);
      const iso = (p: { txid: number; time: number } | undefined) => (p === undefined ? null : { txid: p.txid, time: new Date(p.time).toISOString() });
      return { database: rec.name, dbId: rec.dbId, earliest: iso(points.earliest), latest: iso(points.latest), gap: points.gap ?? null, backup: backup().status({ dbId: rec.dbId, txid: live.txid }) };
    },
  );
  app.get<{ Params: { db: string } }>(
    '/v1/databases/:db/backupShortTermRetentionPolicies/default',
    { schema: { summary: 'The point-in-time restore window, days.', tags: ['backup'], params: dbParams } },
    async (req) => {
      admin(req);
      return { retentionDays: service.getRetention(req.params.db).retentionDays };
    },
  );
  app.put<{ Params: { db: string }; Body: { retentionDays: number } }>(
    '/v1/databases/:db/backupShortTermRetentionPolicies/default',
    {
      schema: {
        summary: 'Set the point-in-time restore window (1-35 days).',
        tags: ['backup'],
        params: dbParams,
        body: { type: 'object', additionalProperties: false, required: ['retentionDays'], properties: { retentionDays: { type: 'integer', minimum: 1, maximum: 35 } } },
      },
    },
    async (req) => {
      admin(req);
      return service.setShortTermRetention(req.params.db, req.body.retentionDays);
    },
  );
  const ltrBody = {
    type: 'object',
    additionalProperties: false,
    properties: {
      weeklyRetention: { type: ['string', 'null'], pattern: '^P\\d+[DWMY]$' },
      monthlyRetention: { type: ['string', 'null'], pattern: '^P\\d+[DWMY]$' },
      yearlyRetention: { type: ['string', 'null'], pattern: '^P\\d+[DWMY]$' },
      weekOfYear: { type: 'integer', minimum: 1, maximum: 52 },
    },
  } as const;
  app.get<{ Params: { db: string } }>(
    '/v1/databases/:db/backupLongTermRetentionPolicies/default',
    { schema: { summary: 'The long-term retention policy (W/M/Y, week of year).', tags: ['backup'], params: dbParams } },
    async (req) => {
      admin(req);
      const ltr = service.getRetention(req.params.db).ltr;
      return { weeklyRetention: ltr?.weekly ?? null, monthlyRetention: ltr?.monthly ?? null, yearlyRetention: ltr?.yearly ?? null, weekOfYear: ltr?.weekOfYear ?? 1 };
    },
  );
  app.put<{ Params: { db: string }; Body: { weeklyRetention?: string | null; monthlyRetention?: string | null; yearlyRetention?: string | null; weekOfYear?: number } }>(
    '/v1/databases/:db/backupLongTermRetentionPolicies/default',
    { schema: { summary: 'Set the long-term retention policy: ISO-8601 durations (P12W, P12M, P10Y) or null.', tags: ['backup'], params: dbParams, body: ltrBody } },
    async (req) => {
      admin(req);
      const b = req.body;
      // Kept even with no durations, so a week of year set alone is not lost.
      const ltr = { weekly: b.weeklyRetention ?? null, monthly: b.monthlyRetention ?? null, yearly: b.yearlyRetention ?? null, weekOfYear: b.weekOfYear ?? 1 };
      const set = service.setLongTermRetention(req.params.db, ltr);
      return { weeklyRetention: set?.weekly ?? null, monthlyRetention: set?.monthly ?? null, yearlyRetention: set?.yearly ?? null, weekOfYear: set?.weekOfYear ?? 1 };
    },
  );
  app.get<{ Params: { db: string } }>(
    '/v1/databases/:db/longTermRetentionBackups',
    { schema: { summary: 'Long-term backups of a database (restore one with createMode RestoreLongTermRetentionBackup).', tags: ['backup'], params: dbParams } },
    async (req) => {
      admin(req);
      return { value: await backup().longTermBackups(service.requireDatabase(req.params.db).dbId) };
    },
  );
  app.get('/v1/recoverableDatabases', { schema: { summary: 'Databases of the paired region whose backups this region holds (geo-restore with createMode Recovery).', tags: ['backup'] } }, async (req) => {
    admin(req);
    const list = await backup().recoverableDatabases();
    return {
      value: list.map((d) => ({
        ...d,
        restorePoints: {
          earliest: d.restorePoints.earliest === undefined ? null : { txid: d.restorePoints.earliest.txid, time: new Date(d.restorePoints.earliest.time).toISOString() },
          latest: d.restorePoints.latest === undefined ? null : { txid: d.restorePoints.latest.txid, time: new Date(d.restorePoints.latest.time).toISOString() },
          gap: d.restorePoints.gap ?? null,
        },
      })),
    };
  });
  app.post<{ Params: { db: string } }>(
    '/v1/databases/:db/verifyBackup',
    { schema: { summary: 'Start an operation that restores the latest backup into scratch space and verifies it.', tags: ['backup'], params: dbParams } },
    async (req, reply) => {
      admin(req);
      return accepted(reply, service.verifyBackup(req.params.db));
    },
  );
  app.get('/v1/restorePoints', { schema: { summary: 'Named restore points across several databases.', tags: ['backup'] } }, async (req) => {
    admin(req);
    return { value: await backup().listRestorePoints() };
  });
  app.post<{ Body: { name: string; databases: string[] } }>(
    '/v1/restorePoints',
    {
      schema: {
        summary: 'Take a restore point: the TXIDs of several databases at one instant (e.g. a catalog and its tenants).',
        tags: ['backup'],
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['name', 'databases'],
          properties: { name: NAME, databases: { type: 'array', minItems: 1, maxItems: 10_000, uniqueItems: true, items: NAME } },
        },
      },
    },
    async (req, reply) => {
      admin(req);
      validateName('restore point', req.body.name);
      for (const d of req.body.databases) validateName('database', d);
      return reply.status(201).send(await backup().createRestorePoint(req.body.name, req.body.databases));
    },
  );
  app.get<{ Params: { name: string } }>(
    '/v1/restorePoints/:name',
    { schema: { summary: 'One restore point.', tags: ['backup'], params: { type: 'object', properties: { name: NAME }, required: ['name'] } } },
    async (req) => {
      admin(req);
      validateName('restore point', req.params.name);
      return backup().getRestorePoint(req.params.name);
    },
  );
  app.post<{ Params: { name: string }; Body: { suffix?: string; elasticPoolName?: string } }>(
    '/v1/restorePoints/:name/restore',
    {
      schema: {
        summary: 'Restore every database of a restore point to its TXID, as <name><suffix> (one operation each).',
        tags: ['backup'],
        params: { type: 'object', properties: { name: NAME }, required: ['name'] },
        body: { type: 'object', additionalProperties: false, properties: { suffix: { type: 'string', minLength: 1, maxLength: 40 }, elasticPoolName: NAME } },
      },
    },
    async (req, reply) => {
      admin(req);
      const ops = await service.restoreRestorePoint(req.params.name, req.body?.suffix ?? '-restored', req.body?.elasticPoolName);
      return reply.status(202).send({ value: ops.map(opView) });
    },
  );
  app.post('/v1/backup/retention', { schema: { summary: 'Run the retention job now (it also runs on a schedule).', tags: ['backup'] } }, async (req) => {
    admin(req);
    return backup().applyRetention();
  });

  // Operations

  app.get<{ Querystring: { state?: string; database?: string } }>(
    '/v1/operations',
    {
      schema: {
        summary: 'List operations, newest first.',
        tags: ['operations'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { state: { type: 'string', enum: ['Pending', 'InProgress', 'Succeeded', 'Failed', 'Cancelled'] }, database: NAME },
        },
      },
    },
    async (req) => {
      admin(req);
      return { value: service.operations.list({ state: req.query.state, database: req.query.database }).map(opView) };
    },
  );
  app.get<{ Params: { id: string } }>('/v1/operations/:id', { schema: { summary: 'Get an operation: state, percent complete, times, error.', tags: ['operations'], params: opParams } }, async (req) => {
    admin(req);
    return opView(service.operations.get(req.params.id));
  });
  app.post<{ Params: { id: string } }>('/v1/operations/:id/cancel', { schema: { summary: 'Cancel an operation.', tags: ['operations'], params: opParams } }, async (req) => {
    admin(req);
    return opView(service.operations.cancel(req.params.id));
  });

  // SQL (JSON)

  const transactions = new Map<string, { session: SqlSession; database: string; principal: string; chain: Promise<unknown> }>();
  const sweep = setInterval(() => {
    for (const [id, t] of transactions) if (!t.session.inTransaction) transactions.delete(id);
  }, 1000);
  sweep.unref();
  app.addHook('onClose', async () => {
    clearInterval(sweep);
    for (const t of transactions.values()) t.session.close();
    transactions.clear();
  });

  const onTx = async <T>(req: Req, db: string, txId: string, fn: (s: SqlSession) => Promise<T>): Promise<T> => {
    const t = transactions.get(txId);
    if (t === undefined || t.database !== db || t.principal !== req.principal!.name) {
      throw new GeodrError('TRANSACTION_EXPIRED', `transaction ${txId} does not exist: it finished, timed out, or belongs to another database`, { database: db });
    }
    // Requests on one transaction run one after another, in arrival order.
    const run = t.chain.then(
      () => fn(t.session),
      () => fn(t.session),
    );
    t.chain = run.catch(() => undefined);
    return run;
  };

  app.post<{ Params: { db: string }; Body: { sql: string; args?: unknown[]; named?: Record<string, unknown>; transaction?: string } }>(
    '/v1/databases/:db/query',
    {
      schema: {
        summary: 'Run one statement. Writes return once durable.',
        tags: ['sql'],
        params: dbParams,
        body: { ...statementSchema, properties: { ...statementSchema.properties, transaction: { type: 'string', description: 'an interactive transaction id' } } },
      },
    },
    async (req, reply) => {
      ready();
      const options = sqlOptions(req, reply, dbAccess(req, req.params.db));
      const stmt = toStatement(req.body, '');
      if (req.body.transaction !== undefined) {
        return resultView(await onTx(req, req.params.db, req.body.transaction, (s) => s.execute(stmt)));
      }
      const s = new SqlSession(deps.sql, req.params.db, options);
      try {
        return resultView(await s.execute(stmt));
      } finally {
        s.close();
      }
    },
  );
  app.post<{ Params: { db: string }; Body: { statements: Array<{ sql: string; args?: unknown[]; named?: Record<string, unknown> }>; transaction?: string } }>(
    '/v1/databases/:db/batch',
    {
      schema: {
        summary: 'Run statements atomically as one transaction.',
        tags: ['sql'],
        params: dbParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['statements'],
          properties: { statements: { type: 'array', minItems: 1, items: statementSchema }, transaction: { type: 'string' } },
        },
      },
    },
    async (req, reply) => {
      ready();
      const options = sqlOptions(req, reply, dbAccess(req, req.params.db));
      const stmts = req.body.statements.map((s, i) => toStatement(s, `statements[${i}].`));
      const results =
        req.body.transaction !== undefined
          ? await onTx(req, req.params.db, req.body.transaction, (s) => s.batch(stmts))
          : await (async () => {
              const s = new SqlSession(deps.sql, req.params.db, options);
              try {
                return await s.batch(stmts);
              } finally {
                s.close();
              }
            })();
      return { results: results.map(resultView) };
    },
  );
  app.post<{ Params: { db: string }; Body: { mode?: 'write' | 'read' | 'deferred'; timeoutMs?: number } }>(
    '/v1/databases/:db/transactions',
    {
      schema: {
        summary: 'Open an interactive transaction; run statements with its id, then commit or roll back before it times out.',
        tags: ['sql'],
        params: dbParams,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: { mode: { type: 'string', enum: ['write', 'read', 'deferred'] }, timeoutMs: { type: 'integer', minimum: 100 } },
        },
      },
    },
    async (req, reply) => {
      ready();
      const s = new SqlSession(deps.sql, req.params.db, sqlOptions(req, reply, dbAccess(req, req.params.db)));
      await s.begin(req.body?.mode ?? 'write', req.body?.timeoutMs);
      const id = randomUUID();
      transactions.set(id, { session: s, database: req.params.db, principal: req.principal!.name, chain: Promise.resolve() });
      return reply.status(201).send({ transaction: id, expiresAt: new Date(s.transactionExpiresAt!).toISOString() });
    },
  );
  app.post<{ Params: { db: string; tx: string } }>(
    '/v1/databases/:db/transactions/:tx/commit',
    { schema: { summary: 'Commit; returns once durable.', tags: ['sql'], params: txParams } },
    async (req) => {
      dbAccess(req, req.params.db);
      try {
        return { txid: await onTx(req, req.params.db, req.params.tx, (s) => s.commit()) };
      } finally {
        transactions.delete(req.params.tx);
      }
    },
  );
  app.post<{ Params: { db: string; tx: string } }>(
    '/v1/databases/:db/transactions/:tx/rollback',
    { schema: { summary: 'Roll back.', tags: ['sql'], params: txParams } },
    async (req) => {
      dbAccess(req, req.params.db);
      try {
        await onTx(req, req.params.db, req.params.tx, async (s) => s.rollback());
        return { rolledBack: true };
      } finally {
        transactions.delete(req.params.tx);
      }
    },
  );

  // SQL (libSQL remote protocol: Hrana over HTTP). Clients use the URL
  // http://host:port/v1/databases/<db>/ — with the trailing slash.
  const hrana = new HranaEndpoint({ openSession: (db: string, options: SessionOptions) => new SqlSession(deps.sql, db, options), limits: config.limits });
  app.addHook('onClose', async () => hrana.close());
  for (const version of [2, 3] as const) {
    app.get<{ Params: { db: string } }>(`/v1/databases/:db/v${version}`, { schema: { hide: true, params: dbParams } }, async (req) => {
      dbAccess(req, req.params.db);
      return { version };
    });
    app.post<{ Params: { db: string }; Body: unknown }>(`/v1/databases/:db/v${version}/pipeline`, { schema: { hide: true, params: dbParams } }, async (req, reply) => {
      ready();
      return hrana.pipeline(req.params.db, req.principal!.name, req.body, version, sqlOptions(req, reply, dbAccess(req, req.params.db)));
    });
  }
  registerCatalogRoutes(app, deps);

  app.post('/v1/databases/v2/pipeline', { schema: { hide: true } }, async () => {
    throw new GeodrError('INVALID_ARGUMENT', 'the libSQL URL must name the database and end with a slash: http://host:port/v1/databases/<db>/');
  });

  if (deps.replication !== undefined) registerReplicationRoutes(app, deps.replication, deps.isReady);

  return app;
}

function accepted(reply: FastifyReply, op: OperationRecord): FastifyReply {
  return reply
    .status(202)
    .header('location', `/v1/operations/${op.id}`)
    .send(opView(op));
}

export function opView(op: OperationRecord): Record<string, unknown> {
  return {
    id: op.id,
    kind: op.kind,
    state: op.state,
    percentComplete: op.percentComplete,
    database: op.database,
    pool: op.pool,
    createdAt: new Date(op.createdAt).toISOString(),
    startedAt: op.startedAt === null ? null : new Date(op.startedAt).toISOString(),
    endedAt: op.endedAt === null ? null : new Date(op.endedAt).toISOString(),
    error: op.error,
    result: op.result,
    cancelRequested: op.cancelRequested,
  };
}


/** Turns anything thrown into a GeodrError, naming fastify's request problems plainly. */
export function toGeodrError(err: unknown): GeodrError {
  if (isGeodrError(err)) return err;
  const e = err as { code?: string; statusCode?: number; message?: string; validation?: Array<{ instancePath?: string; message?: string; params?: Record<string, unknown> }>; validationContext?: string };
  if (e.validation !== undefined) {
    const v = e.validation[0];
    const where = `${e.validationContext ?? 'body'}${v?.instancePath ?? ''}`.replace(/\//g, '.');
    const extra = typeof v?.params?.additionalProperty === 'string' ? ` (unknown field "${v.params.additionalProperty}")` : '';
    return new GeodrError('INVALID_ARGUMENT', `${where} ${v?.message ?? 'is invalid'}${extra}`);
  }
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new GeodrError('INVALID_ARGUMENT', `malformed JSON body: ${e.message ?? ''}`);
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new GeodrError('LIMIT_EXCEEDED', `the request body is larger than the server's limit (limits.requestBytes)`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new GeodrError('INVALID_ARGUMENT', `unsupported content type; send application/json`);
  }
  if (err instanceof SyntaxError) return new GeodrError('INVALID_ARGUMENT', `malformed JSON body: ${err.message}`);
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return new GeodrError('INVALID_ARGUMENT', e.message ?? 'bad request');
  return new GeodrError('INTERNAL', `internal error: ${e.message ?? String(err)}`, {}, { cause: err });
}
