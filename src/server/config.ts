/**
 * Server configuration: a JSON file, then GEODR_* environment variables, then flags,
 * each later source overriding the earlier. Validated with zod; any problem is one
 * INVALID_ARGUMENT error naming every bad field.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { GeodrError } from '../errors.js';
import { validateName } from './names.js';

const nameField = (kind: 'database' | 'pool' | 'server' | 'region' | 'token') =>
  z.string().superRefine((v, ctx) => {
    try {
      validateName(kind, v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message.replace(/^INVALID_ARGUMENT: /, '') });
    }
  });

const TokenSchema = z
  .strictObject({
    name: nameField('token'),
    /** The token itself. Prefer `sha256` in files others can read. */
    secret: z.string().min(16, 'a token secret needs at least 16 characters').optional(),
    /** Hex SHA-256 of the token. */
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'sha256 must be 64 lower-case hex digits').optional(),
    role: z.enum(['admin', 'data']),
    /** For data tokens: the databases it may use. */
    databases: z.array(nameField('database')).optional(),
    /** For data tokens: the pools whose databases it may use. */
    pools: z.array(nameField('pool')).optional(),
  })
  .refine((t) => (t.secret === undefined) !== (t.sha256 === undefined), { message: 'give exactly one of "secret" or "sha256"' });

const LimitsSchema = z.strictObject({
  /** Open databases kept in the LRU; idle ones beyond this are closed. */
  maxOpenDatabases: z.number().int().min(1).max(100_000).default(256),
  /** Largest request body. */
  requestBytes: z.number().int().min(1024).max(1 << 30).default(8 << 20),
  /** Largest result (approximate bytes of values) one request returns. */
  resultBytes: z.number().int().min(1024).max(1 << 30).default(16 << 20),
  /** Statements in one batch or pipeline. */
  batchStatements: z.number().int().min(1).max(100_000).default(1000),
  statementTimeoutMs: z.number().int().min(1).max(3_600_000).default(10_000),
  /** Default and maximum lifetime of an interactive transaction. */
  transactionTimeoutMs: z.number().int().min(100).max(3_600_000).default(30_000),
  /** How long a write waits for another session's open transaction before BUSY. */
  writeWaitMs: z.number().int().min(0).max(600_000).default(5_000),
  /**
   * WAL frames after which a database is checkpointed. Smaller checkpoints block the event
   * loop for less time each (a checkpoint runs on it); larger ones cost fewer fsyncs.
   */
  checkpointFrames: z.number().int().min(100).max(1_000_000).default(4000),
  /** Size at which a database's local log starts a new segment (whole segments are pruned). */
  logSegmentBytes: z.number().int().min(64 << 10).max(1 << 30).default(16 << 20),
  /** A database unused this long is closed (its descriptors and cache freed). */
  idleCloseMs: z.number().int().min(100).max(86_400_000).default(30_000),
});

const VaultSpecSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('fs'), path: z.string().min(1) }),
  z.strictObject({ type: z.literal('azure'), connectionString: z.string().min(1), container: z.string().regex(/^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$/, 'container names are 3-63 lower-case letters, digits and dashes') }),
]);

const BackupSchema = z.strictObject({
  /** Ship records at most this long after they commit. */
  shipIntervalMs: z.number().int().min(50).max(3_600_000).default(1000),
  snapshotEveryRecords: z.number().int().min(10).max(100_000_000).default(10_000),
  /** Also snapshot after this long with new records; 0 = by count only. */
  snapshotIntervalMs: z.number().int().min(0).default(6 * 3600_000),
  /** Default short-term retention (PITR window) for new databases, days. */
  retentionDays: z.number().int().min(1).max(35).default(7),
  /** Run the retention job this often. */
  retentionEveryMs: z.number().int().min(1000).default(3600_000),
  /** brotli (quality 5) by measurement: see src/vault/codec.ts. */
  compression: z.enum(['none', 'gzip', 'brotli', 'deflate']).default('brotli'),
  /** Restore-test one database (the longest untested) this often; 0 = never. */
  verifyEveryMs: z.number().int().min(0).default(3600_000),
  /** JSON key file for client-side encryption ({"active", "keys": {id: base64}}); or GEODR_VAULT_KEY. */
  keyFile: z.string().min(1).optional(),
});

export type VaultSpec = z.infer<typeof VaultSpecSchema>;

const PeerSchema = z.strictObject({
  /** The peer server's configured name (what `ADD SECONDARY ON SERVER <name>` says). */
  name: nameField('server'),
  /** How this server reaches it; a proxy in between is fine. */
  url: z.url({ protocol: /^https?$/, error: 'url must be an http(s) URL such as http://127.0.0.1:7481' }),
  /** The URL clients use for the peer, when it differs from `url` (failover group listeners hand it out). */
  publicUrl: z.url({ protocol: /^https?$/, error: 'publicUrl must be an http(s) URL' }).optional(),
  /** An admin token of the peer: replication and failover calls use it. */
  token: z.string().min(16, 'a peer token needs at least 16 characters'),
  /** The peer's region, for listings. */
  region: nameField('region').optional(),
});

const ReplicationSchema = z.strictObject({
  /** A write asked for with sync durability fails with REPLICATION_TIMEOUT if no secondary confirms it within this. */
  syncTimeoutMs: z.number().int().min(10).max(600_000).default(5_000),
  /** A planned failover gives up (and the primary takes writes again) if the secondary is not caught up within this. */
  failoverTimeoutMs: z.number().int().min(100).max(600_000).default(5_000),
  /** Heartbeats on an idle stream; a stream silent for 4 of these is broken. */
  heartbeatMs: z.number().int().min(20).max(60_000).default(250),
  /** Timeout of one call to a peer (probe, relink, fence). */
  peerTimeoutMs: z.number().int().min(50).max(600_000).default(2_000),
  /**
   * The local log is kept for a secondary at most this many transactions behind the
   * primary; one further behind is re-seeded when it reconnects, so a long outage cannot
   * fill the primary's disk.
   */
  maxLagTxids: z.number().int().min(1).max(1_000_000_000).default(1_000_000),
  /** Longest wait between reconnection attempts of a broken link. */
  maxBackoffMs: z.number().int().min(10).max(600_000).default(1_000),
});

export type PeerConfig = z.infer<typeof PeerSchema>;
export type ReplicationConfig = z.infer<typeof ReplicationSchema>;

export const ServerConfigSchema = z.strictObject({
  name: nameField('server').default('server1'),
  region: nameField('region').default('local'),
  host: z.string().min(1).default('127.0.0.1'),
  port: z.number().int().min(0).max(65535).default(7480),
  dataDir: z.string().min(1),
  tokens: z.array(TokenSchema).default([]),
  limits: LimitsSchema.default(LimitsSchema.parse({})),
  /** `group`: acknowledge after the grouped log fsync (default); `commit`: fsync per write. */
  durability: z.enum(['group', 'commit']).default('group'),
  groupCommitMs: z.number().int().min(0).max(1000).default(2),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** This region's backup vault. Default: an fs vault at <dataDir>/vault. */
  vault: VaultSpecSchema.optional(),
  /** The paired region's vault: shipped objects are copied there (GRS) and geo-restores read this region's copies. */
  pairedVault: VaultSpecSchema.optional(),
  /** Paired region name (for recoverable-database listings). */
  pairedRegion: nameField('region').optional(),
  backup: BackupSchema.default(BackupSchema.parse({})),
  /** The URL clients reach this server at (failover group listeners point here). Default: http://host:port. */
  advertiseUrl: z.url({ protocol: /^https?$/, error: 'advertiseUrl must be an http(s) URL' }).optional(),
  /** Other servers this one replicates with, by name. */
  peers: z.array(PeerSchema).default([]),
  replication: ReplicationSchema.default(ReplicationSchema.parse({})),
  /** Pool that databases created without one join; created at start if missing. */
  defaultPool: nameField('pool').default('default'),
});

export type ServerConfig = z.infer<typeof ServerConfigSchema>;
export type TokenConfig = z.infer<typeof TokenSchema>;
export type Limits = z.infer<typeof LimitsSchema>;

/** Environment variables read by {@link loadConfig}, and the field each sets. */
export const ENVIRONMENT: Record<string, { field: string; type: 'string' | 'number' }> = {
  GEODR_NAME: { field: 'name', type: 'string' },
  GEODR_REGION: { field: 'region', type: 'string' },
  GEODR_HOST: { field: 'host', type: 'string' },
  GEODR_PORT: { field: 'port', type: 'number' },
  GEODR_DATA_DIR: { field: 'dataDir', type: 'string' },
  GEODR_DURABILITY: { field: 'durability', type: 'string' },
  GEODR_LOG_LEVEL: { field: 'logLevel', type: 'string' },
};

export interface ConfigSources {
  /** Path of a JSON config file. */
  file?: string | undefined;
  /** Environment (default: none; pass process.env to read GEODR_*). */
  env?: Record<string, string | undefined>;
  /** Flag values, already named like config fields. Undefined values are ignored. */
  overrides?: Partial<Record<keyof ServerConfig, unknown>>;
}

/**
 * Reads and validates the configuration. `GEODR_ADMIN_TOKEN` adds an admin token.
 *
 * @example
 * const config = loadConfig({ file: 'server.json', env: process.env })
 */
export function loadConfig(sources: ConfigSources): ServerConfig {
  let raw: Record<string, unknown> = {};
  if (sources.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(sources.file, 'utf8');
    } catch (e) {
      throw new GeodrError('INVALID_ARGUMENT', `cannot read config file ${sources.file}: ${(e as Error).message}`, { object: sources.file });
    }
    try {
      raw = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw new GeodrError('INVALID_ARGUMENT', `config file ${sources.file} is not valid JSON: ${(e as Error).message}`, { object: sources.file });
    }
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
      throw new GeodrError('INVALID_ARGUMENT', `config file ${sources.file} must hold a JSON object`, { object: sources.file });
    }
    if (typeof raw.dataDir === 'string') raw.dataDir = path.resolve(path.dirname(sources.file), raw.dataDir);
  }
  const env = sources.env ?? {};
  for (const [key, { field, type }] of Object.entries(ENVIRONMENT)) {
    const v = env[key];
    if (v === undefined || v === '') continue;
    if (type === 'number') {
      const n = Number(v);
      if (!Number.isInteger(n)) throw new GeodrError('INVALID_ARGUMENT', `${key}=${JSON.stringify(v)} is not an integer`);
      raw[field] = n;
    } else raw[field] = v;
  }
  for (const [k, v] of Object.entries(sources.overrides ?? {})) if (v !== undefined) raw[k] = v;
  const adminToken = env.GEODR_ADMIN_TOKEN;
  if (adminToken !== undefined && adminToken !== '') {
    raw.tokens = [...((raw.tokens as unknown[] | undefined) ?? []), { name: 'env-admin', secret: adminToken, role: 'admin' }];
  }
  const parsed = ServerConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.length > 0 ? i.path.join('.') : '(top level)'}: ${i.message}`);
    throw new GeodrError('INVALID_ARGUMENT', `invalid server configuration: ${problems.join('; ')}`, { object: sources.file, details: { problems } });
  }
  const config = parsed.data;
  config.dataDir = path.resolve(config.dataDir);
  const base = sources.file !== undefined ? path.dirname(sources.file) : process.cwd();
  for (const v of [config.vault, config.pairedVault]) if (v?.type === 'fs') v.path = path.resolve(base, v.path);
  if (config.backup.keyFile !== undefined) config.backup.keyFile = path.resolve(base, config.backup.keyFile);
  const peerNames = new Set<string>();
  for (const p of config.peers) {
    if (p.name === config.name) throw new GeodrError('INVALID_ARGUMENT', `invalid server configuration: peers lists this server itself (${p.name})`, { object: sources.file });
    if (peerNames.has(p.name)) throw new GeodrError('INVALID_ARGUMENT', `invalid server configuration: peer ${p.name} is listed twice`, { object: sources.file });
    peerNames.add(p.name);
  }
  if (!config.tokens.some((t) => t.role === 'admin')) {
    throw new GeodrError('INVALID_ARGUMENT', 'invalid server configuration: no admin token; add one under "tokens" or set GEODR_ADMIN_TOKEN', { object: sources.file });
  }
  return config;
}
