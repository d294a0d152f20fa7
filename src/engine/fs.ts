/**
 * Every durable step of the engine goes through {@link EngineFs}. Each call
 * carries an operation label ("log.append", "replica.journal.sync", ...) so a
 * test can fail or kill the process at exactly one step and then check that
 * start-up recovery repairs it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GeodrError } from '../errors.js';

/** `rw` opens read-write, creating the file if missing, never truncating or appending. */
export type OpenFlags = 'r' | 'r+' | 'w+' | 'rw';

export interface EngineFs {
  open(file: string, flags: OpenFlags, op: string): number;
  close(fd: number, op: string): void;
  /** Reads up to `length` bytes at `position`; returns how many were read. */
  read(fd: number, buf: Uint8Array, offset: number, length: number, position: number, op: string): number;
  /** Writes all of `buf` at `position`. */
  write(fd: number, buf: Uint8Array, position: number, op: string): void;
  sync(fd: number, op: string): void;
  /**
   * fdatasync of a file on the thread pool, through a descriptor of its own: the caller's
   * descriptor may be closed (and its number reused) before the sync completes.
   */
  syncFile(file: string, op: string): Promise<void>;
  truncate(fd: number, length: number, op: string): void;
  size(fd: number): number;
  rename(from: string, to: string, op: string): void;
  unlink(file: string, op: string): void;
  mkdir(dir: string, op: string): void;
  readdir(dir: string): string[];
  exists(file: string): boolean;
  /** fsync a directory so that creations, renames and unlinks in it are durable. */
  syncDir(dir: string, op: string): void;
  /** A labelled step with no I/O (e.g. just before a SQLite commit), for crash injection. */
  step(op: string): void;
}

function ioError(op: string, file: string | undefined, cause: unknown): GeodrError {
  const msg = cause instanceof Error ? cause.message : String(cause);
  return new GeodrError('IO_FAILED', msg, { operation: op, object: file }, { cause });
}

/** The real file system, through Node's synchronous calls. */
export class NodeFs implements EngineFs {
  private readonly names = new Map<number, string>();

  open(file: string, flags: OpenFlags, op: string): number {
    try {
      const fd = fs.openSync(file, flags === 'rw' ? fs.constants.O_RDWR | fs.constants.O_CREAT : flags);
      this.names.set(fd, file);
      return fd;
    } catch (e) {
      throw ioError(op, file, e);
    }
  }
  close(fd: number, op: string): void {
    try {
      fs.closeSync(fd);
    } catch (e) {
      throw ioError(op, this.names.get(fd), e);
    } finally {
      this.names.delete(fd);
    }
  }
  read(fd: number, buf: Uint8Array, offset: number, length: number, position: number, op: string): number {
    try {
      let done = 0;
      while (done < length) {
        const n = fs.readSync(fd, buf, offset + done, length - done, position + done);
        if (n === 0) break;
        done += n;
      }
      return done;
    } catch (e) {
      throw ioError(op, this.names.get(fd), e);
    }
  }
  write(fd: number, buf: Uint8Array, position: number, op: string): void {
    try {
      let done = 0;
      while (done < buf.length) done += fs.writeSync(fd, buf, done, buf.length - done, position + done);
    } catch (e) {
      throw ioError(op, this.names.get(fd), e);
    }
  }
  sync(fd: number, op: string): void {
    try {
      fs.fdatasyncSync(fd);
    } catch (e) {
      throw ioError(op, this.names.get(fd), e);
    }
  }
  async syncFile(file: string, op: string): Promise<void> {
    let handle: fs.promises.FileHandle | undefined;
    try {
      handle = await fs.promises.open(file, 'r');
      await handle.datasync();
    } catch (e) {
      throw ioError(op, file, e);
    } finally {
      await handle?.close();
    }
  }
  truncate(fd: number, length: number, op: string): void {
    try {
      fs.ftruncateSync(fd, length);
    } catch (e) {
      throw ioError(op, this.names.get(fd), e);
    }
  }
  size(fd: number): number {
    return fs.fstatSync(fd).size;
  }
  rename(from: string, to: string, op: string): void {
    try {
      fs.renameSync(from, to);
    } catch (e) {
      throw ioError(op, from, e);
    }
  }
  unlink(file: string, op: string): void {
    try {
      fs.rmSync(file, { force: true, recursive: true });
    } catch (e) {
      throw ioError(op, file, e);
    }
  }
  mkdir(dir: string, op: string): void {
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw ioError(op, dir, e);
    }
  }
  readdir(dir: string): string[] {
    try {
      return fs.readdirSync(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw ioError('readdir', dir, e);
    }
  }
  exists(file: string): boolean {
    return fs.existsSync(file);
  }
  syncDir(dir: string, op: string): void {
    let fd: number | undefined;
    try {
      fd = fs.openSync(dir, 'r');
      fs.fsyncSync(fd);
    } catch (e) {
      throw ioError(op, dir, e);
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }
  step(_op: string): void {
    // A label only: the real file system does nothing here.
  }
}

/**
 * Hands every call to another EngineFs. Wrappers (fault injection, timing) extend it and
 * override only the calls they act on.
 */
export class PassThroughFs implements EngineFs {
  constructor(protected readonly inner: EngineFs) {}
  open(file: string, flags: OpenFlags, op: string): number {
    return this.inner.open(file, flags, op);
  }
  close(fd: number, op: string): void {
    this.inner.close(fd, op);
  }
  read(fd: number, buf: Uint8Array, offset: number, length: number, position: number, op: string): number {
    return this.inner.read(fd, buf, offset, length, position, op);
  }
  write(fd: number, buf: Uint8Array, position: number, op: string): void {
    this.inner.write(fd, buf, position, op);
  }
  sync(fd: number, op: string): void {
    this.inner.sync(fd, op);
  }
  syncFile(file: string, op: string): Promise<void> {
    return this.inner.syncFile(file, op);
  }
  truncate(fd: number, length: number, op: string): void {
    this.inner.truncate(fd, length, op);
  }
  size(fd: number): number {
    return this.inner.size(fd);
  }
  rename(from: string, to: string, op: string): void {
    this.inner.rename(from, to, op);
  }
  unlink(file: string, op: string): void {
    this.inner.unlink(file, op);
  }
  mkdir(dir: string, op: string): void {
    this.inner.mkdir(dir, op);
  }
  readdir(dir: string): string[] {
    return this.inner.readdir(dir);
  }
  exists(file: string): boolean {
    return this.inner.exists(file);
  }
  syncDir(dir: string, op: string): void {
    this.inner.syncDir(dir, op);
  }
  step(op: string): void {
    this.inner.step(op);
  }
}

/**
 * What a fault plan decides for one labelled call: `crash` kills the process before
 * the step, `torn` (on writes) writes the first half and then kills, `fail` throws
 * IO_FAILED, undefined lets the call through.
 */
export type FaultAction = 'crash' | 'torn' | 'fail' | undefined;

/**
 * Wraps a real EngineFs and, at the calls its plan picks, kills the process with
 * SIGKILL (a real crash: no cleanup, no flush) or throws IO_FAILED. It counts what
 * it did so tests can prove the fault fired.
 */
export class FaultFs extends PassThroughFs {
  /** Labels seen, in order (bounded to the last 1000). */
  readonly seen: string[] = [];
  calls = 0;
  fired = 0;

  constructor(
    inner: EngineFs,
    private readonly plan: (op: string, call: number) => FaultAction,
    private readonly onCrash: (op: string, call: number) => void = () => {},
  ) {
    super(inner);
  }

  private check(op: string, canTear = false): 'torn' | undefined {
    this.calls++;
    if (this.seen.length >= 1000) this.seen.shift();
    this.seen.push(op);
    const action = this.plan(op, this.calls);
    if (action === undefined) return undefined;
    this.fired++;
    if (action === 'torn' && canTear) return 'torn';
    if (action === 'crash' || action === 'torn') {
      this.onCrash(op, this.calls);
      process.kill(process.pid, 'SIGKILL');
    }
    throw new GeodrError('IO_FAILED', 'injected fault', { operation: op });
  }

  override open(file: string, flags: OpenFlags, op: string): number {
    this.check(op);
    return this.inner.open(file, flags, op);
  }
  override write(fd: number, buf: Uint8Array, position: number, op: string): void {
    if (this.check(op, true) === 'torn') {
      // A crash in the middle of a write leaves part of it on disk.
      this.inner.write(fd, buf.subarray(0, Math.max(1, buf.length >> 1)), position, op);
      this.onCrash(`${op}#torn`, this.calls);
      process.kill(process.pid, 'SIGKILL');
    }
    this.inner.write(fd, buf, position, op);
  }
  override sync(fd: number, op: string): void {
    this.check(op);
    this.inner.sync(fd, op);
  }
  override async syncFile(file: string, op: string): Promise<void> {
    this.check(op);
    await this.inner.syncFile(file, op);
  }
  override truncate(fd: number, length: number, op: string): void {
    this.check(op);
    this.inner.truncate(fd, length, op);
  }
  override rename(from: string, to: string, op: string): void {
    this.check(op);
    this.inner.rename(from, to, op);
  }
  override unlink(file: string, op: string): void {
    this.check(op);
    this.inner.unlink(file, op);
  }
  override syncDir(dir: string, op: string): void {
    this.check(op);
    this.inner.syncDir(dir, op);
  }
  override step(op: string): void {
    this.check(op);
  }
}

/** Writes a small file atomically: temp file, fsync, rename, fsync of the directory. */
export function writeFileAtomic(efs: EngineFs, file: string, data: Uint8Array, op: string): void {
  const tmp = `${file}.tmp`;
  const fd = efs.open(tmp, 'w+', op);
  try {
    efs.write(fd, data, 0, op);
    efs.sync(fd, op);
  } finally {
    efs.close(fd, op);
  }
  efs.rename(tmp, file, op);
  efs.syncDir(path.dirname(file), op);
}

/** Reads a whole file, or undefined when it does not exist. */
export function readWholeFile(efs: EngineFs, file: string, op: string): Buffer | undefined {
  if (!efs.exists(file)) return undefined;
  const fd = efs.open(file, 'r', op);
  try {
    const size = efs.size(fd);
    const buf = Buffer.allocUnsafe(size);
    const n = efs.read(fd, buf, 0, size, 0, op);
    return buf.subarray(0, n);
  } finally {
    efs.close(fd, op);
  }
}
