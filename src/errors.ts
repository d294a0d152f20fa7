/**
 * One error family for all of geodr. Every error carries a stable code from
 * {@link ERROR_CODES}, the context it concerns (database, TXID, object,
 * operation) and whether retrying can help. docs/ERRORS.md documents every code;
 * a test keeps the two in step.
 */

export interface ErrorSpec {
  /** HTTP status the API answers with when this error reaches a client. */
  readonly status: number;
  /** True when the same call may succeed later without anyone changing anything. */
  readonly retryable: boolean;
  /** One line for docs and logs. */
  readonly summary: string;
}

export const ERROR_CODES = {
  INVALID_ARGUMENT: { status: 400, retryable: false, summary: 'An argument, option or configuration value is not acceptable.' },
  SQLITE_TOO_OLD: { status: 500, retryable: false, summary: 'The linked SQLite is older than 3.51.3 and has the WAL-reset corruption bug.' },
  IO_FAILED: { status: 500, retryable: true, summary: 'A file-system step failed; the operation label names which one.' },
  DATABASE_CLOSED: { status: 409, retryable: false, summary: 'The database handle was closed or stopped after a fatal error.' },
  READ_ONLY: { status: 409, retryable: false, summary: 'A write was sent to a read-only database (a replica).' },
  FORMAT_UNSUPPORTED: { status: 422, retryable: false, summary: 'Bytes carry a format version or magic this build does not read.' },
  RECORD_CORRUPT: { status: 422, retryable: false, summary: 'A transaction record, segment or unit failed its length or checksum test.' },
  RECORD_FOREIGN: { status: 422, retryable: false, summary: 'Bytes belong to another database (database id differs).' },
  RECORD_OUT_OF_ORDER: { status: 409, retryable: false, summary: 'A record does not follow the previous one (TXID gap, repeat or reorder).' },
  STALE_EPOCH: { status: 409, retryable: false, summary: 'A record or write carries an epoch older than the one already seen: it comes from a deposed primary.' },
  REPLICA_DIVERGED: { status: 409, retryable: false, summary: 'Applying a record would start from, or end on, a checksum other than the one the record states.' },
  DATABASE_DIVERGED: { status: 409, retryable: false, summary: 'A database file matches no state its log describes (changed outside geodr, or its log was lost).' },
  LOG_CORRUPT: { status: 500, retryable: false, summary: 'The local log is damaged before its tail, where a crash cannot have torn it.' },
  LOG_GAP: { status: 409, retryable: false, summary: 'The history needed to reach a TXID has a hole; it is never crossed silently.' },
  SNAPSHOT_CORRUPT: { status: 422, retryable: false, summary: 'A snapshot failed its checksum or structure test.' },
  NO_SNAPSHOT: { status: 404, retryable: false, summary: 'No snapshot exists at or before the requested point.' },
  TARGET_OUT_OF_RANGE: { status: 416, retryable: false, summary: 'The requested TXID or time lies outside the history that is kept.' },
  INTEGRITY_CHECK_FAILED: { status: 500, retryable: false, summary: 'SQLite integrity_check did not report ok on a materialized or replicated file.' },
  BUSY: { status: 503, retryable: true, summary: 'The database is busy with another exclusive step; try again.' },
  NOT_FOUND: { status: 404, retryable: false, summary: 'The named database, pool, operation, transaction or route does not exist.' },
  CONFLICT: { status: 409, retryable: false, summary: 'The resource already exists, or its state does not allow the request (e.g. a pool that still holds databases).' },
  UNAUTHENTICATED: { status: 401, retryable: false, summary: 'No bearer token, or one the server does not know.' },
  FORBIDDEN: { status: 403, retryable: false, summary: 'The token is valid but its role or scope does not cover this request.' },
  SQL_ERROR: { status: 400, retryable: false, summary: 'SQLite rejected the statement (syntax, constraint, missing table, ...); `details.sqliteCode` has its code.' },
  SQL_REFUSED: { status: 403, retryable: false, summary: 'The statement could reach outside its database or break the engine (ATTACH, VACUUM INTO, load_extension, unsafe PRAGMA).' },
  QUOTA_EXCEEDED: { status: 507, retryable: false, summary: 'The write would take the elastic pool past its storage quota, or the pool is full of databases; nothing was written.' },
  LIMIT_EXCEEDED: { status: 413, retryable: false, summary: 'A request body, batch, or result is larger than the server allows, or a count limit is reached (four secondaries per database).' },
  STATEMENT_TIMEOUT: { status: 408, retryable: true, summary: 'A statement ran past the statement time limit and was rolled back.' },
  TRANSACTION_EXPIRED: { status: 410, retryable: false, summary: 'An interactive transaction passed its timeout and was rolled back, or was already finished.' },
  UNSUPPORTED: { status: 501, retryable: false, summary: 'The request names a feature this server does not offer yet (e.g. a createMode a later release adds).' },
  CANCELLED: { status: 409, retryable: false, summary: 'The operation was cancelled before it finished.' },
  VAULT_UNAVAILABLE: { status: 503, retryable: true, summary: 'The backup vault could not be reached or failed the request; shipping queues and retries.' },
  VAULT_CORRUPT: { status: 422, retryable: false, summary: 'A vault object failed its checksum, decryption or structure test; the object is named.' },
  KEY_UNAVAILABLE: { status: 500, retryable: false, summary: 'A vault object is encrypted with a key id this server does not have, or the key is wrong.' },
  INTERNAL: { status: 500, retryable: false, summary: 'A bug: something failed that geodr did not expect. The message and logs say what.' },
  REPLICATION_TIMEOUT: { status: 504, retryable: false, summary: 'A write asked for sync durability committed on the primary, but no secondary confirmed it in time; it may still arrive there.' },
  UNAVAILABLE: { status: 503, retryable: true, summary: 'The server is starting up or shutting down, or the database is being moved; try again.' },
  TENANT_OFFLINE: { status: 503, retryable: true, summary: "The shard map marks the key's mapping (or its shard) offline: the tenant is being restored, moved or was taken offline." },
  MAPPING_STALE: { status: 409, retryable: false, summary: "The database a request was routed to no longer owns the key at the mapping version the request carried; refresh from the shard map and retry." },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorContext {
  /** Database name or id the error concerns. */
  database?: string | undefined;
  /** Transaction id the error concerns. */
  txid?: number | undefined;
  /** The file or object whose bytes were involved. */
  object?: string | undefined;
  /** The labelled step that was running, e.g. `log.append`. */
  operation?: string | undefined;
  /** Free-form facts (expected/actual checksums, ...). */
  details?: Record<string, unknown> | undefined;
}

/**
 * The error geodr throws. `code` is stable; `message` is for people.
 *
 * @example
 * try { replica.apply(record) } catch (e) {
 *   if (e instanceof GeodrError && e.code === 'REPLICA_DIVERGED') reseed()
 * }
 */
export class GeodrError extends Error {
  readonly code: ErrorCode;
  readonly context: ErrorContext;
  readonly retryable: boolean;
  readonly status: number;

  constructor(code: ErrorCode, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(formatMessage(code, message, context), options);
    this.name = 'GeodrError';
    this.code = code;
    this.context = context;
    this.retryable = ERROR_CODES[code].retryable;
    this.status = ERROR_CODES[code].status;
    this.reason = message;
  }

  /** The message without the code prefix and context suffix. */
  readonly reason: string;

  /**
   * The same error with more context (the layer above knows the database or the
   * batch index), keeping the code and the original as the cause.
   */
  withContext(more: ErrorContext, prefix = ''): GeodrError {
    const details = more.details !== undefined || this.context.details !== undefined ? { ...this.context.details, ...more.details } : undefined;
    return new GeodrError(this.code, `${prefix}${this.reason}`, { ...this.context, ...more, details }, { cause: this.cause ?? this });
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, retryable: this.retryable, ...this.context };
  }
}

function formatMessage(code: ErrorCode, message: string, ctx: ErrorContext): string {
  const where: string[] = [];
  if (ctx.database !== undefined) where.push(`database ${ctx.database}`);
  if (ctx.txid !== undefined) where.push(`TXID ${ctx.txid}`);
  if (ctx.object !== undefined) where.push(`object ${ctx.object}`);
  if (ctx.operation !== undefined) where.push(`during ${ctx.operation}`);
  return `${code}: ${message}${where.length > 0 ? ` (${where.join(', ')})` : ''}`;
}

/** True when `e` is a GeodrError, optionally of the given code. */
export function isGeodrError(e: unknown, code?: ErrorCode): e is GeodrError {
  return e instanceof GeodrError && (code === undefined || e.code === code);
}
