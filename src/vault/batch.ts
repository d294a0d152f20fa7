/**
 * A record batch: the encoded transaction records first..last of one database, back to
 * back (each record carries its own length, CRC and database id). The key names the
 * range; decoding checks every record and that the range is exactly what the key says.
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
    out.push(rec);
    off += h.totalLength;
  }
  if (out.length !== ref.last - ref.first + 1) {
    throw new GeodrError('VAULT_CORRUPT', `batch holds ${out.length} records; its name says ${ref.last - ref.first + 1} (${ref.first}..${ref.last})`, { object: ref.key });
  }
  return out;
}
