/** Opening SQLite connections the engine can trust, and interrupting their statements. */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
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

/** Built by `npm run build` from src/engine/native/deadline.c (from dist/src/engine to dist/native). */
const DEADLINE_LIBRARY = fileURLToPath(new URL('../../native/geodr_deadline.so', import.meta.url));
let deadlineLibrary: boolean | undefined;
const armers = new WeakMap<Connection, Statement>();

/**
 * True when statements can be interrupted at their deadline. Without the extension
 * (no C compiler at build time) callers can only check the time between result rows.
 */
export function statementDeadlines(): boolean {
  deadlineLibrary ??= existsSync(DEADLINE_LIBRARY);
  return deadlineLibrary;
}

/**
 * The statement that arms and disarms `db`'s deadline, loading the extension into the
 * connection on first use (about 50 µs, so connections that never run tenant SQL skip it).
 */
function armerOf(db: Connection): Statement | undefined {
  let armer = armers.get(db);
  if (armer === undefined && statementDeadlines()) {
    // Entry point by SQLite's naming rule: sqlite3_geodrdeadline_init.
    db.loadExtension(DEADLINE_LIBRARY);
    armer = db.prepare('select __geodr_deadline(?)');
    armers.set(db, armer);
  }
  return armer;
}

/**
 * Runs `fn`, which runs statements on `db`, interrupting any of them still running
 * `ms` from now: it then fails with SQLITE_INTERRUPT and SQLite undoes its changes
 * (and, for a write inside a transaction, may roll the transaction back).
 * Nothing else may run on `db` inside `fn`: the deadline is the connection's.
 */
export function withDeadline<T>(db: Connection, ms: number, fn: () => T): T {
  const armer = armerOf(db);
  if (armer === undefined) return fn();
  armer.get(Math.max(1, Math.ceil(ms)));
  try {
    return fn();
  } finally {
    disarm(armer);
  }
}

function disarm(armer: Statement): void {
  // Once expired, the watchdog interrupts the connection every few ms until disarmed, and
  // one of those may land on this very statement; it lasts microseconds, so a retry does.
  for (let attempt = 1; ; attempt++) {
    try {
      armer.get(0);
      return;
    } catch (e) {
      if (!isInterrupt(e) || attempt === 100) throw e;
    }
  }
}

/** True for the error of a statement interrupted at its deadline. */
export function isInterrupt(e: unknown): boolean {
  return e instanceof Database.SqliteError && e.code === 'SQLITE_INTERRUPT';
}
