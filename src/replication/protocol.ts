/**
 * The replication stream's framing. A secondary's GET of `/internal/v1/replication/<db>/stream`
 * is answered with a long-lived body of frames, each `[type u8][length u32 BE][payload]`:
 *
 *   RECORD     one encoded transaction record (the local log's encoding, self-checking)
 *   HEARTBEAT  JSON: the primary's durable TXID, its epoch, its clock, the sibling links
 *   END        JSON: why the primary closed the stream (a failover, a fence), code and message
 *
 * Records are sent only once durable on the primary, in TXID order, starting after
 * the TXID the secondary asked from; a secondary never has to skip or reorder.
 */
import { GeodrError } from '../errors.js';

export const FRAME_RECORD = 1;
export const FRAME_HEARTBEAT = 2;
export const FRAME_END = 3;
const HEADER = 5;
/** A record frame larger than this is refused as corrupt (the largest transaction geodr writes is far below). */
export const MAX_FRAME_BYTES = 1 << 30;

export interface Heartbeat {
  /** Newest durable TXID on the primary. */
  txid: number;
  epoch: number;
  /** The primary's clock (ms), for lag in time. */
  time: number;
  /** Commit time of `txid`. */
  txidTime: number;
  /** The other secondaries of this primary, so a promoted secondary can relink them. */
  siblings: Array<{ linkId: string; server: string; database: string }>;
}

export interface EndFrame {
  reason: string;
  code: string;
}

export type Frame = { type: typeof FRAME_RECORD; payload: Buffer } | { type: typeof FRAME_HEARTBEAT; heartbeat: Heartbeat } | { type: typeof FRAME_END; end: EndFrame };

export function encodeFrame(type: number, payload: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(HEADER + payload.length);
  b.writeUInt8(type, 0);
  b.writeUInt32BE(payload.length, 1);
  b.set(payload, HEADER);
  return b;
}

export function encodeJsonFrame(type: typeof FRAME_HEARTBEAT | typeof FRAME_END, value: Heartbeat | EndFrame): Buffer {
  return encodeFrame(type, Buffer.from(JSON.stringify(value)));
}

/**
 * Splits a byte stream into frames. Yields the frames each network chunk completes,
 * as one array, so the receiver can apply everything that arrived together at once.
 */
export async function* readFrames(body: AsyncIterable<Uint8Array>, source: string): AsyncGenerator<Frame[]> {
  let buf = Buffer.alloc(0);
  for await (const chunk of body) {
    buf = buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([buf, chunk]);
    const out: Frame[] = [];
    let off = 0;
    while (buf.length - off >= HEADER) {
      const type = buf.readUInt8(off);
      const len = buf.readUInt32BE(off + 1);
      if (type < FRAME_RECORD || type > FRAME_END || len > MAX_FRAME_BYTES) {
        throw new GeodrError('RECORD_CORRUPT', `replication stream from ${source}: bad frame header (type ${type}, ${len} bytes)`, { object: source });
      }
      if (buf.length - off - HEADER < len) break;
      const payload = buf.subarray(off + HEADER, off + HEADER + len);
      off += HEADER + len;
      if (type === FRAME_RECORD) out.push({ type, payload: Buffer.from(payload) });
      else {
        let value: unknown;
        try {
          value = JSON.parse(payload.toString('utf8'));
        } catch (e) {
          throw new GeodrError('RECORD_CORRUPT', `replication stream from ${source}: a control frame is not JSON`, { object: source }, { cause: e });
        }
        if (type === FRAME_HEARTBEAT) out.push({ type, heartbeat: value as Heartbeat });
        else out.push({ type: FRAME_END, end: value as EndFrame });
      }
    }
    buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
    if (out.length > 0) yield out;
  }
  if (buf.length > 0) throw new GeodrError('RECORD_CORRUPT', `replication stream from ${source} ended inside a frame`, { object: source });
}
