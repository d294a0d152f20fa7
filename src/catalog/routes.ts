/**
 * The catalog's HTTP routes, registered on every server by {@link registerCatalogRoutes}:
 *
 * - `/v1/databases/{db}/shardMapManager/...`: the global shard map in catalog database
 *   `db` (maps, shards, mappings, lookups, pending operations, the GSM side of
 *   recovery), and the recovery manager itself;
 * - `/v1/databases/{db}/catalog/...`: tenants and the inventory;
 * - `/v1/databases/{db}/localShardMap...`: the local shard map of database `db`, and
 *   SQL routed by shard key (validated against it).
 *
 * Credentials: reading (lookups, listings, LSM validation, routed SQL) needs a token
 * that may use the database, so a data token scoped to the catalog database is all
 * routing needs; every change needs the admin role.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ERROR_CODES, GeodrError, type ErrorCode } from '../errors.js';
import type { AppDeps } from '../server/http.js';
import { requireAdmin, requireDatabaseAccess } from '../server/auth.js';
import { validateName } from '../server/names.js';
import { resultView, toStatement } from '../server/values.js';
import { GeodrApiError } from '../sdk/errors.js';
import { executeForKey } from './execute.js';
import * as gsm from './gsm.js';
import { KEY_TYPES, parseKeyText, type KeyType } from './keys.js';
import { applyLsm, lookupLsm, readLsm, validateChange } from './lsm.js';
import { getShardMapManager } from './manager.js';
import { RESOLUTIONS, normalizeLocation, normalizeServer, validateCatalogName, type LocalChange, type MapKind, type MappingDifferenceResolution, type RecoveryToken } from './model.js';
import { readDatabase, writeDatabase } from './schema.js';
import type { Connection } from '../engine/index.js';

export type CatalogRouteDeps = Pick<AppDeps, 'service' | 'sql' | 'isReady'>;

const NAME = { type: 'string', minLength: 1, maxLength: 200 } as const;
const ID = { type: 'string', minLength: 1, maxLength: 100 } as const;
const KEY = { type: 'string', maxLength: 4096 } as const;
const OPT_KEY = { type: ['string', 'null'], maxLength: 4096 } as const;
const SERVER = { type: 'string', minLength: 1, maxLength: 1000 } as const;
const STATUS = { type: 'string', enum: ['online', 'offline'] } as const;
const BULK = 100_000;

const dbParams = { type: 'object', properties: { db: NAME }, required: ['db'] } as const;
const mapParams = { type: 'object', properties: { db: NAME, map: NAME }, required: ['db', 'map'] } as const;
const tenantParams = { type: 'object', properties: { db: NAME, name: NAME }, required: ['db', 'name'] } as const;
const opParams = { type: 'object', properties: { db: NAME, id: ID }, required: ['db', 'id'] } as const;
const locationBody = {
  type: 'object',
  additionalProperties: false,
  required: ['server', 'database'],
  properties: { server: SERVER, database: NAME, map: NAME },
} as const;

const mappingSpec = {
  type: 'object',
  additionalProperties: false,
  properties: { key: KEY, low: OPT_KEY, high: OPT_KEY, status: STATUS, shardId: ID, server: SERVER, database: NAME },
} as const;
const localMapping = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'low', 'high', 'status', 'version'],
  properties: { id: ID, low: KEY, high: OPT_KEY, status: STATUS, version: { type: 'integer', minimum: 1 } },
} as const;
const localChange = {
  type: 'object',
  additionalProperties: false,
  required: ['map', 'shardId', 'kind', 'keyType'],
  properties: {
    map: NAME,
    shardId: ID,
    kind: { type: 'string', enum: ['list', 'range'] },
    keyType: { type: 'string', enum: KEY_TYPES },
    shardStatus: { type: 'string', enum: ['online', 'offline', 'detached'] },
    dropShard: { type: 'boolean' },
    remove: { type: 'array', maxItems: BULK, items: ID },
    put: { type: 'array', maxItems: BULK, items: localMapping },
    replace: { type: 'boolean' },
  },
} as const;
const operationBody = {
  type: 'object',
  additionalProperties: false,
  required: ['kind'],
  properties: {
    kind: { type: 'string', enum: gsm.OPERATION_KINDS },
    shards: {
      type: 'array',
      maxItems: BULK,
      items: { type: 'object', additionalProperties: false, required: ['server', 'database'], properties: { server: SERVER, database: NAME, status: STATUS } },
    },
    mappings: { type: 'array', maxItems: BULK, items: mappingSpec },
    shardId: ID,
    server: SERVER,
    database: NAME,
    status: STATUS,
    mappingId: ID,
    at: KEY,
    leftId: ID,
    rightId: ID,
  },
} as const;
const sqlValue = { description: 'null, number, string, boolean, {"$integer": "…"}, {"$real": n} or {"$blob": "<base64>"}' } as const;
const statement = {
  type: 'object',
  additionalProperties: false,
  required: ['sql'],
  properties: { sql: { type: 'string', minLength: 1 }, args: { type: 'array', items: sqlValue }, named: { type: 'object', additionalProperties: sqlValue } },
} as const;
const tokenSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['map', 'location'],
  properties: {
    map: NAME,
    location: { type: 'object', additionalProperties: false, required: ['server', 'database'], properties: { server: SERVER, database: NAME } },
    shardId: { type: ['string', 'null'] },
    differences: { type: 'array' },
    detectedAt: { type: 'string' },
  },
} as const;
const restoredPoint = {
  type: 'object',
  additionalProperties: false,
  required: ['txid'],
  properties: { txid: { type: 'integer', minimum: 0 }, time: { type: 'string', maxLength: 64 } },
} as const;

type Req = FastifyRequest;

/** A GeodrApiError from a call this server made (recovery reaches other servers) as the error this server answers with. */
function asServerError(e: unknown): unknown {
  if (!(e instanceof GeodrApiError)) return e;
  const code: ErrorCode = Object.hasOwn(ERROR_CODES, e.code) ? (e.code as ErrorCode) : e.status === 0 ? 'UNAVAILABLE' : 'INTERNAL';
  return new GeodrError(code, e.message, e.context);
}

async function mapped<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw asServerError(e);
  }
}

export function registerCatalogRoutes(app: FastifyInstance, deps: CatalogRouteDeps): void {
  const ctx = deps.sql;
  const store = deps.service.store;

  /** Names the database and checks the token: `write` needs admin, reads any token that may use it. */
  const access = (req: Req, db: string, write: boolean): void => {
    validateName('database', db);
    const rec = store.getDatabase(db);
    if (write) requireAdmin(req.principal!);
    else requireDatabaseAccess(req.principal!, db, rec?.pool);
    if (rec === undefined) throw new GeodrError('NOT_FOUND', `database ${JSON.stringify(db)} does not exist`, { database: db });
  };
  const ready = (): void => {
    if (!deps.isReady()) throw new GeodrError('UNAVAILABLE', 'the server is starting or shutting down');
  };
  const gsmRead = <T>(db: string, fn: (conn: Connection) => T): Promise<T> =>
    readDatabase(ctx, db, (conn) => {
      gsm.requireGsm(conn, db);
      return fn(conn);
    });
  const gsmWrite = async <T>(db: string, fn: (conn: Connection) => T): Promise<T> => {
    ready();
    return (
      await writeDatabase(ctx, db, (conn) => {
        gsm.requireGsm(conn, db);
        return fn(conn);
      })
    ).result;
  };
  const mapRow = (conn: Connection, db: string, map: string): gsm.MapRow => gsm.getMapRow(conn, db, validateCatalogName('shard map', map));
  /** A shard map manager acting for this request: on this server's catalog, with the caller's token on every shard server. */
  const callerManager = (req: Req, db: string) => {
    const token = /^Bearer\s+(\S+)/i.exec(req.headers.authorization ?? '')?.[1];
    return getShardMapManager({ url: `${req.protocol}://${req.headers.host ?? 'localhost'}`, token, database: db });
  };
  const recovery = (req: Req, db: string) => callerManager(req, db).getRecoveryManager();
  const tags = ['catalog'];

  // Shard map manager and maps

  app.put<{ Params: { db: string } }>(
    '/v1/databases/:db/shardMapManager',
    { schema: { summary: 'Create the shard map manager (global shard map, tenant catalog, inventory) in this database. Repeating it answers 200.', tags, params: dbParams } },
    async (req, reply) => {
      access(req, req.params.db, true);
      ready();
      const { result } = await writeDatabase(ctx, req.params.db, (conn) => gsm.createGsm(conn, Date.now()));
      return reply.status(result ? 201 : 200).send({ database: req.params.db, created: result });
    },
  );
  app.get<{ Params: { db: string } }>(
    '/v1/databases/:db/shardMapManager',
    { schema: { summary: 'The shard map manager: its maps and how many operations are pending.', tags, params: dbParams } },
    async (req) => {
      access(req, req.params.db, false);
      return gsmRead(req.params.db, (conn) => ({ database: req.params.db, maps: gsm.listMaps(conn), pendingOperations: gsm.listOperations(conn).length }));
    },
  );
  app.get<{ Params: { db: string } }>('/v1/databases/:db/shardMapManager/maps', { schema: { summary: 'List shard maps.', tags, params: dbParams } }, async (req) => {
    access(req, req.params.db, false);
    return { value: await gsmRead(req.params.db, (conn) => gsm.listMaps(conn)) };
  });
  app.put<{ Params: { db: string; map: string }; Body: { kind: MapKind; keyType: KeyType } }>(
    '/v1/databases/:db/shardMapManager/maps/:map',
    {
      schema: {
        summary: 'Create a list or range shard map of int, string or binary keys (the same request again answers 200).',
        tags,
        params: mapParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['kind', 'keyType'],
          properties: { kind: { type: 'string', enum: ['list', 'range'] }, keyType: { type: 'string', enum: KEY_TYPES } },
        },
      },
    },
    async (req, reply) => {
      access(req, req.params.db, true);
      const r = await gsmWrite(req.params.db, (conn) => gsm.createMap(conn, req.params.map, req.body.kind, req.body.keyType, Date.now()));
      return reply.status(r.created ? 201 : 200).send(r.map);
    },
  );
  app.get<{ Params: { db: string; map: string } }>('/v1/databases/:db/shardMapManager/maps/:map', { schema: { summary: 'A shard map: kind, key type, counts.', tags, params: mapParams } }, async (req) => {
    access(req, req.params.db, false);
    return gsmRead(req.params.db, (conn) => gsm.getMap(conn, req.params.db, validateCatalogName('shard map', req.params.map)));
  });
  app.delete<{ Params: { db: string; map: string } }>(
    '/v1/databases/:db/shardMapManager/maps/:map',
    { schema: { summary: 'Delete a shard map that has no shards, pending operations or tenants.', tags, params: mapParams } },
    async (req, reply) => {
      access(req, req.params.db, true);
      await gsmWrite(req.params.db, (conn) => gsm.deleteMap(conn, req.params.db, validateCatalogName('shard map', req.params.map)));
      return reply.status(204).send();
    },
  );
  app.get<{ Params: { db: string; map: string }; Querystring: { server?: string; database?: string } }>(
    '/v1/databases/:db/shardMapManager/maps/:map/shards',
    {
      schema: {
        summary: "A shard map's shards (only the one at server/database when both are given).",
        tags,
        params: mapParams,
        querystring: { type: 'object', additionalProperties: false, properties: { server: SERVER, database: NAME } },
      },
    },
    async (req) => {
      access(req, req.params.db, false);
      const loc = req.query.server !== undefined || req.query.database !== undefined ? normalizeLocation(req.query) : undefined;
      return { value: await gsmRead(req.params.db, (conn) => gsm.listShards(conn, mapRow(conn, req.params.db, req.params.map).name, loc)) };
    },
  );
  app.get<{ Params: { db: string; map: string }; Querystring: { shardId?: string } }>(
    '/v1/databases/:db/shardMapManager/maps/:map/mappings',
    {
      schema: {
        summary: "A shard map's mappings in key order (only one shard's with shardId).",
        tags,
        params: mapParams,
        querystring: { type: 'object', additionalProperties: false, properties: { shardId: ID } },
      },
    },
    async (req) => {
      access(req, req.params.db, false);
      return { value: await gsmRead(req.params.db, (conn) => gsm.listMappings(conn, mapRow(conn, req.params.db, req.params.map), req.query.shardId)) };
    },
  );
  app.get<{ Params: { db: string; map: string }; Querystring: { key: string } }>(
    '/v1/databases/:db/shardMapManager/maps/:map/lookup',
    {
      schema: {
        summary: 'The mapping covering a key (text form: decimal for int, the string, hex for binary) and its shard: what routing caches.',
        tags,
        params: mapParams,
        querystring: { type: 'object', additionalProperties: false, required: ['key'], properties: { key: KEY } },
      },
    },
    async (req) => {
      access(req, req.params.db, false);
      return gsmRead(req.params.db, (conn) => {
        const map = mapRow(conn, req.params.db, req.params.map);
        const hit = gsm.lookup(conn, map, parseKeyText(map.key_type, req.query.key));
        if (hit === undefined) throw new GeodrError('NOT_FOUND', `no mapping of shard map ${map.name} covers key ${req.query.key}`, { details: { map: map.name, key: req.query.key } });
        return { map: { name: map.name, kind: map.kind, keyType: map.key_type }, ...hit };
      });
    },
  );
  app.post<{ Params: { db: string; map: string }; Body: gsm.OperationRequest }>(
    '/v1/databases/:db/shardMapManager/maps/:map/operations',
    {
      schema: {
        summary:
          'Start a shard map change (addShards, removeShard, setShardStatus, addMappings, removeMapping, updateMapping, splitMapping, mergeMappings): checked and applied to the GSM, and recorded as a pending operation whose steps are the LSM changes to make; complete it once they are made. The SDK does all three.',
        tags,
        params: mapParams,
        body: operationBody,
      },
    },
    async (req, reply) => {
      access(req, req.params.db, true);
      const r = await gsmWrite(req.params.db, (conn) => gsm.runOperation(conn, req.params.db, validateCatalogName('shard map', req.params.map), req.body, Date.now()));
      return reply.status(r.operation === null ? 200 : 201).send(r);
    },
  );
  app.get<{ Params: { db: string }; Querystring: { server?: string; database?: string; map?: string } }>(
    '/v1/databases/:db/shardMapManager/shards',
    {
      schema: {
        summary: 'Shards across maps at a location (server and database), or on a server (server alone).',
        tags,
        params: dbParams,
        querystring: { type: 'object', additionalProperties: false, required: ['server'], properties: { server: SERVER, database: NAME, map: NAME } },
      },
    },
    async (req) => {
      access(req, req.params.db, false);
      const { server, database, map } = req.query;
      return {
        value: await gsmRead(req.params.db, (conn) =>
          database === undefined ? gsm.shardsOnServer(conn, normalizeServer(server), map) : gsm.listShards(conn, map, normalizeLocation({ server, database })),
        ),
      };
    },
  );
  app.get<{ Params: { db: string }; Querystring: { map?: string } }>(
    '/v1/databases/:db/shardMapManager/operations',
    { schema: { summary: 'Pending operations: shard map changes whose LSM steps are not all done.', tags, params: dbParams, querystring: { type: 'object', additionalProperties: false, properties: { map: NAME } } } },
    async (req) => {
      access(req, req.params.db, false);
      return { value: await gsmRead(req.params.db, (conn) => gsm.listOperations(conn, req.query.map)) };
    },
  );
  app.post<{ Params: { db: string; id: string }; Body: { failedSteps?: number[] } }>(
    '/v1/databases/:db/shardMapManager/operations/:id/complete',
    {
      schema: {
        summary: "Complete a pending operation: its LSM steps are done except failedSteps, which stay pending. Completing a finished operation answers completed.",
        tags,
        params: opParams,
        body: { type: 'object', additionalProperties: false, properties: { failedSteps: { type: 'array', maxItems: BULK, items: { type: 'integer', minimum: 0 } } } },
      },
    },
    async (req) => {
      access(req, req.params.db, true);
      return gsmWrite(req.params.db, (conn) => gsm.completeOperation(conn, req.params.id, req.body?.failedSteps ?? []));
    },
  );

  // The GSM side of recovery (the recovery manager below drives these)

  app.post<{ Params: { db: string }; Body: { server: string; database: string; map?: string } }>(
    '/v1/databases/:db/shardMapManager/global/detach',
    { schema: { summary: 'GSM only: remove the shards at a location and their mappings.', tags, params: dbParams, body: locationBody } },
    async (req) => {
      access(req, req.params.db, true);
      const loc = normalizeLocation(req.body);
      return { value: await gsmWrite(req.params.db, (conn) => gsm.detachShards(conn, loc, req.body.map)) };
    },
  );
  app.post<{ Params: { db: string }; Body: { server: string; database: string; shards: gsm.AttachSpec[] } }>(
    '/v1/databases/:db/shardMapManager/global/attach',
    {
      schema: {
        summary: 'GSM only: add shards at a location with the ids, kinds and key types their LSM states.',
        tags,
        params: dbParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['server', 'database', 'shards'],
          properties: {
            server: SERVER,
            database: NAME,
            shards: {
              type: 'array',
              maxItems: 1000,
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['map', 'shardId', 'kind', 'keyType', 'status'],
                properties: { map: NAME, shardId: ID, kind: { type: 'string', enum: ['list', 'range'] }, keyType: { type: 'string', enum: KEY_TYPES }, status: { type: 'string', enum: ['online', 'offline', 'detached'] } },
              },
            },
          },
        },
      },
    },
    async (req) => {
      access(req, req.params.db, true);
      const loc = normalizeLocation(req.body);
      for (const s of req.body.shards) validateCatalogName('shard map', s.map);
      return { value: await gsmWrite(req.params.db, (conn) => gsm.attachShards(conn, loc, req.body.shards, Date.now())) };
    },
  );
  app.post<{ Params: { db: string }; Body: { moves: Array<{ shardId: string; server: string; database: string }>; reconcile?: boolean } }>(
    '/v1/databases/:db/shardMapManager/global/relocate',
    {
      schema: {
        summary: 'GSM only: move shards to new locations in one transaction; with reconcile, record a pending operation that reconciles each trusting its LSM.',
        tags,
        params: dbParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['moves'],
          properties: {
            moves: { type: 'array', maxItems: BULK, items: { type: 'object', additionalProperties: false, required: ['shardId', 'server', 'database'], properties: { shardId: ID, server: SERVER, database: NAME } } },
            reconcile: { type: 'boolean' },
          },
        },
      },
    },
    async (req) => {
      access(req, req.params.db, true);
      return gsmWrite(req.params.db, (conn) => gsm.relocateShards(conn, req.body.moves, req.body.reconcile === true, Date.now()));
    },
  );
  app.post<{ Params: { db: string }; Body: gsm.ReconcileRequest }>(
    '/v1/databases/:db/shardMapManager/global/reconcile',
    {
      schema: {
        summary: "GSM only: make one shard's mappings exactly these; ones that collide with another shard's are returned as conflicts.",
        tags,
        params: dbParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['map', 'shardId', 'server', 'database', 'mappings'],
          properties: { map: NAME, shardId: ID, server: SERVER, database: NAME, status: STATUS, mappings: { type: 'array', maxItems: BULK, items: localMapping } },
        },
      },
    },
    async (req) => {
      access(req, req.params.db, true);
      return gsmWrite(req.params.db, (conn) => gsm.reconcileShard(conn, req.params.db, req.body));
    },
  );

  // The recovery manager, run by this server with the caller's token

  app.post<{ Params: { db: string }; Body: { server: string; database: string; map?: string } }>(
    '/v1/databases/:db/shardMapManager/recovery/detachShard',
    { schema: { summary: "Detach a shard: remove it and its mappings from the GSM, and fence its LSM if it can be reached (routing then refuses that copy).", tags, params: dbParams, body: locationBody } },
    async (req) => {
      access(req, req.params.db, true);
      return mapped(() => recovery(req, req.params.db).detachShard(req.body, req.body.map));
    },
  );
  app.post<{ Params: { db: string }; Body: { server: string; database: string; map?: string } }>(
    '/v1/databases/:db/shardMapManager/recovery/attachShard',
    { schema: { summary: "Attach a shard at a location as its LSM describes it (mappings follow with resolveMappingDifferences).", tags, params: dbParams, body: locationBody } },
    async (req) => {
      access(req, req.params.db, true);
      return mapped(() => recovery(req, req.params.db).attachShard(req.body, req.body.map));
    },
  );
  app.post<{ Params: { db: string }; Body: { server: string; database: string; map?: string } }>(
    '/v1/databases/:db/shardMapManager/recovery/detectMappingDifferences',
    { schema: { summary: 'Compare the GSM with the LSM at a location; one recovery token per shard map that differs (none when consistent).', tags, params: dbParams, body: locationBody } },
    async (req) => {
      access(req, req.params.db, true);
      return { value: await mapped(() => recovery(req, req.params.db).detectMappingDifferences(req.body, req.body.map)) };
    },
  );
  app.post<{ Params: { db: string }; Body: { token: RecoveryToken; resolution: MappingDifferenceResolution } }>(
    '/v1/databases/:db/shardMapManager/recovery/resolveMappingDifferences',
    {
      schema: {
        summary: 'Resolve a recovery token: KeepShardMapping trusts the LSM, KeepGlobalMapping the GSM. Both sides are read again first.',
        tags,
        params: dbParams,
        body: { type: 'object', additionalProperties: false, required: ['token', 'resolution'], properties: { token: tokenSchema, resolution: { type: 'string', enum: RESOLUTIONS } } },
      },
    },
    async (req) => {
      access(req, req.params.db, true);
      return mapped(() => recovery(req, req.params.db).resolveMappingDifferences(req.body.token, req.body.resolution));
    },
  );
  app.post<{ Params: { db: string }; Body: { fromServer: string; toServer: string; map?: string; databases?: Record<string, string>; fence?: boolean } }>(
    '/v1/databases/:db/shardMapManager/recovery/rebuildAfterFailover',
    {
      schema: {
        summary:
          "After a failover or a restore to another server: every shard on fromServer whose database answers on toServer is detached, attached there and reconciled trusting its LSM. Idempotent; run it again as more databases come online.",
        tags,
        params: dbParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['fromServer', 'toServer'],
          properties: { fromServer: SERVER, toServer: SERVER, map: NAME, databases: { type: 'object', additionalProperties: NAME }, fence: { type: 'boolean' } },
        },
      },
    },
    async (req) => {
      access(req, req.params.db, true);
      return mapped(() => recovery(req, req.params.db).rebuildAfterFailover(req.body));
    },
  );
  app.post<{ Params: { db: string }; Body: { map?: string } }>(
    '/v1/databases/:db/shardMapManager/recovery/recoverPendingOperations',
    { schema: { summary: 'Finish interrupted shard map operations by replaying their LSM steps.', tags, params: dbParams, body: { type: 'object', additionalProperties: false, properties: { map: NAME } } } },
    async (req) => {
      access(req, req.params.db, true);
      return mapped(() => callerManager(req, req.params.db).recoverPendingOperations({ map: req.body?.map }));
    },
  );

  // Tenant catalog and inventory

  app.get<{ Params: { db: string } }>('/v1/databases/:db/catalog/tenants', { schema: { summary: 'Tenants with their location, pool, status and last restore.', tags, params: dbParams } }, async (req) => {
    access(req, req.params.db, false);
    return { value: await gsmRead(req.params.db, (conn) => gsm.listTenants(conn, req.params.db)) };
  });
  app.get<{ Params: { db: string; name: string } }>('/v1/databases/:db/catalog/tenants/:name', { schema: { summary: 'A tenant.', tags, params: tenantParams } }, async (req) => {
    access(req, req.params.db, false);
    return gsmRead(req.params.db, (conn) => gsm.getTenant(conn, req.params.db, validateCatalogName('tenant', req.params.name)));
  });
  app.put<{ Params: { db: string; name: string }; Body: { map: string; key: string; pool?: string | null } }>(
    '/v1/databases/:db/catalog/tenants/:name',
    {
      schema: {
        summary: "Register a tenant's key (and pool); its mapping is a shard map operation (the SDK's registerTenant does both).",
        tags,
        params: tenantParams,
        body: { type: 'object', additionalProperties: false, required: ['map', 'key'], properties: { map: NAME, key: KEY, pool: { type: ['string', 'null'], maxLength: 200 } } },
      },
    },
    async (req, reply) => {
      access(req, req.params.db, true);
      const r = await gsmWrite(req.params.db, (conn) => gsm.putTenant(conn, req.params.db, req.params.name, req.body, Date.now()));
      return reply.status(r.created ? 201 : 200).send(r.tenant);
    },
  );
  app.patch<{ Params: { db: string; name: string }; Body: { pool?: string | null; lastRestored?: { txid: number; time?: string }; lastRepatriated?: { txid: number; time?: string } } }>(
    '/v1/databases/:db/catalog/tenants/:name',
    {
      schema: {
        summary: "Update a tenant's pool, or record the TXID its database was last restored or repatriated at.",
        tags,
        params: tenantParams,
        body: { type: 'object', additionalProperties: false, properties: { pool: { type: ['string', 'null'], maxLength: 200 }, lastRestored: restoredPoint, lastRepatriated: restoredPoint } },
      },
    },
    async (req) => {
      access(req, req.params.db, true);
      return gsmWrite(req.params.db, (conn) => gsm.patchTenant(conn, req.params.db, validateCatalogName('tenant', req.params.name), req.body ?? {}, Date.now()));
    },
  );
  app.delete<{ Params: { db: string; name: string } }>('/v1/databases/:db/catalog/tenants/:name', { schema: { summary: 'Remove a tenant from the catalog (its mapping stays).', tags, params: tenantParams } }, async (req) => {
    access(req, req.params.db, true);
    return gsmWrite(req.params.db, (conn) => gsm.deleteTenant(conn, req.params.db, validateCatalogName('tenant', req.params.name)));
  });
  app.get<{ Params: { db: string } }>('/v1/databases/:db/catalog/inventory', { schema: { summary: 'Servers, pools and databases as the last inventory sync recorded them.', tags, params: dbParams } }, async (req) => {
    access(req, req.params.db, false);
    return { value: await gsmRead(req.params.db, (conn) => gsm.getInventory(conn)) };
  });
  app.post<{ Params: { db: string }; Body: { server: string; name: string; region: string; version: string; pools: Array<{ name: string; settings: Record<string, unknown> }>; databases: Array<{ name: string; pool: string; settings: Record<string, unknown> }> } }>(
    '/v1/databases/:db/catalog/inventory',
    {
      schema: {
        summary: "Record one server's pools and databases (replacing what was recorded for it).",
        tags,
        params: dbParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['server', 'name', 'region', 'version', 'pools', 'databases'],
          properties: {
            server: SERVER,
            name: NAME,
            region: NAME,
            version: { type: 'string', maxLength: 100 },
            pools: { type: 'array', maxItems: BULK, items: { type: 'object', additionalProperties: false, required: ['name', 'settings'], properties: { name: NAME, settings: { type: 'object' } } } },
            databases: {
              type: 'array',
              maxItems: BULK,
              items: { type: 'object', additionalProperties: false, required: ['name', 'pool', 'settings'], properties: { name: NAME, pool: NAME, settings: { type: 'object' } } },
            },
          },
        },
      },
    },
    async (req) => {
      access(req, req.params.db, true);
      return gsmWrite(req.params.db, (conn) => gsm.putInventory(conn, req.body, Date.now()));
    },
  );

  // Local shard map

  app.get<{ Params: { db: string }; Querystring: { map?: string } }>(
    '/v1/databases/:db/localShardMap',
    { schema: { summary: "This database's local shard map: the shards it is and the mappings it holds.", tags, params: dbParams, querystring: { type: 'object', additionalProperties: false, properties: { map: NAME } } } },
    async (req) => {
      access(req, req.params.db, false);
      return readDatabase(ctx, req.params.db, (conn) => readLsm(conn, req.params.db, req.query.map));
    },
  );
  app.get<{ Params: { db: string }; Querystring: { map: string; key?: string; mappingId?: string } }>(
    '/v1/databases/:db/localShardMap/lookup',
    {
      schema: {
        summary: "The LSM's mapping by id (and covering key, when given), or the one covering a key: routing's validation read.",
        tags,
        params: dbParams,
        querystring: { type: 'object', additionalProperties: false, required: ['map'], properties: { map: NAME, key: KEY, mappingId: ID } },
      },
    },
    async (req) => {
      access(req, req.params.db, false);
      const r = await readDatabase(ctx, req.params.db, (conn) => lookupLsm(conn, req.query.map, { mappingId: req.query.mappingId, key: req.query.key }));
      if (r === undefined) throw new GeodrError('NOT_FOUND', `database ${req.params.db} is not a shard of map ${req.query.map}`, { database: req.params.db, details: { map: req.query.map } });
      return r;
    },
  );
  app.post<{ Params: { db: string }; Body: { changes: LocalChange[] } }>(
    '/v1/databases/:db/localShardMap',
    {
      schema: {
        summary: 'Change the local shard map (admin): idempotent changes, in one durable transaction through the engine.',
        tags,
        params: dbParams,
        body: { type: 'object', additionalProperties: false, required: ['changes'], properties: { changes: { type: 'array', minItems: 1, maxItems: 1000, items: localChange } } },
      },
    },
    async (req) => {
      access(req, req.params.db, true);
      ready();
      req.body.changes.forEach((c, i) => validateChange(c, `changes[${i}]`));
      const w = await writeDatabase(ctx, req.params.db, (conn) => applyLsm(conn, req.params.db, req.body.changes), 'catalog.lsm');
      return { versions: w.result, txid: w.txid };
    },
  );
  app.post<{ Params: { db: string }; Body: { map: string; key: string; mappingId: string; version: number; statements: Array<{ sql: string; args?: unknown[]; named?: Record<string, unknown> }> } }>(
    '/v1/databases/:db/localShardMap/execute',
    {
      schema: {
        summary: 'Run statements atomically for one shard key, only if this database owns the key through the given mapping and version (else MAPPING_STALE and nothing runs).',
        tags,
        params: dbParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['map', 'key', 'mappingId', 'version', 'statements'],
          properties: { map: NAME, key: KEY, mappingId: ID, version: { type: 'integer', minimum: 1 }, statements: { type: 'array', minItems: 1, items: statement } },
        },
      },
    },
    async (req) => {
      ready();
      access(req, req.params.db, false);
      const b = req.body;
      const stmts = b.statements.map((s, i) => toStatement(s, `statements[${i}].`));
      const results = await executeForKey(ctx, req.params.db, { map: b.map, key: b.key, mappingId: b.mappingId, version: b.version }, stmts);
      return { results: results.map(resultView) };
    },
  );
}


