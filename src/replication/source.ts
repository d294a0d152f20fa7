/**
 * The primary's side of replication: serves each secondary's stream of durable
 * records, tracks what every secondary has acknowledged, and resolves the waits that
 * depend on it (sync durability, wait-for-copy-sync, a planned failover's catch-up).
 */
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { GeodrError } from '../errors.js';
import { encodeRecord, type PrimaryDatabase, type TxRecord } from '../engine/index.js';
import type { Tenant } from '../server/host.js';
import type { LinkRecord, MetaStore } from '../server/store.js';
import { encodeFrame, encodeJsonFrame, FRAME_END, FRAME_HEARTBEAT, FRAME_RECORD, type Heartbeat } from './protocol.js';

/** What the primary knows of one secondary. */
export interface LinkProgress {
  linkId: string;
  database: string;
  /** Newest TXID the secondary applied and acknowledged. */
  ackedTxid: number;
  /** Commit time on the primary of ackedTxid. */
  ackedTime: number;
  lastAckAt: number;
  /** Streams currently open for this link (0 or 1 normally). */
  streams: number;
  lastStreamAt: number;
  /** Bytes sent to this secondary (records and seeding), for tests and metrics. */
  bytesSent: number;
  seedBytes: number;
}

interface Waiter {
  database: string;
  txid: number;
  /** Resolve when this many links (or the named link) have the TXID. */
  link: string | undefined;
  resolve: () => void;
  reject: (e: unknown) => void;
  timer: NodeJS.Timeout;
}

/** Live records queued for a slow stream beyond this are dropped and the stream ended: the secondary re-reads them from the log. */
const MAX_QUEUED_BYTES = 64 << 20;
/** Backlog records read from the log per turn of the event loop. */
const BACKLOG_BATCH = 256;

export class ReplicationSource {
  readonly progress = new Map<string, LinkProgress>();
  private readonly waiters = new Set<Waiter>();
  private readonly open = new Map<string, Set<{ end: (reason: string, code: string) => void }>>();
  private persistTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: MetaStore,
    private readonly logger: Logger,
    private readonly heartbeatMs: number,
  ) {
    for (const l of store.listLinks()) if (l.localRole === 'primary') this.track(l);
    // Progress is kept in memory and written back at most once a second: an acknowledgement per transaction must not cost an fsync.
    this.persistTimer = setInterval(() => this.persist(), 1000);
    this.persistTimer.unref();
  }

  track(l: LinkRecord): LinkProgress {
    let p = this.progress.get(l.id);
    if (p === undefined) {
      p = { linkId: l.id, database: l.database, ackedTxid: l.lastTxid, ackedTime: l.lastTime, lastAckAt: 0, streams: 0, lastStreamAt: 0, bytesSent: 0, seedBytes: 0 };
      this.progress.set(l.id, p);
    }
    p.database = l.database;
    return p;
  }

  forget(linkId: string): void {
    this.progress.delete(linkId);
    this.checkWaiters();
  }

  private persist(): void {
    try {
      this.store.transaction(() => {
        for (const p of this.progress.values()) this.store.setLinkProgress(p.linkId, p.ackedTxid, p.ackedTime);
      });
    } catch (e) {
      this.logger.warn({ err: e }, 'could not record replication progress');
    }
  }

  close(): void {
    if (this.persistTimer !== undefined) clearInterval(this.persistTimer);
    this.persist();
    for (const w of [...this.waiters]) this.settle(w, new GeodrError('UNAVAILABLE', 'the server is shutting down', { database: w.database, txid: w.txid }));
    this.endStreams(undefined, 'the server is shutting down', 'UNAVAILABLE');
  }

  /** Records an acknowledgement; acknowledgements never go backwards. */
  ack(linkId: string, txid: number, time: number): void {
    const p = this.progress.get(linkId);
    if (p === undefined) throw new GeodrError('NOT_FOUND', `no replication link ${linkId} on this primary`, { details: { link: linkId } });
    if (txid > p.ackedTxid) {
      p.ackedTxid = txid;
      p.ackedTime = time;
    }
    p.lastAckAt = Date.now();
    this.checkWaiters();
  }

  linksOf(database: string): LinkProgress[] {
    return [...this.progress.values()].filter((p) => p.database === database);
  }

  /**
   * Resolves once a secondary (the named link, or any link when undefined; or every
   * link with `all`) has applied `txid`. Times out with REPLICATION_TIMEOUT.
   */
  waitFor(database: string, txid: number, opts: { link?: string | undefined; all?: boolean; timeoutMs: number }): Promise<void> {
    const links = this.linksOf(database);
    if (links.length === 0) {
      return Promise.reject(new GeodrError('CONFLICT', `database ${database} has no geo-secondary to wait for`, { database, txid }));
    }
    if (opts.all === true) return Promise.all(links.map((l) => this.waitFor(database, txid, { link: l.linkId, timeoutMs: opts.timeoutMs }))).then(() => undefined);
    if (opts.link !== undefined && !links.some((l) => l.linkId === opts.link)) {
      return Promise.reject(new GeodrError('NOT_FOUND', `database ${database} has no replication link ${opts.link}`, { database }));
    }
    if (this.reached(database, txid, opts.link)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        database,
        txid,
        link: opts.link,
        resolve,
        reject,
        timer: setTimeout(
          () =>
            this.settle(
              w,
              new GeodrError('REPLICATION_TIMEOUT', `no geo-secondary confirmed TXID ${txid} within ${opts.timeoutMs} ms; it is committed on the primary`, {
                database,
                txid,
                details: { secondaries: this.linksOf(database).map((l) => ({ link: l.linkId, txid: l.ackedTxid })) },
              }),
            ),
          opts.timeoutMs,
        ),
      };
      w.timer.unref();
      this.waiters.add(w);
    });
  }

  private reached(database: string, txid: number, link: string | undefined): boolean {
    return this.linksOf(database).some((l) => (link === undefined || l.linkId === link) && l.ackedTxid >= txid);
  }

  private checkWaiters(): void {
    for (const w of [...this.waiters]) {
      if (this.reached(w.database, w.txid, w.link)) this.settle(w);
      else if (w.link !== undefined && !this.progress.has(w.link)) this.settle(w, new GeodrError('NOT_FOUND', `replication link ${w.link} was removed`, { database: w.database }));
    }
  }

  private settle(w: Waiter, error?: unknown): void {
    if (!this.waiters.delete(w)) return;
    clearTimeout(w.timer);
    if (error === undefined) w.resolve();
    else w.reject(error);
  }

  /** Ends every stream of a database (or all), telling secondaries why. */
  endStreams(database: string | undefined, reason: string, code: string): void {
    for (const [db, set] of this.open) if (database === undefined || db === database) for (const s of [...set]) s.end(reason, code);
  }

  /**
   * Streams records after `from` to `out` until the secondary disconnects or the
   * stream is ended: the backlog from the local log first, then each record as it
   * becomes durable, with heartbeats in between. `tenant` stays leased meanwhile.
   */
  serve(tenant: Tenant, link: LinkRecord, from: number, out: Writable, siblings: () => Heartbeat['siblings'], onEnd: () => void): void {
    const db: PrimaryDatabase = tenant.db;
    const name = link.database;
    const p = this.track(link);
    p.streams++;
    p.lastStreamAt = Date.now();
    // Asking from a TXID says the secondary has everything up to it, durably.
    if (from > p.ackedTxid) {
      p.ackedTxid = from;
      p.ackedTime = db.txLog.timestampOf(from) ?? p.ackedTime;
      this.checkWaiters();
    }
    let sent = from;
    let ended = false;
    let queuedBytes = 0;
    const live: Array<[TxRecord, Buffer]> = [];
    let backlogDone = false;

    const write = (b: Buffer): boolean => {
      p.bytesSent += b.length;
      return out.write(b);
    };
    const heartbeat = (): void => {
      if (ended) return;
      // Anything durable but not sent yet (it became durable without a later record to carry it).
      if (backlogDone && live.length === 0 && !out.writableNeedDrain && db.isOpen && db.durableTxid > sent) {
        try {
          fromLog(db.durableTxid);
        } catch (e) {
          end(e instanceof GeodrError ? e.reason : String(e), e instanceof GeodrError ? e.code : 'INTERNAL');
          return;
        }
      }
      const txid = db.isOpen ? db.durableTxid : sent;
      const hb: Heartbeat = { txid, epoch: db.isOpen ? db.epoch : 0, time: Date.now(), txidTime: (db.isOpen ? db.txLog.timestampOf(txid) : undefined) ?? 0, siblings: siblings() };
      write(encodeJsonFrame(FRAME_HEARTBEAT, hb));
    };
    const end = (reason: string, code: string): void => {
      if (ended) return;
      ended = true;
      clearInterval(timer);
      unsubscribe();
      p.streams--;
      this.open.get(name)?.delete(handle);
      try {
        if (!out.destroyed) out.end(encodeJsonFrame(FRAME_END, { reason, code }));
      } catch {
        // the socket is already gone
      }
      onEnd();
    };
    const handle = { end };
    let set = this.open.get(name);
    if (set === undefined) this.open.set(name, (set = new Set()));
    set.add(handle);

    /** Sends durable records after `sent` up to `upto` from the local log. */
    const fromLog = (upto: number): void => {
      if (upto <= sent) return;
      for (const r of db.records(sent + 1, upto)) {
        write(encodeFrame(FRAME_RECORD, encodeRecord(r)));
        sent = r.txid;
      }
    };
    const sendLive = (): void => {
      try {
        while (live.length > 0 && !ended) {
          const [rec, enc] = live.shift()!;
          queuedBytes -= enc.length;
          if (rec.txid <= sent) continue;
          // Records captured before this stream subscribed reach no listener: they come from the log.
          fromLog(rec.txid - 1);
          write(encodeFrame(FRAME_RECORD, enc));
          sent = rec.txid;
        }
      } catch (e) {
        end(e instanceof GeodrError ? e.reason : String(e), e instanceof GeodrError ? e.code : 'INTERNAL');
      }
    };
    // Subscribed before the backlog is read, so no record falls between the two.
    const unsubscribe = db.onRecord((rec, enc) => {
      if (ended) return;
      live.push([rec, enc]);
      queuedBytes += enc.length;
      if (queuedBytes > MAX_QUEUED_BYTES) {
        end('the secondary is reading too slowly; reconnect to read from the log', 'UNAVAILABLE');
        return;
      }
      if (backlogDone && !out.writableNeedDrain) sendLive();
    });
    out.on('drain', () => {
      if (backlogDone) sendLive();
    });
    out.on('close', () => end('disconnected', 'CANCELLED'));
    out.on('error', () => end('socket error', 'CANCELLED'));
    const timer = setInterval(heartbeat, this.heartbeatMs);
    timer.unref();
    heartbeat();

    const backlog = async (): Promise<void> => {
      while (!ended) {
        const upto = Math.min(db.durableTxid, sent + BACKLOG_BATCH);
        if (upto <= sent) break;
        for (const rec of db.records(sent + 1, upto)) {
          write(encodeFrame(FRAME_RECORD, encodeRecord(rec)));
          sent = rec.txid;
        }
        if (out.writableNeedDrain) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
        else await new Promise<void>((resolve) => setImmediate(resolve));
      }
      backlogDone = true;
      sendLive();
    };
    backlog().catch((e: unknown) => {
      this.logger.warn({ err: e, database: name, link: link.id }, 'replication backlog failed');
      end(e instanceof GeodrError ? e.reason : String(e), e instanceof GeodrError ? e.code : 'INTERNAL');
    });
  }
}
