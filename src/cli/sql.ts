/** geodr sql DB [SQL] [--file F] [--arg V ...] [--named k=v ...] */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { splitStatements } from '../server/sqlguard.js';
import { toWire, type QueryResult, type SqlParam, type SqlParams, type WireTagged } from '../sdk/index.js';
import { clientFor, collect, globals } from './context.js';
import { formatSqlValue, print, printJson, table } from './format.js';

interface SqlFlags {
  file?: string;
  arg?: string[];
  named?: string[];
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/**
 * A parameter from the command line: JSON when it parses as a SQL value (number,
 * string, true/false, null, or a tagged {"$integer"|"$real"|"$blob": ...}), otherwise
 * the text itself. Integer literals beyond 2^53 stay exact (bigint); JSON arrays and
 * other objects bind as their text, which is how SQLite stores JSON.
 */
export function parseSqlArg(text: string): SqlParam {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return text;
  }
  if (typeof v === 'number' && /^\s*-?\d+\s*$/.test(text) && !Number.isSafeInteger(v)) {
    const b = BigInt(text.trim());
    // SQLite reads an integer literal past 64 bits as REAL; so do we.
    return b >= INT64_MIN && b <= INT64_MAX ? b : v;
  }
  if (v === null || typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'object' && !Array.isArray(v)) {
    const keys = Object.keys(v);
    if (keys.length === 1 && ['$integer', '$real', '$blob'].includes(keys[0]!)) return v as WireTagged;
  }
  return text;
}

function wireResult(r: QueryResult): Record<string, unknown> {
  return {
    columns: r.columns,
    types: r.types,
    rows: r.rows.map((row) => row.map(toWire)),
    rowsAffected: r.rowsAffected,
    lastInsertRowid: r.lastInsertRowid === null ? null : toWire(r.lastInsertRowid),
    txid: r.txid,
  };
}

function humanResult(r: QueryResult): string {
  if (r.columns.length > 0) return table(r.columns, r.rows.map((row) => row.map(formatSqlValue)));
  const rowid = r.rowsAffected > 0 && r.lastInsertRowid !== null ? `, last insert rowid ${r.lastInsertRowid}` : '';
  return `${r.rowsAffected} row${r.rowsAffected === 1 ? '' : 's'} affected${rowid} (txid ${r.txid})`;
}

export function registerSqlCommand(program: Command): void {
  program
    .command('sql')
    .description('run SQL on a database; several statements run as one atomic batch')
    .argument('<db>', 'database name')
    .argument('[sql]', 'SQL text (or use --file)')
    .option('-f, --file <path>', 'read the SQL from a file ("-" for stdin)')
    .option('--arg <value>', 'positional parameter for ?; repeat in order (JSON if it parses, else text)', collect)
    .option('--named <key=value>', 'named parameter for :key, @key or $key; repeatable', collect)
    .action(async (db: string, sqlText: string | undefined, flags: SqlFlags, cmd: Command) => {
      const usage = (msg: string): never => cmd.error(msg, { exitCode: 2, code: 'geodr.usage' });
      if (sqlText !== undefined && flags.file !== undefined) usage('give the SQL as an argument or with --file, not both');
      if (sqlText === undefined && flags.file === undefined) usage('no SQL: give it as an argument or with --file');
      const text = sqlText ?? (flags.file === '-' ? await readStdin() : await readFile(flags.file!, 'utf8'));
      if (flags.arg !== undefined && flags.named !== undefined) usage('use either --arg or --named parameters, not both');
      let params: SqlParams | undefined;
      if (flags.arg !== undefined) params = flags.arg.map(parseSqlArg);
      if (flags.named !== undefined) {
        const named: Record<string, SqlParam> = {};
        for (const kv of flags.named) {
          const eq = kv.indexOf('=');
          if (eq <= 0) usage(`--named ${JSON.stringify(kv)}: expected key=value`);
          named[kv.slice(0, eq)] = parseSqlArg(kv.slice(eq + 1));
        }
        params = named;
      }
      const statements = splitStatements(text);
      if (statements.length === 0) usage('the SQL holds no statement');
      if (statements.length > 1 && params !== undefined) usage(`parameters apply to one statement; the SQL holds ${statements.length}`);

      // bigint mode keeps INTEGER and REAL apart, so output matches what the API sent.
      const client = clientFor(cmd, 'bigint');
      const results = statements.length === 1 ? [await client.query(db, statements[0]!, params)] : await client.batch(db, statements);
      if (globals(cmd).json === true) return printJson(statements.length === 1 ? wireResult(results[0]!) : { results: results.map(wireResult) });
      print(results.map(humanResult).join('\n\n'));
    });
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
