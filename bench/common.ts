/** Helpers shared by the benchmarks: logging with elapsed time, timed phases, page-cache control, tables. */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const t0 = performance.now();

/** A budget from BRIEF.md: the figure must be `op` `value`. */
export interface Budget {
  op: '>=' | '<=';
  value: number;
  what: string;
}

/** One figure in the printed table; `budget` names an entry of the bench's BUDGETS. */
export interface Figure {
  label: string;
  value: number;
  unit: string;
  budget?: string;
  digits?: number;
}

/** What a benchmark run collects: results for the JSON, figures for the table, phases, notes. */
export interface BenchContext<S> {
  dir: string;
  sizes: S;
  quick: boolean;
  results: Record<string, unknown>;
  figures: Figure[];
  phases: Array<{ phase: string; seconds: number }>;
  breakdowns: Array<{ title: string; unit: string; digits: number; rows: Record<string, number> }>;
  notes: string[];
}

/** A bad command line: run.ts turns it into exit code 2. */
export class UsageError extends Error {}

/** The options most benchmarks take: `--quick` (scaled-down sizes) and `--dir DIR` (work directory). */
export function parseQuickDir(args: string[]): { quick: boolean; dir: string | undefined } {
  let quick = false;
  let dir: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--quick') quick = true;
    else if (a === '--dir') {
      const v = args[++i];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} needs a value`);
      dir = v;
    } else throw new UsageError(`unknown option ${JSON.stringify(a)}`);
  }
  return { quick, dir };
}

export function log(msg: string): void {
  process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function secondsSince(start: number): number {
  return (performance.now() - start) / 1000;
}

export async function phase<T>(ctx: { phases: Array<{ phase: string; seconds: number }> }, name: string, fn: () => T | Promise<T>): Promise<T> {
  log(`${name} ...`);
  const start = performance.now();
  const r = await fn();
  const seconds = secondsSince(start);
  ctx.phases.push({ phase: name, seconds });
  log(`${name}: ${seconds.toFixed(2)} s`);
  return r;
}

export function removeDb(file: string): void {
  for (const f of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`, `${file}.geodr`, `${file}.restoring`]) fs.rmSync(f, { recursive: true, force: true });
}

/** Reads a file (or every file under a directory) so the timed step finds it in the page cache. */
export function warm(p: string): number {
  if (fs.statSync(p).isDirectory()) return fs.readdirSync(p).reduce((n, name) => n + warm(path.join(p, name)), 0);
  const buf = Buffer.allocUnsafe(8 << 20);
  const fd = fs.openSync(p, 'r');
  let total = 0;
  try {
    for (let n = fs.readSync(fd, buf, 0, buf.length, total); n > 0; n = fs.readSync(fd, buf, 0, buf.length, total)) total += n;
  } finally {
    fs.closeSync(fd);
  }
  return total;
}

/** Writes back dirty pages so one timed step does not pay for the previous one's writeback. */
export function syncAll(): void {
  execFileSync('sync');
}

export function rowsFor(bytes: number): number {
  return Math.round(bytes / 1024);
}

export function fmt(v: number, digits: number): string {
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function printTable(headers: string[], rows: string[][], rightAlign: boolean[]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (rightAlign[i] === true ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ');
  console.log(line(headers));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(r));
}


/** Runs `fn` from `concurrency` loops for `seconds`; returns completed calls per second. */
export async function rate(seconds: number, concurrency: number, fn: (i: number) => Promise<unknown>): Promise<number> {
  const end = performance.now() + seconds * 1000;
  let done = 0;
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await fn(next++);
        done++;
      }
    }),
  );
  return done / ((performance.now() - t0) / 1000);
}

/**
 * Prints a benchmark's figures against its budgets (or targets), its breakdowns, its
 * phases and its notes: the table every benchmark ends with.
 */
export function printReport<S>(title: string, ctx: BenchContext<S>, budgets: Record<string, Budget>, label: 'budget' | 'target' = 'budget'): void {
  console.log(`\ngeodr ${title} benchmark${ctx.quick ? ' (QUICK: scaled-down sizes)' : ''}\n`);
  const rows = ctx.figures.map((f) => {
    const b = f.budget === undefined ? undefined : budgets[f.budget];
    const value = `${fmt(f.value, f.digits ?? 3)} ${f.unit}`;
    if (b === undefined) return [f.label, value, '', '', ''];
    // value/budget ≥ 1 passes a "≥" budget; ≤ 1 passes a "≤" budget.
    const pass = b.op === '>=' ? f.value >= b.value : f.value <= b.value;
    return [f.label, value, `${b.op === '>=' ? '≥' : '≤'} ${Number.isInteger(b.value) ? fmt(b.value, 0) : String(b.value)}`, fmt(f.value / b.value, 2), pass ? 'PASS' : 'MISS'];
  });
  printTable(['figure', 'value', label, `value/${label}`, ''], rows, [false, true, true, true, false]);
  for (const b of ctx.breakdowns) {
    console.log(`\n${b.title}`);
    printTable(
      ['part', b.unit],
      Object.entries(b.rows).map(([k, v]) => [k, fmt(v, b.digits)]),
      [false, true],
    );
  }
  console.log('\nphases');
  printTable(
    ['phase', 'seconds'],
    ctx.phases.map((p) => [p.phase, fmt(p.seconds, 2)]),
    [false, true],
  );
  for (const n of ctx.notes) console.log(`\nnote: ${n}`);
}
