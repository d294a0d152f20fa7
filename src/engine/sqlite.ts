/** Opening SQLite connections the engine can trust. */
import Database from 'better-sqlite3';
import { GeodrError } from '../errors.js';

export type Connection = Database.Database;
export type Statement = Database.Statement;

/** 3.51.3 fixed a WAL-reset bug that corrupts databases (present since 3.7.0). */
export const MIN_SQLITE_VERSION = '3.51.3';

export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

/** Throws SQLITE_TOO_OLD when `version` is older than {@link MIN_SQLITE_VERSION}. */
export function assertSqliteVersion(version: string): void {
  if (!/^\d+\.\d+\.\d+$/.test(version) || compareVersions(version, MIN_SQLITE_VERSION) < 0) {
    throw new GeodrError('SQLITE_TOO_OLD', `SQLite ${version} is linked; geodr needs ${MIN_SQLITE_VERSION} or newer (WAL-reset corruption bug)`);
  }
}

let checked = false;
/** Opens a connection, refusing to run on an old SQLite. */
export function openConnection(file: string, options: Database.Options = {}): Connection {
  const db = new Database(file, options);
  if (!checked) {
    const row = db.prepare('select sqlite_version() as v').get() as { v: string };
    try {
      assertSqliteVersion(row.v);
    } catch (e) {
      db.close();
      throw e;
    }
    checked = true;
  }
  return db;
}
