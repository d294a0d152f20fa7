/**
 * Where things live in a vault. Every name sorts in TXID (or time) order, so the
 * newest object of a kind is the last one listed and a TXID range is one listing
 * with startAfter. Formats of the objects themselves are in docs/FORMATS.md.
 *
 *   databases/<dbId>/meta/<time 16 hex>.json                     descriptor versions
 *   databases/<dbId>/epochs/<epoch 8 hex>.json                   epoch markers (src/vault/lineage.ts)
 *   databases/<dbId>/records/<first 16 hex>-<last 16 hex>-<time of last, 16 hex>[-e<epoch 8 hex>].batch
 *   databases/<dbId>/snapshots/<txid 16 hex>-<time 16 hex>[-e<epoch 8 hex>].full
 *   databases/<dbId>/ltr/<txid 16 hex>-<time 16 hex>-<W|M|Y>[-e<epoch 8 hex>].full  long-term backups
 *   servers/<server>/config/<time 16 hex>.json                    server configuration
 *   restorepoints/<name>/<time 16 hex>.json                       multi-database restore points
 *
 * The epoch suffix names the epoch of the object's newest record. It is left out at epoch 1,
 * so a database that never failed over keeps exactly the keys of earlier releases (which an
 * older build can still read), and a key without it means epoch 1: there was no failover
 * before epochs were written into keys. The suffix comes after the TXIDs and the time, so
 * a plain sort of keys is still TXID order.
 */
import { GeodrError } from '../errors.js';

export function hex16(n: number): string {
  return n.toString(16).padStart(16, '0');
}

export function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

/** Epochs are unsigned 32-bit in record headers. */
export const MAX_EPOCH = 0xffff_ffff;

function epochSuffix(epoch: number): string {
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > MAX_EPOCH) throw new GeodrError('INVALID_ARGUMENT', `epoch ${epoch} is not an integer 0..${MAX_EPOCH}`);
  return epoch <= 1 ? '' : `-e${hex8(epoch)}`;
}

export const dbPrefix = (dbId: string): string => `databases/${dbId}/`;
export const metaPrefix = (dbId: string): string => `databases/${dbId}/meta/`;
export const recordsPrefix = (dbId: string): string => `databases/${dbId}/records/`;
export const snapshotsPrefix = (dbId: string): string => `databases/${dbId}/snapshots/`;
export const ltrPrefix = (dbId: string): string => `databases/${dbId}/ltr/`;
export const epochsPrefix = (dbId: string): string => `databases/${dbId}/epochs/`;

export const metaKey = (dbId: string, time: number): string => `${metaPrefix(dbId)}${hex16(time)}.json`;
export const batchKey = (dbId: string, first: number, last: number, lastTime: number, epoch = 1): string =>
  `${recordsPrefix(dbId)}${hex16(first)}-${hex16(last)}-${hex16(lastTime)}${epochSuffix(epoch)}.batch`;
export const snapshotKey = (dbId: string, txid: number, time: number, epoch = 1): string => `${snapshotsPrefix(dbId)}${hex16(txid)}-${hex16(time)}${epochSuffix(epoch)}.full`;
export const ltrKey = (dbId: string, txid: number, time: number, kind: 'W' | 'M' | 'Y', epoch = 1): string => `${ltrPrefix(dbId)}${hex16(txid)}-${hex16(time)}-${kind}${epochSuffix(epoch)}.full`;
export const epochKey = (dbId: string, epoch: number): string => `${epochsPrefix(dbId)}${hex8(epoch)}.json`;
export const configKey = (server: string, time: number): string => `servers/${server}/config/${hex16(time)}.json`;
export const restorePointKey = (name: string, time: number): string => `restorepoints/${name}/${hex16(time)}.json`;

export interface BatchRef {
  key: string;
  first: number;
  /**
   * Last TXID of the batch. In a lineage view (src/vault/lineage.ts) it may be less than the
   * key says: the records after it belong to a lineage that lost, and are not history.
   */
  last: number;
  lastTime: number;
  /** Epoch of the newest record (1 for keys without the suffix). */
  epoch: number;
}

export interface SnapshotObjectRef {
  key: string;
  txid: number;
  time: number;
  /** Epoch of the snapshot's header (1 for keys without the suffix). */
  epoch: number;
  /** Long-term backups carry their kind. */
  ltr?: 'W' | 'M' | 'Y';
}

export function parseBatchKey(key: string): BatchRef | undefined {
  const m = /\/([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{16})(?:-e([0-9a-f]{8}))?\.batch$/.exec(key);
  if (m === null) return undefined;
  return { key, first: parseInt(m[1]!, 16), last: parseInt(m[2]!, 16), lastTime: parseInt(m[3]!, 16), epoch: m[4] === undefined ? 1 : parseInt(m[4], 16) };
}

export function parseSnapshotKey(key: string): SnapshotObjectRef | undefined {
  const m = /\/([0-9a-f]{16})-([0-9a-f]{16})(?:-([WMY]))?(?:-e([0-9a-f]{8}))?\.full$/.exec(key);
  if (m === null) return undefined;
  const ref: SnapshotObjectRef = { key, txid: parseInt(m[1]!, 16), time: parseInt(m[2]!, 16), epoch: m[4] === undefined ? 1 : parseInt(m[4], 16) };
  if (m[3] !== undefined) ref.ltr = m[3] as 'W' | 'M' | 'Y';
  return ref;
}

/** The epoch an epoch marker's key names, or undefined for any other key. */
export function parseEpochKey(key: string): number | undefined {
  const m = /\/epochs\/([0-9a-f]{8})\.json$/.exec(key);
  return m === null ? undefined : parseInt(m[1]!, 16);
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
