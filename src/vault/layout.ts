/**
 * Where things live in a vault. Every name sorts in TXID (or time) order, so the
 * newest object of a kind is the last one listed and a TXID range is one listing
 * with startAfter. Formats of the objects themselves are in docs/FORMATS.md.
 *
 *   databases/<dbId>/meta/<time 16 hex>.json                     descriptor versions
 *   databases/<dbId>/records/<first 16 hex>-<last 16 hex>-<time of last, 16 hex>.batch
 *   databases/<dbId>/snapshots/<txid 16 hex>-<time 16 hex>.full
 *   databases/<dbId>/ltr/<txid 16 hex>-<time 16 hex>-<W|M|Y>.full  long-term backups
 *   servers/<server>/config/<time 16 hex>.json                    server configuration
 *   restorepoints/<name>/<time 16 hex>.json                       multi-database restore points
 */

export function hex16(n: number): string {
  return n.toString(16).padStart(16, '0');
}

export const dbPrefix = (dbId: string): string => `databases/${dbId}/`;
export const metaPrefix = (dbId: string): string => `databases/${dbId}/meta/`;
export const recordsPrefix = (dbId: string): string => `databases/${dbId}/records/`;
export const snapshotsPrefix = (dbId: string): string => `databases/${dbId}/snapshots/`;
export const ltrPrefix = (dbId: string): string => `databases/${dbId}/ltr/`;

export const metaKey = (dbId: string, time: number): string => `${metaPrefix(dbId)}${hex16(time)}.json`;
export const batchKey = (dbId: string, first: number, last: number, lastTime: number): string => `${recordsPrefix(dbId)}${hex16(first)}-${hex16(last)}-${hex16(lastTime)}.batch`;
export const snapshotKey = (dbId: string, txid: number, time: number): string => `${snapshotsPrefix(dbId)}${hex16(txid)}-${hex16(time)}.full`;
export const ltrKey = (dbId: string, txid: number, time: number, kind: 'W' | 'M' | 'Y'): string => `${ltrPrefix(dbId)}${hex16(txid)}-${hex16(time)}-${kind}.full`;
export const configKey = (server: string, time: number): string => `servers/${server}/config/${hex16(time)}.json`;
export const restorePointKey = (name: string, time: number): string => `restorepoints/${name}/${hex16(time)}.json`;

export interface BatchRef {
  key: string;
  first: number;
  last: number;
  lastTime: number;
}

export interface SnapshotObjectRef {
  key: string;
  txid: number;
  time: number;
  /** Long-term backups carry their kind. */
  ltr?: 'W' | 'M' | 'Y';
}

export function parseBatchKey(key: string): BatchRef | undefined {
  const m = /\/([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{16})\.batch$/.exec(key);
  if (m === null) return undefined;
  return { key, first: parseInt(m[1]!, 16), last: parseInt(m[2]!, 16), lastTime: parseInt(m[3]!, 16) };
}

export function parseSnapshotKey(key: string): SnapshotObjectRef | undefined {
  const m = /\/([0-9a-f]{16})-([0-9a-f]{16})(?:-([WMY]))?\.full$/.exec(key);
  if (m === null) return undefined;
  const ref: SnapshotObjectRef = { key, txid: parseInt(m[1]!, 16), time: parseInt(m[2]!, 16) };
  if (m[3] !== undefined) ref.ltr = m[3] as 'W' | 'M' | 'Y';
  return ref;
}

/** What a vault knows about a database, beside its data. */
export interface DatabaseDescriptor {
  format: 1;
  dbId: string;
  name: string;
  server: string;
  region: string;
  pool: string;
  pageSize: number;
  createdAt: number;
  /** Set when the database was deleted on its server. */
  droppedAt?: number;
  /** Short-term retention in days (the PITR window). */
  retentionDays: number;
  /** Long-term retention policy, ISO-8601 durations as the managed offering writes them (e.g. P12W), or null. */
  ltr: { weekly: string | null; monthly: string | null; yearly: string | null; weekOfYear: number } | null;
}
