/**
 * A primary database: a SQLite file in WAL mode whose every committed transaction
 * is captured from the WAL into a transaction record and appended to the local
 * durable log. The engine is the file's only writer and runs its checkpoints.
 *
 * Capture, commit and checkpoint run inside one synchronous call on one thread,
 * so no commit can slip between "copy the WAL tail" and "checkpoint" (the
 * Litestream data-loss bug); a checkpoint only ever covers frames already
 * durable in the log.
 */
import * as path from 'node:path';
import { GeodrError } from '../errors.js';
import { checksumEquals, checksumHex, type Checksum, type PageHashes } from './checksum.js';
import { NodeFs, type EngineFs } from './fs.js';
import { TxLog } from './log.js';
import { newDbId, readMeta, writeMeta, type DatabaseMeta } from './meta.js';
import { hashLogicalDb, lockBytePage, writePages } from './pagefile.js';
import type { TxRecord } from './record.js';
import { writeFullSnapshot } from './snapshot.js';
import { openConnection, type Connection, type Statement } from './sqlite.js';
import { scanWal, type WalCommit, type WalHeader, type WalPosition } from './wal.js';

export type Durability = 'commit' | 'group';

export interface PrimaryOptions {
  /** The SQLite database file. */
  file: string;
  /** Where the log, snapshots and meta live. Default: `<file>.geodr`. */
  stateDir?: string;
  efs?: EngineFs;
  /** Name used in errors and logs. Default: the file's base name. */
  name?: string;
  /**
   * `commit`: a write returns only once its record is fsynced in the log.
   * `group`: writes return at once; the log is fsynced within `groupCommitMs`
   * and {@link PrimaryDatabase.waitDurable} resolves then.
   */
  durability?: Durability;
  groupCommitMs?: number;
  /**
   * SQLite's own synchronous setting. NORMAL (default) is safe because the log is
   * the durable record: a WAL tail lost to power failure is redone from the log.
   */
  synchronous?: 'NORMAL' | 'FULL';
  /** Recompute the whole checksum after every transaction and fail on any mismatch (tests). */
  strict?: boolean;
  /** Page size for a new database. */
  pageSize?: number;
  /** auto_vacuum for a new database. */
  autoVacuum?: 'NONE' | 'FULL' | 'INCREMENTAL';
  /**
   * Checkpoint once the WAL holds this many frames (default 4000). Each checkpoint
   * costs an fsync of the log on top of SQLite's own, so not too often. 0 disables.
   */
  checkpointFrames?: number;
  /** Clock for record timestamps (ms). */
  clock?: () => number;
  /**
   * Open SQLite through this URI instead of the plain path (e.g. to pass `psow=0`).
   * better-sqlite3 honours URIs only when SQLITE_USE_URI=1 is in the environment
   * before its first connection.
   */
  connectionUri?: string;
  segmentBytes?: number;
}

export type RecordListener = (record: TxRecord, encoded: Buffer) => void;

export interface PrimaryStatus {
  name: string;
  dbId: string;
  epoch: number;
  txid: number;
  checksum: string;
  pageSize: number;
  pageCount: number;
  walFrames: number;
  logFirstTxid: number | undefined;
  lastWriteTime: number;
  checkpoints: number;
}

/** An interactive write transaction from {@link PrimaryDatabase.begin}. */
export interface WriteTransaction {
  /** The writer connection, inside BEGIN IMMEDIATE. */
  readonly conn: Connection;
  /** False once committed or rolled back. */
  open: boolean;
  /** COMMIT and capture; returns the database's TXID afterwards. Rolls back if COMMIT fails. */
  commit(): number;
  /** ROLLBACK; a no-op once finished. */
  rollback(): void;
}

/** A consistent read-only view of the primary at one TXID, pinned against checkpoints. */
export interface PinnedView {
  dbId: string;
  epoch: number;
  txid: number;
  timestamp: number;
  checksum: Checksum;
  pageSize: number;
  pageCount: number;
  efs: EngineFs;
  dbFd: number;
  walFd: number;
  walIndex: Map<number, number>;
  release(): void;
}

export class PrimaryDatabase {
  readonly name: string;
  readonly file: string;
  readonly stateDir: string;
  private readonly efs: EngineFs;
  private meta!: DatabaseMeta;
  private log!: TxLog;
  private conn!: Connection;
  private txStatements: { begin: Statement; commit: Statement; rollback: Statement } | undefined;
  /**
   * A read-only connection held open for the database's lifetime. It serves reads,
   * and its shared lock keeps SQLite from checkpointing on close: after a failed
   * capture the WAL may hold commits the log lacks, and they must stay in the WAL.
   */
  private guard!: Connection;
  private dbFd = -1;
  private walFd = -1;
  private hashes!: PageHashes;
  private walPos: WalPosition | undefined;
  /** The WAL header as last read; cleared whenever SQLite may restart the WAL (checkpoint). */
  private walHeader: WalHeader | undefined;
  /** True from a checkpoint until the next captured commit: nothing left to checkpoint. */
  private walCheckpointed = false;
  /**
   * True from any checkpoint attempt (even a partial one: once readers leave, the next
   * writer may restart a fully backfilled WAL) until a commit is captured.
   */
  private walMayRestart = false;
  private readonly walIndex = new Map<number, number>();
  private lastTxid = 0;
  private lastTs = 0;
  private pins = 0;
  private checkpoints = 0;
  private checkpointed = 0;
  private failure: unknown;
  private openTx: WriteTransaction | undefined;
  private closed = false;
  private readonly listeners = new Set<RecordListener>();
  /** Captured records not yet handed to listeners: they only ever see durable records. */
  private undelivered: Array<[TxRecord, Buffer]> = [];
  private syncTimer: NodeJS.Timeout | undefined;
  private syncInFlight = false;
  private syncedTxid = 0;
  private readonly waiters: Array<{ txid: number; resolve: () => void; reject: (e: unknown) => void }> = [];
  private readonly clock: () => number;
  private readonly durability: Durability;

  private constructor(private readonly opts: PrimaryOptions) {
    this.file = path.resolve(opts.file);
    this.stateDir = opts.stateDir ?? `${this.file}.geodr`;
    this.efs = opts.efs ?? new NodeFs();
    this.name = opts.name ?? path.basename(this.file);
    this.clock = opts.clock ?? Date.now;
    this.durability = opts.durability ?? 'commit';
    if (this.durability !== 'commit' && this.durability !== 'group') {
      throw new GeodrError('INVALID_ARGUMENT', `durability must be "commit" or "group", got ${JSON.stringify(this.durability)}`, { database: this.name });
    }
    const ps = opts.pageSize;
    if (ps !== undefined && (ps < 512 || ps > 65536 || (ps & (ps - 1)) !== 0)) {
      throw new GeodrError('INVALID_ARGUMENT', `page size must be a power of two from 512 to 65536, got ${ps}`, { database: this.name });
    }
  }

  /**
   * Opens (or creates, or adopts) a primary database and reconciles it with its
   * log: WAL commits not yet logged are captured; a log ahead of a database that
   * lost its WAL tail is redone into it; any other mismatch is DATABASE_DIVERGED.
   *
   * @example
   * const db = PrimaryDatabase.open({ file: 'tenant.db' })
   * db.write((c) => c.prepare('insert into t values (?)').run(1))
   */
  static open(opts: PrimaryOptions): PrimaryDatabase {
    const p = new PrimaryDatabase(opts);
    p.start();
    return p;
  }

  private start(): void {
    const existing = readMeta(this.efs, this.stateDir);
    if (existing !== undefined && existing.role !== 'primary') {
      throw new GeodrError('INVALID_ARGUMENT', 'this database is a replica; promote it to make it a primary', { database: this.name });
    }
    this.conn = openConnection(this.opts.connectionUri ?? this.file);
    try {
      if (existing === undefined) this.initialise();
      else this.meta = existing;
      this.configureConnection();
      this.openGuard();
      this.dbFd = this.efs.open(this.file, 'r+', 'primary.open');
      this.walFd = this.efs.open(`${this.file}-wal`, 'rw', 'primary.open');
      this.log = TxLog.open(this.efs, path.join(this.stateDir, 'log'), this.meta.dbId, { segmentBytes: this.opts.segmentBytes, preallocate: this.durability === 'commit' });
      this.reconcile();
    } catch (e) {
      this.closeHandles();
      throw e;
    }
  }

  private configureConnection(): void {
    const mode = String(this.conn.pragma('journal_mode', { simple: true }));
    if (mode !== 'wal') {
      const now = String(this.conn.pragma('journal_mode = WAL', { simple: true }));
      if (now !== 'wal') throw new GeodrError('IO_FAILED', `could not switch to WAL mode (got ${now})`, { database: this.name, operation: 'primary.open' });
    }
    this.conn.pragma('wal_autocheckpoint = 0');
    // geodr is the only writer, so nothing should wait on a lock; a checkpoint held up by an
    // open reader reports busy at once rather than blocking the event loop for seconds.
    this.conn.pragma('busy_timeout = 0');
    this.conn.pragma(`synchronous = ${this.opts.synchronous ?? 'NORMAL'}`);
  }

  private openGuard(): void {
    this.guard = openConnection(this.file, { readonly: true });
    this.guard.prepare('select count(*) from sqlite_master').get();
  }

  /** First open of a file geodr has never seen: fold any WAL in, write the base snapshot and meta. */
  private initialise(): void {
    if (this.opts.pageSize !== undefined) this.conn.pragma(`page_size = ${this.opts.pageSize}`);
    if (this.opts.autoVacuum !== undefined) this.conn.pragma(`auto_vacuum = ${this.opts.autoVacuum}`);
    this.configureConnection();
    this.conn.pragma('wal_checkpoint(TRUNCATE)');
    const pageSize = Number(this.conn.pragma('page_size', { simple: true }));
    // An initialisation that crashed before writing meta leaves at most the base snapshot;
    // anything more means meta.json was lost, and history is never deleted to recover.
    const leftovers = [
      ...this.efs.readdir(path.join(this.stateDir, 'log')),
      ...this.efs.readdir(path.join(this.stateDir, 'levels')),
      ...this.efs.readdir(path.join(this.stateDir, 'snapshots')).filter((n) => !n.startsWith('0000000000000000.full')),
    ];
    if (leftovers.length > 0) {
      throw new GeodrError('DATABASE_DIVERGED', `the state directory holds history (${leftovers.slice(0, 3).join(', ')}) but no meta.json; restore meta.json or move the directory aside`, {
        database: this.name,
        object: this.stateDir,
      });
    }
    for (const sub of ['log', 'snapshots', 'levels']) this.efs.unlink(path.join(this.stateDir, sub), 'primary.init');
    const fd = this.efs.open(this.file, 'r', 'primary.init');
    try {
      const pageCount = Math.floor(this.efs.size(fd) / pageSize);
      const hashes = hashLogicalDb({ efs: this.efs, dbFd: fd, pageSize, pageCount }, 'primary.init');
      const meta: DatabaseMeta = { dbId: newDbId(), role: 'primary', epoch: 1, pageSize, base: { txid: 0, checksum: hashes.checksum(), timestamp: this.clock() } };
      writeFullSnapshot(this.efs, path.join(this.stateDir, 'snapshots'), { efs: this.efs, dbFd: fd, pageSize, pageCount }, {
        dbId: meta.dbId,
        epoch: meta.epoch,
        txid: 0,
        timestamp: meta.base.timestamp,
        checksum: meta.base.checksum,
      });
      writeMeta(this.efs, this.stateDir, meta);
      this.meta = meta;
    } finally {
      this.efs.close(fd, 'primary.init');
    }
  }

  private reconcile(): void {
    const last = this.log.last ?? { txid: this.meta.base.txid, post: this.meta.base.checksum, wal: undefined, timestamp: this.meta.base.timestamp, epoch: this.meta.epoch };
    const scan = scanWal(this.efs, this.walFd, undefined, 'primary.recover');
    let base: WalCommit[] = [];
    let fresh: WalCommit[] = scan.commits;
    const lw = last.wal;
    if (lw !== undefined && scan.header !== undefined && scan.header.salt1 === lw.salt1 && scan.header.salt2 === lw.salt2) {
      const j = scan.commits.findIndex((c) => c.end.frame === lw.frame);
      if (j >= 0) {
        base = scan.commits.slice(0, j + 1);
        fresh = scan.commits.slice(j + 1);
      } else {
        base = scan.commits;
        fresh = [];
      }
    }
    const walIndex = new Map<number, number>();
    for (const c of base) {
      for (const [p, f] of c.frames) walIndex.set(p, f);
      for (const p of [...walIndex.keys()]) if (p > c.commitSize) walIndex.delete(p);
    }
    const pageSize = this.meta.pageSize;
    const pageCount = base.length > 0 ? base[base.length - 1]!.commitSize : Math.floor(this.efs.size(this.dbFd) / pageSize);
    const hashes = hashLogicalDb({ efs: this.efs, dbFd: this.dbFd, walFd: this.walFd, pageSize, pageCount, walIndex }, 'primary.recover');
    if (checksumEquals(hashes.sum, last.post)) {
      this.hashes = hashes;
      for (const [p, f] of walIndex) this.walIndex.set(p, f);
      this.walPos = base.length > 0 ? base[base.length - 1]!.end : undefined;
      this.lastTxid = last.txid;
      this.lastTs = last.timestamp;
      this.syncedTxid = last.txid;
      if (fresh.length > 0) {
        this.capture();
        this.log.sync();
        this.syncedTxid = this.lastTxid;
      }
      return;
    }
    if (fresh.length === 0) {
      const behind = this.findLoggedState(hashes.sum);
      if (behind !== undefined) {
        this.redo(behind, last.txid);
        return;
      }
    }
    throw new GeodrError('DATABASE_DIVERGED', `database checksum ${checksumHex(hashes.sum)} matches no logged state (log ends at TXID ${last.txid} with ${checksumHex(last.post)})`, {
      database: this.name,
      txid: last.txid,
      details: { actual: checksumHex(hashes.sum), expected: checksumHex(last.post) },
    });
  }

  /** The logged TXID whose post-checksum is `sum`, searching back from the newest. */
  private findLoggedState(sum: Checksum): number | undefined {
    if (checksumEquals(sum, this.meta.base.checksum) && (this.log.firstTxid ?? this.meta.base.txid + 1) === this.meta.base.txid + 1) return this.meta.base.txid;
    const first = this.log.firstTxid;
    const lastTxid = this.log.lastTxid;
    if (first === undefined || lastTxid === undefined) return undefined;
    let found: number | undefined;
    for (const r of this.log.records(first, lastTxid)) if (checksumEquals(r.post, sum)) found = r.txid;
    return found;
  }

  /**
   * The database lost committed transactions the log holds (a WAL tail lost to
   * power failure under synchronous=NORMAL): fold what the WAL has into the file,
   * then write the logged pages of the missing transactions directly into it.
   */
  private redo(from: number, to: number): void {
    this.conn.pragma('wal_checkpoint(TRUNCATE)');
    this.conn.close();
    this.guard.close();
    this.efs.close(this.walFd, 'primary.redo');
    const pageSize = this.meta.pageSize;
    let commitSize = Math.floor(this.efs.size(this.dbFd) / pageSize);
    for (const rec of this.log.records(from + 1, to)) {
      writePages(this.efs, this.dbFd, pageSize, rec.pages, 'primary.redo');
      commitSize = rec.commitSize;
      this.efs.truncate(this.dbFd, commitSize * pageSize, 'primary.redo');
    }
    this.efs.sync(this.dbFd, 'primary.redo');
    this.conn = openConnection(this.opts.connectionUri ?? this.file);
    this.txStatements = undefined;
    this.configureConnection();
    this.openGuard();
    this.walFd = this.efs.open(`${this.file}-wal`, 'rw', 'primary.open');
    this.reconcile();
  }

  private fail(e: unknown): never {
    // An error in the middle of capture leaves memory and disk out of step: stop, and let
    // the next open reconcile from what is durable.
    this.failure ??= e;
    throw e;
  }

  private ensureOpen(): void {
    if (this.closed || this.failure !== undefined) {
      throw new GeodrError('DATABASE_CLOSED', this.failure !== undefined ? 'stopped after a failure; reopen to recover' : 'closed', { database: this.name }, { cause: this.failure });
    }
  }

  /**
   * Runs `fn` as one write transaction (BEGIN IMMEDIATE) and captures it.
   * Returns fn's result and the TXID the database is at afterwards. With durability
   * `commit` the record is fsynced in the log before this returns.
   */
  write<T>(fn: (conn: Connection) => T, options: { transaction?: boolean } = {}): { result: T; txid: number } {
    this.ensureOpen();
    this.refuseWhileTransactionOpen();
    this.efs.step('primary.commit');
    // transaction:false runs fn in autocommit mode, for statements SQLite refuses inside a
    // transaction (VACUUM); each statement it runs then becomes its own record.
    const result = options.transaction === false ? fn(this.conn) : this.inTransaction(fn);
    this.capture();
    this.maybeCheckpoint();
    return { result, txid: this.lastTxid };
  }

  private refuseWhileTransactionOpen(): void {
    if (this.openTx !== undefined) {
      throw new GeodrError('BUSY', 'an interactive write transaction is open on this database', { database: this.name, operation: 'primary.write' });
    }
  }

  /**
   * Opens a write transaction (BEGIN IMMEDIATE) that stays open across awaits, for
   * callers whose statements arrive one by one (interactive SQL transactions). Only
   * one can be open, and write() answers BUSY meanwhile: the caller serializes.
   * commit() captures like write() and returns the new TXID.
   *
   * @example
   * const tx = db.begin()
   * tx.conn.prepare('insert into t values (1)').run()
   * const txid = tx.commit()
   */
  begin(): WriteTransaction {
    this.ensureOpen();
    this.refuseWhileTransactionOpen();
    this.efs.step('primary.begin');
    this.conn.prepare('BEGIN IMMEDIATE').run();
    const tx: WriteTransaction = {
      conn: this.conn,
      open: true,
      commit: () => {
        this.endTransaction(tx);
        try {
          this.conn.prepare('COMMIT').run();
        } catch (e) {
          if (this.conn.inTransaction) this.conn.prepare('ROLLBACK').run();
          throw e;
        }
        this.capture();
        this.maybeCheckpoint();
        return this.lastTxid;
      },
      rollback: () => {
        if (!tx.open) return;
        this.endTransaction(tx);
        if (this.conn.open && this.conn.inTransaction) this.conn.prepare('ROLLBACK').run();
      },
    };
    this.openTx = tx;
    return tx;
  }

  private endTransaction(tx: WriteTransaction): void {
    if (!tx.open || this.openTx !== tx) {
      throw new GeodrError('DATABASE_CLOSED', 'the transaction is already finished', { database: this.name, operation: 'primary.commit' });
    }
    tx.open = false;
    this.openTx = undefined;
  }

  /** BEGIN IMMEDIATE … COMMIT with statements prepared once (cheaper than a wrapper per call). */
  private inTransaction<T>(fn: (conn: Connection) => T): T {
    this.txStatements ??= {
      begin: this.conn.prepare('BEGIN IMMEDIATE'),
      commit: this.conn.prepare('COMMIT'),
      rollback: this.conn.prepare('ROLLBACK'),
    };
    const st = this.txStatements;
    st.begin.run();
    let result: T;
    try {
      result = fn(this.conn);
      st.commit.run();
    } catch (e) {
      if (this.conn.inTransaction) st.rollback.run();
      throw e;
    }
    return result;
  }

  /** Runs `fn` with a read-only connection. */
  read<T>(fn: (conn: Connection) => T): T {
    this.ensureOpen();
    return fn(this.guard);
  }

  /**
   * Captures every transaction committed to the WAL since the last capture into
   * the log. Normally called by write(); safe to call any time.
   */
  capture(): TxRecord[] {
    this.ensureOpen();
    const out: TxRecord[] = [];
    try {
      // After a checkpoint the next writer rewrites the header with new salts, and the file
      // may not grow (RESTART reuses it): read the header each time until a commit shows the
      // new generation. (Regression: a cached header made capture miss that first commit.)
      const knownHeader = this.walMayRestart ? undefined : this.walHeader;
      let scan = scanWal(this.efs, this.walFd, this.walPos, 'primary.capture', knownHeader);
      if (knownHeader !== undefined && scan.commits.length === 0 && scan.stoppedOnInvalidFrame) {
        // The cached header may be stale if the WAL restarted: look again.
        scan = scanWal(this.efs, this.walFd, this.walPos, 'primary.capture');
      }
      this.walHeader = scan.header;
      if (scan.header === undefined || scan.commits.length === 0) return out;
      this.walCheckpointed = false;
      this.walMayRestart = false;
      if (this.walPos !== undefined && (scan.header.salt1 !== this.walPos.salt1 || scan.header.salt2 !== this.walPos.salt2)) {
        // SQLite restarted the WAL: everything in the old generation was checkpointed.
        this.walIndex.clear();
      }
      const lock = lockBytePage(this.meta.pageSize);
      for (const c of scan.commits) {
        const txid = this.lastTxid + 1;
        const pre = this.hashes.checksum();
        const pages = [...c.pages.entries()].filter(([p]) => p !== lock).sort((a, b) => a[0] - b[0]);
        for (const [p, img] of pages) this.hashes.setPage(p, img);
        const shrank = c.commitSize < this.hashes.pageCount;
        this.hashes.truncate(c.commitSize);
        const ts = Math.max(this.clock(), this.lastTs);
        const rec: TxRecord = {
          dbId: this.meta.dbId,
          epoch: this.meta.epoch,
          baseTxid: txid - 1,
          txid,
          full: false,
          timestamp: ts,
          timestamps: [],
          pageSize: this.meta.pageSize,
          commitSize: c.commitSize,
          pre,
          post: this.hashes.checksum(),
          pages,
        };
        const encoded = this.log.append(rec, c.end);
        for (const [p, f] of c.frames) this.walIndex.set(p, f);
        if (shrank) for (const p of [...this.walIndex.keys()]) if (p > c.commitSize) this.walIndex.delete(p);
        this.walPos = c.end;
        this.lastTxid = txid;
        this.lastTs = ts;
        out.push(rec);
        // The log's encoding is a view into its write buffer: listeners get their own copy.
        if (this.listeners.size > 0) this.undelivered.push([rec, Buffer.from(encoded)]);
      }
      if (this.opts.strict === true) this.verify();
      if (this.durability === 'commit') this.flush();
      else this.scheduleSync();
    } catch (e) {
      this.fail(e);
    }
    return out;
  }

  /** Recomputes the whole checksum and compares it with the incremental one. */
  verify(): Checksum {
    const full = hashLogicalDb(
      { efs: this.efs, dbFd: this.dbFd, walFd: this.walFd, pageSize: this.meta.pageSize, pageCount: this.hashes.pageCount, walIndex: this.walIndex },
      'primary.verify',
    );
    if (!checksumEquals(full.sum, this.hashes.sum)) {
      throw new GeodrError('DATABASE_DIVERGED', `full checksum ${checksumHex(full.sum)} differs from incremental ${checksumHex(this.hashes.sum)}`, { database: this.name, txid: this.lastTxid });
    }
    return full.checksum();
  }

  /** Fsyncs the log now, resolves waiters and hands the now durable records to listeners. */
  flush(): void {
    try {
      this.log.sync();
    } catch (e) {
      // After a failed fsync the kernel may have dropped the pages; a retry that "succeeds"
      // proves nothing. Stop, and let the next open reconcile from what is on disk.
      this.fail(e);
    }
    if (this.syncTimer !== undefined) {
      clearTimeout(this.syncTimer);
      this.syncTimer = undefined;
    }
    this.markDurable(this.lastTxid);
  }

  /** Records up to `txid` are durable: hand them to listeners (in order) and resolve waiters. */
  private markDurable(txid: number): void {
    if (txid > this.syncedTxid) this.syncedTxid = txid;
    let n = 0;
    while (n < this.undelivered.length && this.undelivered[n]![0].txid <= this.syncedTxid) n++;
    if (n > 0) {
      const batch = this.undelivered.splice(0, n);
      for (const [rec, enc] of batch) for (const l of this.listeners) l(rec, enc);
    }
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (w.txid <= this.syncedTxid) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  /**
   * Group commit's fsync, run on the thread pool so writes go on meanwhile. Only records
   * appended before it started are declared durable when it completes.
   */
  private async flushInBackground(): Promise<void> {
    if (this.syncInFlight || this.closed || this.failure !== undefined) return;
    this.syncInFlight = true;
    const upto = this.lastTxid;
    try {
      await this.log.syncAsync();
    } catch (e) {
      this.failure ??= e;
      for (const w of this.waiters.splice(0)) w.reject(e);
      return;
    } finally {
      this.syncInFlight = false;
    }
    this.markDurable(upto);
    this.scheduleSync();
  }

  private scheduleSync(): void {
    if (this.syncTimer !== undefined || !this.log.hasUnsynced) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      void this.flushInBackground();
    }, this.opts.groupCommitMs ?? 5);
  }

  /** Resolves once TXID `txid` is durable in the log. */
  waitDurable(txid: number = this.lastTxid): Promise<void> {
    if (txid <= this.syncedTxid) return Promise.resolve();
    this.ensureOpen();
    return new Promise((resolve, reject) => {
      this.waiters.push({ txid, resolve, reject });
      this.scheduleSync();
    });
  }

  private maybeCheckpoint(): void {
    const limit = this.opts.checkpointFrames ?? 4000;
    if (limit > 0 && !this.walCheckpointed && this.walPos !== undefined && this.walPos.frame >= limit) this.checkpoint();
  }

  /**
   * Captures, makes the log durable, then checkpoints the WAL into the database
   * file (RESTART). Returns false when a pinned snapshot or a reader prevents it.
   */
  checkpoint(): boolean {
    return this.checkpointWith('RESTART');
  }

  private checkpointWith(mode: 'RESTART' | 'TRUNCATE'): boolean {
    this.ensureOpen();
    if (this.pins > 0 || this.openTx !== undefined) return false;
    this.capture();
    try {
      this.flush();
      this.efs.step('primary.checkpoint');
      // RESTART while running: the WAL file keeps its blocks and the next writer overwrites
      // them from frame 1 with new salts (measured: about 20% more small writes a second
      // than TRUNCATE). Until that write the file still holds the checkpointed generation,
      // so the capture position stays where it is (a scan from it finds nothing new); the
      // new salts then start the next generation. TRUNCATE at close leaves an empty WAL.
      const rows = this.conn.pragma(`wal_checkpoint(${mode})`) as Array<{ busy: number }>;
      // Whatever the outcome, the next writer may restart the WAL: read its header again.
      this.walHeader = undefined;
      this.walMayRestart = true;
      if (rows[0]?.busy !== 0) return false;
      // Every page is in the database file now.
      this.walIndex.clear();
      this.checkpointed = this.lastTxid;
      this.walCheckpointed = true;
      if (mode === 'TRUNCATE') this.walPos = undefined;
      this.checkpoints++;
      return true;
    } catch (e) {
      return this.fail(e);
    }
  }

  /** Subscribes to records as they are captured. Returns an unsubscribe function. */
  onRecord(listener: RecordListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reads logged records from..to (inclusive) from the local log. */
  records(from: number, to: number = this.lastTxid): Generator<TxRecord> {
    return this.log.records(from, to);
  }

  /** TXID of the newest record committed at or before `time`. */
  txidAtTime(time: number): number | undefined {
    return this.log.txidAtTime(time);
  }

  get txid(): number {
    return this.lastTxid;
  }

  /** False once closed or stopped after a failure. */
  get isOpen(): boolean {
    return !this.closed && this.failure === undefined;
  }

  /**
   * Every TXID up to this one is in the database file itself (checkpointed): the local
   * log before it is no longer needed to repair the file at open.
   */
  get checkpointedTxid(): number {
    return this.checkpointed;
  }

  /** The newest TXID whose record is fsynced in the local log: the most that may be shipped. */
  get durableTxid(): number {
    return this.syncedTxid;
  }

  get checksum(): Checksum {
    return this.hashes.checksum();
  }

  get dbId(): string {
    return this.meta.dbId;
  }

  get epoch(): number {
    return this.meta.epoch;
  }

  get pageSize(): number {
    return this.meta.pageSize;
  }

  /** Per-page hashes of the current state (see PageHashes.table); take it in the same turn as pin(). */
  pageHashTable(): Uint32Array {
    return this.hashes.table();
  }

  /** The base the log starts from (TXID, checksum). */
  get base(): DatabaseMeta['base'] {
    return this.meta.base;
  }

  /** The local log, for compaction and shipping. */
  get txLog(): TxLog {
    return this.log;
  }

  status(): PrimaryStatus {
    return {
      name: this.name,
      dbId: this.meta.dbId,
      epoch: this.meta.epoch,
      txid: this.lastTxid,
      checksum: checksumHex(this.hashes.sum),
      pageSize: this.meta.pageSize,
      pageCount: this.hashes.pageCount,
      walFrames: this.walPos?.frame ?? 0,
      logFirstTxid: this.log.firstTxid,
      lastWriteTime: this.lastTs,
      checkpoints: this.checkpoints,
    };
  }

  /**
   * Pins the current state (capturing first) so a snapshot can read it while writes
   * go on: checkpoints wait until release(), so the database file does not change
   * and the pinned WAL frames stay where they are.
   */
  pin(): PinnedView {
    this.ensureOpen();
    this.capture();
    this.pins++;
    let released = false;
    return {
      dbId: this.meta.dbId,
      epoch: this.meta.epoch,
      txid: this.lastTxid,
      timestamp: this.lastTs,
      checksum: this.hashes.checksum(),
      pageSize: this.meta.pageSize,
      pageCount: this.hashes.pageCount,
      efs: this.efs,
      dbFd: this.dbFd,
      walFd: this.walFd,
      walIndex: new Map(this.walIndex),
      release: () => {
        if (!released) {
          released = true;
          this.pins--;
        }
      },
    };
  }

  private closeHandles(): void {
    try {
      // Main connection first: the guard's lock keeps it from checkpointing on close.
      if (this.conn?.open) this.conn.close();
      if (this.guard?.open) this.guard.close();
    } finally {
      if (this.dbFd >= 0) this.efs.close(this.dbFd, 'primary.close');
      if (this.walFd >= 0) this.efs.close(this.walFd, 'primary.close');
      this.dbFd = -1;
      this.walFd = -1;
      this.log?.close(this.failure === undefined);
    }
  }

  /** Captures and syncs everything, checkpoints, and closes. */
  close(): void {
    if (this.closed) return;
    try {
      this.openTx?.rollback();
      if (this.failure === undefined) {
        this.capture();
        this.flush();
        if (this.pins === 0) this.checkpointWith('TRUNCATE');
      }
    } finally {
      this.closed = true;
      if (this.syncTimer !== undefined) clearTimeout(this.syncTimer);
      for (const w of this.waiters.splice(0)) w.reject(new GeodrError('DATABASE_CLOSED', 'closed before the write was durable', { database: this.name, txid: w.txid }));
      this.closeHandles();
    }
  }
}
