/** Output of the CLI: aligned tables, `key: value` blocks, JSON, sizes, and the progress bar. */
import type { Operation, SqlValue } from '../sdk/index.js';

export function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** JSON for machines: two-space indented, one document per call. */
export function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

/** Columns padded to their widest cell, separated by two spaces; the last column is not padded. */
export function table(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** `key: value` lines with the values aligned. */
export function keyValues(pairs: ReadonlyArray<readonly [string, string]>): string {
  const w = Math.max(0, ...pairs.map(([k]) => k.length)) + 1;
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(w)} ${v}`.trimEnd()).join('\n');
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 10485760 → "10 MiB"; 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : Number(v.toFixed(v < 10 ? 2 : 1))} ${UNITS[u]}`;
}

/** Milliseconds since the epoch or an ISO string, shown as ISO; null as "-". */
export function formatTime(t: number | string | null): string {
  if (t === null) return '-';
  return typeof t === 'number' ? new Date(t).toISOString() : t;
}

/** Seconds as the largest two units: 0.4 → "0.4 s", 75 → "1 min 15 s", 90000 → "1 d 1 h". */
export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${Number(seconds.toFixed(seconds < 10 ? 1 : 0))} s`;
  const s = Math.round(seconds);
  const [d, h, m] = [Math.floor(s / 86_400), Math.floor((s % 86_400) / 3600), Math.floor((s % 3600) / 60)];
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  return `${m} min ${s % 60} s`;
}

/**
 * A SQL value for a table cell: NULL, integers as digits, REALs with a fraction or
 * ".0" (so REAL 2.0 and INTEGER 2 differ, as in the sqlite3 shell), BLOBs as x'hex'.
 * Control characters are escaped so a value cannot break the table.
 */
export function formatSqlValue(v: SqlValue): string {
  if (v === null) return 'NULL';
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return v > 0 ? 'Inf' : '-Inf';
    return Number.isInteger(v) && Math.abs(v) < 1e21 ? `${v}.0` : String(v);
  }
  if (typeof v === 'string') return escapeControl(v);
  const hex = Buffer.from(v.buffer, v.byteOffset, Math.min(v.byteLength, 32)).toString('hex');
  return `x'${hex}'${v.byteLength > 32 ? `… (${v.byteLength} bytes)` : ''}`;
}

function escapeControl(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f]/g, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : c === '\r' ? '\\r' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
}

/**
 * Shows an operation's progress on stderr: a bar redrawn in place on a terminal, or
 * plain "kind 50%" lines at most once a second when stderr is a file or pipe (logs).
 */
export class ProgressBar {
  private lastLine = '';
  private lastPrinted = 0;
  private drawn = 0;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly width = 30,
  ) {}

  update(op: Operation): void {
    const pct = Math.max(0, Math.min(100, Math.round(op.percentComplete)));
    if (this.stream.isTTY === true) {
      const filled = Math.round((pct / 100) * this.width);
      const text = `[${'#'.repeat(filled)}${' '.repeat(this.width - filled)}] ${String(pct).padStart(3)}% ${op.kind} ${op.state}`;
      if (text === this.lastLine) return;
      // Pad to the previous length so a shorter line leaves no tail behind.
      this.stream.write(`\r${text.padEnd(this.drawn)}`);
      this.drawn = text.length;
      this.lastLine = text;
      return;
    }
    const line = `${op.kind} ${pct}%`;
    const now = Date.now();
    if (line !== this.lastLine && now - this.lastPrinted >= 1000) {
      this.stream.write(`${line}\n`);
      this.lastLine = line;
      this.lastPrinted = now;
    }
  }

  /** Ends the display, showing the final state if it was not shown yet. */
  finish(op: Operation | undefined): void {
    if (this.stream.isTTY === true) {
      if (op !== undefined) this.update(op);
      if (this.drawn > 0) this.stream.write('\n');
      return;
    }
    if (op !== undefined) {
      const line = `${op.kind} ${Math.round(op.percentComplete)}%`;
      if (line !== this.lastLine) this.stream.write(`${line}\n`);
    }
  }
}
