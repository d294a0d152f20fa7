/**
 * A record batch: the encoded transaction records first..last of one database, back to
 * back (each record carries its own length, CRC and database id). The key names the
 * range and the epoch of the newest record; decoding checks every record, that the range is
 * exactly what the key says, and that the epochs agree with it: a batch renamed (or copied)
 * under another lineage's epoch is refused instead of being read as that lineage's history.
 */
import { GeodrError } from '../errors.js';
import { decodeHeader, decodeRecord, encodeRecord, RECORD_HEADER_SIZE, type TxRecord } from '../engine/record.js';
import type { BatchRef } from './layout.js';

export function encodeBatch(records: readonly TxRecord[]): Buffer {
  return Buffer.concat(records.map((r) => encodeRecord(r)));
}

export function decodeBatch(buf: Uint8Array, ref: BatchRef, dbId: string): TxRecord[] {
  const out: TxRecord[] = [];
  let off = 0;
  while (off < buf.length) {
    if (buf.length - off < RECORD_HEADER_SIZE) throw new GeodrError('VAULT_CORRUPT', `batch ends inside a record header at byte ${off}`, { object: ref.key });
    const h = decodeHeader(buf.subarray(off), { object: ref.key, dbId });
    const rec = decodeRecord(buf.subarray(off, off + h.totalLength), { object: ref.key, dbId });
    const expected = ref.first + out.length;
    if (rec.baseTxid !== rec.txid - 1 || rec.txid !== expected) {
      throw new GeodrError('RECORD_OUT_OF_ORDER', `batch holds TXID ${rec.txid} where ${expected} belongs`, { object: ref.key, txid: rec.txid });
    }
    if (rec.epoch > ref.epoch || (out.length > 0 && rec.epoch < out[out.length - 1]!.epoch)) {
      throw new GeodrError('VAULT_CORRUPT', `record ${rec.txid} has epoch ${rec.epoch}; the batch's name says epoch ${ref.epoch} and epochs never fall within a batch`, { object: ref.key, txid: rec.txid });
    }
    out.push(rec);
    off += h.totalLength;
  }
  if (out.length > 0 && out[out.length - 1]!.epoch !== ref.epoch) {
    throw new GeodrError('VAULT_CORRUPT', `the batch's newest record has epoch ${out[out.length - 1]!.epoch}; its name says ${ref.epoch}`, { object: ref.key });
  }
  if (out.length !== ref.last - ref.first + 1) {
    throw new GeodrError('VAULT_CORRUPT', `batch holds ${out.length} records; its name says ${ref.last - ref.first + 1} (${ref.first}..${ref.last})`, { object: ref.key });
  }
  return out;
}
