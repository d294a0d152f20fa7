/**
 * libSQL's remote protocol, "Hrana over HTTP" with JSON bodies (protocol versions 2
 * and 3 share the pipeline format), so `@libsql/client` with an http:// URL works
 * against the server unchanged. Every request is a thin layer over {@link SqlSession}.
 *
 * A stream is one SqlSession kept between HTTP requests. Its baton is single-use:
 * each response carries the next one and the old one stops working, so requests on
 * a stream are serialized by construction and a replayed request is refused.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { GeodrError, isGeodrError } from '../errors.js';
import type { Limits } from './config.js';
import type { SessionOptions, SqlResult, SqlSession, SqlStatement, SqlValue } from './sql.js';
import { checkStatement, splitStatements } from './sqlguard.js';

export interface HranaOptions {
  openSession: (database: string, options: SessionOptions) => SqlSession;
  limits: Limits;
}

/** SQLite's default SQLITE_MAX_VARIABLE_NUMBER. */
const MAX_PARAMETER = 32766;
/** SQL texts a stream may keep with store_sql (the client keeps at most 30). */
const MAX_STORED_SQL = 1000;
/** Nesting of batch conditions; deeper is no real client's doing. */
const MAX_CONDITION_DEPTH = 100;

interface Stream {
  readonly database: string;
  readonly principal: string;
  readonly session: SqlSession;
  readonly sqls: Map<number, string>;
  timer: NodeJS.Timeout | undefined;
  closed: boolean;
  /** The session's transaction timed out; statements wait for the client's ROLLBACK. */
  txExpired: boolean;
}

type Obj = Record<string, unknown>;

interface Stmt {
  sql: string;
  args: SqlValue[];
  named: Map<string, SqlValue>;
  wantRows: boolean;
}

type Cond =
  | { type: 'ok' | 'error'; step: number }
  | { type: 'not'; cond: Cond }
  | { type: 'and' | 'or'; conds: Cond[] }
  | { type: 'is_autocommit' };

type Outcome = 'ok' | 'error' | 'skipped';

interface HranaError {
  message: string;
  code: string;
}

type StreamResult = { type: 'ok'; response: Obj } | { type: 'error'; error: HranaError };

export class HranaEndpoint {
  private readonly byBaton = new Map<string, Stream>();
  /** Every open stream, including those whose pipeline is running (and so hold no baton). */
  private readonly live = new Set<Stream>();
  private closed = false;

  constructor(private readonly opts: HranaOptions) {}

  /** One pipeline request body → response body. */
  async pipeline(database: string, principal: string, body: unknown, version: 2 | 3, options: SessionOptions = {}): Promise<unknown> {
    if (this.closed) throw new GeodrError('UNAVAILABLE', 'the server is shutting down', { database });
    const { baton, requests } = this.parseBody(body);
    const stream = baton === undefined ? this.open(database, principal, options) : this.take(baton, database, principal);
    // Each request answers its own failure; later ones run regardless, as the protocol says.
    const results: StreamResult[] = [];
    for (const [i, req] of requests.entries()) results.push(await this.request(stream, req, `requests[${i}]`, version));
    if (this.closed) this.closeStream(stream);
    return { baton: stream.closed ? null : this.park(stream), base_url: null, results };
  }

  /** Closes every stream (rolls back their open transactions). */
  close(): void {
    this.closed = true;
    for (const s of this.live) this.closeStream(s);
    this.byBaton.clear();
  }

  private parseBody(body: unknown): { baton: string | undefined; requests: unknown[] } {
    const b = asObject(body, 'body');
    if (b.baton !== undefined && b.baton !== null && typeof b.baton !== 'string') throw invalid('baton', 'must be a string or null');
    if (!Array.isArray(b.requests)) throw invalid('requests', 'must be an array');
    if (b.requests.length > this.opts.limits.batchStatements) {
      throw new GeodrError('LIMIT_EXCEEDED', `the pipeline holds ${b.requests.length} requests; the limit is ${this.opts.limits.batchStatements} (limits.batchStatements)`);
    }
    return { baton: typeof b.baton === 'string' ? b.baton : undefined, requests: b.requests };
  }

  private open(database: string, principal: string, options: SessionOptions): Stream {
    const s: Stream = { database, principal, session: this.opts.openSession(database, options), sqls: new Map(), timer: undefined, closed: false, txExpired: false };
    this.live.add(s);
    return s;
  }

  /** Finds the stream a baton continues and retires the baton. */
  private take(baton: string, database: string, principal: string): Stream {
    const s = this.byBaton.get(baton);
    // One message for all cases, so a baton's owner is not revealed to anyone else.
    if (s === undefined || s.database !== database || s.principal !== principal) {
      throw new GeodrError(
        'TRANSACTION_EXPIRED',
        `unknown baton: the stream was closed, expired after ${this.opts.limits.transactionTimeoutMs} ms idle, was already continued with this baton, or belongs to another database or token`,
        { database },
      );
    }
    this.byBaton.delete(baton);
    clearTimeout(s.timer);
    s.timer = undefined;
    return s;
  }

  /** Issues the stream's next baton and starts its idle timer. */
  private park(s: Stream): string {
    const baton = randomBytes(24).toString('base64url');
    this.byBaton.set(baton, s);
    s.timer = setTimeout(() => {
      this.byBaton.delete(baton);
      this.closeStream(s);
    }, this.opts.limits.transactionTimeoutMs);
    s.timer.unref();
    return baton;
  }

  private closeStream(s: Stream): void {
    clearTimeout(s.timer);
    s.timer = undefined;
    s.closed = true;
    this.live.delete(s);
    s.session.close();
  }

  private async request(stream: Stream, raw: unknown, where: string, version: 2 | 3): Promise<StreamResult> {
    try {
      if (stream.closed) throw new GeodrError('INVALID_ARGUMENT', `${where}: the stream is closed (a close request came before it)`);
      const req = asObject(raw, where);
      const session = stream.session;
      switch (req.type) {
        case 'close':
          this.closeStream(stream);
          return ok({ type: 'close' });
        case 'execute': {
          const stmt = parseStmt(req.stmt, `${where}.stmt`, stream.sqls);
          return ok({ type: 'execute', result: await execute(stream, stmt) });
        }
        case 'batch':
          return ok({ type: 'batch', result: await this.batch(stream, req.batch, `${where}.batch`, version) });
        case 'sequence': {
          const sql = sqlText(req, where, stream.sqls);
          const stmts = splitStatements(sql);
          this.checkCount(stmts.length, 'sequence', 'statements');
          for (const s of stmts) await run(stream, bind({ sql: s, args: [], named: new Map(), wantRows: false }));
          return ok({ type: 'sequence' });
        }
        case 'describe':
          return ok({ type: 'describe', result: await describe(stream, sqlText(req, where, stream.sqls)) });
        case 'store_sql': {
          const id = sqlId(req.sql_id, `${where}.sql_id`);
          if (typeof req.sql !== 'string') throw invalid(`${where}.sql`, 'must be a string');
          if (stream.sqls.has(id)) throw invalid(`${where}.sql_id`, `${id} is already in use on this stream`);
          if (stream.sqls.size >= MAX_STORED_SQL) throw new GeodrError('LIMIT_EXCEEDED', `a stream keeps at most ${MAX_STORED_SQL} SQL texts; close some with close_sql`);
          stream.sqls.set(id, req.sql);
          return ok({ type: 'store_sql' });
        }
        case 'close_sql':
          stream.sqls.delete(sqlId(req.sql_id, `${where}.sql_id`));
          return ok({ type: 'close_sql' });
        case 'get_autocommit':
          if (version < 3) throw invalid(`${where}.type`, 'get_autocommit needs protocol version 3 (the /v3/pipeline endpoint)');
          return ok({ type: 'get_autocommit', is_autocommit: !session.inTransaction });
        default:
          throw invalid(`${where}.type`, `unknown request type ${JSON.stringify(req.type)}; expected close, execute, batch, sequence, describe, store_sql, close_sql or get_autocommit`);
      }
    } catch (e) {
      return { type: 'error', error: hranaError(e) };
    }
  }

  /**
   * Steps run one at a time through SqlSession.execute, so the client's
   * BEGIN … COMMIT / ROLLBACK-unless-committed batch is a real interactive transaction.
   */
  private async batch(stream: Stream, raw: unknown, where: string, version: 2 | 3): Promise<Obj> {
    const b = asObject(raw, where);
    if (!Array.isArray(b.steps)) throw invalid(`${where}.steps`, 'must be an array');
    this.checkCount(b.steps.length, 'batch', 'steps');
    // Parse everything first: a malformed step must not leave earlier steps applied.
    const steps = b.steps.map((s, i) => {
      const step = asObject(s, `${where}.steps[${i}]`);
      const c = step.condition;
      return {
        cond: c === undefined || c === null ? undefined : parseCond(c, `${where}.steps[${i}].condition`, i, version, 0),
        stmt: parseStmt(step.stmt, `${where}.steps[${i}].stmt`, stream.sqls),
      };
    });
    const outcomes: Outcome[] = [];
    const stepResults: Array<Obj | null> = [];
    const stepErrors: Array<HranaError | null> = [];
    for (const step of steps) {
      let result: Obj | null = null;
      let error: HranaError | null = null;
      if (step.cond !== undefined && !evalCond(step.cond, outcomes, stream.session)) {
        outcomes.push('skipped');
      } else {
        try {
          result = await execute(stream, step.stmt);
          outcomes.push('ok');
        } catch (e) {
          error = hranaError(e);
          outcomes.push('error');
        }
      }
      stepResults.push(result);
      stepErrors.push(error);
    }
    return { step_results: stepResults, step_errors: stepErrors };
  }

  private checkCount(n: number, what: string, unit: string): void {
    const max = this.opts.limits.batchStatements;
    if (n > max) throw new GeodrError('LIMIT_EXCEEDED', `the ${what} holds ${n} ${unit}; the limit is ${max} (limits.batchStatements)`);
  }
}

// ---------------------------------------------------------------------------
// Requests

function ok(response: Obj): StreamResult {
  return { type: 'ok', response };
}

function invalid(field: string, why: string): GeodrError {
  return new GeodrError('INVALID_ARGUMENT', `${field} ${why}`);
}

function asObject(v: unknown, field: string): Obj {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw invalid(field, 'must be a JSON object');
  return v as Obj;
}

function sqlId(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw invalid(field, 'must be an integer');
  return v;
}

/** The SQL of a request that carries `sql` or `sql_id` (exactly one). */
function sqlText(o: Obj, where: string, sqls: Map<number, string>): string {
  const hasSql = o.sql !== undefined && o.sql !== null;
  const hasId = o.sql_id !== undefined && o.sql_id !== null;
  if (hasSql === hasId) throw invalid(where, 'needs exactly one of "sql" and "sql_id"');
  if (hasSql) {
    if (typeof o.sql !== 'string') throw invalid(`${where}.sql`, 'must be a string');
    return o.sql;
  }
  const id = sqlId(o.sql_id, `${where}.sql_id`);
  const sql = sqls.get(id);
  if (sql === undefined) throw invalid(`${where}.sql_id`, `${id} is not stored on this stream (store_sql first)`);
  return sql;
}

function parseStmt(raw: unknown, where: string, sqls: Map<number, string>): Stmt {
  const o = asObject(raw, where);
  const sql = sqlText(o, where, sqls);
  let args: SqlValue[] = [];
  if (o.args !== undefined && o.args !== null) {
    if (!Array.isArray(o.args)) throw invalid(`${where}.args`, 'must be an array');
    args = o.args.map((v, i) => decodeValue(v, `${where}.args[${i}]`));
  }
  const named = new Map<string, SqlValue>();
  if (o.named_args !== undefined && o.named_args !== null) {
    if (!Array.isArray(o.named_args)) throw invalid(`${where}.named_args`, 'must be an array');
    o.named_args.forEach((a, i) => {
      const na = asObject(a, `${where}.named_args[${i}]`);
      if (typeof na.name !== 'string' || na.name === '') throw invalid(`${where}.named_args[${i}].name`, 'must be a non-empty string');
      named.set(na.name, decodeValue(na.value, `${where}.named_args[${i}].value`));
    });
  }
  if (o.want_rows !== undefined && o.want_rows !== null && typeof o.want_rows !== 'boolean') throw invalid(`${where}.want_rows`, 'must be a boolean');
  return { sql, args, named, wantRows: o.want_rows !== false };
}

function parseCond(raw: unknown, where: string, stepIndex: number, version: 2 | 3, depth: number): Cond {
  if (depth > MAX_CONDITION_DEPTH) throw invalid(where, `nests deeper than ${MAX_CONDITION_DEPTH} levels`);
  const c = asObject(raw, where);
  switch (c.type) {
    case 'ok':
    case 'error': {
      const step = c.step;
      if (typeof step !== 'number' || !Number.isInteger(step) || step < 0 || step >= stepIndex) {
        throw invalid(`${where}.step`, `must be the index of an earlier step (0 to ${stepIndex - 1})`);
      }
      return { type: c.type, step };
    }
    case 'not':
      return { type: 'not', cond: parseCond(c.cond, `${where}.cond`, stepIndex, version, depth + 1) };
    case 'and':
    case 'or': {
      if (!Array.isArray(c.conds)) throw invalid(`${where}.conds`, 'must be an array');
      return { type: c.type, conds: c.conds.map((x, i) => parseCond(x, `${where}.conds[${i}]`, stepIndex, version, depth + 1)) };
    }
    case 'is_autocommit':
      if (version < 3) throw invalid(`${where}.type`, 'is_autocommit needs protocol version 3');
      return { type: 'is_autocommit' };
    default:
      throw invalid(`${where}.type`, `unknown condition type ${JSON.stringify(c.type)}; expected ok, error, not, and, or or is_autocommit`);
  }
}

function evalCond(c: Cond, outcomes: Outcome[], session: SqlSession): boolean {
  switch (c.type) {
    case 'ok':
    case 'error':
      return outcomes[c.step] === c.type;
    case 'not':
      return !evalCond(c.cond, outcomes, session);
    case 'and':
      return c.conds.every((x) => evalCond(x, outcomes, session));
    case 'or':
      return c.conds.some((x) => evalCond(x, outcomes, session));
    case 'is_autocommit':
      return !session.inTransaction;
  }
}

async function execute(stream: Stream, stmt: Stmt): Promise<Obj> {
  const start = performance.now();
  const r = await run(stream, bind(stmt));
  return stmtResult(r, stmt.wantRows, performance.now() - start);
}

/**
 * SqlSession reports an expired transaction once and then runs whatever follows in
 * autocommit, which would apply the rest of the client's "transaction" piecemeal.
 * A stream lives on between requests, so it keeps refusing until the client answers
 * with ROLLBACK (a closed stream needs nothing).
 */
async function run(stream: Stream, stmt: SqlStatement): Promise<SqlResult> {
  const session = stream.session;
  if (stream.txExpired) {
    if (checkStatement(stmt.sql).control?.kind !== 'rollback') {
      throw new GeodrError('TRANSACTION_EXPIRED', 'the transaction passed its time limit and was rolled back; send ROLLBACK before anything else', { database: stream.database });
    }
    stream.txExpired = false;
    try {
      return await session.execute(stmt);
    } catch {
      // Nothing left to roll back: the timeout did it.
      return { columns: [], decltypes: [], rows: [], rowsAffected: 0, lastInsertRowid: null, txid: 0 };
    }
  }
  try {
    return await session.execute(stmt);
  } catch (e) {
    if (isGeodrError(e, 'TRANSACTION_EXPIRED') && !session.inTransaction) stream.txExpired = true;
    throw e;
  }
}

function stmtResult(r: SqlResult, wantRows: boolean, ms: number): Obj {
  return {
    cols: r.columns.map((name, i) => ({ name, decltype: r.decltypes[i] ?? null })),
    rows: wantRows ? r.rows.map((row) => row.map(encodeValue)) : [],
    affected_row_count: r.rowsAffected,
    last_insert_rowid: r.lastInsertRowid === null ? null : r.lastInsertRowid.toString(),
    rows_read: 0,
    rows_written: 0,
    query_duration_ms: ms,
  };
}

const EXPLAIN_OPS_WRITING = new Set(['Vacuum', 'JournalMode', 'Checkpoint']);

/**
 * SqlSession offers no bare prepare, so this asks SQLite through statements that
 * run nothing: `EXPLAIN <sql>` validates it, and its opcodes give read-only-ness
 * (what sqlite3_stmt_readonly derives them from) and the result width; for a
 * query, `SELECT * FROM (<sql>) LIMIT 0` gives its column names and types.
 */
async function describe(stream: Stream, sql: string): Promise<Obj> {
  const c = checkStatement(sql);
  const names = parameterNames(c.sql);
  const probe = (text: string): Promise<SqlResult> => run(stream, bind({ sql: text, args: [], named: new Map(), wantRows: true }));
  const params = names.map((name) => ({ name }));
  if (c.explain) {
    const r = await probe(c.sql);
    return { params, cols: r.columns.map((name, i) => ({ name, decltype: r.decltypes[i] ?? null })), is_explain: true, is_readonly: true };
  }
  const plan = await probe(`EXPLAIN ${c.sql}`);
  const opAt = plan.columns.indexOf('opcode');
  const p2At = plan.columns.indexOf('p2');
  let readonly = true;
  let width = 0;
  for (const row of plan.rows) {
    const op = row[opAt];
    const p2 = Number(row[p2At]);
    if ((op === 'Transaction' && p2 !== 0) || (typeof op === 'string' && EXPLAIN_OPS_WRITING.has(op))) readonly = false;
    if (op === 'ResultRow') width = Math.max(width, p2);
  }
  let cols: Array<{ name: string; decltype: string | null }> = Array.from({ length: width }, () => ({ name: '', decltype: null }));
  if (width > 0 && readonly && ['SELECT', 'VALUES', 'WITH'].includes(c.verb)) {
    const r = await probe(`SELECT * FROM (${c.sql}) LIMIT 0`);
    if (r.columns.length === width) cols = r.columns.map((name, i) => ({ name, decltype: r.decltypes[i] ?? null }));
  }
  return { params, cols, is_explain: false, is_readonly: readonly };
}

// ---------------------------------------------------------------------------
// Parameters

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
/** SQLite's IdChar: letters, digits, `_`, `$`, and every non-ASCII unit. */
const isIdChar = (c: number): boolean => isDigit(c) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f || c === 0x24 || c >= 0x80;

/**
 * The name of each parameter by index (`names[i]` is parameter i+1; null for
 * anonymous ones), numbered as SQLite numbers them: `?` takes the next index,
 * `?NNN` index NNN, and a repeated `:name`/`@name`/`$name`/`#name` its first index.
 * Strings, quoted identifiers and comments are skipped as SQLite's tokenizer does.
 */
function parameterNames(sql: string): Array<string | null> {
  const names: Array<string | null> = [];
  const byName = new Map<string, number>();
  const n = sql.length;
  let i = 0;
  while (i < n) {
    const c = sql[i]!;
    if (c === "'" || c === '"' || c === '`') {
      let k = i + 1;
      for (;;) {
        const q = sql.indexOf(c, k);
        if (q < 0) return names; // unterminated: SQLite refuses the text anyway
        if (sql[q + 1] !== c) {
          i = q + 1;
          break;
        }
        k = q + 2;
      }
    } else if (c === '[') {
      const close = sql.indexOf(']', i + 1);
      i = close < 0 ? n : close + 1;
    } else if (c === '-' && sql[i + 1] === '-') {
      const nl = sql.indexOf('\n', i + 2);
      i = nl < 0 ? n : nl + 1;
    } else if (c === '/' && sql[i + 1] === '*') {
      const close = sql.indexOf('*/', i + 2);
      i = close < 0 ? n : close + 2;
    } else if (c === '?') {
      let k = i + 1;
      while (isDigit(sql.charCodeAt(k))) k++;
      if (k === i + 1) {
        names.push(null);
      } else {
        const index = Number(sql.slice(i + 1, k));
        if (index < 1 || index > MAX_PARAMETER) {
          throw new GeodrError('SQL_ERROR', `variable number must be between ?1 and ?${MAX_PARAMETER}`, { details: { sqliteCode: 'SQLITE_ERROR' } });
        }
        while (names.length < index) names.push(null);
        names[index - 1] ??= sql.slice(i, k);
      }
      i = k;
    } else if (c === ':' || c === '@' || c === '$' || c === '#') {
      let k = i + 1;
      while (isIdChar(sql.charCodeAt(k))) k++;
      if (k > i + 1) {
        const name = sql.slice(i, k);
        if (!byName.has(name)) {
          if (names.length >= MAX_PARAMETER) throw new GeodrError('SQL_ERROR', `too many SQL variables (the limit is ${MAX_PARAMETER})`, { details: { sqliteCode: 'SQLITE_ERROR' } });
          names.push(name);
          byName.set(name, names.length);
        }
      }
      i = k;
    } else if (isIdChar(sql.charCodeAt(i))) {
      // Words and numbers: `$` inside `a$b` starts no parameter.
      while (isIdChar(sql.charCodeAt(i))) i++;
    } else {
      i++;
    }
  }
  return names;
}

/**
 * Hrana binds `args[i]` to parameter i+1 and `named_args` by name, with or without
 * the prefix (names the statement lacks are ignored, as sqld does); parameters left
 * unbound are NULL, as in SQLite. better-sqlite3 instead takes anonymous parameters
 * in order and the rest by name without the prefix (`?3` as "3"), so the values are
 * laid out that way; SqlSession itself strips one leading `:`/`@`/`$`.
 */
function bind(stmt: Stmt): SqlStatement {
  const names = parameterNames(stmt.sql);
  if (stmt.args.length > names.length) {
    throw new GeodrError('SQL_ERROR', `${stmt.args.length} positional arguments for a statement with ${names.length} parameters`, { details: { sqliteCode: 'SQLITE_RANGE' } });
  }
  const args: SqlValue[] = [];
  const named: Record<string, SqlValue> = {};
  names.forEach((name, i) => {
    const key = name === null ? undefined : [name, name.slice(1)].find((k) => stmt.named.has(k));
    const v = key !== undefined ? (stmt.named.get(key) as SqlValue) : (stmt.args[i] ?? null);
    if (name === null) args.push(v);
    else named[name[0] === '?' || name[0] === '#' ? name.slice(1) : name] = v;
  });
  return { sql: stmt.sql, args, named };
}

// ---------------------------------------------------------------------------
// Values and errors

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

function decodeValue(raw: unknown, where: string): SqlValue {
  const v = asObject(raw, where);
  switch (v.type) {
    case 'null':
      return null;
    case 'integer': {
      if (typeof v.value !== 'string' || !/^-?\d{1,19}$/.test(v.value)) throw invalid(`${where}.value`, 'must be a string of decimal digits');
      const n = BigInt(v.value);
      if (n < INT64_MIN || n > INT64_MAX) throw invalid(`${where}.value`, 'is outside the 64-bit integer range');
      return n;
    }
    case 'float':
      if (typeof v.value !== 'number' || !Number.isFinite(v.value)) throw invalid(`${where}.value`, 'must be a finite number');
      return v.value;
    case 'text':
      if (typeof v.value !== 'string') throw invalid(`${where}.value`, 'must be a string');
      return v.value;
    case 'blob':
      // The client's encoder may leave the padding off.
      if (typeof v.base64 !== 'string' || !BASE64.test(v.base64)) throw invalid(`${where}.base64`, 'must be base64 (padding optional)');
      return Buffer.from(v.base64, 'base64');
    default:
      throw invalid(`${where}.type`, `unknown value type ${JSON.stringify(v.type)}; expected null, integer, float, text or blob`);
  }
}

function encodeValue(v: SqlValue): Obj {
  if (v === null) return { type: 'null' };
  if (typeof v === 'bigint') return { type: 'integer', value: v.toString() };
  if (typeof v === 'number') {
    // JSON has no Infinity; sending null would break the client's decoder.
    if (!Number.isFinite(v)) throw new GeodrError('UNSUPPORTED', `the result holds the REAL ${v}, which Hrana's JSON encoding cannot carry; CAST it to TEXT`);
    return { type: 'float', value: v };
  }
  if (typeof v === 'string') return { type: 'text', value: v };
  return { type: 'blob', base64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
}

/** The SQLite code when SQLite raised it (what libSQL clients match on), else the geodr code. */
function hranaError(e: unknown): HranaError {
  if (isGeodrError(e)) {
    const sqliteCode = e.context.details?.sqliteCode;
    return { message: e.message, code: typeof sqliteCode === 'string' ? sqliteCode : e.code };
  }
  return { message: `internal error: ${e instanceof Error ? e.message : String(e)}`, code: 'INTERNAL' };
}
