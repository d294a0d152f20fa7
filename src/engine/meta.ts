/**
 * The per-database state directory and its meta file.
 *
 *   <stateDir>/meta.json        identity and base of the log (this file)
 *   <stateDir>/log/             local durable log segments
 *   <stateDir>/snapshots/       full and incremental snapshots
 *   <stateDir>/levels/L<k>/     compacted units
 *   <stateDir>/replica.state    applied position of a replica (two slots)
 *   <stateDir>/redo.journal     a replica's in-flight apply
 *   <stateDir>/scratch/         compaction's scratch files
 */
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { GeodrError } from '../errors.js';
import { checksumFromHex, checksumHex, type Checksum } from './checksum.js';
import { readWholeFile, writeFileAtomic, type EngineFs } from './fs.js';

export const META_FORMAT = 1;

export interface DatabaseMeta {
  dbId: string;
  role: 'primary' | 'replica';
  epoch: number;
  pageSize: number;
  /** The state the log starts from: its first record has TXID base.txid + 1. */
  base: { txid: number; checksum: Checksum; timestamp: number };
}

export function newDbId(): string {
  return randomBytes(16).toString('hex');
}

export function metaPath(stateDir: string): string {
  return path.join(stateDir, 'meta.json');
}

export function readMeta(efs: EngineFs, stateDir: string): DatabaseMeta | undefined {
  const file = metaPath(stateDir);
  const buf = readWholeFile(efs, file, 'meta.read');
  if (buf === undefined) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(buf.toString('utf8'));
  } catch (e) {
    throw new GeodrError('FORMAT_UNSUPPORTED', 'meta file is not JSON', { object: file }, { cause: e });
  }
  const m = raw as { format?: unknown; dbId?: unknown; role?: unknown; epoch?: unknown; pageSize?: unknown; base?: { txid?: unknown; checksum?: unknown; timestamp?: unknown } };
  if (m.format !== META_FORMAT) throw new GeodrError('FORMAT_UNSUPPORTED', `meta format ${String(m.format)}; this build reads ${META_FORMAT}`, { object: file });
  if (
    typeof m.dbId !== 'string' ||
    !/^[0-9a-f]{32}$/.test(m.dbId) ||
    (m.role !== 'primary' && m.role !== 'replica') ||
    !Number.isSafeInteger(m.epoch) ||
    typeof m.pageSize !== 'number' ||
    !Number.isSafeInteger(m.base?.txid) ||
    typeof m.base?.checksum !== 'string' ||
    !/^[0-9a-f]{16}$/.test(m.base.checksum) ||
    typeof m.base.timestamp !== 'number'
  ) {
    throw new GeodrError('FORMAT_UNSUPPORTED', 'meta file lacks required fields', { object: file });
  }
  return { dbId: m.dbId, role: m.role, epoch: m.epoch as number, pageSize: m.pageSize, base: { txid: m.base.txid as number, checksum: checksumFromHex(m.base.checksum), timestamp: m.base.timestamp } };
}

export function writeMeta(efs: EngineFs, stateDir: string, meta: DatabaseMeta): void {
  efs.mkdir(stateDir, 'meta.mkdir');
  const json = {
    format: META_FORMAT,
    dbId: meta.dbId,
    role: meta.role,
    epoch: meta.epoch,
    pageSize: meta.pageSize,
    base: { txid: meta.base.txid, checksum: checksumHex(meta.base.checksum), timestamp: meta.base.timestamp },
  };
  writeFileAtomic(efs, metaPath(stateDir), Buffer.from(JSON.stringify(json, null, 2) + '\n'), 'meta.write');
}
