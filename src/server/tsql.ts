/**
 * The T-SQL surface of geo-replication on the SQL endpoint: the management
 * statements Azure SQL Database users already know (ALTER DATABASE … ADD/REMOVE
 * SECONDARY, FAILOVER, FORCE_FAILOVER_ALLOW_DATA_LOSS, sp_wait_for_database_copy_sync)
 * and the system views sys.geo_replication_links, sys.dm_geo_replication_link_status
 * and sys.dm_operation_status.
 *
 * This module only parses and answers; carrying a statement out is the caller's
 * business. Parsing runs on tokens (a lexer that follows SQLite's, plus T-SQL's
 * N'…' strings), so words inside strings, quoted identifiers and comments never
 * count, and a statement that is ordinary SQL costs one token to recognise.
 */
import Database from 'better-sqlite3';
import { GeodrError } from '../errors.js';
import { validateName, type NameKind } from './names.js';
import { Budget, runStatement, translate, type SqlResult, type SqlValue } from './sql.js';
import { checkStatement, splitStatements } from './sqlguard.js';

export type ManagementStatement =
  | { kind: 'addSecondary'; database: string; server: string; pool?: string; secondaryDatabase?: string }
  | { kind: 'removeSecondary'; database: string; server: string }
  | { kind: 'failover'; database: string }
  | { kind: 'forceFailover'; database: string }
  | { kind: 'waitForCopySync'; server: string; database: string };

export interface LinkInfo {
  /** uuid */
  linkId: string;
  /** Local database name. */
  database: string;
  /** geodr's stable id of the local database (database_id); NULL in the views when absent. */
  databaseId?: string;
  localRole: 'primary' | 'secondary';
  partnerServer: string;
  partnerDatabase: string;
  state: 'PENDING' | 'SEEDING' | 'CATCH_UP' | 'SUSPENDED';
  /** ms */
  createdAt: number;
  /** ms */
  modifiedAt: number;
  lastReplicatedTxid: number;
  /** Commit time (ms) of that TXID on the primary. */
  lastReplicatedTime: number | null;
  /**
   * Commit time (ms) of the local database's newest transaction (last_commit). When
   * absent, a secondary shows lastReplicatedTime (what it has is what it committed)
   * and a primary NULL.
   */
  lastCommitTime?: number | null;
  lagTxids: number;
  lagMs: number | null;
  /** Seeding progress 0..100. */
  percentComplete: number;
}

export interface OperationInfo {
  id: string;
  kind: string;
  state: 'Pending' | 'InProgress' | 'Succeeded' | 'Failed' | 'Cancelled';
  percentComplete: number;
  database: string | null;
  createdAt: number;
  startedAt: number | null;
  endedAt: number | null;
  error: { code: string; message: string } | null;
}

export interface SysViewData {
  /** The local server's name. */
  server: string;
  links: LinkInfo[];
  operations: OperationInfo[];
}

/** Bounds on a query over the views, as for any tenant statement (see Limits in config.ts). */
export interface SysViewLimits {
  statementTimeoutMs: number;
  resultBytes: number;
}

const DEFAULT_LIMITS: SysViewLimits = { statementTimeoutMs: 10_000, resultBytes: 16 * 1024 * 1024 };

// ---------------------------------------------------------------------------
// Lexer

type TokenKind = 'word' | 'quoted' | 'string' | 'number' | 'param' | 'op' | 'semi' | 'bad';

interface Token {
  kind: TokenKind;
  start: number;
  end: number;
  text: string;
}

const SPACE = new Set([0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0xfeff]);
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isAlpha = (c: number): boolean => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
// As SQLite: every non-ASCII unit is an identifier character.
const isIdStart = (c: number): boolean => isAlpha(c) || c === 0x5f || c >= 0x80;
const isIdChar = (c: number): boolean => isIdStart(c) || isDigit(c) || c === 0x24;
const OPERATORS = ['->>', '->', '||', '<=', '<>', '<<', '>=', '>>', '==', '!='];

/** ASCII-only case folding, as SQLite matches keywords and names. */
const upper = (s: string): string => s.replace(/[a-z]+/g, (m) => m.toUpperCase());
const lower = (s: string): string => s.replace(/[A-Z]+/g, (m) => m.toLowerCase());

/**
 * A lazy lexer: tokens are made only as far as a caller looks, so recognising
 * ordinary SQL reads one token. An unterminated string or identifier becomes one
 * 'bad' token running to the end (SQLite reports it when it runs the text).
 */
class Tokens {
  private readonly toks: Token[] = [];
  private pos = 0;
  private done = false;

  constructor(readonly sql: string) {}

  /** The token at index i, or undefined past the end. */
  at(i: number): Token | undefined {
    while (this.toks.length <= i && !this.done) this.scan();
    return this.toks[i];
  }

  /** Every token. */
  all(): Token[] {
    while (!this.done) this.scan();
    return this.toks;
  }

  private scan(): void {
    const sql = this.sql;
    const n = sql.length;
    const at = (k: number): number => (k < n ? sql.charCodeAt(k) : -1);
    let i = this.pos;
    for (;;) {
      if (i >= n) {
        this.done = true;
        this.pos = n;
        return;
      }
      const c = at(i);
      if (SPACE.has(c)) i++;
      else if (c === 0x2d && at(i + 1) === 0x2d) {
        const nl = sql.indexOf('\n', i + 2);
        i = nl < 0 ? n : nl + 1;
      } else if (c === 0x2f && at(i + 1) === 0x2a) {
        const close = sql.indexOf('*/', i + 2);
        i = close < 0 ? n : close + 2;
      } else break;
    }
    const start = i;
    const c = at(i);
    let kind: TokenKind;
    const quoted = (open: number, close: string, doubled: boolean): number => {
      let k = open;
      for (;;) {
        const q = sql.indexOf(close, k);
        if (q < 0) return -1;
        if (doubled && sql[q + 1] === close) k = q + 2;
        else return q + 1;
      }
    };
    if (c === 0x27 || ((c === 0x4e || c === 0x6e) && at(i + 1) === 0x27)) {
      // 'text' or T-SQL's N'text' (SQLite would read N as a word, then the string).
      const end = quoted(c === 0x27 ? i + 1 : i + 2, "'", true);
      kind = end < 0 ? 'bad' : 'string';
      i = end < 0 ? n : end;
    } else if (c === 0x22 || c === 0x60) {
      const end = quoted(i + 1, sql[i]!, true);
      kind = end < 0 ? 'bad' : 'quoted';
      i = end < 0 ? n : end;
    } else if (c === 0x5b) {
      // SQLite has no escape inside [...]: the first ] ends it.
      const end = quoted(i + 1, ']', false);
      kind = end < 0 ? 'bad' : 'quoted';
      i = end < 0 ? n : end;
    } else if ((c === 0x78 || c === 0x58) && at(i + 1) === 0x27) {
      const close = sql.indexOf("'", i + 2);
      kind = close < 0 ? 'bad' : 'number';
      i = close < 0 ? n : close + 1;
    } else if (isDigit(c) || (c === 0x2e && isDigit(at(i + 1)))) {
      // Digits, a fraction, an exponent and any identifier characters glued on, as SQLite scans them.
      i++;
      while (isDigit(at(i)) || at(i) === 0x2e || isIdChar(at(i)) || ((at(i) === 0x2b || at(i) === 0x2d) && (at(i - 1) === 0x65 || at(i - 1) === 0x45) && isDigit(at(i + 1)))) i++;
      kind = 'number';
    } else if (c === 0x3f || c === 0x24 || c === 0x40 || c === 0x3a || c === 0x23) {
      i++;
      while (isIdChar(at(i))) i++;
      kind = 'param';
    } else if (isIdStart(c)) {
      while (isIdChar(at(i))) i++;
      kind = 'word';
    } else if (c === 0x3b) {
      i++;
      kind = 'semi';
    } else {
      const op = OPERATORS.find((o) => sql.startsWith(o, i));
      i += op === undefined ? 1 : op.length;
      kind = 'op';
    }
    this.pos = i;
    this.toks.push({ kind, start, end: i, text: sql.slice(start, i) });
  }
}

const isWord = (t: Token | undefined, ...words: string[]): boolean => t !== undefined && t.kind === 'word' && words.includes(upper(t.text));
const isOp = (t: Token | undefined, op: string): boolean => t !== undefined && t.kind === 'op' && t.text === op;

/** The identifier a word or quoted token stands for. */
function identifier(t: Token | undefined): string | undefined {
  if (t === undefined) return undefined;
  if (t.kind === 'word') return t.text;
  if (t.kind !== 'quoted') return undefined;
  const q = t.text[0]!;
  const body = t.text.slice(1, -1);
  return q === '[' ? body : body.replaceAll(q + q, q);
}

function stringValue(t: Token): string {
  const body = t.text.slice(t.text[0] === "'" ? 1 : 2, -1);
  return body.replaceAll("''", "'");
}

// ---------------------------------------------------------------------------
// Management statements

const ACTIONS = ['ADD SECONDARY ON SERVER', 'REMOVE SECONDARY ON SERVER', 'FAILOVER', 'FORCE_FAILOVER_ALLOW_DATA_LOSS'];
const ACTION_WORDS = ['ADD', 'REMOVE', 'FAILOVER', 'FORCE_FAILOVER_ALLOW_DATA_LOSS'];
const oneOf = `one of ${ACTIONS.slice(0, -1).join(', ')} or ${ACTIONS[ACTIONS.length - 1]}`;
const PROC = 'SP_WAIT_FOR_DATABASE_COPY_SYNC';
const PROC_PARAMS = ['@target_server', '@target_database'] as const;

class Parser {
  i = 0;

  constructor(
    readonly toks: Tokens,
    /** Names the statement in messages: 'ALTER DATABASE', 'sp_wait_for_database_copy_sync'. */
    public what: string,
  ) {}

  get sql(): string {
    return this.toks.sql;
  }

  peek(k = 0): Token | undefined {
    return this.toks.at(this.i + k);
  }

  next(): Token | undefined {
    const t = this.peek();
    if (t !== undefined) this.i++;
    return t;
  }

  /** Line and column (1-based) of an offset. */
  where(offset: number): { offset: number; line: number; column: number } {
    const before = this.sql.slice(0, offset);
    const line = before.split('\n').length;
    return { offset, line, column: offset - before.lastIndexOf('\n') };
  }

  fail(message: string, at: Token | undefined): never {
    const offset = at?.start ?? this.sql.length;
    const w = this.where(offset);
    const statement = this.sql.length > 200 ? this.sql.slice(0, 200) : this.sql;
    throw new GeodrError('INVALID_ARGUMENT', `${this.what}: ${message} (line ${w.line}, column ${w.column})`, { details: { ...w, statement } });
  }

  describe(t: Token | undefined): string {
    if (t === undefined) return 'the end of the statement';
    if (t.kind === 'bad') return `an unterminated ${t.text.startsWith("'") || /^n'/i.test(t.text) ? 'string' : 'quoted identifier'}`;
    const text = t.text.length > 40 ? `${t.text.slice(0, 40)}…` : t.text;
    return JSON.stringify(text);
  }

  expectWord(word: string, after: string): Token {
    const t = this.next();
    if (!isWord(t, word)) this.fail(`expected ${word} after ${after}, found ${this.describe(t)}`, t);
    return t!;
  }

  expectOp(op: string, after: string): void {
    const t = this.next();
    if (!isOp(t, op)) this.fail(`expected "${op}" after ${after}, found ${this.describe(t)}`, t);
  }

  /**
   * A name: [bracketed], "quoted" or `backticked`, or bare. A bare name runs over
   * adjacent word, number, "-" and "." tokens, so venue-01 and eu.db.7 need no
   * brackets (T-SQL would want them; geodr's names allow these characters).
   * Strings are accepted where `strings` is set (procedure arguments).
   */
  name(kind: NameKind, role: string, strings = false): string {
    const t = this.next();
    let name: string | undefined;
    if (t !== undefined && t.kind === 'quoted') name = identifier(t);
    else if (t !== undefined && t.kind === 'string' && strings) name = stringValue(t);
    else if (t !== undefined && (t.kind === 'word' || t.kind === 'number')) {
      let end = t.end;
      for (;;) {
        const u = this.peek();
        if (u === undefined || u.start !== end || !(u.kind === 'word' || u.kind === 'number' || isOp(u, '-') || isOp(u, '.'))) break;
        this.i++;
        end = u.end;
      }
      name = this.sql.slice(t.start, end);
    }
    if (name === undefined) this.fail(`expected ${role}, found ${this.describe(t)}`, t);
    try {
      return validateName(kind, name);
    } catch (e) {
      // validateName's reason already says which kind of name: "server name "x" is reserved".
      if (e instanceof GeodrError) this.fail(role.startsWith('@') ? `${role}: ${e.reason}` : e.reason, t);
      throw e;
    }
  }

  /** Trailing semicolons are fine; anything else after the statement is not. */
  end(): void {
    const t = this.next();
    if (t === undefined) return;
    if (t.kind !== 'semi') this.fail(`unexpected ${this.describe(t)} after the end of the statement`, t);
    for (;;) {
      const u = this.next();
      if (u === undefined) return;
      if (u.kind !== 'semi') this.fail(`${this.describe(u)} follows the statement: send a management statement on its own`, u);
    }
  }
}

/**
 * Recognises the management statements; returns undefined for anything else (ordinary SQL
 * that SQLite will run). A statement that starts like one of these but is malformed throws
 * GeodrError('INVALID_ARGUMENT', message naming what is wrong and where).
 *
 * `currentDatabase` is the database the session is on, used for `ALTER DATABASE CURRENT`
 * (which is refused without it).
 *
 * @example
 * parseManagementStatement('ALTER DATABASE [venue-01] ADD SECONDARY ON SERVER tenants1-westus')
 * // { kind: 'addSecondary', database: 'venue-01', server: 'tenants1-westus' }
 */
export function parseManagementStatement(sql: string, currentDatabase?: string): ManagementStatement | undefined {
  const toks = new Tokens(sql);
  let i = 0;
  while (toks.at(i)?.kind === 'semi') i++;
  const head = toks.at(i);
  if (head === undefined) return undefined;
  const verb = head.kind === 'word' ? upper(head.text) : '';
  if (verb === 'ALTER') {
    if (!isWord(toks.at(i + 1), 'DATABASE')) return undefined;
    const p = new Parser(toks, 'ALTER DATABASE');
    p.i = i + 2;
    return parseAlter(p, currentDatabase);
  }
  if (verb === 'EXEC' || verb === 'EXECUTE') {
    const p = new Parser(toks, verb);
    p.i = i + 1;
    if (!procName(p)) {
      const t = p.peek();
      p.fail(`${t === undefined ? 'a procedure name is missing' : `procedure ${p.describe(t)} is not supported`}: the SQL endpoint runs only sp_wait_for_database_copy_sync`, t);
    }
    return parseWait(p);
  }
  const p = new Parser(toks, PROC.toLowerCase());
  p.i = i;
  return procName(p) ? parseWait(p) : undefined;
}

/** Consumes `[sys.]sp_wait_for_database_copy_sync` if it is next. */
function procName(p: Parser): boolean {
  const first = identifier(p.peek());
  if (first !== undefined && upper(first) === 'SYS' && isOp(p.peek(1), '.')) {
    const name = identifier(p.peek(2));
    if (name === undefined || upper(name) !== PROC) return false;
    p.i += 3;
    return true;
  }
  if (first === undefined || upper(first) !== PROC) return false;
  p.i++;
  return true;
}

function parseAlter(p: Parser, currentDatabase: string | undefined): ManagementStatement {
  let database: string;
  const t = p.peek();
  if (isWord(t, 'CURRENT')) {
    p.i++;
    if (currentDatabase === undefined) p.fail('ALTER DATABASE CURRENT needs a session on a database; name the database instead', t);
    database = currentDatabase;
  } else if (t === undefined || t.kind === 'semi' || (isWord(t, ...ACTION_WORDS) && !isWord(p.peek(1), ...ACTION_WORDS))) {
    // `ALTER DATABASE FAILOVER`: the action is there, the name is not. (A database may
    // still be called failover: `ALTER DATABASE failover FAILOVER`.)
    p.fail(`the database name is missing after ALTER DATABASE, found ${p.describe(t)}`, t);
  } else {
    database = p.name('database', 'the database name after ALTER DATABASE');
  }
  const action = p.next();
  const verb = action?.kind === 'word' ? upper(action.text) : '';
  switch (verb) {
    case 'ADD': {
      p.expectWord('SECONDARY', 'ADD');
      p.expectWord('ON', 'ADD SECONDARY');
      p.expectWord('SERVER', 'ADD SECONDARY ON');
      const server = p.name('server', 'the partner server name after ON SERVER');
      const out: ManagementStatement = { kind: 'addSecondary', database, server };
      if (isWord(p.peek(), 'WITH')) {
        p.i++;
        addSecondaryOptions(p, out);
      }
      p.end();
      return out;
    }
    case 'REMOVE': {
      p.expectWord('SECONDARY', 'REMOVE');
      p.expectWord('ON', 'REMOVE SECONDARY');
      p.expectWord('SERVER', 'REMOVE SECONDARY ON');
      const server = p.name('server', 'the partner server name after ON SERVER');
      p.end();
      return { kind: 'removeSecondary', database, server };
    }
    case 'FAILOVER':
      p.end();
      return { kind: 'failover', database };
    case 'FORCE_FAILOVER_ALLOW_DATA_LOSS':
      p.end();
      return { kind: 'forceFailover', database };
    default:
      if (action?.kind !== 'word') p.fail(`expected ${oneOf} after the database name, found ${p.describe(action)}`, action);
      return p.fail(`${upper(action.text)} is not supported; the SQL endpoint runs ALTER DATABASE … with ${oneOf}`, action);
  }
}

/** `( option [, option]… )` after WITH. */
function addSecondaryOptions(p: Parser, out: ManagementStatement & { kind: 'addSecondary' }): void {
  p.expectOp('(', 'WITH');
  const seen = new Set<string>();
  for (;;) {
    const t = p.next();
    const option = t?.kind === 'word' ? upper(t.text) : undefined;
    if (option === undefined) p.fail(`expected an option (ALLOW_CONNECTIONS, SERVICE_OBJECTIVE, ELASTIC_POOL, SECONDARY_NAME, SECONDARY_TYPE), found ${p.describe(t)}`, t);
    // SERVICE_OBJECTIVE = ELASTIC_POOL(…) sets both the service objective and the pool.
    const keys = option === 'SERVICE_OBJECTIVE' && isOp(p.peek(), '=') && isWord(p.peek(1), 'ELASTIC_POOL') ? [option, 'ELASTIC_POOL'] : [option];
    for (const key of keys) {
      if (seen.has(key)) p.fail(`${key} is given twice`, t);
      seen.add(key);
    }
    switch (option) {
      case 'ALLOW_CONNECTIONS': {
        p.expectOp('=', option);
        const v = p.next();
        if (isWord(v, 'NO', 'READ_ONLY')) p.fail(`ALLOW_CONNECTIONS = ${upper(v!.text)} is not supported: geodr secondaries are always readable (ALLOW_CONNECTIONS = ALL)`, v);
        if (!isWord(v, 'ALL')) p.fail(`expected ALL after ALLOW_CONNECTIONS =, found ${p.describe(v)}`, v);
        break;
      }
      case 'SERVICE_OBJECTIVE': {
        p.expectOp('=', option);
        const v = p.peek();
        if (isWord(v, 'ELASTIC_POOL')) {
          p.i++;
          out.pool = elasticPool(p);
        } else if (v?.kind === 'string') {
          // Accepted for compatibility; a geodr database's size follows its pool's limits.
          p.i++;
        } else {
          p.fail(`expected a quoted service objective such as 'S0' or ELASTIC_POOL ( name = … ) after SERVICE_OBJECTIVE =, found ${p.describe(v)}`, v);
        }
        break;
      }
      case 'ELASTIC_POOL':
        out.pool = elasticPool(p);
        break;
      case 'SECONDARY_NAME':
        p.expectOp('=', option);
        out.secondaryDatabase = p.name('database', 'the secondary database name after SECONDARY_NAME =');
        break;
      case 'SECONDARY_TYPE': {
        p.expectOp('=', option);
        const v = p.next();
        if (isWord(v, 'NAMED')) p.fail('SECONDARY_TYPE = NAMED is not supported: geodr secondaries are geo-replicas (SECONDARY_TYPE = GEO)', v);
        if (!isWord(v, 'GEO')) p.fail(`expected GEO after SECONDARY_TYPE =, found ${p.describe(v)}`, v);
        break;
      }
      default:
        p.fail(`unknown option ${p.describe(t)}; ADD SECONDARY takes ALLOW_CONNECTIONS, SERVICE_OBJECTIVE, ELASTIC_POOL, SECONDARY_NAME and SECONDARY_TYPE`, t);
    }
    const sep = p.next();
    if (isOp(sep, ')')) return;
    if (!isOp(sep, ',')) p.fail(`expected "," or ")" after the ${option} option, found ${p.describe(sep)}`, sep);
  }
}

/** `( NAME = pool )` after ELASTIC_POOL. */
function elasticPool(p: Parser): string {
  p.expectOp('(', 'ELASTIC_POOL');
  p.expectWord('NAME', 'ELASTIC_POOL (');
  p.expectOp('=', 'ELASTIC_POOL ( NAME');
  const pool = p.name('pool', 'the elastic pool name after ELASTIC_POOL ( NAME =');
  p.expectOp(')', 'the elastic pool name');
  return pool;
}

/** `[@target_server =] 'srv', [@target_database =] 'db'` after the procedure name. */
function parseWait(p: Parser): ManagementStatement {
  p.what = PROC.toLowerCase();
  const values = new Map<string, string>();
  let named = false;
  let position = 0;
  for (;;) {
    const t = p.peek();
    if (t === undefined || t.kind === 'semi') break;
    let param: string;
    if (t.kind === 'param' && isOp(p.peek(1), '=')) {
      param = lower(t.text);
      if (!(PROC_PARAMS as readonly string[]).includes(param)) p.fail(`unknown parameter ${p.describe(t)}; the parameters are @target_server and @target_database`, t);
      if (values.has(param)) p.fail(`${param} is given twice`, t);
      p.i += 2;
      named = true;
    } else {
      if (named) p.fail('after a named parameter every parameter must be named (@name = value)', t);
      const k = position++;
      if (k >= PROC_PARAMS.length) p.fail(`too many parameters: it takes ${PROC_PARAMS.length} (@target_server, @target_database)`, t);
      param = PROC_PARAMS[k]!;
    }
    const v = p.peek();
    if (v?.kind === 'param') p.fail(`${param}: variables are not supported; pass the name as a string, e.g. N'name'`, v);
    values.set(param, param === '@target_server' ? p.name('server', param, true) : p.name('database', param, true));
    if (!isOp(p.peek(), ',')) break;
    p.i++;
    const u = p.peek();
    if (u === undefined || u.kind === 'semi') p.fail(`expected a parameter after ",", found ${p.describe(u)}`, u);
  }
  const after = p.peek();
  if (after !== undefined && after.kind !== 'semi') p.fail(`expected "," between parameters, found ${p.describe(after)}`, after);
  const server = values.get('@target_server');
  const database = values.get('@target_database');
  if (server === undefined || database === undefined) {
    const missing = PROC_PARAMS.filter((k) => !values.has(k));
    p.fail(`${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} required`, p.peek());
  }
  p.end();
  return { kind: 'waitForCopySync', server, database };
}

// ---------------------------------------------------------------------------
// System views

const VIEWS = ['geo_replication_links', 'dm_geo_replication_link_status', 'dm_operation_status'] as const;
const VIEW_LIST = VIEWS.map((v) => `sys.${v}`).join(', ');
// Quoting never changes an identifier's letters, so any reference contains one of these.
const VIEW_HINT = /geo_replication_link|dm_operation_status/i;

/**
 * The views: true when the statement reads sys.geo_replication_links,
 * sys.dm_geo_replication_link_status or sys.dm_operation_status — that is, names one of
 * them (schema-qualified, in any quoting) outside strings and comments. Writes to them
 * count too, so that {@link querySysViews} refuses them with a clear message.
 */
export function readsSysViews(sql: string): boolean {
  if (!VIEW_HINT.test(sql)) return false;
  const toks = new Tokens(sql).all();
  for (let k = 0; k + 2 < toks.length; k++) {
    const schema = identifier(toks[k]);
    if (schema === undefined || lower(schema) !== 'sys' || !isOp(toks[k + 1], '.')) continue;
    const view = identifier(toks[k + 2]);
    if (view !== undefined && (VIEWS as readonly string[]).includes(lower(view))) return true;
  }
  return false;
}

/** Azure's numbering (sys.geo_replication_links): 0 PENDING, 1 SEEDING, 2 CATCH_UP, 4 SUSPENDED. */
const REPLICATION_STATE = { PENDING: 0, SEEDING: 1, CATCH_UP: 2, SUSPENDED: 4 } as const;
const ROLE = { primary: [0, 'PRIMARY'], secondary: [1, 'SECONDARY'] } as const;
/** Secondaries are always readable: Azure's 2 = All. */
const ALLOW_ALL = [2, 'All'] as const;
const OPERATION_STATE = { Pending: [0, 'PENDING'], InProgress: [1, 'IN_PROGRESS'], Succeeded: [2, 'COMPLETED'], Failed: [3, 'FAILED'], Cancelled: [4, 'CANCELLED'] } as const;

// Declared types follow Azure's where SQLite's affinity keeps the value as given:
// sysname is NVARCHAR(128) (a numeric affinity would turn a server named "123" into an integer).
const SCHEMA = `
create table sys.geo_replication_links (
  database_id NVARCHAR(64), start_date DATETIMEOFFSET, modify_date DATETIMEOFFSET, link_guid UNIQUEIDENTIFIER,
  partner_server NVARCHAR(128), partner_database NVARCHAR(128), replication_state TINYINT,
  replication_state_desc NVARCHAR(256), role TINYINT, role_desc NVARCHAR(256), secondary_allow_connections TINYINT,
  secondary_allow_connections_desc NVARCHAR(256),
  database_name NVARCHAR(128), server_name NVARCHAR(128), percent_complete INT);
create table sys.dm_geo_replication_link_status (
  link_guid UNIQUEIDENTIFIER, partner_server NVARCHAR(128), partner_database NVARCHAR(128), last_replication DATETIMEOFFSET,
  replication_lag_sec INT, replication_state TINYINT, replication_state_desc NVARCHAR(256), role TINYINT,
  role_desc NVARCHAR(256), secondary_allow_connections TINYINT, secondary_allow_connections_desc NVARCHAR(256),
  last_commit DATETIMEOFFSET,
  database_name NVARCHAR(128), server_name NVARCHAR(128), last_replicated_txid BIGINT, replication_lag_txids BIGINT,
  replication_lag_ms BIGINT, percent_complete INT);
create table sys.dm_operation_status (
  session_activity_id UNIQUEIDENTIFIER, resource_type INT, resource_type_desc NVARCHAR(2048), major_resource_id NVARCHAR(128),
  minor_resource_id NVARCHAR(128), operation NVARCHAR(60), state TINYINT, state_desc NVARCHAR(120), percent_complete INT,
  error_code NVARCHAR(60), error_desc NVARCHAR(2048), error_severity INT, error_state INT, start_time DATETIMEOFFSET,
  last_modify_time DATETIMEOFFSET,
  create_time DATETIMEOFFSET, end_time DATETIMEOFFSET);
`;

/** SQLite's own tables: reading them would show this module's scaffolding, not tenant data. */
const INTERNAL_TABLES = new Set(['sqlite_master', 'sqlite_schema', 'sqlite_temp_master', 'sqlite_temp_schema', 'sqlite_sequence', 'sqlite_stat1', 'sqlite_stat2', 'sqlite_stat3', 'sqlite_stat4']);

const iso = (ms: number | null | undefined): string | null => (typeof ms === 'number' && Number.isFinite(ms) ? new Date(ms).toISOString() : null);
const int = (n: number | null | undefined): number | null => (typeof n === 'number' && Number.isFinite(n) ? Math.trunc(n) : null);
const percent = (n: number): number => Math.min(100, Math.max(0, Math.floor(Number.isFinite(n) ? n : 0)));

function refuse(message: string, sql: string): never {
  throw new GeodrError('SQL_REFUSED', message, { details: { statement: sql.length > 200 ? sql.slice(0, 200) : sql } });
}

/**
 * Runs a read-only SELECT over the views and returns a result in the SQL endpoint's shape
 * (see SqlResult in src/server/sql.ts: columns, decltypes, rows, rowsAffected 0,
 * lastInsertRowid null, txid). The views are tables of a private in-memory database made
 * for this call, so the user's SELECT runs verbatim (WHERE, ORDER BY, joins between the
 * views, parameters) and can reach nothing else. Anything but one read-only SELECT of the
 * views alone is refused with SQL_REFUSED; SQLite's own complaints come back as SQL_ERROR.
 */
export function querySysViews(
  sql: string,
  args: SqlValue[] | undefined,
  named: Record<string, SqlValue> | undefined,
  data: SysViewData,
  txid: number,
  limits: SysViewLimits = DEFAULT_LIMITS,
): SqlResult {
  const stmts = splitStatements(sql);
  if (stmts.length !== 1) refuse(`a query over ${VIEW_LIST} must be exactly one SELECT statement; found ${stmts.length}`, sql);
  const c = checkStatement(stmts[0]!);
  if (c.explain || (c.verb !== 'SELECT' && c.verb !== 'WITH')) {
    refuse(`the system views are read-only: only SELECT may use ${VIEW_LIST}; ${c.explain ? 'EXPLAIN' : c.verb} is refused`, sql);
  }
  for (const t of new Tokens(c.sql).all()) {
    const name = identifier(t);
    if (name === undefined) continue;
    const key = lower(name);
    if (INTERNAL_TABLES.has(key) || (t.kind === 'word' && key.startsWith('pragma_'))) {
      refuse(`${key} cannot be read here: a query over ${VIEW_LIST} may use those views only`, sql);
    }
  }

  const db = new Database(':memory:');
  try {
    db.exec("ATTACH ':memory:' AS sys");
    db.exec(SCHEMA);
    fill(db, data);
    // The scaffolding is built; the user's statement may only read it.
    db.pragma('query_only = 1');
    let st: Database.Statement;
    try {
      st = db.prepare(c.sql);
    } catch (e) {
      const missing = e instanceof Database.SqliteError ? /^no such table: (.+)$/.exec(e.message)?.[1] : undefined;
      if (missing !== undefined) {
        refuse(`${missing} is not a system view here: a query over ${VIEW_LIST} may use those views only (read tenant tables in a separate statement)`, sql);
      }
      throw translate(e, undefined);
    }
    if (!st.reader || !st.readonly) refuse(`the system views are read-only: only SELECT may use ${VIEW_LIST}`, sql);
    st.safeIntegers(true);
    try {
      return runStatement(st, { sql: c.sql, args, named }, new Budget(limits), txid);
    } catch (e) {
      throw translate(e, undefined);
    }
  } finally {
    db.close();
  }
}

function fill(db: Database.Database, data: SysViewData): void {
  const links = db.prepare(
    `insert into sys.geo_replication_links values (@databaseId, @start, @modify, @linkId, @partnerServer, @partnerDatabase,
       @state, @stateDesc, @role, @roleDesc, ${ALLOW_ALL[0]}, '${ALLOW_ALL[1]}', @database, @server, @percent)`,
  );
  const status = db.prepare(
    `insert into sys.dm_geo_replication_link_status values (@linkId, @partnerServer, @partnerDatabase, @lastReplication,
       @lagSec, @state, @stateDesc, @role, @roleDesc, ${ALLOW_ALL[0]}, '${ALLOW_ALL[1]}', @lastCommit, @database, @server,
       @txid, @lagTxids, @lagMs, @percent)`,
  );
  const ops = db.prepare(
    `insert into sys.dm_operation_status values (@id, @resourceType, @resourceTypeDesc, @database, null, @kind, @state,
       @stateDesc, @percent, @errorCode, @errorDesc, @severity, @errorState, @start, @modified, @created, @ended)`,
  );
  db.transaction(() => {
    for (const l of data.links) {
      const [role, roleDesc] = ROLE[l.localRole];
      const lastCommit = l.lastCommitTime !== undefined ? l.lastCommitTime : l.localRole === 'secondary' ? l.lastReplicatedTime : null;
      const common = {
        linkId: l.linkId,
        partnerServer: l.partnerServer,
        partnerDatabase: l.partnerDatabase,
        state: REPLICATION_STATE[l.state],
        stateDesc: l.state,
        role,
        roleDesc,
        database: l.database,
        server: data.server,
        percent: percent(l.percentComplete),
      };
      links.run({ ...common, databaseId: l.databaseId ?? null, start: iso(l.createdAt), modify: iso(l.modifiedAt) });
      status.run({
        ...common,
        lastReplication: iso(l.lastReplicatedTime),
        lagSec: l.lagMs === null || !Number.isFinite(l.lagMs) ? null : Math.round(l.lagMs / 1000),
        lastCommit: iso(lastCommit),
        txid: int(l.lastReplicatedTxid),
        lagTxids: int(l.lagTxids),
        lagMs: int(l.lagMs),
      });
    }
    for (const o of data.operations) {
      const [state, stateDesc] = OPERATION_STATE[o.state];
      const failed = o.error !== null;
      ops.run({
        id: o.id,
        // Azure tracks databases only (0); server-wide geodr operations show as 1 'Server'.
        resourceType: o.database !== null ? 0 : 1,
        resourceTypeDesc: o.database !== null ? 'Database' : 'Server',
        database: o.database,
        kind: o.kind,
        state,
        stateDesc,
        percent: percent(o.percentComplete),
        errorCode: o.error?.code ?? null,
        errorDesc: o.error?.message ?? null,
        severity: failed ? 16 : 0,
        errorState: failed ? 1 : 0,
        start: iso(o.startedAt ?? o.createdAt),
        modified: iso(Math.max(o.createdAt, o.startedAt ?? 0, o.endedAt ?? 0)),
        created: iso(o.createdAt),
        ended: iso(o.endedAt),
      });
    }
  })();
}

