/**
 * The SQL guard: statement splitting, each refusal rule, transaction control,
 * tokenizer edge cases, and properties — splitting round-trips generated
 * scripts, any string literal stays one allowed statement, and whatever the
 * guard accepts never attaches a database when SQLite itself runs it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { GeodrError } from '../errors.js';
import { checkScript, checkStatement, splitStatements, type CheckedStatement, type TxControl } from './sqlguard.js';

const fcOptions = {
  numRuns: Number(process.env.GEODR_PROPERTY_RUNS ?? 300),
  // Replay a failure with the seed fast-check printed: GEODR_PROPERTY_SEED=<seed>.
  ...(process.env.GEODR_PROPERTY_SEED !== undefined ? { seed: Number(process.env.GEODR_PROPERTY_SEED) } : {}),
};

function refused(sql: string, construct: string): void {
  assert.throws(
    () => checkScript(sql),
    (e: unknown) => {
      assert.ok(e instanceof GeodrError, `not a GeodrError: ${String(e)}`);
      assert.equal(e.code, 'SQL_REFUSED', e.message);
      assert.ok(e.message.includes(construct), `message ${JSON.stringify(e.message)} does not name ${construct}`);
      assert.equal(typeof e.context.details?.statement, 'string');
      return true;
    },
    `expected ${JSON.stringify(sql)} to be refused`,
  );
}

function sqlError(sql: string, fragment: string, check: (s: string) => unknown = checkScript): void {
  assert.throws(
    () => check(sql),
    (e: unknown) => {
      assert.ok(e instanceof GeodrError, `not a GeodrError: ${String(e)}`);
      assert.equal(e.code, 'SQL_ERROR', e.message);
      assert.ok(e.message.includes(fragment), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(fragment)}`);
      return true;
    },
  );
}

function allowed(sql: string): CheckedStatement {
  return checkStatement(sql);
}

test('keywords inside strings, quoted identifiers and comments are not keywords', () => {
  for (const sql of [
    "SELECT 'ATTACH'",
    "SELECT 'attach database x as y; detach y'",
    'SELECT "attach" FROM t',
    'SELECT [ATTACH], `detach` FROM t',
    "SELECT 'load_extension(1)'",
    'SELECT load_extension FROM t',
    "SELECT 'VACUUM INTO x'",
    '/* ATTACH */ SELECT 1 -- ATTACH',
    "SELECT 1 /* ; ATTACH 'x' AS y; */",
    "SELECT 'pragma_wal_checkpoint'",
    "INSERT INTO t VALUES ('it''s; ATTACH ''x'' AS y')",
  ]) {
    const s = allowed(sql);
    assert.ok(['SELECT', 'INSERT'].includes(s.verb), sql);
    assert.equal(s.explain, false);
    assert.equal(s.control, undefined);
  }
});

test('splitStatements splits on top-level semicolons only', () => {
  assert.deepEqual(splitStatements("SELECT ';'; SELECT \"a;b\" FROM [c;d]; SELECT `e;f` -- ;\n ; /* ; */ SELECT 4"), [
    "SELECT ';'",
    'SELECT "a;b" FROM [c;d]',
    'SELECT `e;f`',
    'SELECT 4',
  ]);
  assert.deepEqual(splitStatements(' ;; \n-- only a comment\n ; /* and another */ ;'), []);
  assert.deepEqual(splitStatements(''), []);
  assert.deepEqual(splitStatements('  SELECT 1  ;  '), ['SELECT 1']);
  // Comments around a statement are not part of it; comments inside are kept.
  assert.deepEqual(splitStatements('/* lead */ SELECT /* mid */ 1 -- tail'), ['SELECT /* mid */ 1']);
});

test('the lexer follows SQLite where it is easy to get wrong', () => {
  // `--` ends at \n only; a lone \r does not end it.
  assert.deepEqual(splitStatements("SELECT 1 -- x\r; ATTACH 'a' AS b"), ['SELECT 1']);
  // An unterminated block comment runs to the end of input.
  assert.deepEqual(splitStatements("SELECT 1 /* ; ATTACH 'a' AS b"), ['SELECT 1']);
  // [brackets] have no escape; "" and `` do.
  assert.deepEqual(splitStatements('SELECT [a;]; SELECT "b"";" ; SELECT `c``;`'), ['SELECT [a;]', 'SELECT "b"";"', 'SELECT `c``;`']);
  // Blob literals end at the next quote ('' is no escape in them).
  assert.deepEqual(splitStatements("SELECT X'ab'';'"), ["SELECT X'ab'';'"]);
  // Parameters of every form, and operators.
  allowed('SELECT ?, ?12, :a, @b, $c, $d::e, a || b, a -> b, a ->> b, 1e5, .5, 0x1F, 1_000 FROM t WHERE x <> ? AND y != 2');
  // A TCL-style variable swallows up to whitespace or ')', as SQLite's default
  // build lexes it, so the `;` after it is seen and ATTACH is a statement of its own.
  refused("SELECT $v(');ATTACH ':memory:' AS y;--')", 'ATTACH');
  // Keyword matching is ASCII-only: U+017F (long s) upper-cases to 'S' in JS but not in SQLite.
  assert.equal(allowed('SELECT 1 AS \u017Fqlite').verb, 'SELECT');
  refused('PRAGMA \u017Fynchronous', 'PRAGMA \u017Fynchronous');
  // Non-ASCII characters are identifier characters, never whitespace...
  assert.equal(allowed('SELECT\u00a0ATTACH').verb, 'SELECT\u00a0ATTACH');
  // ...except a byte-order mark where a token starts, which SQLite skips.
  refused("\uFEFFATTACH ':memory:' AS y", 'ATTACH');
  refused("SELECT 1;\uFEFF\uFEFFATTACH ':memory:' AS y", 'ATTACH');
  assert.equal(allowed('ATTACH\uFEFF').verb, 'ATTACH\uFEFF');
  // \v is whitespace to SQLite's exec() between statements.
  refused("SELECT 1;\vATTACH ':memory:' AS y", 'ATTACH');
});

test('unterminated strings and quoted identifiers are SQL_ERROR naming the kind and offset', () => {
  sqlError("SELECT 'abc", 'unterminated string literal starting at offset 7');
  sqlError("SELECT 1; SELECT 'it''s", 'unterminated string literal starting at offset 17');
  sqlError('SELECT "abc', 'unterminated quoted identifier starting at offset 7');
  sqlError('SELECT `abc', 'unterminated quoted identifier starting at offset 7');
  sqlError('SELECT [abc', 'unterminated quoted identifier starting at offset 7');
  sqlError("SELECT x'00", 'unterminated blob literal starting at offset 7');
  sqlError("SELECT 'abc", 'offset 7', splitStatements);
  sqlError("SELECT 'abc", 'offset 7', checkStatement);
});

test('checkStatement takes exactly one statement and returns it trimmed', () => {
  sqlError('SELECT 1; SELECT 2', 'expected one statement', checkStatement);
  sqlError(' ; -- nothing', 'expected one statement', checkStatement);
  assert.deepEqual(allowed('  select 1 ;  -- done'), { sql: 'select 1', verb: 'SELECT', explain: false });
  for (const verb of ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'REPLACE', 'WITH', 'CREATE', 'DROP', 'ALTER', 'ANALYZE', 'REINDEX', 'VALUES']) {
    assert.equal(allowed(`${verb.toLowerCase()} x`).verb, verb);
  }
  assert.deepEqual(
    checkScript('SELECT 1; insert into t values (1)').map((s) => s.verb),
    ['SELECT', 'INSERT'],
  );
});

test('details.statement carries the statement, cut to 200 characters', () => {
  const long = `ATTACH '${'x'.repeat(300)}' AS y`;
  try {
    checkScript(`SELECT 1; ${long}`);
    assert.fail('not refused');
  } catch (e) {
    assert.ok(e instanceof GeodrError);
    assert.equal(e.context.details?.statement, long.slice(0, 200));
  }
});

test('EXPLAIN and EXPLAIN QUERY PLAN are stripped and the rest is checked', () => {
  assert.deepEqual(allowed('EXPLAIN SELECT 1'), { sql: 'EXPLAIN SELECT 1', verb: 'SELECT', explain: true });
  assert.deepEqual(allowed('explain query plan select 1'), { sql: 'explain query plan select 1', verb: 'SELECT', explain: true });
  refused("EXPLAIN ATTACH 'x' AS y", 'ATTACH');
  refused("EXPLAIN QUERY PLAN ATTACH 'x' AS y", 'ATTACH');
  refused('EXPLAIN PRAGMA journal_mode = delete', 'PRAGMA journal_mode');
  refused("EXPLAIN VACUUM INTO 'x'", 'VACUUM INTO');
  // EXPLAIN does not run a transaction statement, so there is no control to carry out.
  assert.deepEqual(allowed('EXPLAIN BEGIN'), { sql: 'EXPLAIN BEGIN', verb: 'BEGIN', explain: true });
  sqlError('EXPLAIN', 'EXPLAIN');
});

test('ATTACH and DETACH are refused in any spelling', () => {
  for (const sql of ["ATTACH 'x.db' AS x", "attach database ':memory:' as x", "/*c*/ATTACH 'x' AS y", "\n\t AtTaCh 'x' AS y;", "SELECT 1; ATTACH 'x' AS y"]) {
    refused(sql, 'ATTACH is not allowed: a statement may only use its own database');
  }
  refused('DETACH x', 'DETACH');
  refused('detach database x', 'DETACH');
});

test('VACUUM INTO is refused; plain VACUUM is allowed', () => {
  assert.equal(allowed('VACUUM').verb, 'VACUUM');
  assert.equal(allowed('vacuum main').verb, 'VACUUM');
  refused("VACUUM INTO '/tmp/copy.db'", 'VACUUM INTO');
  refused("vacuum main into 'copy.db'", 'VACUUM INTO');
  refused("VACUUM /* x */ \"main\" INTO 'copy.db'", 'VACUUM INTO');
});

test('load_extension calls are refused wherever they appear', () => {
  for (const sql of [
    "SELECT load_extension('x')",
    "SELECT load_extension ('x')",
    "SELECT LOAD_EXTENSION/* c */('x', 'entry')",
    "SELECT \"load_extension\"('x')",
    "SELECT [load_extension]('x')",
    "SELECT `Load_Extension`('x')",
    "WITH c AS (SELECT load_extension('x')) SELECT * FROM c",
    "CREATE VIEW v AS SELECT load_extension('x')",
    "CREATE TABLE t (a DEFAULT (load_extension('x')))",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT load_extension('x'); END",
  ]) {
    refused(sql, 'load_extension');
  }
});

test('CREATE TRIGGER bodies keep their semicolons, CASE..END included', () => {
  const trigger =
    'CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n' +
    "  INSERT INTO log VALUES (CASE WHEN new.a > 0 THEN 'pos;' ELSE CASE new.a WHEN 0 THEN 'zero' END END);\n" +
    '  UPDATE t SET b = 1 WHERE rowid = new.rowid;\n' +
    '  DELETE FROM log WHERE x = (CASE WHEN 1 THEN 2 END);\n' +
    'END';
  const temp = 'create temp trigger t2 before delete on t when old.a = 1 begin select raise(abort, \'no\'); end';
  const script = `${trigger};\nSELECT 1;\n${temp}; PRAGMA table_info(t)`;
  assert.deepEqual(splitStatements(script), [trigger, 'SELECT 1', temp, 'PRAGMA table_info(t)']);
  assert.deepEqual(checkScript(script).map((s) => s.verb), ['CREATE', 'SELECT', 'CREATE', 'PRAGMA']);
  assert.deepEqual(splitStatements(`EXPLAIN ${trigger}; SELECT 2`), [`EXPLAIN ${trigger}`, 'SELECT 2']);
  // A BEGIN outside a trigger is a transaction, and its `;` splits.
  assert.deepEqual(splitStatements('BEGIN; SELECT 1; END; CREATE TABLE x(a)'), ['BEGIN', 'SELECT 1', 'END', 'CREATE TABLE x(a)']);
  // END as a column name can only split a trigger early (SQLite then rejects the
  // pieces), never hide a statement after it.
  refused("CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO l(end) VALUES (1); END; ATTACH 'x' AS y", 'ATTACH');
  refused("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT CASE WHEN 1 THEN 2 END; END; ATTACH 'x' AS y", 'ATTACH');
});

test('the statements checkScript returns run in SQLite, triggers included', () => {
  const db = new Database(':memory:');
  try {
    const script =
      'CREATE TABLE t(a, b); CREATE TABLE log(x);\n' +
      "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES (CASE WHEN new.a > 0 THEN 'pos;' ELSE 'neg' END); INSERT INTO log VALUES ('2nd'); END;\n" +
      "INSERT INTO t VALUES (1, 'x'); INSERT INTO t VALUES (-1, 'y;z');\n" +
      "SELECT x FROM log ORDER BY rowid; SELECT * FROM pragma_table_info('t'); PRAGMA user_version = 7";
    const out: unknown[] = [];
    for (const s of checkScript(script)) {
      // prepare() refuses text holding more than one statement, so this also checks the split.
      const stmt = db.prepare(s.sql);
      if (stmt.reader) out.push(stmt.all());
      else stmt.run();
    }
    assert.deepEqual(out[0], [{ x: 'pos;' }, { x: '2nd' }, { x: 'neg' }, { x: '2nd' }]);
    assert.equal((out[1] as unknown[]).length, 2);
    assert.equal(db.pragma('user_version', { simple: true }), 7);
  } finally {
    db.close();
  }
});

const PRAGMAS_ANY = [
  'table_info', 'table_xinfo', 'table_list', 'index_info', 'index_xinfo', 'index_list', 'foreign_key_list',
  'foreign_key_check', 'integrity_check', 'quick_check', 'incremental_vacuum', 'optimize', 'defer_foreign_keys',
  'user_version', 'application_id', 'foreign_keys',
];
const PRAGMAS_READ = [
  'collation_list', 'function_list', 'module_list', 'pragma_list', 'compile_options', 'page_count', 'page_size',
  'freelist_count', 'encoding', 'data_version', 'database_list', 'schema_version', 'auto_vacuum',
  'journal_mode', 'synchronous', 'max_page_count', 'cache_size', 'busy_timeout', 'recursive_triggers', 'secure_delete',
  'wal_autocheckpoint', 'locking_mode', 'writable_schema', 'query_only', 'temp_store', 'mmap_size', 'cache_spill',
  'cell_size_check', 'checkpoint_fullfsync', 'fullfsync', 'ignore_check_constraints', 'legacy_alter_table',
  'reverse_unordered_selects', 'trusted_schema', 'automatic_index', 'analysis_limit', 'hard_heap_limit',
  'soft_heap_limit', 'threads', 'case_sensitive_like', 'count_changes', 'short_column_names', 'full_column_names',
  'empty_result_callbacks', 'stats', 'shrink_memory',
];

test('PRAGMAs in the first list are allowed with or without an argument', () => {
  for (const name of PRAGMAS_ANY) {
    for (const sql of [`PRAGMA ${name}`, `PRAGMA ${name.toUpperCase()} = 1`, `pragma main.${name}(t)`, `PRAGMA "${name}"('t')`]) {
      assert.equal(allowed(sql).verb, 'PRAGMA', sql);
    }
  }
});

test('PRAGMAs in the second list may be read but not set', () => {
  for (const name of PRAGMAS_READ) {
    for (const sql of [`PRAGMA ${name}`, `pragma ${name.toUpperCase()}`, `PRAGMA temp.${name}`, `PRAGMA [${name}]`]) {
      assert.equal(allowed(sql).verb, 'PRAGMA', sql);
    }
    for (const sql of [`PRAGMA ${name} = 1`, `PRAGMA main.${name}(0)`, `PRAGMA '${name}' = 'x'`, `PRAGMA ${name}=-1`]) {
      refused(sql, `PRAGMA ${name} cannot be set`);
    }
  }
  refused('PRAGMA journal_mode = DELETE', 'PRAGMA journal_mode cannot be set: the engine manages it');
  refused('PRAGMA schema_version = 5', 'PRAGMA schema_version cannot be set');
  refused('PRAGMA writable_schema = 1', 'PRAGMA writable_schema cannot be set');
  refused('PRAGMA Locking_Mode = EXCLUSIVE', 'PRAGMA locking_mode cannot be set');
});

test('any other PRAGMA is refused', () => {
  for (const name of ['wal_checkpoint', 'temp_store_directory', 'data_store_directory', 'lock_proxy_file', 'key', 'rekey', 'vdbe_trace', 'parser_trace', 'journal_size_limit', 'foo']) {
    refused(`PRAGMA ${name}`, `PRAGMA ${name} is not allowed`);
    refused(`PRAGMA main.${name} = 1`, `PRAGMA ${name} is not allowed`);
  }
  refused("PRAGMA \"wal_checkpoint\"('TRUNCATE')", 'PRAGMA wal_checkpoint is not allowed');
  refused('PRAGMA', 'PRAGMA');
});

test('table-valued pragma_* are allowed only for allowed PRAGMAs', () => {
  for (const sql of [
    "SELECT * FROM pragma_table_info('t')",
    'SELECT name FROM PRAGMA_TABLE_LIST',
    'SELECT * FROM main.pragma_index_list(\'t\')',
    'SELECT * FROM "pragma_journal_mode"',
    'SELECT * FROM pragma_pragma_list',
  ]) {
    assert.equal(allowed(sql).verb, 'SELECT', sql);
  }
  refused('SELECT * FROM pragma_wal_checkpoint', 'pragma_wal_checkpoint');
  refused('SELECT * FROM "pragma_wal_checkpoint"', 'pragma_wal_checkpoint');
  refused('SELECT * FROM Pragma_Journal_Size_Limit', 'pragma_journal_size_limit');
  refused("CREATE VIEW v AS SELECT * FROM pragma_temp_store_directory", 'pragma_temp_store_directory');
});

test('transaction control statements come back with control set', () => {
  const cases: [string, TxControl][] = [
    ['BEGIN', { kind: 'begin', mode: 'deferred' }],
    ['begin transaction', { kind: 'begin', mode: 'deferred' }],
    ['BEGIN DEFERRED', { kind: 'begin', mode: 'deferred' }],
    ['BEGIN IMMEDIATE TRANSACTION', { kind: 'begin', mode: 'immediate' }],
    ['BEGIN EXCLUSIVE', { kind: 'begin', mode: 'exclusive' }],
    ['BEGIN TRANSACTION READONLY', { kind: 'begin', mode: 'readonly' }],
    ['begin readonly', { kind: 'begin', mode: 'readonly' }],
    ['BEGIN TRANSACTION tx1', { kind: 'begin', mode: 'deferred' }],
    ['COMMIT', { kind: 'commit' }],
    ['COMMIT TRANSACTION', { kind: 'commit' }],
    ['END', { kind: 'commit' }],
    ['end transaction', { kind: 'commit' }],
    ['ROLLBACK', { kind: 'rollback' }],
    ['ROLLBACK TRANSACTION', { kind: 'rollback' }],
    ['ROLLBACK TO sp1', { kind: 'rollbackTo', name: 'sp1' }],
    ['ROLLBACK TRANSACTION TO SAVEPOINT "my sp"', { kind: 'rollbackTo', name: 'my sp' }],
    ['SAVEPOINT sp1', { kind: 'savepoint', name: 'sp1' }],
    ['SAVEPOINT [a b]', { kind: 'savepoint', name: 'a b' }],
    ["SAVEPOINT 'it''s'", { kind: 'savepoint', name: "it's" }],
    ['RELEASE sp1', { kind: 'release', name: 'sp1' }],
    ['RELEASE SAVEPOINT `x``y`', { kind: 'release', name: 'x`y' }],
  ];
  for (const [sql, control] of cases) {
    assert.deepEqual(allowed(`${sql};`), { sql, verb: asciiUpperFirstWord(sql), explain: false, control }, sql);
  }
  for (const sql of ['BEGIN foo bar', 'BEGIN IMMEDIATE TRANSACTION READONLY', 'COMMIT now', 'ROLLBACK TO', 'ROLLBACK TO SAVEPOINT', 'RELEASE', 'RELEASE SAVEPOINT', 'SAVEPOINT', 'SAVEPOINT a b']) {
    sqlError(sql, sql.split(' ')[0]!);
  }
});

function asciiUpperFirstWord(sql: string): string {
  return sql.split(' ')[0]!.toUpperCase();
}

test('every refusal is a GeodrError SQL_REFUSED naming the construct', () => {
  const cases: [string, string][] = [
    ["ATTACH 'x' AS y", 'ATTACH'],
    ['DETACH y', 'DETACH'],
    ["VACUUM INTO 'x'", 'VACUUM INTO'],
    ["SELECT load_extension('x')", 'load_extension'],
    ['PRAGMA journal_mode = OFF', 'PRAGMA journal_mode'],
    ['PRAGMA wal_checkpoint', 'PRAGMA wal_checkpoint'],
    ['SELECT * FROM pragma_wal_checkpoint', 'pragma_wal_checkpoint'],
  ];
  for (const [sql, construct] of cases) {
    for (const fn of [checkStatement, checkScript]) {
      try {
        fn(sql);
        assert.fail(`${sql} was not refused`);
      } catch (e) {
        assert.ok(e instanceof GeodrError);
        assert.equal(e.code, 'SQL_REFUSED');
        assert.equal(e.status, 403);
        assert.ok(e.message.includes(construct), e.message);
        assert.deepEqual(e.context, { details: { statement: sql } });
      }
    }
  }
});

test('names and strings starting with the reserved prefix are refused: the shard map tables stay out of reach', () => {
  for (const sql of [
    'SELECT * FROM __geodr_lsm_mappings',
    'select * from main.__GEODR_LSM_SHARDS',
    'SELECT * FROM "__geodr_lsm_mappings"',
    'SELECT * FROM [__geodr_lsm_mappings]',
    'SELECT * FROM `__geodr_gsm_mappings`',
    "SELECT * FROM '__geodr_lsm_mappings'",
    'INSERT INTO __geodr_lsm_mappings (id) VALUES (1)',
    'UPDATE __geodr_lsm_shards SET status = 1',
    'DELETE FROM __geodr_lsm_mappings',
    'DROP TABLE __geodr_lsm_mappings',
    'ALTER TABLE t RENAME TO __geodr_lsm_shards',
    'CREATE VIEW v AS SELECT * FROM __geodr_lsm_mappings',
    'CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM __geodr_lsm_mappings; END',
    'PRAGMA table_info(__geodr_lsm_mappings)',
    "SELECT * FROM pragma_table_info('__geodr_lsm_mappings')",
    'EXPLAIN SELECT * FROM __geodr_lsm_mappings',
    "SELECT * FROM dbstat WHERE name = '__geodr_lsm_mappings'",
  ]) {
    refused(sql, 'reserved');
  }
  // Other names that merely contain the prefix, and parameters carrying it, are fine.
  assert.equal(allowed('SELECT * FROM x__geodr_y').verb, 'SELECT');
  assert.equal(allowed('SELECT ? AS "_geodr_"').verb, 'SELECT');
  assert.equal(allowed('SELECT name FROM sqlite_master').verb, 'SELECT');
});

test('listings of the schema leave the reserved tables out, in every spelling, with counts and aliases intact', () => {
  const db = new Database(':memory:');
  db.exec('create table __geodr_lsm_shards (map text primary key, v); create table t (a text primary key); create index ti on t (a)');
  const rows = (sql: string): unknown[][] => db.prepare(allowed(sql).sql).raw().all() as unknown[][];
  const visible = [['t'], ['sqlite_autoindex_t_1'], ['ti']];
  for (const sql of [
    'SELECT name FROM sqlite_master',
    'select name from main.sqlite_schema',
    'SELECT name FROM "SQLITE_MASTER" AS m',
    'SELECT m.name FROM sqlite_master m',
    "SELECT name FROM 'sqlite_master'",
    'SELECT sqlite_master.name FROM sqlite_master',
    'WITH x AS (SELECT name FROM sqlite_master) SELECT * FROM x',
    'SELECT a.name FROM sqlite_master a JOIN sqlite_master b USING (name)',
  ]) {
    assert.deepEqual(rows(sql), visible, sql);
  }
  assert.deepEqual(rows('SELECT count(*) FROM sqlite_master'), [[3]]);
  assert.deepEqual(rows('SELECT (SELECT count(*) FROM sqlite_schema)'), [[3]]);
  assert.deepEqual(rows("SELECT name FROM sqlite_master WHERE name IN ('sqlite_master', 't')"), [['t']]);
  for (const sql of ['PRAGMA table_list', 'PRAGMA main.table_list', 'SELECT * FROM pragma_table_list', 'SELECT * FROM pragma_table_list()']) {
    const names = rows(sql).map((r) => r[1]);
    assert.ok(names.includes('t') && !names.includes('__geodr_lsm_shards'), `${sql}: ${names.join(', ')}`);
  }
  assert.deepEqual(rows('PRAGMA table_list(t)').map((r) => r[1]), ['t']);
  assert.deepEqual(rows('PRAGMA table_list(__x)'), []);
  assert.deepEqual(rows('SELECT DISTINCT name FROM dbstat ORDER BY name'), [['sqlite_autoindex_t_1'], ['sqlite_schema'], ['t'], ['ti']]);
  assert.deepEqual(rows("SELECT name FROM dbstat('main', 1) ORDER BY name"), [['sqlite_autoindex_t_1'], ['sqlite_schema'], ['t'], ['ti']]);
  // Writes to the schema are still SQLite's to refuse, in its own words.
  assert.throws(() => rows('DELETE FROM sqlite_master'), /may not be modified/);
});

test('property: every listing reads exactly as it would in a database without geodr\'s tables', () => {
  const ident = fc.stringMatching(/^[a-z][a-z0-9_]{0,8}$/).filter((n) => !n.startsWith('sqlite_'));
  fc.assert(
    fc.property(fc.uniqueArray(ident, { minLength: 1, maxLength: 6 }), fc.array(fc.boolean(), { minLength: 6, maxLength: 6 }), (names, keyed) => {
      // Index names carry a '-', which table names cannot, so an index never takes a table's name.
      const tenant = names.map((n, i) => `create table "${n}" (a ${keyed[i] ? 'text primary key' : 'int'}, b); create index "${n}-b" on "${n}" (b);`).join('\n');
      const ours = new Database(':memory:');
      const plain = new Database(':memory:');
      try {
        ours.exec('create table __geodr_lsm_mappings (id text primary key, map text, low blob); create unique index __geodr_lsm_mappings_low on __geodr_lsm_mappings (map, low);');
        ours.exec(tenant);
        plain.exec(tenant);
        for (const sql of [
          'SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name',
          'SELECT name, type FROM sqlite_schema WHERE type = \'index\' ORDER BY 1',
          'SELECT count(*), count(DISTINCT tbl_name) FROM sqlite_master',
          'SELECT schema, name, type, ncol FROM pragma_table_list ORDER BY 1, 2',
          'SELECT DISTINCT name FROM dbstat ORDER BY 1',
        ]) {
          const got = ours.prepare(allowed(sql).sql).raw().all();
          assert.deepEqual(got, plain.prepare(sql).raw().all(), sql);
        }
      } finally {
        ours.close();
        plain.close();
      }
    }),
    fcOptions,
  );
});

// ---------------------------------------------------------------------------
// Properties

const sqlString = fc.string({ unit: 'binary', maxLength: 20 }).map((s) => `'${s.replaceAll("'", "''")}'`);
const quotedIdent = fc.string({ unit: 'binary', minLength: 1, maxLength: 10 }).map((s) => `"${s.replaceAll('"', '""')}"`);
const simpleStatement = fc.oneof(
  fc.tuple(fc.nat(), sqlString).map(([n, s]) => `SELECT ${n}, ${s}`),
  fc.tuple(quotedIdent, sqlString, fc.integer()).map(([t, s, n]) => `INSERT INTO ${t} VALUES (${s}, ${n})`),
  fc.tuple(quotedIdent, sqlString).map(([t, s]) => `UPDATE ${t} SET a = ${s} /* ; */ WHERE b = 'x;y'`),
  quotedIdent.map((t) => `DELETE FROM ${t} WHERE [c;] = \`d;\``),
  fc.constant('CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = CASE WHEN new.a THEN 1 ELSE 2 END; DELETE FROM t; END'),
  fc.constant('BEGIN IMMEDIATE'),
  fc.constant('END'),
);
const gap = fc
  .array(
    fc.oneof(
      fc.constantFrom(' ', '\n', '\t', '\r\n', ';'),
      fc.string({ unit: 'binary', maxLength: 10 }).filter((s) => !s.includes('\n')).map((s) => `--${s}\n`),
      fc.string({ unit: 'binary', maxLength: 10 }).filter((s) => !s.includes('*/')).map((s) => `/*${s}*/`),
    ),
    { maxLength: 4 },
  )
  .map((parts) => parts.join(''));

test('property: splitting a joined script gives back the statements', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(simpleStatement, gap, gap), { minLength: 1, maxLength: 8 }), gap, fc.boolean(), (parts, lead, trailingSemi) => {
      const script = lead + parts.map(([s, before, after]) => `${before}${s}${after}`).join(';') + (trailingSemi ? ';' : '');
      assert.deepEqual(
        splitStatements(script),
        parts.map(([s]) => s.trim()),
      );
    }),
    fcOptions,
  );
});

const nasty = fc.constantFrom(';', '--', '/*', '*/', "'", "''", '"', '`', '[', ']', '\n', '\r', 'ATTACH', 'load_extension(', 'BEGIN', 'END', 'CASE', "x'", '$a(', '\0');

test('property: any string literal is one allowed SELECT, and SQLite reads it back unchanged', () => {
  const db = new Database(':memory:');
  try {
    fc.assert(
      fc.property(fc.array(fc.oneof(nasty, fc.string({ unit: 'binary', maxLength: 8 })), { maxLength: 12 }), (pieces) => {
        const content = pieces.join('');
        // A literal naming a reserved table is refused on purpose (SQLite takes strings as table names).
        fc.pre(!content.toLowerCase().startsWith('__geodr_'));
        const sql = `SELECT '${content.replaceAll("'", "''")}'`;
        assert.deepEqual(splitStatements(sql), [sql]);
        assert.deepEqual(checkStatement(sql), { sql, verb: 'SELECT', explain: false });
        // SQLite stops reading at a NUL, so only NUL-free text can round-trip.
        if (!content.includes('\0')) assert.equal(db.prepare(sql).pluck().get(), content);
      }),
      fcOptions,
    );
  } finally {
    db.close();
  }
});

test('property: SQLite running what the guard accepts never attaches a database or sets a refused PRAGMA', () => {
  // Whole statements, so that runs reach SQLite, and the lexer's hard cases between them.
  const statements = fc.constantFrom(
    "ATTACH ':memory:' AS evil;",
    'PRAGMA query_only = 1;',
    'SELECT 1;',
    'INSERT INTO t VALUES (1);',
    'CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1;',
    'END;',
  );
  const noise = fc.constantFrom(
    "ATTACH ':memory:' AS evil",
    'SELECT',
    "'",
    '"',
    '`',
    '[',
    ']',
    ';',
    '--',
    '/*',
    '*/',
    '\n',
    '\r',
    '\v',
    '\uFEFF',
    '\u00a0',
    '(',
    ')',
    '$v(',
    "x'",
    'CREATE TRIGGER tr AFTER INSERT ON t BEGIN',
    'CASE WHEN 1 THEN 2',
    'END',
    'BEGIN',
  );
  const fragments = fc.oneof({ arbitrary: statements, weight: 2 }, { arbitrary: noise, weight: 1 });
  const scripts = fc
    .array(fc.tuple(fragments, fc.constantFrom('', ' ', ' ', '\n')), { minLength: 1, maxLength: 14 })
    .map((parts) => parts.map(([f, sep]) => f + sep).join(''));
  fc.assert(
    fc.property(scripts, (script) => {
      let statements: CheckedStatement[];
      try {
        statements = checkScript(script);
      } catch (e) {
        assert.ok(e instanceof GeodrError && (e.code === 'SQL_REFUSED' || e.code === 'SQL_ERROR'), String(e));
        return;
      }
      const db = new Database(':memory:');
      try {
        db.exec('CREATE TABLE t(a)');
        for (const s of statements) {
          // exec() runs every statement in the text, so a statement boundary the
          // guard missed would show up here.
          try {
            db.exec(s.sql);
          } catch {
            // SQLite rejecting a piece is fine; running something refused is not.
          }
        }
        const names = (db.pragma('database_list') as { name: string }[]).map((r) => r.name);
        assert.ok(names.every((n) => n === 'main' || n === 'temp'), `attached: ${names.join(',')} from ${JSON.stringify(script)}`);
        assert.equal(db.pragma('query_only', { simple: true }), 0, JSON.stringify(script));
      } finally {
        db.close();
      }
    }),
    { ...fcOptions, numRuns: fcOptions.numRuns * 10 },
  );
});
