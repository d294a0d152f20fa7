/**
 * Data-dependent routing's SQL entry: statements for one shard key, run only if this
 * database owns the key through the mapping (id and version) the client's cache
 * names. The check and the statements see the same state:
 *
 * - statements that write run inside a write transaction that holds the database's
 *   writer lock; LSM changes need that lock too, so the LSM cannot change between
 *   the check and the commit;
 * - read-only statements run in one snapshot, between two LSM checks that must see
 *   the same LSM version; otherwise the result is discarded and the client retries.
 *
 * Everything else is the SQL endpoint's: the guard, limits, quotas, durable commits.
 */
import Database from 'better-sqlite3';
import { GeodrError } from '../errors.js';
import { SqlSession, type SqlContext, type SqlResult, type SqlStatement } from '../server/sql.js';
import { checkStatement } from '../server/sqlguard.js';
import { checkLsm, lsmVersion, type Expectation } from './lsm.js';
import { readDatabase } from './schema.js';

function readOnly(conn: Database.Database, sql: string): boolean {
  try {
    return conn.prepare(sql).readonly;
  } catch (e) {
    // Some statements do not even prepare on a read-only connection; the writer decides.
    if (e instanceof Database.SqliteError) return false;
    throw e;
  }
}

export async function executeForKey(ctx: SqlContext, database: string, expect: Expectation, stmts: SqlStatement[]): Promise<SqlResult[]> {
  const checked = stmts.map((s, i) => {
    try {
      const c = checkStatement(s.sql);
      if (c.control !== undefined) throw new GeodrError('SQL_REFUSED', `${c.verb} in a routed batch: the batch already runs as one transaction`);
      return c;
    } catch (e) {
      throw e instanceof GeodrError ? e.withContext({ database, details: { statement: i } }, `statement ${i}: `) : e;
    }
  });
  const reads = await ctx.host.use(database, (t) => t.db.read((conn) => checked.every((c) => c.verb !== 'VACUUM' && c.verb !== 'PRAGMA' && readOnly(conn, c.sql))));
  const session = new SqlSession(ctx, database);
  try {
    if (reads) {
      const before = await readDatabase(ctx, database, (conn) => checkLsm(conn, database, expect));
      const results = await session.batch(stmts);
      const after = await readDatabase(ctx, database, (conn) => lsmVersion(conn, expect.map));
      if (after !== before) {
        throw new GeodrError('MAPPING_STALE', `the local shard map of ${expect.map} changed while the statements ran; their result was discarded`, {
          database,
          details: { reason: 'changed-while-reading', map: expect.map, mappingId: expect.mappingId, version: expect.version },
        });
      }
      return results;
    }
    await session.begin('write');
    await readDatabase(ctx, database, (conn) => checkLsm(conn, database, expect));
    const results = await session.batch(stmts);
    const txid = await session.commit();
    for (const r of results) r.txid = txid;
    return results;
  } finally {
    session.close();
  }
}
