/**
 * `npm run bench -- server`: the SQL endpoint's read and write rates over HTTP against
 * a real server process, the write rate relative to in-process better-sqlite3 on the
 * same data, how long an endless statement holds the server before its deadline stops
 * it, and the resident memory of a server hosting 10,000 idle databases.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { spawnServer, type ServerProcess } from '../src/server/testing/spawn.js';
import { parseQuickDir, rate } from './common.js';

export const SERVER_USAGE = `options:
  --quick           1,000 idle databases and 2 s per rate instead of 10,000 and 6 s
  --dir DIR         work directory (default: the OS temp dir)`;

const BUDGET = { idleDatabases: 10_000, idleRssMiB: 1024 };
/** The bench server's statement deadline, for the endless-statement figure. */
const STATEMENT_TIMEOUT_MS = 1000;

function log(s: string): void {
  console.log(s);
}

async function post(sp: ServerProcess, route: string, body: unknown, method = 'POST'): Promise<unknown> {
  const r = await fetch(`${sp.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${sp.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = (await r.json());
  if (!r.ok) throw new Error(`${method} ${route}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

function rssMiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m === null ? NaN : Number(m[1]) / 1024;
}

function openFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

export async function runServerBench(args: string[]): Promise<void> {
  const opts = parseQuickDir(args);
  const base = opts.dir ?? os.tmpdir();
  const dir = fs.mkdtempSync(path.join(base, 'geodr-bench-server-'));
  const seconds = opts.quick ? 2 : 6;
  const idleCount = opts.quick ? 1000 : BUDGET.idleDatabases;
  const concurrency = 16;
  const results: Record<string, number> = {};
  const notes: string[] = [];
  const loadAtStart = os.loadavg().map((x) => Math.round(x * 100) / 100);
  log(`work directory ${dir}${opts.quick ? ' (quick)' : ''}; load average ${loadAtStart.join(' ')}`);
  let sp: ServerProcess | undefined;
  try {
    sp = await spawnServer({ dataDir: path.join(dir, 'server'), config: { limits: { idleCloseMs: 3000, statementTimeoutMs: STATEMENT_TIMEOUT_MS } } });
    await post(sp, '/v1/databases/bench', {}, 'PUT');
    await post(sp, '/v1/databases/bench/query', { sql: 'create table kv(k integer primary key, v text)' });
    await post(sp, '/v1/databases/bench/query', {
      sql: "insert into kv with recursive n(i) as (select 1 union all select i + 1 from n where i < 10000) select i, 'value-' || i from n",
    });
    const s = sp;
    results.sqlPointReadsPerSec = await rate(seconds, concurrency, async (i) => {
      await post(s, '/v1/databases/bench/query', { sql: 'select v from kv where k = ?', args: [(i % 10000) + 1] });
    });
    log(`point reads over HTTP: ${results.sqlPointReadsPerSec.toFixed(0)}/s (${concurrency} in flight)`);
    results.sqlWriteTxnPerSec = await rate(seconds, concurrency, async (i) => {
      await post(s, '/v1/databases/bench/query', { sql: 'insert into kv(v) values (?)', args: [`w-${i}`] });
    });
    log(`durable single-row write transactions over HTTP: ${results.sqlWriteTxnPerSec.toFixed(0)}/s (${concurrency} in flight, group commit)`);

    // The same writes in-process on plain better-sqlite3 in WAL mode: durable per commit
    // (synchronous=FULL, the endpoint's guarantee) and relaxed (NORMAL).
    for (const sync of ['FULL', 'NORMAL'] as const) {
      const file = path.join(dir, `inproc-${sync}.db`);
      const db = new Database(file);
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${sync}`);
      db.exec('create table kv(k integer primary key, v text)');
      db.exec("insert into kv with recursive n(i) as (select 1 union all select i + 1 from n where i < 10000) select i, 'value-' || i from n");
      const ins = db.prepare('insert into kv(v) values (?)');
      const t0 = performance.now();
      let n = 0;
      while (performance.now() - t0 < seconds * 1000) ins.run(`w-${n++}`);
      const perSec = n / ((performance.now() - t0) / 1000);
      db.close();
      if (sync === 'FULL') results.inProcessDurableTxnPerSec = perSec;
      else results.inProcessRelaxedTxnPerSec = perSec;
      log(`in-process better-sqlite3, WAL, synchronous=${sync}: ${perSec.toFixed(0)} txn/s`);
    }
    results.sqlVsInProcessRatio = results.sqlWriteTxnPerSec / results.inProcessDurableTxnPerSec!;
    results.sqlVsInProcessRelaxedRatio = results.sqlWriteTxnPerSec / results.inProcessRelaxedTxnPerSec!;
    notes.push('sqlVsInProcessRatio compares durable acknowledgements on both sides (endpoint: group-committed log fsync; in-process: synchronous=FULL, one fsync per commit). sqlVsInProcessRelaxedRatio compares with synchronous=NORMAL, which acknowledges before anything is durable.');

    // A noisy neighbour: a statement that computes forever without yielding a row, while
    // another database is read. Both wait for the deadline to interrupt it.
    await post(s, '/v1/databases/noisy', {}, 'PUT');
    const tEndless = performance.now();
    let endlessDone = false;
    const endless = post(s, '/v1/databases/noisy/query', { sql: 'with recursive n(i) as (select 1 union all select i + 1 from n) select max(i) from n' }).then(
      (r) => `an answer: ${JSON.stringify(r)}`,
      (e: Error) => e.message,
    );
    void endless.finally(() => (endlessDone = true));
    let neighbourMaxMs = 0;
    while (!endlessDone) {
      const t = performance.now();
      await post(s, '/v1/databases/bench/query', { sql: 'select v from kv where k = 1' });
      neighbourMaxMs = Math.max(neighbourMaxMs, performance.now() - t);
    }
    const answer = await endless;
    if (!answer.includes('STATEMENT_TIMEOUT')) throw new Error(`the endless statement got ${answer}, not STATEMENT_TIMEOUT`);
    results.endlessStatementStoppedMs = performance.now() - tEndless;
    results.endlessStatementDeadlineRatio = results.endlessStatementStoppedMs / STATEMENT_TIMEOUT_MS;
    results.neighbourReadMaxMsDuringEndless = neighbourMaxMs;
    log(`an endless statement was stopped after ${results.endlessStatementStoppedMs.toFixed(0)} ms (deadline ${STATEMENT_TIMEOUT_MS} ms); the slowest read of another database meanwhile took ${neighbourMaxMs.toFixed(0)} ms`);

    // Many idle databases: create, touch each once, let the LRU and the idle sweep close them.
    const pid = sp.proc.pid!;
    const rssBefore = rssMiB(pid);
    await post(s, '/v1/elasticPools/idle', { maxDatabases: idleCount }, 'PUT');
    const t0 = performance.now();
    let made = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (;;) {
          const i = made++;
          if (i >= idleCount) return;
          const name = `idle-${String(i).padStart(5, '0')}`;
          await post(s, `/v1/databases/${name}`, { elasticPoolName: 'idle' }, 'PUT');
          await post(s, `/v1/databases/${name}/query`, { sql: 'create table t(x)' });
          if ((i + 1) % 1000 === 0) log(`  ${i + 1} databases created and touched; RSS ${rssMiB(pid).toFixed(0)} MiB, ${openFds(pid)} fds`);
        }
      }),
    );
    results.idleDatabaseCreatePerSec = idleCount / ((performance.now() - t0) / 1000);
    results.peakRssMiB = rssMiB(pid);
    await new Promise((r) => setTimeout(r, 6000));
    results.idleDatabases = idleCount;
    results.idleRssMiB = rssMiB(pid);
    results.idleOpenFds = openFds(pid);
    results.rssBeforeIdleMiB = rssBefore;
    results.idleRssBudgetRatio = results.idleRssMiB / BUDGET.idleRssMiB;
    log(`${idleCount} idle databases: RSS ${results.idleRssMiB.toFixed(0)} MiB (budget ${BUDGET.idleRssMiB}; ratio ${results.idleRssBudgetRatio.toFixed(2)}), ${results.idleOpenFds} open fds; created at ${results.idleDatabaseCreatePerSec.toFixed(0)}/s`);
  } finally {
    if (sp !== undefined) await sp.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log('\nserver benchmark');
  console.log(`  sqlPointReadsPerSec      ${results.sqlPointReadsPerSec.toFixed(0)}`);
  console.log(`  sqlWriteTxnPerSec        ${results.sqlWriteTxnPerSec.toFixed(0)}`);
  console.log(`  sqlVsInProcessRatio      ${results.sqlVsInProcessRatio.toFixed(3)} (durable vs durable)`);
  console.log(`  endlessStatementStoppedMs ${results.endlessStatementStoppedMs.toFixed(0)} (deadline ${STATEMENT_TIMEOUT_MS}; ratio ${results.endlessStatementDeadlineRatio.toFixed(2)})`);
  console.log(`  neighbourReadMaxMsDuringEndless ${results.neighbourReadMaxMsDuringEndless.toFixed(0)} (one statement holds the event loop until its deadline)`);
  console.log(`  idleDatabases            ${results.idleDatabases} (budget ${BUDGET.idleDatabases}) ${results.idleDatabases >= BUDGET.idleDatabases ? 'pass' : 'quick run'}`);
  console.log(`  idleRssMiB               ${results.idleRssMiB.toFixed(0)} (budget ≤ ${BUDGET.idleRssMiB}; ratio ${results.idleRssBudgetRatio.toFixed(2)}) ${results.idleRssMiB <= BUDGET.idleRssMiB ? 'pass' : 'MISS'}`);
  const json = {
    bench: 'server',
    quick: opts.quick,
    date: new Date().toISOString(),
    ...results,
    budgets: BUDGET,
    machine: { cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, loadAverageAtStart: loadAtStart, loadAverageAtEnd: os.loadavg() },
    notes,
  };
  const resultsDir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  fs.mkdirSync(resultsDir, { recursive: true });
  const target = path.join(resultsDir, 'server.json');
  fs.writeFileSync(`${target}.tmp`, JSON.stringify(json, null, 2) + '\n');
  fs.renameSync(`${target}.tmp`, target);
  console.log(`\nresults written to ${path.relative(process.cwd(), target) || target}`);
}
