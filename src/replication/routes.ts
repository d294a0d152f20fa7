/**
 * HTTP routes of geo-replication. Public ones (`/v1/...`) follow the managed offering's
 * API: replication links of a database, failover and forced failover asked of the
 * secondary, wait-for-copy-sync, lost transactions, failover groups and their
 * listeners. Internal ones (`/internal/v1/replication/...`) are what servers say to
 * each other: link registration, seeding snapshot, the record stream, acknowledgements,
 * lineage, failover handshakes, fencing, relinking and the rejoin unit. Both need an
 * admin token; peers use the token configured for them.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { GeodrError } from '../errors.js';
import { requireAdmin, requireDatabaseAccess } from '../server/auth.js';
import type { EpochStart } from '../server/store.js';
import type { ReplicationManager } from './manager.js';

const NAME = { type: 'string', minLength: 1, maxLength: 200 } as const;
const dbParams = { type: 'object', properties: { db: NAME }, required: ['db'] } as const;
const linkParams = { type: 'object', properties: { db: NAME, link: { type: 'string', maxLength: 100 } }, required: ['db', 'link'] } as const;
const groupParams = { type: 'object', properties: { name: NAME }, required: ['name'] } as const;
const epochsSchema = {
  type: 'array',
  items: {
    type: 'object',
    additionalProperties: false,
    required: ['epoch', 'startTxid', 'checksum', 'server', 'time'],
    properties: { epoch: { type: 'integer' }, startTxid: { type: 'integer' }, checksum: { type: 'string' }, server: { type: 'string' }, time: { type: 'number' } },
  },
} as const;
const linkBody = (extra: Record<string, unknown>, required: string[]) => ({ type: 'object', additionalProperties: false, required, properties: { link: { type: 'string', maxLength: 100 }, ...extra } }) as const;

export function registerReplicationRoutes(app: FastifyInstance, m: ReplicationManager, isReady: () => boolean): void {
  const admin = (req: FastifyRequest): void => requireAdmin(req.principal!);
  const ready = (): void => {
    if (!isReady()) throw new GeodrError('UNAVAILABLE', 'the server is starting or shutting down');
  };

  // Public API

  app.get<{ Params: { db: string } }>('/v1/databases/:db/replicationLinks', { schema: { summary: 'Replication links of a database (sys.geo_replication_links).', tags: ['replication'], params: dbParams } }, async (req) => {
    admin(req);
    return { value: m.listLinks(req.params.db) };
  });
  app.get<{ Params: { db: string; link: string } }>('/v1/databases/:db/replicationLinks/:link', { schema: { summary: 'One replication link, with its state and lag.', tags: ['replication'], params: linkParams } }, async (req) => {
    admin(req);
    return m.getLink(req.params.db, req.params.link);
  });
  app.post<{ Params: { db: string }; Body: { partnerServer: string; partnerDatabase?: string; partnerElasticPoolName?: string } }>(
    '/v1/databases/:db/replicationLinks',
    {
      schema: {
        summary: 'Add a readable secondary on another server (ALTER DATABASE … ADD SECONDARY ON SERVER). Seeding runs as an operation on the partner; 202 with it.',
        tags: ['replication'],
        params: dbParams,
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['partnerServer'],
          properties: { partnerServer: NAME, partnerDatabase: NAME, partnerElasticPoolName: NAME },
        },
      },
    },
    async (req, reply) => {
      admin(req);
      ready();
      const r = await m.addSecondary(req.params.db, { partnerServer: req.body.partnerServer, partnerDatabase: req.body.partnerDatabase, partnerPool: req.body.partnerElasticPoolName });
      return reply.status(202).send(r);
    },
  );
  app.delete<{ Params: { db: string; link: string } }>(
    '/v1/databases/:db/replicationLinks/:link',
    { schema: { summary: 'Remove a link (REMOVE SECONDARY): the secondary becomes an independent writable database.', tags: ['replication'], params: linkParams } },
    async (req) => {
      admin(req);
      return m.removeLink(req.params.db, req.params.link);
    },
  );
  app.post<{ Params: { db: string; link: string } }>(
    '/v1/databases/:db/replicationLinks/:link/failover',
    { schema: { summary: 'Planned failover, asked of the secondary: no data loss; the old primary and the other secondaries follow the new primary.', tags: ['replication'], params: linkParams } },
    async (req) => {
      admin(req);
      ready();
      return m.failover(req.params.db, req.params.link);
    },
  );
  app.post<{ Params: { db: string; link: string } }>(
    '/v1/databases/:db/replicationLinks/:link/forceFailoverAllowDataLoss',
    { schema: { summary: 'Forced failover, asked of the secondary: it becomes the primary at once, even with the primary unreachable.', tags: ['replication'], params: linkParams } },
    async (req) => {
      admin(req);
      ready();
      return m.forceFailover(req.params.db, req.params.link);
    },
  );
  app.post<{ Params: { db: string }; Body: { partnerServer?: string; partnerDatabase?: string; timeoutMs?: number } }>(
    '/v1/databases/:db/waitForCopySync',
    {
      schema: {
        summary: 'Returns once the secondaries (or the one named) have every transaction committed before the call (sp_wait_for_database_copy_sync).',
        tags: ['replication'],
        params: dbParams,
        body: { type: 'object', additionalProperties: false, properties: { partnerServer: NAME, partnerDatabase: NAME, timeoutMs: { type: 'integer', minimum: 1, maximum: 600_000 } } },
      },
    },
    async (req) => {
      // Anyone who may use the database may wait for it, as the managed offering allows.
      requireDatabaseAccess(req.principal!, req.params.db, undefined);
      const body = req.body ?? {};
      return m.waitForCopySync(req.params.db, body);
    },
  );
  app.get('/v1/lostTransactions', { schema: { summary: 'What deposed primaries wrote alone before they rejoined: reports with TXIDs, times and files.', tags: ['replication'] } }, async (req) => {
    admin(req);
    return { value: m.lostTransactions() };
  });

  app.get('/v1/failoverGroups', { schema: { summary: 'Failover groups this server is a side of.', tags: ['replication'] } }, async (req) => {
    admin(req);
    return { value: m.listFailoverGroups() };
  });
  app.get<{ Params: { name: string } }>('/v1/failoverGroups/:name', { schema: { summary: 'A failover group, its sides and its listeners.', tags: ['replication'], params: groupParams } }, async (req) => {
    admin(req);
    return m.getFailoverGroup(req.params.name);
  });
  app.put<{ Params: { name: string }; Body: { partnerServer: string; databases: string[] } }>(
    '/v1/failoverGroups/:name',
    {
      schema: {
        summary: 'Create or update a failover group on the primary side: databases (each with a secondary on the partner) that fail over together.',
        tags: ['replication'],
        params: groupParams,
        body: { type: 'object', additionalProperties: false, required: ['partnerServer', 'databases'], properties: { partnerServer: NAME, databases: { type: 'array', minItems: 1, maxItems: 1000, items: NAME } } },
      },
    },
    async (req) => {
      admin(req);
      return m.putFailoverGroup(req.params.name, req.body);
    },
  );
  app.delete<{ Params: { name: string } }>('/v1/failoverGroups/:name', { schema: { summary: 'Delete a failover group (its databases and links stay).', tags: ['replication'], params: groupParams } }, async (req) => {
    admin(req);
    await m.deleteFailoverGroup(req.params.name);
    return { deleted: req.params.name };
  });
  app.post<{ Params: { name: string } }>('/v1/failoverGroups/:name/failover', { schema: { summary: 'Planned failover of every database of the group to this server.', tags: ['replication'], params: groupParams } }, async (req) => {
    admin(req);
    ready();
    return m.failoverGroup(req.params.name, false);
  });
  app.post<{ Params: { name: string } }>(
    '/v1/failoverGroups/:name/forceFailoverAllowDataLoss',
    { schema: { summary: 'Forced failover of every database of the group to this server.', tags: ['replication'], params: groupParams } },
    async (req) => {
      admin(req);
      ready();
      return m.failoverGroup(req.params.name, true);
    },
  );
  app.get<{ Params: { name: string; kind: string } }>(
    '/v1/failoverGroups/:name/listener/:kind',
    {
      schema: {
        summary: 'Resolve a listener alias: rw points at the side whose databases are primary, ro at the other. Any data token may resolve.',
        tags: ['replication'],
        params: { type: 'object', properties: { name: NAME, kind: { type: 'string', enum: ['rw', 'ro'] } }, required: ['name', 'kind'] },
      },
    },
    async (req) => m.listenerFor(req.params.name, req.params.kind as 'rw' | 'ro'),
  );

  // Between servers

  const internal = (p: string): string => `/internal/v1/replication/:db/${p}`;
  app.post<{ Params: { db: string }; Body: { link: string; server: string; database: string; copy?: boolean } }>(
    internal('links'),
    { schema: { hide: true, params: dbParams, body: linkBody({ server: NAME, database: NAME, copy: { type: 'boolean' } }, ['link', 'server', 'database']) } },
    async (req) => {
      admin(req);
      ready();
      return m.registerLink(req.params.db, req.body);
    },
  );
  app.delete<{ Params: { db: string; link: string } }>('/internal/v1/replication/:db/links/:link', { schema: { hide: true, params: linkParams } }, async (req) => {
    admin(req);
    m.forgetLink(req.params.link);
    return { removed: req.params.link };
  });
  app.get<{ Params: { db: string }; Querystring: { link: string } }>(
    internal('snapshot'),
    { schema: { hide: true, params: dbParams, querystring: { type: 'object', required: ['link'], properties: { link: { type: 'string', maxLength: 100 } } } } },
    async (req, reply) => {
      admin(req);
      ready();
      await m.serveSnapshot(req.params.db, req.query.link, reply);
    },
  );
  app.get<{ Params: { db: string }; Querystring: { link: string; from: string; epoch: string } }>(
    internal('stream'),
    {
      schema: {
        hide: true,
        params: dbParams,
        querystring: {
          type: 'object',
          required: ['link', 'from', 'epoch'],
          // Query strings are not coerced (bodies must not be): integers travel as digit strings.
          properties: { link: { type: 'string', maxLength: 100 }, from: { type: 'string', pattern: '^[0-9]{1,15}$' }, epoch: { type: 'string', pattern: '^[0-9]{1,9}$' } },
        },
      },
    },
    async (req, reply) => {
      admin(req);
      ready();
      m.serveStream(req.params.db, { link: req.query.link, from: Number(req.query.from), epoch: Number(req.query.epoch) }, reply);
    },
  );
  app.post<{ Params: { db: string }; Body: { link: string; txid: number; time: number; epoch: number } }>(
    internal('ack'),
    { schema: { hide: true, params: dbParams, body: linkBody({ txid: { type: 'integer', minimum: 0 }, time: { type: 'number' }, epoch: { type: 'integer' } }, ['link', 'txid', 'time', 'epoch']) } },
    async (req) => {
      admin(req);
      return m.ack(req.params.db, req.body);
    },
  );
  app.get<{ Params: { db: string } }>(internal('lineage'), { schema: { hide: true, params: dbParams } }, async (req) => {
    admin(req);
    return m.lineage(req.params.db);
  });
  app.post<{ Params: { db: string }; Body: { link: string } }>(internal('prepareFailover'), { schema: { hide: true, params: dbParams, body: linkBody({}, ['link']) } }, async (req) => {
    admin(req);
    return m.prepareFailover(req.params.db, req.body);
  });
  app.post<{ Params: { db: string }; Body: { link: string } }>(internal('abortFailover'), { schema: { hide: true, params: dbParams, body: linkBody({}, ['link']) } }, async (req) => {
    admin(req);
    return m.abortFailover(req.params.db, req.body);
  });
  const moveBody = linkBody({ server: NAME, database: NAME, epoch: { type: 'integer', minimum: 1 }, epochs: epochsSchema }, ['link', 'server', 'database', 'epoch', 'epochs']);
  app.post<{ Params: { db: string }; Body: { link: string; server: string; database: string; epoch: number; epochs: EpochStart[] } }>(
    internal('completeFailover'),
    { schema: { hide: true, params: dbParams, body: moveBody } },
    async (req) => {
      admin(req);
      return m.completeFailover(req.params.db, req.body);
    },
  );
  app.post<{ Params: { db: string }; Body: { link: string; server: string; database: string; epoch: number; epochs: EpochStart[] } }>(
    internal('relink'),
    { schema: { hide: true, params: dbParams, body: moveBody } },
    async (req) => {
      admin(req);
      return m.relink(req.params.db, req.body);
    },
  );
  app.post<{ Params: { db: string }; Body: { server: string; database: string; epoch: number } }>(
    internal('fence'),
    {
      schema: {
        hide: true,
        params: dbParams,
        body: { type: 'object', additionalProperties: false, required: ['server', 'database', 'epoch'], properties: { server: NAME, database: NAME, epoch: { type: 'integer', minimum: 1 } } },
      },
    },
    async (req) => {
      admin(req);
      return m.fence(req.params.db, req.body);
    },
  );
  app.post<{ Params: { db: string }; Body: { epoch: number; server: string } }>(
    internal('claimEpoch'),
    {
      schema: {
        hide: true,
        params: dbParams,
        body: { type: 'object', additionalProperties: false, required: ['epoch', 'server'], properties: { epoch: { type: 'integer', minimum: 1 }, server: NAME } },
      },
    },
    async (req) => {
      admin(req);
      return m.receiveClaim(req.params.db, req.body);
    },
  );
  app.post<{ Params: { db: string }; Body: { link: string } }>(internal('detach'), { schema: { hide: true, params: dbParams, body: linkBody({}, ['link']) } }, async (req) => {
    admin(req);
    return m.detach(req.params.db, req.body.link);
  });
  app.post<{
    Params: { db: string };
    Body: { link: string; server: string; database: string; since: number; sinceChecksum: string; pages: number[]; siblings: Array<{ linkId: string; server: string; database: string }> };
  }>(
    internal('catchUpUnit'),
    {
      schema: {
        hide: true,
        params: dbParams,
        body: linkBody(
          {
            server: NAME,
            database: NAME,
            since: { type: 'integer', minimum: 0 },
            sinceChecksum: { type: 'string', pattern: '^[0-9a-f]{16}$' },
            pages: { type: 'array', items: { type: 'integer', minimum: 1 } },
            siblings: { type: 'array', items: { type: 'object', required: ['linkId', 'server', 'database'], properties: { linkId: { type: 'string' }, server: NAME, database: NAME } } },
          },
          ['link', 'server', 'database', 'since', 'sinceChecksum', 'pages', 'siblings'],
        ),
      },
    },
    async (req, reply) => {
      admin(req);
      await m.serveCatchUpUnit(req.params.db, req.body, reply);
    },
  );
  app.post<{ Params: { db: string }; Body: { link: string; checksum: string; hashes: string } }>(
    internal('diffUnit'),
    {
      // 8 bytes of hash a page, base64: about 11 MiB for a 4 GiB database.
      bodyLimit: 1 << 30,
      schema: {
        hide: true,
        params: dbParams,
        body: linkBody({ checksum: { type: 'string', pattern: '^[0-9a-f]{16}$' }, hashes: { type: 'string' } }, ['link', 'checksum', 'hashes']),
      },
    },
    async (req, reply) => {
      admin(req);
      await m.serveDiffUnit(req.params.db, req.body, reply);
    },
  );
  app.put<{ Params: { name: string }; Body: { partnerServer: string; databases: string[] } }>(
    '/internal/v1/failoverGroups/:name',
    { schema: { hide: true, params: groupParams, body: { type: 'object', required: ['partnerServer', 'databases'], properties: { partnerServer: NAME, databases: { type: 'array', items: { type: 'string' } } } } } },
    async (req) => {
      admin(req);
      return m.putFailoverGroupMirror(req.params.name, req.body);
    },
  );
  app.delete<{ Params: { name: string } }>('/internal/v1/failoverGroups/:name', { schema: { hide: true, params: groupParams } }, async (req) => {
    admin(req);
    m.deleteFailoverGroupMirror(req.params.name);
    return { deleted: req.params.name };
  });
}
