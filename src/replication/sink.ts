/**
 * The secondary's side of a link: keeps one stream open to the primary, applies what
 * arrives (everything one network read brought, as one atomic apply), acknowledges
 * it, and reconnects with backoff from its own applied TXID when the stream breaks —
 * so a network cut leaves no gap and no duplicate. Answers that mean the copy cannot
 * simply continue (the primary no longer has the log it needs, or the histories
 * diverged) are handed to the manager, which re-seeds.
 */
import type { Logger } from 'pino';
import { GeodrError, isGeodrError } from '../errors.js';
import { decodeRecord, type ReplicaDatabase, type TxRecord } from '../engine/index.js';
import { peerError, type Peers } from './peers.js';
import { FRAME_END, FRAME_HEARTBEAT, FRAME_RECORD, readFrames, type Heartbeat } from './protocol.js';

export interface SinkTarget {
  linkId: string;
  /** Local database name. */
  database: string;
  partnerServer: string;
  partnerDatabase: string;
}

export interface SinkEvents {
  /** Streaming (true) or not (false): the link's state. */
  onConnected(connected: boolean): void;
  /** The copy must be re-seeded (LOG_GAP, diverged); the sink has stopped. */
  onFatal(error: GeodrError): void;
  /** After each apply: the newest applied TXID and its commit time. */
  onApplied(txid: number, time: number): void;
  /** The primary is stale (we know a newer epoch). */
  onStalePrimary(error: GeodrError): void;
  /** A heartbeat named other secondaries than the last one did. */
  onSiblings(siblings: Heartbeat['siblings']): void;
}

export class Sink {
  private stopped = false;
  private abort = new AbortController();
  private loop: Promise<void> | undefined;
  private acking = false;
  private ackAgain = false;
  /** From the latest heartbeat: the primary's durable TXID and its commit time. */
  primaryTxid = 0;
  primaryTxidTime = 0;
  lastHeartbeatAt = 0;
  private siblingsReported: string | undefined;
  connected = false;
  reconnects = 0;
  bytesReceived = 0;
  lastError: string | undefined;

  constructor(
    readonly target: SinkTarget,
    private readonly replica: () => ReplicaDatabase,
    private readonly peers: Peers,
    private readonly events: SinkEvents,
    private readonly logger: Logger,
    private readonly opts: { heartbeatMs: number; maxBackoffMs: number },
  ) {}

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops streaming and waits until no apply is in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await this.loop?.catch(() => undefined);
  }

  /** Reconnects at once (a relink to another primary changes the target first). */
  retarget(server: string, database: string): void {
    this.target.partnerServer = server;
    this.target.partnerDatabase = database;
    this.abort.abort();
  }

  private async run(): Promise<void> {
    let backoff = 25;
    while (!this.stopped) {
      try {
        await this.streamOnce();
        backoff = 25;
      } catch (e) {
        if (this.stopped) break;
        const g = isGeodrError(e) ? e : new GeodrError('UNAVAILABLE', (e as Error).message ?? String(e), { database: this.target.database }, { cause: e });
        this.lastError = g.message;
        // Only these mean streaming cannot continue from here; anything else (a cut, a primary
        // handing over or fenced, a link being moved) is retried until a relink retargets us.
        if (FATAL.has(g.code)) {
          this.setConnected(false);
          this.stopped = true;
          this.events.onFatal(g);
          return;
        }
        if (g.code === 'STALE_EPOCH') this.events.onStalePrimary(g);
        if (g.code !== 'CANCELLED') this.logger.debug({ err: g, database: this.target.database }, 'replication stream broke; reconnecting');
      }
      this.setConnected(false);
      if (this.stopped) break;
      this.reconnects++;
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, this.opts.maxBackoffMs);
    }
    this.setConnected(false);
  }

  private setConnected(c: boolean): void {
    if (c === this.connected) return;
    this.connected = c;
    this.events.onConnected(c);
  }

  private async streamOnce(): Promise<void> {
    this.abort = new AbortController();
    const rep = this.replica();
    const { partnerServer, partnerDatabase, linkId } = this.target;
    const path = `/internal/v1/replication/${encodeURIComponent(partnerDatabase)}/stream?link=${encodeURIComponent(linkId)}&from=${rep.txid}&epoch=${rep.position.epoch}`;
    const res = await this.peers.fetch(partnerServer, 'GET', path, { stream: true, signal: this.abort.signal });
    if (!res.ok) throw peerError(partnerServer, path, res.status, await res.text());
    if (res.body === null) throw new GeodrError('UNAVAILABLE', 'empty stream', { database: this.target.database });
    this.setConnected(true);
    // A silent stream (no heartbeat for four periods) is a dead connection that TCP has not noticed.
    this.lastHeartbeatAt = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - this.lastHeartbeatAt > this.opts.heartbeatMs * 4) this.abort.abort();
    }, this.opts.heartbeatMs);
    watchdog.unref();
    const source = `${partnerServer}/${partnerDatabase}`;
    try {
      const body = res.body as unknown as AsyncIterable<Uint8Array>;
      for await (const frames of readFrames(countBytes(body, (n) => (this.bytesReceived += n)), source)) {
        this.lastHeartbeatAt = Date.now();
        const records: TxRecord[] = [];
        let end: { reason: string; code: string } | undefined;
        for (const f of frames) {
          if (f.type === FRAME_RECORD) records.push(decodeRecord(f.payload, { object: source, dbId: rep.dbId }));
          else if (f.type === FRAME_HEARTBEAT) {
            this.primaryTxid = f.heartbeat.txid;
            this.primaryTxidTime = f.heartbeat.txidTime;
            // The first heartbeat of a sink always reports: what was kept may be older.
            const heard = JSON.stringify(f.heartbeat.siblings);
            if (heard !== this.siblingsReported) {
              this.siblingsReported = heard;
              this.events.onSiblings(f.heartbeat.siblings);
            }
          } else if (f.type === FRAME_END) end = f.end;
        }
        if (records.length > 0) {
          const cur = this.replica();
          const fresh = records.filter((r) => r.txid > cur.txid);
          if (fresh.length > 0) {
            const pos = await cur.applyWhenIdle(fresh);
            if (pos.txid > this.primaryTxid) {
              this.primaryTxid = pos.txid;
              this.primaryTxidTime = pos.timestamp;
            }
            this.events.onApplied(pos.txid, pos.timestamp);
            this.sendAck();
          }
        }
        if (end !== undefined) throw new GeodrError(end.code === 'LOG_GAP' ? 'LOG_GAP' : 'UNAVAILABLE', `${source} ended the stream: ${end.reason}`, { database: this.target.database });
        if (this.stopped) return;
      }
    } catch (e) {
      if (this.abort.signal.aborted && !isGeodrError(e)) throw new GeodrError('CANCELLED', 'stream closed', { database: this.target.database }, { cause: e });
      throw e;
    } finally {
      clearInterval(watchdog);
    }
  }

  /** Acknowledges the applied TXID; at most one call in flight, the newest value wins. */
  sendAck(): void {
    if (this.stopped) return;
    if (this.acking) {
      this.ackAgain = true;
      return;
    }
    this.acking = true;
    const pos = this.replica().position;
    const { partnerServer, partnerDatabase, linkId } = this.target;
    this.peers
      .call(partnerServer, 'POST', `/internal/v1/replication/${encodeURIComponent(partnerDatabase)}/ack`, { body: { link: linkId, txid: pos.txid, time: pos.timestamp, epoch: pos.epoch } })
      .catch((e: unknown) => this.logger.debug({ err: e, database: this.target.database }, 'acknowledgement failed'))
      .finally(() => {
        this.acking = false;
        if (this.ackAgain) {
          this.ackAgain = false;
          this.sendAck();
        }
      });
  }
}

const FATAL = new Set(['LOG_GAP', 'REPLICA_DIVERGED', 'RECORD_FOREIGN']);

async function* countBytes(body: AsyncIterable<Uint8Array>, onBytes: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    onBytes(chunk.length);
    yield chunk;
  }
}
