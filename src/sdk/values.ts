/**
 * SQL values between JavaScript and the JSON SQL endpoint. JSON cannot tell 1 from
 * 1.0, has no bytes, and loses integers past 2^53, so the wire tags those:
 *   integer beyond ±(2^53-1)  {"$integer": "9007199254740993"}
 *   REAL with no fraction      {"$real": 2}   (and "Infinity", "-Infinity")
 *   BLOB                       {"$blob": "<base64>"}
 * Everything else is plain JSON. Parameters go out in the same forms.
 */

/** A tagged value exactly as the wire carries it; also accepted as a parameter (e.g. `{ $real: 2 }` binds REAL 2.0). */
export type WireTagged = { $integer: string } | { $real: number | 'Infinity' | '-Infinity' } | { $blob: string };

/** A value as it travels in JSON. */
export type WireValue = null | number | string | boolean | WireTagged;

/**
 * A parameter: `bigint` and safe-integer numbers bind as INTEGER, other numbers as
 * REAL, booleans as 1/0, `Uint8Array` (and `Buffer`) as BLOB. A {@link WireTagged}
 * object passes through unchanged.
 */
export type SqlParam = null | number | bigint | string | boolean | Uint8Array | WireTagged;

/** Positional (`?`, `?1`) parameters as an array, or named (`:name`, `@name`, `$name`) ones as an object. */
export type SqlParams = readonly SqlParam[] | Readonly<Record<string, SqlParam>>;

/** A value in a result row. INTEGERs are `number` or `bigint` (see {@link IntMode}); BLOBs are `Uint8Array`. */
export type SqlValue = null | number | bigint | string | Uint8Array;

/**
 * How result INTEGERs come back. `number` (default): safe integers as `number`, and
 * integers beyond ±(2^53-1) as `bigint` so nothing is silently rounded. `bigint`:
 * every INTEGER as `bigint`, so INTEGER 2 and REAL 2.0 stay distinguishable.
 */
export type IntMode = 'number' | 'bigint';

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const SAFE_MIN = BigInt(Number.MIN_SAFE_INTEGER);
const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);

/** Encodes a parameter for the wire; throws TypeError/RangeError for values SQLite cannot hold. */
export function encodeParam(v: SqlParam, where = 'parameter'): WireValue {
  if (v === null || typeof v === 'string') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'bigint') {
    if (v < INT64_MIN || v > INT64_MAX) throw new RangeError(`${where}: ${v} is outside the 64-bit integer range`);
    return v >= SAFE_MIN && v <= SAFE_MAX ? Number(v) : { $integer: v.toString() };
  }
  if (typeof v === 'number') {
    if (Number.isNaN(v)) throw new RangeError(`${where}: NaN cannot be stored (SQLite stores it as NULL)`);
    if (!Number.isFinite(v)) return { $real: v > 0 ? 'Infinity' : '-Infinity' };
    return v;
  }
  if (v instanceof Uint8Array) return { $blob: toBase64(v) };
  if (isTagged(v)) return v;
  throw new TypeError(`${where}: ${describe(v)} is not a SQL value (null, number, bigint, string, boolean, Uint8Array)`);
}

/** Encodes positional or named parameters into the statement's `args` or `named` field. */
export function encodeParams(params: SqlParams | undefined): { args?: WireValue[]; named?: Record<string, WireValue> } {
  if (params === undefined) return {};
  if (Array.isArray(params)) return { args: (params as readonly SqlParam[]).map((p, i) => encodeParam(p, `args[${i}]`)) };
  if (typeof params !== 'object' || params === null) throw new TypeError(`parameters must be an array or an object, not ${describe(params)}`);
  return { named: Object.fromEntries(Object.entries(params).map(([k, p]) => [k, encodeParam(p, `named.${k}`)])) };
}

/** Decodes a result value. */
export function decodeValue(v: unknown, intMode: IntMode): SqlValue {
  if (v === null || typeof v === 'string') return v;
  if (typeof v === 'number') return intMode === 'bigint' && Number.isInteger(v) ? BigInt(v) : v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o.$integer === 'string') return BigInt(o.$integer);
    if ('$real' in o) return o.$real === 'Infinity' ? Infinity : o.$real === '-Infinity' ? -Infinity : Number(o.$real);
    if (typeof o.$blob === 'string') return fromBase64(o.$blob);
  }
  throw new TypeError(`unexpected value in a result: ${JSON.stringify(v)}`);
}

/**
 * The wire form of a result value — the inverse of {@link decodeValue} in `bigint`
 * mode, where `number` means REAL: used to print results exactly as the API sent them.
 */
export function toWire(v: SqlValue): WireValue {
  if (v === null || typeof v === 'string') return v;
  if (typeof v === 'bigint') return encodeParam(v);
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return { $real: v > 0 ? 'Infinity' : '-Infinity' };
    return Number.isInteger(v) ? { $real: v } : v;
  }
  return { $blob: toBase64(v) };
}

function isTagged(v: object): v is WireTagged {
  const keys = Object.keys(v);
  return keys.length === 1 && (keys[0] === '$integer' || keys[0] === '$real' || keys[0] === '$blob');
}

function toBase64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
}

/** A plain Uint8Array (not a pooled Buffer slice), so results compare equal to what was stored. */
function fromBase64(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'base64'));
}

function describe(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (typeof v === 'object' && v !== null) return v.constructor?.name ?? 'object';
  return typeof v;
}
