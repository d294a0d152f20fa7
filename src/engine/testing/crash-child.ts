/**
 * The crash test's workload, run as a child process by crash.test.ts:
 *
 *   node crash-child.js <dir> <seed> <crashAt> [iterations]
 *
 * Every durable step goes through a FaultFs that SIGKILLs this process at labelled
 * call number `crashAt` (as a plain crash or, for writes, a torn one: chosen by the
 * seed). Opening runs recovery, so the kill can land there too. The workload writes,
 * captures, checkpoints, applies to a replica, compacts, snapshots and vacuums.
 *
 * Protocol (one line per event, written synchronously so a kill cannot lose a line
 * that describes something already done):
 *   stdout  OPEN <calls>         recovery is over (after <calls> labelled calls)
 *           TRY <id>             an insert of <id> is about to be attempted
 *           ACK <id> <txid>      the insert is durable (write() returned; with group
 *                                commit, waitDurable() resolved too)
 *           TRYDEL <id,id,...>   a delete of these ids is about to be attempted
 *           DELACK <txid>        that delete is durable
 *           TX <txid> <what>     another write (update, vacuum) is done: it may change
 *                                nothing (same TXID) when it leaves every page as it was
 *   stderr  CRASH <label>        FaultFs is about to kill the process at <label>
 *           CALLS <n>            clean exit after <n> labelled calls
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LocalChain } from '../chain.js';
import { compact } from '../compact.js';
import { FaultFs, NodeFs, type FaultAction } from '../fs.js';
import { PrimaryDatabase } from '../primary.js';
import { ReplicaDatabase } from '../replica.js';
import type { Connection } from '../sqlite.js';
import { takeSnapshot } from '../snapshot.js';
import { prng } from './helpers.js';

/** crash.test.ts opens the primary with these options too. */
const CRASH_PRIMARY_OPTIONS = { durability: 'commit', checkpointFrames: 20, segmentBytes: 256 << 10 } as const;
/** Live rows are kept near this many so the database (and each strict rehash) stays small. */
const MAX_ROWS = 120;

function out(line: string): void {
  fs.writeSync(1, `${line}\n`);
}

function payload(rand: () => number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (rand() * 256) | 0;
  return b;
}

/** Mostly small rows, some with overflow chains (up to 20000 bytes). */
function payloadSize(rand: () => number): number {
  return rand() < 0.7 ? Math.floor(rand() * 600) : Math.floor(rand() * 20_001);
}

const ROLLBACK = new Error('rolled back on purpose');

/** Fills and empties a scratch table in the current transaction with a 20-page cache, then commits or throws ROLLBACK. */
function bulk(c: Connection, rand: () => number, end: 'commit' | 'rollback'): void {
  const cache = c.pragma('cache_size', { simple: true }) as number;
  c.pragma('cache_size = 20');
  try {
    c.exec('create table if not exists c(v blob)');
    const ins = c.prepare('insert into c(v) values (?)');
    for (let i = 0; i < 300; i++) ins.run(payload(rand, 400));
    c.exec('delete from c');
  } finally {
    c.pragma(`cache_size = ${cache}`);
  }
  if (end === 'rollback') throw ROLLBACK;
}

async function main(): Promise<void> {
  const [dir, seedArg, crashArg, iterArg] = process.argv.slice(2);
  if (dir === undefined || seedArg === undefined || crashArg === undefined) {
    throw new Error('usage: crash-child <dir> <seed> <crashAt> [iterations]');
  }
  const seed = Number(seedArg);
  const crashAt = Number(crashArg);
  const iterations = Number(iterArg ?? 100);
  const rand = prng(seed);
  const action: FaultAction = rand() < 0.5 ? 'torn' : 'crash';
  const efs = new FaultFs(
    new NodeFs(),
    (_op, call) => (call === crashAt ? action : undefined),
    (op) => fs.writeSync(2, `CRASH ${op}\n`),
  );

  // A third of the runs use group commit: a write is then acknowledged only once
  // waitDurable() says the log fsync covering it is done.
  const durability = rand() < 0.33 ? 'group' : 'commit';
  const file = path.join(dir, 'p.db');
  const primary = PrimaryDatabase.open({ file, efs, strict: true, ...CRASH_PRIMARY_OPTIONS, durability, groupCommitMs: 2 });
  const replica = ReplicaDatabase.open({ file: path.join(dir, 'r.db'), efs });
  out(`OPEN ${efs.calls}`);
  // Compaction's scratch files stay inside the work dir, so a kill mid-roll leaves nothing in /tmp.
  const scratchDir = path.join(dir, 'scratch');
  fs.mkdirSync(scratchDir, { recursive: true });

  const maxId = (): number => primary.read((c) => (c.prepare('select max(id) as m from a').get() as { m: number | null }).m) ?? 0;
  let next = maxId();
  for (let i = 0; i < iterations; i++) {
    const id = ++next;
    const size = payloadSize(rand);
    const blob = payload(rand, size);
    // Now and then a big transaction with a cache too small for it, so SQLite spills
    // uncommitted frames into the WAL before it commits, or before it rolls back.
    const spill = rand() < 0.04 ? (rand() < 0.5 ? 'commit' : 'rollback') : undefined;
    out(`TRY ${id}`);
    try {
      // One transaction for both tables: a and b must never be seen out of step.
      const { txid } = primary.write((c) => {
        c.prepare('insert into a(id) values (?)').run(id);
        c.prepare('insert into b(id, len, payload) values (?, ?, ?)').run(id, size, blob);
        if (spill !== undefined) bulk(c, rand, spill);
      });
      await primary.waitDurable(txid);
      out(`ACK ${id} ${txid}`);
    } catch (e) {
      if (e !== ROLLBACK) throw e;
    }

    if (rand() < 0.15) {
      const ids = primary.read((c) => (c.prepare('select id from b').raw().all() as number[][]).map((r) => r[0]!));
      const pick = ids[Math.floor(rand() * ids.length)]!;
      const n = payloadSize(rand);
      const w = primary.write((c) => c.prepare('update b set len = ?, payload = ? where id = ?').run(n, payload(rand, n), pick));
      out(`TX ${w.txid} update`);
    }

    const rows = primary.read((c) => (c.prepare('select id from a order by id').raw().all() as number[][]).map((r) => r[0]!));
    if (rows.length > MAX_ROWS || rand() < 0.05) {
      // Never the newest id: ids continue from max(id) in the next run, so it must stay.
      const candidates = rows.slice(0, -1);
      const count = rows.length > MAX_ROWS ? rows.length - MAX_ROWS + 10 : 1 + Math.floor(rand() * 2);
      const victims: number[] = [];
      while (victims.length < count && candidates.length > 0) victims.push(candidates.splice(Math.floor(rand() * candidates.length), 1)[0]!);
      if (victims.length > 0) {
        out(`TRYDEL ${victims.join(',')}`);
        const w = primary.write((c) => {
          const list = victims.join(',');
          c.exec(`delete from a where id in (${list}); delete from b where id in (${list})`);
        });
        await primary.waitDurable(w.txid);
        out(`DELACK ${w.txid}`);
      }
    }

    if (rand() < 0.25) replica.apply([...primary.records(replica.txid + 1)]);
    if (rand() < 0.08) primary.checkpoint();
    if (rand() < 0.02) {
      const w = primary.write((c) => c.exec('vacuum'), { transaction: false });
      out(`TX ${w.txid} vacuum`);
    }
    if (rand() < 0.05) compact(efs, new LocalChain(efs, primary.stateDir, primary.txLog), { spans: [10, 50], scratchDir });
    if (rand() < 0.03) await takeSnapshot(primary);
  }
  replica.apply([...primary.records(replica.txid + 1)]);
  replica.close();
  primary.close();
  fs.writeSync(2, `CALLS ${efs.calls}\n`);
}

await main();
