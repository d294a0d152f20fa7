/**
 * Tenant-isolation guard for the SQL endpoint. SQL text comes from untrusted
 * clients and runs against the tenant's own database, so every statement is
 * checked here first: nothing may reach another database or file (ATTACH,
 * VACUUM INTO, load_extension), touch a PRAGMA the engine depends on (WAL
 * mode, locking, schema writes), or take transaction control away from the
 * engine without the caller knowing (BEGIN/COMMIT/... come back as `control`).
 *
 * The checks run on tokens from a lexer that follows SQLite's own tokenizer
 * (src/tokenize.c), so a keyword inside a string, quoted identifier or comment
 * is never mistaken for one, and a statement boundary SQLite sees is never
 * hidden from the guard. Where the two could differ, the lexer errs towards
 * more tokens and more statements, which can only make the guard stricter.
 */
import { GeodrError } from '../errors.js';

/** A transaction-control statement, for the caller to carry out or refuse. */
export type TxControl =
  | { kind: 'begin'; mode: 'deferred' | 'immediate' | 'exclusive' | 'readonly' }
  | { kind: 'commit' } // COMMIT [TRANSACTION] / END [TRANSACTION]
  | { kind: 'rollback' } // ROLLBACK [TRANSACTION] (not ROLLBACK TO)
  | { kind: 'savepoint'; name: string }
  | { kind: 'release'; name: string } // RELEASE [SAVEPOINT] name
  | { kind: 'rollbackTo'; name: string }; // ROLLBACK [TRANSACTION] TO [SAVEPOINT] name

/** A statement that passed the guard. */
export interface CheckedStatement {
  /** The statement text without the trailing semicolon or the whitespace and comments around it. */
  sql: string;
  /** First keyword, upper-case, after any EXPLAIN [QUERY PLAN]: 'SELECT', 'INSERT', 'WITH', 'PRAGMA', ... */
  verb: string;
  /** True when the statement starts with EXPLAIN. */
  explain: boolean;
  /**
   * Set for transaction-control statements (not under EXPLAIN, which does not
   * run them). `BEGIN [TRANSACTION] READONLY` is libSQL syntax: plain SQLite
   * reads `BEGIN TRANSACTION READONLY` as a deferred transaction, so the caller
   * must enforce 'readonly' itself rather than run the text as is.
   */
  control?: TxControl;
}

// ---------------------------------------------------------------------------
// Lexer

type TokenKind = 'word' | 'quoted' | 'string' | 'blob' | 'number' | 'param' | 'op' | 'semi';

interface Token {
  kind: TokenKind;
  /** Offsets into the text that was tokenized; `text` is that slice. */
  start: number;
  end: number;
  text: string;
}

// \v only counts after other whitespace in SQLite's lexer, but its exec() skips it
// between statements; counting it always can only expose more tokens.
const SPACE = new Set([0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20]);
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isXDigit = (c: number): boolean => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
const isAlpha = (c: number): boolean => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
// SQLite works on UTF-8 bytes and counts every byte >= 0x80 as an identifier
// character, so every non-ASCII UTF-16 unit (surrogates included) is one too.
const isIdStart = (c: number): boolean => isAlpha(c) || c === 0x5f || c >= 0x80;
const isIdChar = (c: number): boolean => isIdStart(c) || isDigit(c) || c === 0x24;

/** Upper-cases ASCII letters only, as SQLite's keyword and name matching does ('ſ' must not become 'S'). */
function asciiUpper(s: string): string {
  return s.replace(/[a-z]+/g, (m) => m.toUpperCase());
}

function asciiLower(s: string): string {
  return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

const OPERATORS = ['->>', '->', '||', '<=', '<>', '<<', '>=', '>>', '==', '!='];

function tokenize(sql: string): Token[] {
  const out: Token[] = [];
  const n = sql.length;
  const at = (k: number): number => (k < n ? sql.charCodeAt(k) : -1);
  const push = (kind: TokenKind, start: number, end: number): void => {
    out.push({ kind, start, end, text: sql.slice(start, end) });
  };
  const unterminated: (what: string, start: number) => never = (what, start) => {
    throw new GeodrError('SQL_ERROR', `unterminated ${what} starting at offset ${start}`, { details: { statement: clip(sql) } });
  };

  let i = 0;
  while (i < n) {
    const c = at(i);
    const start = i;
    if (SPACE.has(c) || c === 0xfeff) {
      // SQLite skips a UTF-8 byte-order mark wherever a token could start (but
      // not inside a word), so "\uFEFFATTACH" is ATTACH.
      i++;
    } else if (c === 0x2d && at(i + 1) === 0x2d) {
      // `--` runs to a newline only: a lone \r does not end it in SQLite.
      const nl = sql.indexOf('\n', i + 2);
      i = nl < 0 ? n : nl + 1;
    } else if (c === 0x2f && at(i + 1) === 0x2a && i + 2 < n) {
      // SQLite lets an unterminated block comment run to the end of input.
      const close = sql.indexOf('*/', i + 2);
      i = close < 0 ? n : close + 2;
    } else if (c === 0x27 || c === 0x22 || c === 0x60) {
      const quote = sql[i]!;
      let k = i + 1;
      for (;;) {
        const q = sql.indexOf(quote, k);
        if (q < 0) unterminated(c === 0x27 ? 'string literal' : 'quoted identifier', start);
        if (sql[q + 1] !== quote) {
          i = q + 1;
          break;
        }
        k = q + 2;
      }
      push(c === 0x27 ? 'string' : 'quoted', start, i);
    } else if (c === 0x5b) {
      // [bracketed] identifiers have no escape: the first `]` ends them.
      const close = sql.indexOf(']', i + 1);
      if (close < 0) unterminated('quoted identifier', start);
      i = close + 1;
      push('quoted', start, i);
    } else if ((c === 0x78 || c === 0x58) && at(i + 1) === 0x27) {
      // A blob literal ends at the next quote; `''` is not an escape here.
      const close = sql.indexOf("'", i + 2);
      if (close < 0) unterminated('blob literal', start);
      i = close + 1;
      push('blob', start, i);
    } else if (isDigit(c) || (c === 0x2e && isDigit(at(i + 1)))) {
      i = scanNumber(at, i);
      push('number', start, i);
    } else if (c === 0x3f) {
      i++;
      while (isDigit(at(i))) i++;
      push('param', start, i);
    } else if (c === 0x24 || c === 0x40 || c === 0x3a || c === 0x23) {
      i = scanVariable(at, i);
      push('param', start, i);
    } else if (isIdStart(c)) {
      while (isIdChar(at(i))) i++;
      push('word', start, i);
    } else if (c === 0x3b) {
      i++;
      push('semi', start, i);
    } else {
      const op = OPERATORS.find((o) => sql.startsWith(o, i));
      i += op === undefined ? 1 : op.length;
      push('op', start, i);
    }
  }
  return out;
}

/** Numbers as SQLite scans them: hex, decimals, exponents, `_` separators, then any identifier characters glued on (an illegal token). */
function scanNumber(at: (k: number) => number, i: number): number {
  const digits = (k: number, test: (c: number) => boolean): number => {
    while (test(at(k)) || at(k) === 0x5f) k++;
    return k;
  };
  if (at(i) === 0x30 && (at(i + 1) === 0x78 || at(i + 1) === 0x58) && isXDigit(at(i + 2))) {
    i = digits(i + 2, isXDigit);
  } else {
    i = digits(i, isDigit);
    if (at(i) === 0x2e) i = digits(i + 1, isDigit);
    const e = at(i);
    const sign = at(i + 1) === 0x2b || at(i + 1) === 0x2d;
    if ((e === 0x65 || e === 0x45) && (isDigit(at(i + 1)) || (sign && isDigit(at(i + 2))))) i = digits(i + 2, isDigit);
  }
  while (isIdChar(at(i))) i++;
  return i;
}

/**
 * `$name`, `@name`, `:name`, `#name`, including the TCL forms `$a::b` and
 * `$a(anything up to whitespace or ')')`. Some builds (better-sqlite3's) omit
 * the TCL forms; scanning them anyway can only add statement boundaries the
 * build does not have, and any `;` they hide sits inside an unclosed `(` there,
 * which is a syntax error.
 */
function scanVariable(at: (k: number) => number, i: number): number {
  let named = 0;
  i++;
  for (;;) {
    const c = at(i);
    if (isIdChar(c)) {
      named++;
      i++;
    } else if (c === 0x28 && named > 0) {
      i++;
      while (at(i) !== -1 && !SPACE.has(at(i)) && at(i) !== 0x29) i++;
      if (at(i) === 0x29) i++;
      return i;
    } else if (c === 0x3a && at(i + 1) === 0x3a) {
      i += 2;
    } else {
      // With no name SQLite makes this an illegal token; it is kept as one token all the same.
      return i;
    }
  }
}

/** The name a word, quoted identifier or string token stands for. */
function nameOf(t: Token | undefined): string | undefined {
  if (t === undefined) return undefined;
  switch (t.kind) {
    case 'word':
      return t.text;
    case 'string':
    case 'quoted': {
      const q = t.text[0]!;
      const body = t.text.slice(1, -1);
      return q === '[' ? body : body.replaceAll(q + q, q);
    }
    default:
      return undefined;
  }
}

const isWord = (t: Token | undefined, ...words: string[]): boolean =>
  t !== undefined && t.kind === 'word' && words.includes(asciiUpper(t.text));

// ---------------------------------------------------------------------------
// Splitting

interface Statement {
  text: string;
  tokens: Token[];
}

/** Index of the first token after any EXPLAIN [QUERY PLAN] prefix. */
function skipExplain(tokens: Token[]): number {
  let i = 0;
  while (isWord(tokens[i], 'EXPLAIN')) {
    i++;
    if (isWord(tokens[i], 'QUERY') && isWord(tokens[i + 1], 'PLAN')) i += 2;
  }
  return i;
}

function isCreateTrigger(tokens: Token[]): boolean {
  let i = skipExplain(tokens);
  if (!isWord(tokens[i++], 'CREATE')) return false;
  if (isWord(tokens[i], 'TEMP', 'TEMPORARY')) i++;
  return isWord(tokens[i], 'TRIGGER');
}

/**
 * A trigger body holds `;`s that do not end the statement. From the first
 * BEGIN of a CREATE TRIGGER on, CASE opens and END closes; only a `;` at depth 0
 * ends it. CASE is reserved, so it always opens; END can also be a bare column
 * name, which closes early here, so the count can only split more than SQLite
 * does (SQLite then rejects the pieces), never less.
 */
function split(sql: string): Statement[] {
  const out: Statement[] = [];
  let cur: Token[] = [];
  let inBody = false;
  let depth = 0;
  const flush = (): void => {
    if (cur.length > 0) out.push({ text: sql.slice(cur[0]!.start, cur[cur.length - 1]!.end), tokens: cur });
    cur = [];
    inBody = false;
    depth = 0;
  };
  for (const t of tokenize(sql)) {
    if (t.kind === 'semi' && !(inBody && depth > 0)) {
      flush();
      continue;
    }
    cur.push(t);
    if (t.kind !== 'word') continue;
    const w = asciiUpper(t.text);
    if (inBody) {
      if (w === 'CASE') depth++;
      else if (w === 'END') depth--;
    } else if (w === 'BEGIN' && isCreateTrigger(cur)) {
      inBody = true;
      depth = 1;
    }
  }
  flush();
  return out;
}

// ---------------------------------------------------------------------------
// Rules

/**
 * Readable and settable: schema introspection, checks, the per-database user fields, and
 * foreign_keys (migration tools turn it off around table rebuilds; it only affects the
 * tenant's own connection and resets when the database closes).
 */
const PRAGMAS_ANY = new Set([
  'table_info', 'table_xinfo', 'table_list', 'index_info', 'index_xinfo', 'index_list', 'foreign_key_list',
  'foreign_key_check', 'integrity_check', 'quick_check', 'incremental_vacuum', 'optimize', 'defer_foreign_keys',
  'user_version', 'application_id', 'foreign_keys',
]);

/** Readable only: setting them would change how the engine's connection or file behaves. */
const PRAGMAS_READ = new Set([
  'collation_list', 'function_list', 'module_list', 'pragma_list', 'compile_options', 'page_count', 'page_size',
  'freelist_count', 'encoding', 'data_version', 'database_list', 'schema_version', 'auto_vacuum',
  'journal_mode', 'synchronous', 'max_page_count', 'cache_size', 'busy_timeout', 'recursive_triggers', 'secure_delete',
  'wal_autocheckpoint', 'locking_mode', 'writable_schema', 'query_only', 'temp_store', 'mmap_size', 'cache_spill',
  'cell_size_check', 'checkpoint_fullfsync', 'fullfsync', 'ignore_check_constraints', 'legacy_alter_table',
  'reverse_unordered_selects', 'trusted_schema', 'automatic_index', 'analysis_limit', 'hard_heap_limit',
  'soft_heap_limit', 'threads', 'case_sensitive_like', 'count_changes', 'short_column_names', 'full_column_names',
  'empty_result_callbacks', 'stats', 'shrink_memory',
]);

const OWN_DATABASE = 'a statement may only use its own database';

/**
 * Tables geodr keeps inside tenant databases (the local shard map) and catalog
 * databases (the global shard map) start with this prefix; tenant SQL may not name
 * them, so it can neither read nor change them. Strings count too: SQLite takes a
 * string literal where a table name goes (`SELECT * FROM '__geodr_x'`).
 */
export const RESERVED_TABLE_PREFIX = '__geodr_';

function clip(s: string): string {
  return s.length > 200 ? s.slice(0, 200) : s;
}

/** Client text quoted into a message is lower-cased like SQLite matches it, and kept short. */
function shown(name: string): string {
  const s = asciiLower(name);
  return s.length > 64 ? `${s.slice(0, 64)}...` : s;
}

function refuse(message: string, stmt: Statement): never {
  throw new GeodrError('SQL_REFUSED', message, { details: { statement: clip(stmt.text) } });
}

function malformed(message: string, stmt: Statement): never {
  throw new GeodrError('SQL_ERROR', message, { details: { statement: clip(stmt.text) } });
}

/** Checks `PRAGMA [schema.]name [= value | (value)]`; returns the index of the name token. */
function checkPragma(stmt: Statement, i: number): number {
  const toks = stmt.tokens;
  let nameAt = i;
  if (toks[i + 1]?.kind === 'op' && toks[i + 1]!.text === '.') nameAt = i + 2;
  // SQLite takes a pragma name as an identifier, a quoted identifier or even a string.
  const name = nameOf(toks[nameAt]);
  if (name === undefined) refuse('PRAGMA without a pragma name is not allowed', stmt);
  const key = asciiLower(name);
  const isRead = nameAt === toks.length - 1;
  if (PRAGMAS_ANY.has(key)) return nameAt;
  if (PRAGMAS_READ.has(key)) {
    if (!isRead) refuse(`PRAGMA ${key} cannot be set: the engine manages it`, stmt);
    return nameAt;
  }
  return refuse(`PRAGMA ${shown(name)} is not allowed`, stmt);
}

/** Every token position, checked for calls and table references that escape the rules above. */
function checkTokens(stmt: Statement, skip: number): void {
  const toks = stmt.tokens;
  toks.forEach((t, k) => {
    if (k === skip) return;
    const name = nameOf(t);
    if (name === undefined) return;
    const key = asciiLower(name);
    if (key.startsWith(RESERVED_TABLE_PREFIX)) {
      refuse(`${shown(name)} is reserved: names starting with ${RESERVED_TABLE_PREFIX} belong to geodr's shard maps`, stmt);
    }
    // A string is no function name to SQLite, but refusing it costs nothing.
    if (key === 'load_extension' && toks[k + 1]?.kind === 'op' && toks[k + 1]?.text === '(') {
      refuse('load_extension() is not allowed: a statement may not load extensions', stmt);
    }
    // SQLite resolves pragma_<name> to a table-valued pragma; strings are left
    // out so `SELECT 'pragma_x'` stays a literal (those pragma tables can only read).
    if (t.kind !== 'string' && key.startsWith('pragma_')) {
      const pragma = key.slice('pragma_'.length);
      if (!PRAGMAS_ANY.has(pragma) && !PRAGMAS_READ.has(pragma)) {
        refuse(`${shown(name)} is not allowed: PRAGMA ${shown(pragma)} may not be read as a table`, stmt);
      }
    }
  });
}

/** Parses BEGIN/COMMIT/END/ROLLBACK/SAVEPOINT/RELEASE; `rest` follows the verb. */
function parseControl(verb: string, rest: Token[], stmt: Statement): TxControl | undefined {
  const bad: () => never = () => malformed(`malformed ${verb} statement`, stmt);
  const savepointName = (k: number): string => {
    if (isWord(rest[k], 'SAVEPOINT')) k++;
    const name = nameOf(rest[k]);
    if (name === undefined || k !== rest.length - 1) bad();
    return name;
  };
  // `TRANSACTION [name]`: SQLite accepts and ignores the name. Returns the next index.
  const transaction = (k: number): number => {
    if (!isWord(rest[k], 'TRANSACTION')) return k;
    k++;
    if (rest[k] !== undefined && !isWord(rest[k], 'TO')) {
      if (nameOf(rest[k]) === undefined) bad();
      k++;
    }
    return k;
  };
  switch (verb) {
    case 'BEGIN': {
      type Mode = Extract<TxControl, { kind: 'begin' }>['mode'];
      const explicit = isWord(rest[0], 'DEFERRED', 'IMMEDIATE', 'EXCLUSIVE', 'READONLY');
      let mode: Mode = explicit ? (asciiLower(rest[0]!.text) as Mode) : 'deferred';
      const k = explicit ? 1 : 0;
      if (isWord(rest[k], 'TRANSACTION') && isWord(rest[k + 1], 'READONLY')) {
        // libSQL's BEGIN TRANSACTION READONLY; alongside another mode it is ambiguous.
        if (explicit && mode !== 'readonly') malformed(`BEGIN ${mode.toUpperCase()} cannot be combined with READONLY`, stmt);
        mode = 'readonly';
      }
      if (transaction(k) !== rest.length) bad();
      return { kind: 'begin', mode };
    }
    case 'COMMIT':
    case 'END':
      if (transaction(0) !== rest.length) bad();
      return { kind: 'commit' };
    case 'ROLLBACK': {
      const k = transaction(0);
      if (k === rest.length) return { kind: 'rollback' };
      if (!isWord(rest[k], 'TO')) bad();
      return { kind: 'rollbackTo', name: savepointName(k + 1) };
    }
    case 'SAVEPOINT': {
      const name = nameOf(rest[0]);
      if (name === undefined || rest.length !== 1) bad();
      return { kind: 'savepoint', name };
    }
    case 'RELEASE':
      return { kind: 'release', name: savepointName(0) };
    default:
      return undefined;
  }
}

function check(stmt: Statement): CheckedStatement {
  const toks = stmt.tokens;
  const i = skipExplain(toks);
  const explain = i > 0;
  const head = toks[i];
  if (head === undefined) malformed('EXPLAIN needs a statement to explain', stmt);
  const verb = head.kind === 'word' ? asciiUpper(head.text) : head.text;
  let pragmaName = -1;
  switch (verb) {
    case 'ATTACH':
    case 'DETACH':
      refuse(`${verb} is not allowed: ${OWN_DATABASE}`, stmt);
      break;
    case 'VACUUM':
      if (toks.slice(i + 1).some((t) => isWord(t, 'INTO'))) refuse(`VACUUM INTO is not allowed: ${OWN_DATABASE}`, stmt);
      break;
    case 'PRAGMA':
      pragmaName = checkPragma(stmt, i + 1);
      break;
  }
  checkTokens(stmt, pragmaName);
  const control = parseControl(verb, toks.slice(i + 1), stmt);
  const sql = verb === 'PRAGMA' ? hideInPragma(stmt, pragmaName) : hideReserved(stmt);
  return { sql, verb, explain, ...(control !== undefined && !explain ? { control } : {}) };
}

// ---------------------------------------------------------------------------
// Hiding the reserved tables from listings

const likeLiteral = (s: string): string => `'${s.replace(/[\\_%]/g, (c) => `\\${c}`)}%'`;

/** A condition on `column` that drops the reserved tables and the indexes SQLite made for them. */
function notReserved(column: string): string {
  return [RESERVED_TABLE_PREFIX, `sqlite_autoindex_${RESERVED_TABLE_PREFIX}`].map((p) => `${column} NOT LIKE ${likeLiteral(p)} ESCAPE '\\'`).join(' AND ');
}

/**
 * Listings of the database's objects, and the filter that hides geodr's reserved tables
 * in each. The schema table is read through `main.` (a listing cannot name itself).
 */
const LISTINGS: ReadonlyMap<string, (args: string) => string> = new Map([
  ['sqlite_master', () => `SELECT * FROM main.sqlite_master WHERE ${notReserved('tbl_name')} AND ${notReserved('name')}`],
  ['sqlite_schema', () => `SELECT * FROM main.sqlite_schema WHERE ${notReserved('tbl_name')} AND ${notReserved('name')}`],
  ['pragma_table_list', (args: string) => `SELECT * FROM pragma_table_list${args} WHERE ${notReserved('name')}`],
  ['dbstat', (args: string) => `SELECT * FROM dbstat${args} WHERE ${notReserved('name')}`],
]);

/** Keywords that may follow a table in FROM; any other word there is the table's alias. */
const AFTER_TABLE = new Set([
  'WHERE', 'GROUP', 'ORDER', 'LIMIT', 'JOIN', 'INNER', 'LEFT', 'RIGHT', 'FULL', 'CROSS', 'NATURAL', 'OUTER', 'ON',
  'USING', 'UNION', 'INTERSECT', 'EXCEPT', 'WINDOW', 'HAVING', 'INDEXED', 'NOT', 'RETURNING', 'SET', 'AS',
]);

/** Index just past the parenthesised group that starts at `i`. */
function closeParen(toks: Token[], i: number): number {
  let depth = 0;
  for (let k = i; k < toks.length; k++) {
    if (toks[k]!.kind !== 'op') continue;
    if (toks[k]!.text === '(') depth++;
    else if (toks[k]!.text === ')' && --depth === 0) return k + 1;
  }
  return toks.length;
}

/**
 * Tenant SQL may not see geodr's reserved tables: every listing read as a table
 * (sqlite_master, sqlite_schema, pragma_table_list, dbstat) is replaced by the same
 * listing without them, aliased to its own name, so columns, counts and joins read as
 * before. Only table positions are rewritten (after FROM, JOIN or a comma, and strings
 * only after FROM or JOIN, since `name IN ('sqlite_master', …)` is a value); write
 * targets are left for SQLite to refuse in its own words.
 */
function hideReserved(stmt: Statement): string {
  const toks = stmt.tokens;
  const base = toks[0]!.start;
  let out = '';
  let copied = base;
  for (let k = 0; k < toks.length; k++) {
    const t = toks[k]!;
    if (t.kind !== 'word' && t.kind !== 'quoted' && t.kind !== 'string') continue;
    const key = asciiLower(nameOf(t)!);
    const listing = LISTINGS.get(key);
    if (listing === undefined) continue;
    if (toks[k + 1]?.kind === 'op' && toks[k + 1]!.text === '.') continue; // a column's qualifier
    // An optional `main.` in front; another schema holds no reserved table.
    let first = k;
    if (toks[k - 1]?.kind === 'op' && toks[k - 1]!.text === '.') {
      if (asciiLower(nameOf(toks[k - 2]) ?? '') !== 'main') continue;
      first = k - 2;
    }
    const before = toks[first - 1];
    const inFrom = isWord(before, 'FROM', 'JOIN') || (t.kind !== 'string' && before?.kind === 'op' && before.text === ',');
    if (!inFrom || (isWord(before, 'FROM') && isWord(toks[first - 2], 'DELETE'))) continue;
    let last = k + 1;
    let args = '';
    if (toks[last]?.kind === 'op' && toks[last]!.text === '(') {
      const end = closeParen(toks, last);
      args = stmt.text.slice(toks[last]!.start - base, toks[end - 1]!.end - base);
      last = end;
    }
    const next = toks[last];
    const aliased = next !== undefined && (next.kind === 'quoted' || next.kind === 'string' || (next.kind === 'word' && !AFTER_TABLE.has(asciiUpper(next.text))) || isWord(next, 'AS'));
    out += stmt.text.slice(copied - base, toks[first]!.start - base);
    out += `(${listing(args)})${aliased ? '' : ` AS "${key}"`}`;
    copied = toks[last - 1]!.end;
    k = last - 1;
  }
  return copied === base ? stmt.text : out + stmt.text.slice(copied - base);
}

/** `PRAGMA [main.]table_list[(name)]` lists like pragma_table_list, without the reserved tables. */
function hideInPragma(stmt: Statement, nameAt: number): string {
  const toks = stmt.tokens;
  if (asciiLower(nameOf(toks[nameAt]) ?? '') !== 'table_list') return stmt.text;
  const schema = toks[nameAt - 1]?.kind === 'op' && toks[nameAt - 1]!.text === '.' ? nameOf(toks[nameAt - 2]) : undefined;
  const rest = toks.slice(nameAt + 1);
  const argOk = rest.length === 0 || (rest.length === 3 && rest[0]!.text === '(' && nameOf(rest[1]) !== undefined && rest[2]!.text === ')');
  if (!argOk) return stmt.text;
  const base = toks[0]!.start;
  // The pragma takes a bare name where the table-valued form needs a value.
  const arg = rest.length === 0 ? undefined : nameOf(rest[1]);
  const args = arg === undefined ? '' : `('${arg.replaceAll("'", "''")}')`;
  const where = schema === undefined ? '' : ` AND schema IS '${schema.replaceAll("'", "''")}'`;
  const explain = stmt.text.slice(0, toks[skipExplain(toks)]!.start - base);
  return `${explain}${LISTINGS.get('pragma_table_list')!(args)}${where}`;
}

// ---------------------------------------------------------------------------
// API

/**
 * Splits SQL text into statements on top-level semicolons (not those inside
 * strings, identifiers, comments or a trigger body). Each statement comes back
 * without its semicolon and without surrounding whitespace and comments;
 * statements that are empty or only comments are dropped.
 * Throws SQL_ERROR on an unterminated string literal or quoted identifier.
 */
export function splitStatements(sql: string): string[] {
  return split(sql).map((s) => s.text);
}

/**
 * Checks one statement. Throws SQL_REFUSED for ATTACH, DETACH, VACUUM INTO,
 * load_extension(), PRAGMAs (or pragma_* tables) outside the allow lists, and any
 * name or string starting with {@link RESERVED_TABLE_PREFIX},
 * and SQL_ERROR for text that is not exactly one statement or cannot be tokenized.
 */
export function checkStatement(sql: string): CheckedStatement {
  const stmts = split(sql);
  if (stmts.length !== 1) {
    throw new GeodrError('SQL_ERROR', `expected one statement, found ${stmts.length}`, { details: { statement: clip(sql.trim()) } });
  }
  return check(stmts[0]!);
}

/** {@link splitStatements} then {@link checkStatement} on each; the first refusal throws. */
export function checkScript(sql: string): CheckedStatement[] {
  return split(sql).map(check);
}
