/** Helpers shared by the engine's tests (not part of the public surface). */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Connection } from '../sqlite.js';

/** A fresh temp directory, removed by the returned cleanup function. */
export function tempDir(prefix = 'geodr-test-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

function cell(v: unknown): unknown {
  if (Buffer.isBuffer(v)) return `x'${v.toString('hex')}'`;
  if (typeof v === 'bigint') return `${v}n`;
  return v;
}

/** The logical content of a database: schema plus every row of every table, in rowid order. */
export function dump(conn: Connection): string {
  const schema = conn.prepare("select type, name, tbl_name, sql from sqlite_master where name not like 'sqlite_%' order by type, name").all() as Array<{ type: string; name: string }>;
  const parts: unknown[] = [schema];
  for (const t of schema) {
    if (t.type !== 'table') continue;
    const rows = conn.prepare(`select * from "${t.name.replace(/"/g, '""')}" order by rowid`).raw().all() as unknown[][];
    parts.push([t.name, rows.map((r) => r.map(cell))]);
  }
  return JSON.stringify(parts);
}

/** A short digest of {@link dump}. */
export function dumpHash(conn: Connection): string {
  return createHash('sha256').update(dump(conn)).digest('hex').slice(0, 16);
}

/** PRAGMA integrity_check's verdict as one string ('ok' when healthy). */
export function integrity(conn: Connection): string {
  return (conn.pragma('integrity_check') as Array<{ integrity_check: string }>).map((r) => r.integrity_check).join('; ');
}

/** A small seeded PRNG (mulberry32), so failures can be replayed from a printed seed and benchmark runs repeat. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
