/**
 * SQLite values in the JSON SQL endpoint. JSON cannot tell 1 from 1.0, has no bytes,
 * and loses integers past 2^53, so those travel tagged:
 *   integer beyond ±(2^53-1)  {"$integer": "9007199254740993"}
 *   REAL with no fraction      {"$real": 2}   (and "Infinity", "-Infinity")
 *   BLOB                       {"$blob": "<base64>"}
 * Everything else is plain JSON: null, numbers (integers, or REALs with a fraction),
 * strings. Parameters accept the same forms; true/false bind as 1/0.
 */
import { GeodrError } from '../errors.js';
import type { SqlResult, SqlStatement, SqlValue } from './sql.js';

export type JsonSqlValue = null | number | string | boolean | { $integer: string } | { $real: number | string } | { $blob: string };

export function encodeValue(v: SqlValue): JsonSqlValue {
  if (v === null || typeof v === 'string') return v;
  if (typeof v === 'bigint') return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : { $integer: v.toString() };
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return { $real: String(v) };
    return Number.isInteger(v) ? { $real: v } : v;
  }
  return { $blob: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Decodes a parameter; `where` names it in errors (e.g. `args[2]`). */
export function decodeValue(v: unknown, where: string): SqlValue {
  if (v === null || typeof v === 'string') return v;
  if (typeof v === 'boolean') return v ? 1n : 0n;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw bad(where, 'is not a finite number');
    return Number.isSafeInteger(v) ? BigInt(v) : v;
  }
  if (typeof v === 'object' && !Array.isArray(v)) {
    const keys = Object.keys(v);
    const o = v as Record<string, unknown>;
    if (keys.length === 1 && keys[0] === '$integer') {
      if (typeof o.$integer !== 'string' || !/^-?\d{1,19}$/.test(o.$integer)) throw bad(where, '$integer must be a string of decimal digits');
      const n = BigInt(o.$integer);
      if (n > 9223372036854775807n || n < -9223372036854775808n) throw bad(where, '$integer is outside the 64-bit range');
      return n;
    }
    if (keys.length === 1 && keys[0] === '$real') {
      const r = o.$real;
      if (typeof r === 'number' && Number.isFinite(r)) return r;
      if (r === 'Infinity') return Infinity;
      if (r === '-Infinity') return -Infinity;
      throw bad(where, '$real must be a finite number, "Infinity" or "-Infinity"');
    }
    if (keys.length === 1 && keys[0] === '$blob') {
      if (typeof o.$blob !== 'string' || !BASE64.test(o.$blob) || o.$blob.length % 4 !== 0) throw bad(where, '$blob must be standard padded base64');
      return Buffer.from(o.$blob, 'base64');
    }
  }
  throw bad(where, 'must be null, a number, a string, a boolean, {"$integer": "…"}, {"$real": n} or {"$blob": "…"}');
}

function bad(where: string, why: string): GeodrError {
  return new GeodrError('INVALID_ARGUMENT', `parameter ${where} ${why}`);
}

/** A statement from its JSON form (`sql`, `args`, `named`), values decoded; `where` prefixes error paths. */
export function toStatement(body: { sql: string; args?: unknown[]; named?: Record<string, unknown> }, where: string): SqlStatement {
  return {
    sql: body.sql,
    args: body.args?.map((v, i) => decodeValue(v, `${where}args[${i}]`)),
    named: body.named === undefined ? undefined : Object.fromEntries(Object.entries(body.named).map(([k, v]) => [k, decodeValue(v, `${where}named.${k}`)])),
  };
}

/** A result's JSON form: columns, declared types, rows (values encoded), rowsAffected, lastInsertRowid, txid. */
export function resultView(r: SqlResult): Record<string, unknown> {
  return {
    columns: r.columns,
    types: r.decltypes,
    rows: r.rows.map((row) => row.map(encodeValue)),
    rowsAffected: r.rowsAffected,
    lastInsertRowid: r.lastInsertRowid === null ? null : encodeValue(r.lastInsertRowid),
    txid: r.txid,
  };
}
