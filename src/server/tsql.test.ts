/**
 * The T-SQL surface of geo-replication: parsing the management statements (every
 * form, generated casing/quoting/whitespace/comments, malformed input named and
 * located, ordinary SQL left alone) and the system views (projections, filters,
 * ordering, parameters, bounds, and refusal of anything but a read of the views).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { GeodrError } from '../errors.js';
import { prng } from '../engine/testing/helpers.js';
import { validateName } from './names.js';
import type { SqlValue } from './sql.js';
import { parseManagementStatement, querySysViews, readsSysViews, type LinkInfo, type ManagementStatement, type OperationInfo, type SysViewData } from './tsql.js';

const fcOptions = {
  numRuns: Number(process.env.GEODR_PROPERTY_RUNS ?? 300),
  // Replay a failure with the seed fast-check printed: GEODR_PROPERTY_SEED=<seed>.
  ...(process.env.GEODR_PROPERTY_SEED !== undefined ? { seed: Number(process.env.GEODR_PROPERTY_SEED) } : {}),
};

/** Asserts INVALID_ARGUMENT whose message holds every fragment and says where. */
function invalid(sql: string, ...fragments: string[]): GeodrError {
  let caught: unknown;
  try {
    parseManagementStatement(sql);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof GeodrError, `expected ${JSON.stringify(sql)} to throw a GeodrError, got ${String(caught)}`);
  assert.equal(caught.code, 'INVALID_ARGUMENT', caught.message);
  for (const f of fragments) assert.ok(caught.message.includes(f), `message ${JSON.stringify(caught.message)} lacks ${JSON.stringify(f)}`);
  assert.match(caught.message, /\(line \d+, column \d+\)$/);
  assert.equal(typeof caught.context.details?.line, 'number');
  return caught;
}

function refusedQuery(sql: string, fragment: string, code: 'SQL_REFUSED' | 'SQL_ERROR' = 'SQL_REFUSED'): void {
  assert.throws(
    () => querySysViews(sql, undefined, undefined, DATA, 9),
    (e: unknown) => {
      assert.ok(e instanceof GeodrError, `not a GeodrError: ${String(e)}`);
      assert.equal(e.code, code, e.message);
      assert.ok(e.message.includes(fragment), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(fragment)}`);
      return true;
    },
    `expected ${JSON.stringify(sql)} to be refused`,
  );
}

// ---------------------------------------------------------------------------
// Parsing: examples

test('each management statement in its documented form', () => {
  const cases: Array<[string, ManagementStatement]> = [
    ['ALTER DATABASE venue01 ADD SECONDARY ON SERVER tenants1', { kind: 'addSecondary', database: 'venue01', server: 'tenants1' }],
    ['ALTER DATABASE venue-01 ADD SECONDARY ON SERVER tenants1-westus', { kind: 'addSecondary', database: 'venue-01', server: 'tenants1-westus' }],
    [
      "ALTER DATABASE [venue-01] ADD SECONDARY ON SERVER [tenants1-westus] WITH (ALLOW_CONNECTIONS = ALL, SERVICE_OBJECTIVE = 'S0')",
      { kind: 'addSecondary', database: 'venue-01', server: 'tenants1-westus' },
    ],
    [
      'ALTER DATABASE db1 ADD SECONDARY ON SERVER srv WITH (SERVICE_OBJECTIVE = ELASTIC_POOL ( name = Pool2 ))',
      { kind: 'addSecondary', database: 'db1', server: 'srv', pool: 'Pool2' },
    ],
    [
      'ALTER DATABASE db1 ADD SECONDARY ON SERVER srv WITH (ELASTIC_POOL(NAME = [pool-2]), SECONDARY_NAME = "db1-copy", SECONDARY_TYPE = GEO)',
      { kind: 'addSecondary', database: 'db1', server: 'srv', pool: 'pool-2', secondaryDatabase: 'db1-copy' },
    ],
    ['ALTER DATABASE `db1` REMOVE SECONDARY ON SERVER srv', { kind: 'removeSecondary', database: 'db1', server: 'srv' }],
    ['ALTER DATABASE db1 FAILOVER', { kind: 'failover', database: 'db1' }],
    ['ALTER DATABASE db1 FORCE_FAILOVER_ALLOW_DATA_LOSS;', { kind: 'forceFailover', database: 'db1' }],
    ["EXEC sp_wait_for_database_copy_sync @target_server = N'srv', @target_database = N'db1'", { kind: 'waitForCopySync', server: 'srv', database: 'db1' }],
    ["EXECUTE sp_wait_for_database_copy_sync @target_database = 'db1', @target_server = 'srv'", { kind: 'waitForCopySync', server: 'srv', database: 'db1' }],
    ["sp_wait_for_database_copy_sync N'srv', N'db1'", { kind: 'waitForCopySync', server: 'srv', database: 'db1' }],
    ["exec sys.sp_wait_for_database_copy_sync 'srv', @target_database = db1;", { kind: 'waitForCopySync', server: 'srv', database: 'db1' }],
    ['EXEC [sys].[sp_wait_for_database_copy_sync] [srv], "db1"', { kind: 'waitForCopySync', server: 'srv', database: 'db1' }],
  ];
  for (const [sql, expected] of cases) {
    assert.deepEqual(parseManagementStatement(sql), expected, sql);
  }
});

test('keywords in any case, comments and line breaks anywhere, trailing semicolons', () => {
  const sql = `-- provision the secondary
    /* region pair */ aLtEr
    DaTaBaSe\t[venue-07]   -- the tenant
    add/**/secondary
    ON server "tenants1-westus"
    with(
      allow_connections=all,  -- secondaries are readable
      elastic_pool(name=Pool1)
    ) ;  ;
    -- done`;
  assert.deepEqual(parseManagementStatement(sql), { kind: 'addSecondary', database: 'venue-07', server: 'tenants1-westus', pool: 'Pool1' });
  assert.deepEqual(parseManagementStatement('\r\n;alter database x\r\nfailover\r\n'), { kind: 'failover', database: 'x' });
});

test('names that look like keywords are names where a name belongs', () => {
  assert.deepEqual(parseManagementStatement('ALTER DATABASE failover FAILOVER'), { kind: 'failover', database: 'failover' });
  assert.deepEqual(parseManagementStatement('ALTER DATABASE add ADD SECONDARY ON SERVER server'), { kind: 'addSecondary', database: 'add', server: 'server' });
  assert.deepEqual(parseManagementStatement('ALTER DATABASE [current] FAILOVER'), { kind: 'failover', database: 'current' });
  // Names that start with digits or hold dots are bare names too.
  assert.deepEqual(parseManagementStatement('ALTER DATABASE 2024.q1-db REMOVE SECONDARY ON SERVER 7e-5'), { kind: 'removeSecondary', database: '2024.q1-db', server: '7e-5' });
});

test('ALTER DATABASE CURRENT is the session database', () => {
  assert.deepEqual(parseManagementStatement('ALTER DATABASE CURRENT FAILOVER', 'venue-03'), { kind: 'failover', database: 'venue-03' });
  invalid('ALTER DATABASE CURRENT FAILOVER', 'CURRENT needs a session on a database', 'column 16');
});

test('malformed statements are INVALID_ARGUMENT naming what is wrong and where', () => {
  invalid('ALTER DATABASE', 'database name is missing', 'the end of the statement', 'column 15');
  invalid('ALTER DATABASE FAILOVER', 'database name is missing', '"FAILOVER"');
  invalid('ALTER DATABASE db', 'expected one of ADD SECONDARY ON SERVER, REMOVE SECONDARY ON SERVER, FAILOVER or FORCE_FAILOVER_ALLOW_DATA_LOSS', 'the end of the statement');
  invalid('ALTER DATABASE db MODIFY NAME = db2', 'MODIFY is not supported', 'ADD SECONDARY ON SERVER', 'column 19');
  invalid('ALTER DATABASE db SET READ_ONLY', 'SET is not supported');
  invalid('ALTER DATABASE db COLLATE Latin1_General', 'COLLATE is not supported');
  invalid('ALTER DATABASE db ADD FILE x', 'expected SECONDARY after ADD', '"FILE"');
  invalid('ALTER DATABASE db ADD SECONDARY SERVER x', 'expected ON after ADD SECONDARY', '"SERVER"');
  invalid('ALTER DATABASE db ADD SECONDARY ON\n  SERVR x', 'expected SERVER after ADD SECONDARY ON', '"SERVR"', 'line 2, column 3');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER', 'expected the partner server name after ON SERVER', 'the end of the statement');
  invalid('ALTER DATABASE db REMOVE SECONDARY ON SERVER ;', 'expected the partner server name', '";"');
  invalid('ALTER DATABASE db FAILOVER NOW', 'unexpected "NOW" after the end of the statement');
  invalid('ALTER DATABASE db FAILOVER; SELECT 1', '"SELECT" follows the statement', 'on its own');
  invalid("ALTER DATABASE 'db' FAILOVER", 'expected the database name after ALTER DATABASE', `"'db'"`);
  invalid('ALTER DATABASE [db FAILOVER', 'unterminated quoted identifier');
  // Names are checked by the server's name rule.
  invalid('ALTER DATABASE master FAILOVER', 'database name "master" is reserved', 'column 16');
  invalid('ALTER DATABASE [a/b] FAILOVER', 'database name "a/b" contains a path separator');
  invalid('ALTER DATABASE [a..b] FAILOVER', 'contains ".."');
  invalid(`ALTER DATABASE [${'x'.repeat(129)}] FAILOVER`, 'the limit is 128');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER [tempdb]', 'server name "tempdb" is reserved');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER [a b]', 'server name "a b" may hold only');
  // WITH options.
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH ALLOW_CONNECTIONS = ALL', 'expected "(" after WITH');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH ()', 'expected an option', '")"');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (ALLOW_CONNECTIONS = NO)', 'ALLOW_CONNECTIONS = NO is not supported', 'always readable');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (ALLOW_CONNECTIONS = SOME)', 'expected ALL after ALLOW_CONNECTIONS =', '"SOME"');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (ALLOW_CONNECTIONS ALL)', 'expected "=" after ALLOW_CONNECTIONS');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (ALLOW_CONNECTIONS = ALL, ALLOW_CONNECTIONS = ALL)', 'ALLOW_CONNECTIONS is given twice');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (ELASTIC_POOL(name = p), SERVICE_OBJECTIVE = ELASTIC_POOL(name = q))', 'ELASTIC_POOL is given twice');
  invalid("ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (SERVICE_OBJECTIVE = ELASTIC_POOL(name = q), SERVICE_OBJECTIVE = 'S0')", 'SERVICE_OBJECTIVE is given twice');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (SERVICE_OBJECTIVE = S0)', 'expected a quoted service objective', '"S0"');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (ELASTIC_POOL(pool = p))', 'expected NAME after ELASTIC_POOL (', '"pool"');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (ELASTIC_POOL(name = p)', 'expected "," or ")" after the ELASTIC_POOL option', 'the end of the statement');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (ELASTIC_POOL(name = [default pool]))', 'pool name "default pool"');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (SECONDARY_TYPE = NAMED)', 'SECONDARY_TYPE = NAMED is not supported');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (SECONDARY_NAME = master)', 'database name "master" is reserved');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (MAXSIZE = 5 GB)', 'unknown option "MAXSIZE"');
  invalid('ALTER DATABASE db ADD SECONDARY ON SERVER s WITH (ALLOW_CONNECTIONS = ALL) x', 'unexpected "x"');
  // The procedure.
  invalid('EXEC sp_who', 'procedure "sp_who" is not supported', 'sp_wait_for_database_copy_sync');
  invalid('EXEC', 'a procedure name is missing');
  invalid('EXEC sp_wait_for_database_copy_sync', '@target_server and @target_database are required');
  invalid("EXEC sp_wait_for_database_copy_sync @target_database = 'db'", '@target_server is required');
  invalid("EXEC sp_wait_for_database_copy_sync 'srv'", '@target_database is required');
  invalid("EXEC sp_wait_for_database_copy_sync 'srv' 'db'", 'expected "," between parameters', `"'db'"`);
  invalid("EXEC sp_wait_for_database_copy_sync 'srv', 'db',", 'expected a parameter after ","');
  invalid("EXEC sp_wait_for_database_copy_sync 'srv', 'db', 'x'", 'too many parameters');
  invalid("EXEC sp_wait_for_database_copy_sync @target_server = 'srv', 'db'", 'every parameter must be named');
  invalid("EXEC sp_wait_for_database_copy_sync @target_server = 'a', @target_server = 'b'", '@target_server is given twice');
  invalid("EXEC sp_wait_for_database_copy_sync @server = 'a', @target_database = 'b'", 'unknown parameter "@server"');
  invalid("EXEC sp_wait_for_database_copy_sync @s, 'db'", 'variables are not supported');
  invalid("EXEC sp_wait_for_database_copy_sync 'srv', N'db", 'unterminated string');
  invalid("EXEC sp_wait_for_database_copy_sync 'srv', 'master'", '@target_database: database name "master" is reserved');
  invalid("sp_wait_for_database_copy_sync 'a b', 'db'", '@target_server: server name "a b"');
});

test('ordinary SQL is not a management statement, whatever its strings, names and comments hold', () => {
  for (const sql of [
    '',
    '   ',
    '-- ALTER DATABASE x FAILOVER',
    '/* ALTER DATABASE x FAILOVER */',
    'select 1',
    "SELECT 'ALTER DATABASE x FAILOVER'",
    "insert into log(msg) values ('ALTER DATABASE venue-01 ADD SECONDARY ON SERVER west')",
    "SELECT \"ALTER DATABASE\" FROM t WHERE x = 'EXEC sp_wait_for_database_copy_sync ''a'', ''b'''",
    'select [exec], `sp_wait_for_database_copy_sync` from t',
    'ALTER TABLE t ADD COLUMN failover int',
    'ALTER TABLE database ADD COLUMN x',
    "SELECT 'unterminated",
    "WITH x AS (SELECT 'ALTER DATABASE a FAILOVER') SELECT * FROM x",
    'CREATE TABLE sp_wait_for_database_copy_sync_log(x)',
    'select sp_wait_for_database_copy_sync from t',
    'sys_table',
    'BEGIN; ALTER DATABASE x FAILOVER',
  ]) {
    assert.equal(parseManagementStatement(sql), undefined, sql);
  }
});

// ---------------------------------------------------------------------------
// Parsing: properties

const nameArb = (kind: 'database' | 'server' | 'pool'): fc.Arbitrary<string> =>
  fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$/).filter((n) => {
    try {
      validateName(kind, n);
      return true;
    } catch {
      return false;
    }
  });

const stmtArb: fc.Arbitrary<ManagementStatement> = fc.oneof(
  fc.record(
    { kind: fc.constant('addSecondary' as const), database: nameArb('database'), server: nameArb('server'), pool: nameArb('pool'), secondaryDatabase: nameArb('database') },
    { requiredKeys: ['kind', 'database', 'server'] },
  ),
  fc.record({ kind: fc.constant('removeSecondary' as const), database: nameArb('database'), server: nameArb('server') }),
  fc.record({ kind: fc.constant('failover' as const), database: nameArb('database') }),
  fc.record({ kind: fc.constant('forceFailover' as const), database: nameArb('database') }),
  fc.record({ kind: fc.constant('waitForCopySync' as const), server: nameArb('server'), database: nameArb('database') }),
);

const COMMENT_TEXT = ['', 'note', "it's ALTER DATABASE x FAILOVER; 'q'", '"]`[', 'EXEC sp_who; --'];

/** Renders a statement with random casing, quoting, spacing, comments and optional parts. */
function render(s: ManagementStatement, seed: number): string {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const kw = (w: string): string => [...w].map((c) => (rnd() < 0.5 ? c.toLowerCase() : c.toUpperCase())).join('');
  // A separator always starts and ends with whitespace, so no comment glues onto a bare name.
  const sep = (): string => {
    let out = pick([' ', '\n', '\t', '\r\n', '  ']);
    const n = Math.floor(rnd() * 3);
    for (let k = 0; k < n; k++) {
      const c = pick(COMMENT_TEXT).replaceAll('*/', '');
      out += pick([`/*${c}*/ `, `-- ${c.replaceAll('\n', ' ')}\n`, '\n', '\t']);
    }
    return out;
  };
  const gap = (): string => (rnd() < 0.4 ? '' : sep());
  const ident = (n: string): string => {
    const bareOk = !n.includes('--') && n.toUpperCase() !== 'CURRENT';
    const style = pick(bareOk ? ['bare', 'bracket', 'double', 'back'] : ['bracket', 'double', 'back']);
    return style === 'bare' ? n : style === 'bracket' ? `[${n}]` : style === 'double' ? `"${n}"` : `\`${n}\``;
  };
  const value = (n: string): string => pick(['string', 'nstring', 'ident']) === 'ident' ? ident(n) : `${pick(['', 'N', 'n'])}'${n}'`;
  const lead = rnd() < 0.3 ? `${sep()}` : '';
  const tail = pick(['', ';', ' ;', `;${sep()};`, sep()]);
  let body: string;
  switch (s.kind) {
    case 'addSecondary': {
      const options: string[] = [];
      // The pool comes as ELASTIC_POOL(…) or as SERVICE_OBJECTIVE = ELASTIC_POOL(…); a quoted
      // service objective (ignored) only where SERVICE_OBJECTIVE is still free.
      const poolAsObjective = s.pool !== undefined && rnd() < 0.5;
      if (rnd() < 0.5) options.push(`${kw('ALLOW_CONNECTIONS')}${gap()}=${gap()}${kw('ALL')}`);
      if (!poolAsObjective && rnd() < 0.3) options.push(`${kw('SERVICE_OBJECTIVE')}${gap()}=${gap()}'${pick(['S0', 'P6', 'GP_Gen5_2'])}'`);
      if (rnd() < 0.3) options.push(`${kw('SECONDARY_TYPE')}${gap()}=${gap()}${kw('GEO')}`);
      if (s.pool !== undefined) {
        const pool = `${kw('ELASTIC_POOL')}${gap()}(${gap()}${kw('name')}${gap()}=${gap()}${ident(s.pool)}${gap()})`;
        options.push(poolAsObjective ? `${kw('SERVICE_OBJECTIVE')}${gap()}=${gap()}${pool}` : pool);
      }
      if (s.secondaryDatabase !== undefined) options.push(`${kw('SECONDARY_NAME')}${gap()}=${gap()}${ident(s.secondaryDatabase)}`);
      // Option order does not matter.
      for (let k = options.length - 1; k > 0; k--) {
        const j = Math.floor(rnd() * (k + 1));
        [options[k], options[j]] = [options[j]!, options[k]!];
      }
      const withClause = options.length > 0 ? `${sep()}${kw('WITH')}${gap()}(${gap()}${options.join(`${gap()},${gap()}`)}${gap()})` : '';
      body = `${kw('ALTER')}${sep()}${kw('DATABASE')}${sep()}${ident(s.database)}${sep()}${kw('ADD')}${sep()}${kw('SECONDARY')}${sep()}${kw('ON')}${sep()}${kw('SERVER')}${sep()}${ident(s.server)}${withClause}`;
      break;
    }
    case 'removeSecondary':
      body = `${kw('ALTER')}${sep()}${kw('DATABASE')}${sep()}${ident(s.database)}${sep()}${kw('REMOVE')}${sep()}${kw('SECONDARY')}${sep()}${kw('ON')}${sep()}${kw('SERVER')}${sep()}${ident(s.server)}`;
      break;
    case 'failover':
    case 'forceFailover':
      body = `${kw('ALTER')}${sep()}${kw('DATABASE')}${sep()}${ident(s.database)}${sep()}${kw(s.kind === 'failover' ? 'FAILOVER' : 'FORCE_FAILOVER_ALLOW_DATA_LOSS')}`;
      break;
    case 'waitForCopySync': {
      const exec = pick(['', `${kw('EXEC')}${sep()}`, `${kw('EXECUTE')}${sep()}`]);
      const schema = pick(['', `${kw('sys')}.`, '[sys].', '"SYS".']);
      const proc = pick([kw('sp_wait_for_database_copy_sync'), '[sp_wait_for_database_copy_sync]']);
      const server = { p: '@target_server', v: value(s.server) };
      const db = { p: '@target_database', v: value(s.database) };
      const form = pick(['positional', 'named', 'namedSwapped', 'mixed']);
      const named = (a: { p: string; v: string }): string => `${kw(a.p)}${gap()}=${gap()}${a.v}`;
      const args =
        form === 'positional' ? [server.v, db.v] : form === 'named' ? [named(server), named(db)] : form === 'namedSwapped' ? [named(db), named(server)] : [server.v, named(db)];
      body = `${exec}${schema}${proc}${sep()}${args.join(`${gap()},${gap()}`)}`;
      break;
    }
  }
  return `${lead}${body}${tail}`;
}

test('property: any rendering of a valid statement parses to that statement', () => {
  fc.assert(
    fc.property(stmtArb, fc.integer(), (s, seed) => {
      const sql = render(s, seed);
      // fc.record makes null-prototype objects; compare plain ones.
      assert.deepEqual(parseManagementStatement(sql), { ...s }, sql);
    }),
    fcOptions,
  );
});

test('property: a statement cut short is INVALID_ARGUMENT or (where the cut leaves a complete statement) parses', () => {
  fc.assert(
    fc.property(stmtArb, fc.integer(), fc.double({ min: 0, max: 1, noNaN: true }), (s, seed, at) => {
      const sql = render(s, seed).trimEnd().replace(/;+$/, '');
      const cut = sql.slice(0, Math.max('ALTER DATABASE '.length, Math.floor(sql.length * at)));
      try {
        const r = parseManagementStatement(cut);
        // A cut inside a bare name or after a whole clause can still be a statement, never another kind.
        if (r !== undefined && s.kind !== 'waitForCopySync') assert.equal(r.kind, s.kind, cut);
      } catch (e) {
        assert.ok(e instanceof GeodrError && e.code === 'INVALID_ARGUMENT', `${cut}: ${String(e)}`);
      }
    }),
    fcOptions,
  );
});

test('property: anything after ALTER DATABASE or EXEC parses or is INVALID_ARGUMENT, never another failure', () => {
  fc.assert(
    fc.property(fc.constantFrom('ALTER DATABASE ', 'alter database [x] ', 'EXEC ', 'sp_wait_for_database_copy_sync ', 'ALTER DATABASE x ADD SECONDARY ON SERVER y WITH ('), fc.string({ maxLength: 60 }), (head, tail) => {
      try {
        parseManagementStatement(head + tail);
      } catch (e) {
        assert.ok(e instanceof GeodrError && e.code === 'INVALID_ARGUMENT', String(e));
      }
    }),
    fcOptions,
  );
});

test('property: an unacceptable name is refused and named', () => {
  const bad = fc.string({ minLength: 0, maxLength: 140 }).filter((n) => {
    if (n.includes(']')) return false;
    try {
      validateName('database', n);
      return false;
    } catch {
      return true;
    }
  });
  fc.assert(
    fc.property(bad, (n) => {
      const e = invalid(`ALTER DATABASE [${n}] FAILOVER`, 'database name');
      assert.equal(e.context.details?.column, 16);
    }),
    fcOptions,
  );
});

test('property: management text inside strings, quoted names or comments of ordinary SQL is not a statement', () => {
  const text = fc.oneof(stmtArb.chain((s) => fc.integer().map((seed) => render(s, seed))), fc.string());
  fc.assert(
    fc.property(text, fc.constantFrom('string', 'ident', 'comment'), (t, where) => {
      const sql =
        where === 'string' ? `SELECT '${t.replaceAll("'", "''")}'` : where === 'ident' ? `SELECT "${t.replaceAll('"', '""')}" FROM t` : `SELECT 1 /* ${t.replaceAll('*/', '')} */`;
      assert.equal(parseManagementStatement(sql), undefined, sql);
      assert.equal(readsSysViews(sql), false, sql);
    }),
    fcOptions,
  );
});

// ---------------------------------------------------------------------------
// Views: recognising them

test('readsSysViews names the three views in any quoting and case, and nothing else', () => {
  for (const sql of [
    'SELECT * FROM sys.geo_replication_links',
    'select * from SYS.DM_GEO_REPLICATION_LINK_STATUS',
    'SELECT * FROM [sys].geo_replication_links;',
    'SELECT * FROM "sys"."dm_operation_status"',
    'SELECT * FROM `sys` . `dm_operation_status`',
    'SELECT * FROM sys\n.\n/* view */ dm_operation_status',
    'SELECT l.role_desc FROM sys.geo_replication_links l JOIN sys.dm_operation_status o ON o.major_resource_id = l.database_name',
    'DELETE FROM sys.dm_operation_status',
    'SELECT 1; SELECT * FROM sys.dm_operation_status',
  ]) {
    assert.equal(readsSysViews(sql), true, sql);
  }
  for (const sql of [
    'SELECT 1',
    "SELECT 'sys.geo_replication_links'",
    'SELECT 1 -- sys.dm_operation_status',
    'SELECT * FROM "sys.dm_operation_status"',
    'SELECT * FROM sys.tables',
    'SELECT * FROM geo_replication_links',
    'SELECT * FROM main.dm_operation_status',
    'SELECT * FROM sys.dm_operation_status_history',
    "SELECT 'unterminated sys.dm_operation_status",
  ]) {
    assert.equal(readsSysViews(sql), false, sql);
  }
});

// ---------------------------------------------------------------------------
// Views: querying them

const T0 = Date.UTC(2025, 0, 2, 3, 4, 5, 678);

function link(over: Partial<LinkInfo> & Pick<LinkInfo, 'linkId' | 'database'>): LinkInfo {
  return {
    localRole: 'primary',
    partnerServer: 'tenants1-westus',
    partnerDatabase: over.database,
    state: 'CATCH_UP',
    createdAt: T0,
    modifiedAt: T0 + 1000,
    lastReplicatedTxid: 100,
    lastReplicatedTime: T0 + 2000,
    lagTxids: 0,
    lagMs: 0,
    percentComplete: 100,
    ...over,
  };
}

const LINKS: LinkInfo[] = [
  link({ linkId: '00000000-0000-4000-8000-000000000001', database: 'venue-01', databaseId: 'id-1', lagTxids: 3, lagMs: 1600, lastCommitTime: T0 + 3600 }),
  link({ linkId: '00000000-0000-4000-8000-000000000002', database: 'venue-02', partnerServer: '123', state: 'SEEDING', lastReplicatedTxid: 0, lastReplicatedTime: null, lagTxids: 40, lagMs: null, percentComplete: 42.9 }),
  link({ linkId: '00000000-0000-4000-8000-000000000003', database: 'venue-03', localRole: 'secondary', partnerServer: 'tenants1-eastus', state: 'SUSPENDED', lagTxids: 7, lagMs: 25_000 }),
  link({ linkId: '00000000-0000-4000-8000-000000000004', database: 'venue-04', state: 'PENDING', lastReplicatedTxid: 0, lastReplicatedTime: null, lagMs: null, percentComplete: 0 }),
];

const OPERATIONS: OperationInfo[] = [
  { id: '10000000-0000-4000-8000-000000000001', kind: 'seed', state: 'Succeeded', percentComplete: 100, database: 'venue-01', createdAt: T0, startedAt: T0 + 10, endedAt: T0 + 500, error: null },
  { id: '10000000-0000-4000-8000-000000000002', kind: 'seed', state: 'InProgress', percentComplete: 42.9, database: 'venue-02', createdAt: T0 + 20, startedAt: T0 + 30, endedAt: null, error: null },
  { id: '10000000-0000-4000-8000-000000000003', kind: 'failover', state: 'Failed', percentComplete: 50, database: 'venue-03', createdAt: T0 + 40, startedAt: T0 + 50, endedAt: T0 + 900, error: { code: 'UNAVAILABLE', message: 'the partner did not answer' } },
  { id: '10000000-0000-4000-8000-000000000004', kind: 'retention', state: 'Pending', percentComplete: 0, database: null, createdAt: T0 + 60, startedAt: null, endedAt: null, error: null },
  { id: '10000000-0000-4000-8000-000000000005', kind: 'seed', state: 'Cancelled', percentComplete: 10, database: 'venue-04', createdAt: T0 + 70, startedAt: T0 + 80, endedAt: T0 + 90, error: { code: 'CANCELLED', message: 'cancelled' } },
];

const DATA: SysViewData = { server: 'tenants1-eastus', links: LINKS, operations: OPERATIONS };

function q(sql: string, args?: SqlValue[], named?: Record<string, SqlValue>, data: SysViewData = DATA): { columns: string[]; rows: SqlValue[][]; objects: Array<Record<string, SqlValue>> } {
  const r = querySysViews(sql, args, named, data, 9);
  assert.equal(r.rowsAffected, 0);
  assert.equal(r.lastInsertRowid, null);
  assert.equal(r.txid, 9);
  assert.equal(r.decltypes.length, r.columns.length);
  return { columns: r.columns, rows: r.rows, objects: r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]!]))) };
}

test('sys.geo_replication_links has Azure columns, states, roles and ISO times', () => {
  const r = querySysViews('SELECT * FROM sys.geo_replication_links', undefined, undefined, DATA, 9);
  assert.deepEqual(r.columns, [
    'database_id', 'start_date', 'modify_date', 'link_guid', 'partner_server', 'partner_database', 'replication_state', 'replication_state_desc',
    'role', 'role_desc', 'secondary_allow_connections', 'secondary_allow_connections_desc', 'database_name', 'server_name', 'percent_complete',
  ]);
  assert.deepEqual(r.decltypes.slice(0, 7), ['NVARCHAR(64)', 'DATETIMEOFFSET', 'DATETIMEOFFSET', 'UNIQUEIDENTIFIER', 'NVARCHAR(128)', 'NVARCHAR(128)', 'TINYINT']);
  const rows = q('SELECT * FROM sys.geo_replication_links').objects;
  assert.equal(rows.length, 4);
  assert.deepEqual(rows[0], {
    database_id: 'id-1',
    start_date: '2025-01-02T03:04:05.678Z',
    modify_date: '2025-01-02T03:04:06.678Z',
    link_guid: '00000000-0000-4000-8000-000000000001',
    partner_server: 'tenants1-westus',
    partner_database: 'venue-01',
    replication_state: 2n,
    replication_state_desc: 'CATCH_UP',
    role: 0n,
    role_desc: 'PRIMARY',
    secondary_allow_connections: 2n,
    secondary_allow_connections_desc: 'All',
    database_name: 'venue-01',
    server_name: 'tenants1-eastus',
    percent_complete: 100n,
  });
  // Azure's numbering: 0 PENDING, 1 SEEDING, 2 CATCH_UP, 4 SUSPENDED; a server named "123" stays text.
  assert.deepEqual(
    rows.map((r) => [r.database_name, r.replication_state, r.replication_state_desc, r.role_desc, r.partner_server, r.database_id]),
    [
      ['venue-01', 2n, 'CATCH_UP', 'PRIMARY', 'tenants1-westus', 'id-1'],
      ['venue-02', 1n, 'SEEDING', 'PRIMARY', '123', null],
      ['venue-03', 4n, 'SUSPENDED', 'SECONDARY', 'tenants1-eastus', null],
      ['venue-04', 0n, 'PENDING', 'PRIMARY', 'tenants1-westus', null],
    ],
  );
});

test('sys.dm_geo_replication_link_status has lag in seconds, TXIDs and milliseconds', () => {
  const rows = q('SELECT * FROM sys.dm_geo_replication_link_status ORDER BY database_name').objects;
  assert.deepEqual(rows[0], {
    link_guid: '00000000-0000-4000-8000-000000000001',
    partner_server: 'tenants1-westus',
    partner_database: 'venue-01',
    last_replication: '2025-01-02T03:04:07.678Z',
    replication_lag_sec: 2n,
    replication_state: 2n,
    replication_state_desc: 'CATCH_UP',
    role: 0n,
    role_desc: 'PRIMARY',
    secondary_allow_connections: 2n,
    secondary_allow_connections_desc: 'All',
    last_commit: '2025-01-02T03:04:09.278Z',
    database_name: 'venue-01',
    server_name: 'tenants1-eastus',
    last_replicated_txid: 100n,
    replication_lag_txids: 3n,
    replication_lag_ms: 1600n,
    percent_complete: 100n,
  });
  // Seeding: nothing replicated yet, lag unknown, progress floored to an integer.
  assert.deepEqual([rows[1]!.last_replication, rows[1]!.replication_lag_sec, rows[1]!.replication_lag_ms, rows[1]!.percent_complete, rows[1]!.last_commit], [null, null, null, 42n, null]);
  // A secondary's last commit is what it replicated.
  assert.deepEqual([rows[2]!.role, rows[2]!.last_commit, rows[2]!.replication_lag_sec], [1n, '2025-01-02T03:04:07.678Z', 25n]);
});

test('sys.dm_operation_status maps states, errors and times', () => {
  const rows = q('SELECT * FROM sys.dm_operation_status').objects;
  assert.equal(rows.length, 5);
  assert.deepEqual(rows[2], {
    session_activity_id: '10000000-0000-4000-8000-000000000003',
    resource_type: 0n,
    resource_type_desc: 'Database',
    major_resource_id: 'venue-03',
    minor_resource_id: null,
    operation: 'failover',
    state: 3n,
    state_desc: 'FAILED',
    percent_complete: 50n,
    error_code: 'UNAVAILABLE',
    error_desc: 'the partner did not answer',
    error_severity: 16n,
    error_state: 1n,
    start_time: new Date(T0 + 50).toISOString(),
    last_modify_time: new Date(T0 + 900).toISOString(),
    create_time: new Date(T0 + 40).toISOString(),
    end_time: new Date(T0 + 900).toISOString(),
  });
  assert.deepEqual(
    rows.map((r) => [r.state, r.state_desc, r.error_severity]),
    [[2n, 'COMPLETED', 0n], [1n, 'IN_PROGRESS', 0n], [3n, 'FAILED', 16n], [0n, 'PENDING', 0n], [4n, 'CANCELLED', 16n]],
  );
  // A server-wide operation that has not started: no database, start time is its creation.
  assert.deepEqual([rows[3]!.resource_type, rows[3]!.resource_type_desc, rows[3]!.major_resource_id, rows[3]!.start_time, rows[3]!.end_time], [1n, 'Server', null, new Date(T0 + 60).toISOString(), null]);
});

test("Azure's documented example queries run verbatim", () => {
  const a = q('SELECT database_id, start_date, modify_date, partner_server, partner_database, replication_state_desc, role, secondary_allow_connections_desc FROM [sys].geo_replication_links;');
  assert.equal(a.rows.length, 4);
  assert.deepEqual(a.columns, ['database_id', 'start_date', 'modify_date', 'partner_server', 'partner_database', 'replication_state_desc', 'role', 'secondary_allow_connections_desc']);
  const b = q('SELECT link_guid, partner_server, last_replication, replication_lag_sec FROM sys.dm_geo_replication_link_status');
  assert.deepEqual(b.rows[0], ['00000000-0000-4000-8000-000000000001', 'tenants1-westus', '2025-01-02T03:04:07.678Z', 2n]);
  const c = q("SELECT * FROM sys.dm_operation_status where major_resource_id = 'venue-02'\nORDER BY start_time DESC");
  assert.deepEqual(c.objects.map((o) => o.session_activity_id), ['10000000-0000-4000-8000-000000000002']);
});

test('filters, projections, ordering, joins between the views and parameters', () => {
  assert.deepEqual(q('select database_name from sys.geo_replication_links where role_desc = ? order by database_name desc', ['PRIMARY']).rows, [['venue-04'], ['venue-02'], ['venue-01']]);
  assert.deepEqual(q('select database_name, replication_lag_txids as lag from sys.dm_geo_replication_link_status where replication_lag_txids > :min order by lag', undefined, { min: 5n }).rows, [['venue-03', 7n], ['venue-02', 40n]]);
  assert.deepEqual(q('select count(*) as n, sum(replication_lag_txids) from sys.dm_geo_replication_link_status where partner_server = @p', undefined, { '@p': 'tenants1-westus' }).rows, [[2n, 3n]]);
  assert.deepEqual(q('select lower(state_desc) from sys.dm_operation_status where percent_complete between ? and ? order by 1', [10n, 60n]).rows, [['cancelled'], ['failed'], ['in_progress']]);
  const joined = q(
    `with seeding as (select major_resource_id as db, state_desc from sys.dm_operation_status where operation = 'seed')
     select l.database_name, l.replication_state_desc, s.state_desc from sys.geo_replication_links as l
     join seeding s on s.db = l.database_name order by 1`,
  );
  assert.deepEqual(joined.rows, [['venue-01', 'CATCH_UP', 'COMPLETED'], ['venue-02', 'SEEDING', 'IN_PROGRESS'], ['venue-04', 'PENDING', 'CANCELLED']]);
  // Blobs and reals bind as the SQL endpoint binds them.
  assert.deepEqual(q('select ?, ?, length(?) from sys.dm_operation_status limit 1', [new Uint8Array([1, 2]), 1.5, new Uint8Array([7, 8, 9])]).rows, [[Buffer.from([1, 2]), 1.5, 3n]]);
  // No links: the views are empty, not missing.
  assert.deepEqual(q('select count(*) from sys.geo_replication_links', undefined, undefined, { server: 's', links: [], operations: [] }).rows, [[0n]]);
});

test('property: WHERE and ORDER BY over generated links agree with the same filter in code', () => {
  const linkArb = fc.record({
    lagTxids: fc.integer({ min: 0, max: 1000 }),
    lagMs: fc.option(fc.integer({ min: 0, max: 100_000 }), { nil: null }),
    state: fc.constantFrom('PENDING' as const, 'SEEDING' as const, 'CATCH_UP' as const, 'SUSPENDED' as const),
    localRole: fc.constantFrom('primary' as const, 'secondary' as const),
    partnerServer: nameArb('server'),
  });
  fc.assert(
    fc.property(fc.array(linkArb, { maxLength: 12 }), fc.integer({ min: 0, max: 1000 }), (specs, min) => {
      const links = specs.map((s, i) => link({ ...s, linkId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, database: `db${i}` }));
      const got = q(
        'select link_guid, replication_lag_txids, replication_state from sys.dm_geo_replication_link_status where replication_lag_txids >= ? and role_desc = ? order by replication_lag_txids desc, link_guid',
        [BigInt(min), 'PRIMARY'],
        undefined,
        { server: 'here', links, operations: [] },
      ).rows;
      const states = { PENDING: 0n, SEEDING: 1n, CATCH_UP: 2n, SUSPENDED: 4n };
      const want = links
        .filter((l) => l.lagTxids >= min && l.localRole === 'primary')
        .sort((a, b) => b.lagTxids - a.lagTxids || (a.linkId < b.linkId ? -1 : 1))
        .map((l) => [l.linkId, BigInt(l.lagTxids), states[l.state]]);
      assert.deepEqual(got, want);
    }),
    { ...fcOptions, numRuns: Math.min(fcOptions.numRuns, 100) },
  );
});

test('writes, other statements and several statements are refused', () => {
  refusedQuery('INSERT INTO sys.dm_operation_status(state) VALUES (1)', 'INSERT is refused');
  refusedQuery("UPDATE sys.geo_replication_links SET role = 1", 'UPDATE is refused');
  refusedQuery('DELETE FROM sys.dm_operation_status', 'read-only');
  refusedQuery('DROP TABLE sys.dm_operation_status', 'DROP is refused');
  refusedQuery('CREATE TABLE sys.x AS SELECT * FROM sys.dm_operation_status', 'CREATE is refused');
  refusedQuery('EXPLAIN SELECT * FROM sys.dm_operation_status', 'EXPLAIN is refused');
  refusedQuery('PRAGMA sys.table_info(dm_operation_status)', 'PRAGMA is refused');
  refusedQuery('WITH x AS (SELECT 1) DELETE FROM sys.dm_operation_status', 'read-only');
  refusedQuery('SELECT * FROM sys.dm_operation_status; DELETE FROM sys.dm_operation_status', 'exactly one SELECT statement; found 2');
  refusedQuery('SELECT * FROM sys.dm_operation_status; SELECT 1', 'found 2');
  // The guard's own refusals apply as to any tenant statement.
  refusedQuery("SELECT load_extension('x') FROM sys.dm_operation_status", 'load_extension');
  refusedQuery("ATTACH 'x' AS y", 'ATTACH is not allowed');
});

test('tables other than the views are refused by name', () => {
  refusedQuery('SELECT * FROM sys.dm_operation_status, tickets', 'tickets is not a system view here');
  refusedQuery('SELECT * FROM sys.geo_replication_links WHERE partner_database IN (SELECT name FROM main.tenants)', 'main.tenants is not a system view here');
  refusedQuery('SELECT * FROM sys.dm_db_resource_stats', 'sys.dm_db_resource_stats is not a system view here');
  refusedQuery('SELECT name FROM sys.sqlite_master', 'sqlite_master cannot be read here');
  refusedQuery('SELECT * FROM sqlite_schema, sys.dm_operation_status', 'sqlite_schema cannot be read here');
  refusedQuery("SELECT * FROM pragma_table_info('dm_operation_status', 'sys')", 'pragma_table_info cannot be read here');
  // A word in a string is just a string.
  assert.deepEqual(q("SELECT 'sqlite_master', 'tickets' FROM sys.dm_operation_status LIMIT 1").rows, [['sqlite_master', 'tickets']]);
});

test("SQLite's complaints are SQL_ERROR with its code; bad parameters too", () => {
  assert.throws(
    () => querySysViews('SELECT nope FROM sys.dm_operation_status', undefined, undefined, DATA, 1),
    (e: unknown) => e instanceof GeodrError && e.code === 'SQL_ERROR' && e.message.includes('no such column: nope') && e.context.details?.sqliteCode === 'SQLITE_ERROR',
  );
  assert.throws(
    () => querySysViews('SELECT TOP 1 * FROM sys.dm_operation_status', undefined, undefined, DATA, 1),
    (e: unknown) => e instanceof GeodrError && e.code === 'SQL_ERROR',
  );
  assert.throws(
    () => querySysViews('SELECT * FROM sys.dm_operation_status WHERE state = ?', undefined, undefined, DATA, 1),
    (e: unknown) => e instanceof GeodrError && e.code === 'SQL_ERROR',
  );
  assert.throws(
    () => querySysViews("SELECT 'x FROM sys.dm_operation_status", undefined, undefined, DATA, 1),
    (e: unknown) => e instanceof GeodrError && e.code === 'SQL_ERROR' && e.message.includes('unterminated'),
  );
});

test('a query over the views is bounded in result size and time like any statement', () => {
  assert.throws(
    () => querySysViews('SELECT * FROM sys.dm_operation_status', undefined, undefined, DATA, 1, { statementTimeoutMs: 10_000, resultBytes: 100 }),
    (e: unknown) => e instanceof GeodrError && e.code === 'LIMIT_EXCEEDED',
  );
  const started = Date.now();
  assert.throws(
    () =>
      querySysViews(
        'WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n, sys.dm_operation_status',
        undefined,
        undefined,
        DATA,
        1,
        { statementTimeoutMs: 50, resultBytes: 1 << 30 },
      ),
    (e: unknown) => e instanceof GeodrError && e.code === 'STATEMENT_TIMEOUT',
  );
  assert.ok(Date.now() - started < 5000);
});

test('each query sees only the data it was given', () => {
  const one = { server: 'a', links: [LINKS[0]!], operations: [] };
  assert.deepEqual(q('select count(*) from sys.geo_replication_links', undefined, undefined, one).rows, [[1n]]);
  assert.deepEqual(q('select count(*) from sys.geo_replication_links').rows, [[4n]]);
});
