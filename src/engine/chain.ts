/**
 * A chain is everything that can rebuild a database: snapshots, compacted units
 * and single-transaction records. {@link ChainSource} is the narrow interface
 * materialize and compaction read through; {@link LocalChain} serves it from a
 * database's state directory (the vault will serve the same from objects).
 */
import * as path from 'node:path';
import { GeodrError } from '../errors.js';
import type { EngineFs } from './fs.js';
import { TxLog } from './log.js';
import { readMeta } from './meta.js';
import { streamUnit, type RecordHeader, type TxRecord } from './record.js';
import { hex16, listSnapshots } from './snapshot.js';

export interface UnitRef {
  kind: 'full' | 'incremental' | 'compacted';
  /** Compaction level (1, 2, ...) for compacted units; 0 for snapshots. */
  level: number;
  baseTxid: number;
  txid: number;
  /** File or object name. */
  object: string;
}

export interface ChainSource {
  readonly dbId: string;
  /** Snapshots and compacted units, by name (contents are verified when read). */
  units(): UnitRef[];
  /**
   * Streams one unit: header (checked before any page is handed out), then pages in
   * batches, then the CRC over all bytes. Throws on any damage.
   */
  streamUnit(ref: UnitRef, onHeader: (h: RecordHeader) => void, onPages: (pages: Array<[number, Uint8Array]>) => void, onTimestamps?: (ts: number[]) => void): RecordHeader;
  /** Single-transaction records from..to inclusive; LOG_GAP when one is missing. */
  records(from: number, to: number): Iterable<TxRecord>;
  /** The first and last TXIDs held as single records, if any. */
  recordRange(): { first: number; last: number } | undefined;
  /** Newest TXID committed at or before `time`, from records, or undefined. */
  txidAtTime(time: number): number | undefined;
  timestampOf(txid: number): number | undefined;
}

export function compactedName(baseTxid: number, txid: number): string {
  return `${hex16(baseTxid)}-${hex16(txid)}.unit`;
}

/** The chain kept in a database's state directory. */
export class LocalChain implements ChainSource {
  readonly dbId: string;
  private log: TxLog | undefined;

  constructor(
    private readonly efs: EngineFs,
    readonly stateDir: string,
    log?: TxLog,
  ) {
    const meta = readMeta(efs, stateDir);
    if (meta === undefined) throw new GeodrError('INVALID_ARGUMENT', 'no database state here', { object: stateDir });
    this.dbId = meta.dbId;
    this.log = log;
  }

  private txLog(): TxLog {
    this.log ??= TxLog.open(this.efs, path.join(this.stateDir, 'log'), this.dbId);
    return this.log;
  }

  units(): UnitRef[] {
    const out: UnitRef[] = listSnapshots(this.efs, path.join(this.stateDir, 'snapshots')).map((s) => ({
      kind: s.kind,
      level: 0,
      baseTxid: s.baseTxid,
      txid: s.txid,
      object: s.file,
    }));
    const levelsDir = path.join(this.stateDir, 'levels');
    for (const l of this.efs.readdir(levelsDir)) {
      const m = /^L(\d+)$/.exec(l);
      if (m === null) continue;
      for (const name of this.efs.readdir(path.join(levelsDir, l))) {
        const u = /^([0-9a-f]{16})-([0-9a-f]{16})\.unit$/.exec(name);
        if (u !== null) out.push({ kind: 'compacted', level: Number(m[1]), baseTxid: parseInt(u[1]!, 16), txid: parseInt(u[2]!, 16), object: path.join(levelsDir, l, name) });
      }
    }
    return out;
  }

  streamUnit(ref: UnitRef, onHeader: (h: RecordHeader) => void, onPages: (pages: Array<[number, Uint8Array]>) => void, onTimestamps?: (ts: number[]) => void): RecordHeader {
    const fd = this.efs.open(ref.object, 'r', 'chain.read');
    try {
      const h = streamUnit(this.efs, fd, 0, { object: ref.object, dbId: this.dbId }, onPages, 'chain.read', (hdr) => {
        if (hdr.baseTxid !== ref.baseTxid || hdr.txid !== ref.txid) {
          throw new GeodrError('RECORD_CORRUPT', `named for TXIDs ${ref.baseTxid}..${ref.txid} but holds ${hdr.baseTxid}..${hdr.txid}`, { object: ref.object, txid: hdr.txid });
        }
        onHeader(hdr);
      }, onTimestamps);
      return h;
    } finally {
      this.efs.close(fd, 'chain.read');
    }
  }

  records(from: number, to: number): Iterable<TxRecord> {
    return this.txLog().records(from, to);
  }

  recordRange(): { first: number; last: number } | undefined {
    const l = this.txLog();
    if (l.firstTxid === undefined || l.lastTxid === undefined) return undefined;
    return { first: l.firstTxid, last: l.lastTxid };
  }

  txidAtTime(time: number): number | undefined {
    return this.txLog().txidAtTime(time);
  }

  timestampOf(txid: number): number | undefined {
    return this.txLog().timestampOf(txid);
  }
}
