import { ERROR_CODES, type ErrorCode, type ErrorSpec } from '../errors.js';
import type { Operation } from './types.js';

/**
 * An error code: one of the server's codes (docs/ERRORS.md), or one the client adds:
 * `UNAVAILABLE` also means the server could not be reached, `TIMEOUT` that
 * {@link GeodrClient.waitForOperation} gave up waiting, and `STALE_READ` that the
 * client refused an answer older than one it had already seen (same epoch, lower
 * TXID: a lagging secondary; see `GeodrClient`, "Consistency"). The client also raises
 * `STALE_EPOCH` itself, for an answer from a copy at an older epoch than one it saw.
 * Errors the client raises about an answer it refused have `status` 0.
 */
// `string & {}` keeps editor completion for the known codes while accepting new ones.
export type ApiErrorCode = ErrorCode | 'TIMEOUT' | 'STALE_READ' | (string & {});

/** What the error concerns, as the server reported it. */
export interface ApiErrorContext {
  database?: string;
  txid?: number;
  object?: string;
  operation?: string;
  details?: Record<string, unknown>;
}

/**
 * An error answered by the server (`status` is its HTTP status), or a client-side
 * failure to get an answer (`status` 0: unreachable, timed out).
 *
 * @example
 * try { await client.getDatabase('t1') } catch (e) {
 *   if (e instanceof GeodrApiError && e.code === 'NOT_FOUND') await client.createDatabase('t1')
 * }
 */
export class GeodrApiError extends Error {
  override readonly name = 'GeodrApiError';
  /** Stable code, e.g. `NOT_FOUND`, `SQL_ERROR`, `UNAVAILABLE`. */
  readonly code: ApiErrorCode;
  /** HTTP status; 0 when no answer arrived, or the client refused the answer (STALE_READ, a client-side STALE_EPOCH). */
  readonly status: number;
  /** True when the same call may succeed later without anyone changing anything. */
  readonly retryable: boolean;
  readonly context: ApiErrorContext;
  /** The finished operation, when {@link GeodrClient.waitForOperation} failed because the operation Failed or was Cancelled. */
  readonly operation?: Operation;

  constructor(
    code: ApiErrorCode,
    message: string,
    init: { status?: number; retryable?: boolean; context?: ApiErrorContext; operation?: Operation; cause?: unknown } = {},
  ) {
    // The server's messages start with "CODE: "; `code` already says that.
    super(message.startsWith(`${code}: `) ? message.slice(code.length + 2) : message, init.cause === undefined ? undefined : { cause: init.cause });
    const spec = specOf(code);
    this.code = code;
    this.status = init.status ?? spec?.status ?? 0;
    this.retryable = init.retryable ?? spec?.retryable ?? false;
    this.context = init.context ?? {};
    if (init.operation !== undefined) this.operation = init.operation;
  }
}

function specOf(code: string): ErrorSpec | undefined {
  return Object.hasOwn(ERROR_CODES, code) ? (ERROR_CODES as Record<string, ErrorSpec>)[code] : undefined;
}

/** Builds the error for an HTTP error answer; tolerates bodies that are not geodr's (a proxy's HTML page). */
export function errorFromResponse(status: number, body: unknown): GeodrApiError {
  const e = (body as { error?: Record<string, unknown> } | undefined)?.error;
  if (e !== undefined && typeof e === 'object' && typeof e.code === 'string') {
    const context: ApiErrorContext = {};
    if (typeof e.database === 'string') context.database = e.database;
    if (typeof e.txid === 'number') context.txid = e.txid;
    if (typeof e.object === 'string') context.object = e.object;
    if (typeof e.operation === 'string') context.operation = e.operation;
    if (typeof e.details === 'object' && e.details !== null) context.details = e.details as Record<string, unknown>;
    return new GeodrApiError(e.code, typeof e.message === 'string' ? e.message : e.code, {
      status,
      retryable: typeof e.retryable === 'boolean' ? e.retryable : undefined,
      context,
    });
  }
  const code = status === 401 ? 'UNAUTHENTICATED' : status === 403 ? 'FORBIDDEN' : status === 404 ? 'NOT_FOUND' : status === 503 ? 'UNAVAILABLE' : status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT';
  return new GeodrApiError(code, `HTTP ${status} without a geodr error body (is the URL a geodr server?)`, { status, retryable: status === 503 });
}
