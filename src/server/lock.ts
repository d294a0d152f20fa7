/** A FIFO async mutex with a wait limit: one writer per database at a time. */
import { GeodrError, type ErrorContext } from '../errors.js';

export class AsyncLock {
  private held = false;
  private readonly queue: Array<{ grant: () => void; timer: NodeJS.Timeout | undefined }> = [];

  get locked(): boolean {
    return this.held;
  }

  /** Takes the lock now if it is free. */
  tryAcquire(): boolean {
    if (this.held) return false;
    this.held = true;
    return true;
  }

  /** Waits up to `waitMs` for the lock, then fails with BUSY naming `context`. */
  acquire(waitMs: number, context: ErrorContext): Promise<void> {
    if (this.tryAcquire()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const entry = {
        grant: () => {
          if (entry.timer !== undefined) clearTimeout(entry.timer);
          resolve();
        },
        timer: undefined as NodeJS.Timeout | undefined,
      };
      entry.timer = setTimeout(() => {
        const i = this.queue.indexOf(entry);
        if (i >= 0) this.queue.splice(i, 1);
        reject(new GeodrError('BUSY', `waited ${waitMs} ms for another session's transaction to finish`, context));
      }, waitMs);
      this.queue.push(entry);
    });
  }

  release(): void {
    const next = this.queue.shift();
    if (next !== undefined) next.grant(); // ownership passes straight to the next waiter
    else this.held = false;
  }
}
