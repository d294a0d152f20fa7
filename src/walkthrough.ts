/**
 * `npm start`: a walkthrough of the engine on a sample tenant database. It writes
 * to a primary, keeps a replica following it, takes a snapshot, compacts, restores
 * to a point in time, and promotes the replica, printing what it measured.
 * (The server issue replaces this with a local two-region deployment.)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  checksumHex,
  compact,
  LocalChain,
  materialize,
  NodeFs,
  openConnection,
  PrimaryDatabase,
  ReplicaDatabase,
  takeSnapshot,
  type TxRecord,
} from './engine/index.js';

const dir = path.resolve(process.argv[2] ?? '.geodr-dev/walkthrough');
const efs = new NodeFs();

function say(step: string, detail = ''): void {
  console.log(`\n▸ ${step}${detail !== '' ? `\n  ${detail.split('\n').join('\n  ')}` : ''}`);
}

function countOrders(file: string): number {
  const db = openConnection(file, { readonly: true });
  try {
    return (db.prepare('select count(*) as n from orders').get() as { n: number }).n;
  } finally {
    db.close();
  }
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

async function main(): Promise<void> {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  console.log(`geodr engine walkthrough — files in ${dir}`);

  const primary = PrimaryDatabase.open({ file: path.join(dir, 'tenant-acme.db'), durability: 'group' });
  primary.write((c) => c.exec('create table orders(id integer primary key, customer text, amount integer, note text)'));
  say('Primary created', `database id ${primary.dbId}, epoch ${primary.epoch}, page size ${primary.pageSize}`);

  const replica = ReplicaDatabase.create({ file: path.join(dir, 'tenant-acme.replica.db') }, path.join(primary.stateDir, 'snapshots', '0000000000000000.full'), primary.dbId);
  replica.apply([...primary.records(1)]);
  // The replica follows through the record stream, applying in batches as they arrive.
  let pending: TxRecord[] = [];
  let appliedBytes = 0;
  let applyMs = 0;
  let maxLag = 0;
  primary.onRecord((r) => pending.push(r));
  const follow = (): void => {
    // Listeners only receive durable records; flush hands over what group commit holds.
    primary.flush();
    if (pending.length === 0) return;
    const batch = pending;
    pending = [];
    const t = performance.now();
    replica.apply(batch);
    applyMs += performance.now() - t;
    appliedBytes += batch.reduce((n, r) => n + r.pages.length * r.pageSize, 0);
  };

  const N = 5000;
  const marks: Array<{ txid: number; time: number; rows: number }> = [];
  const t0 = performance.now();
  for (let i = 1; i <= N; i++) {
    primary.write((c) => c.prepare('insert into orders(customer, amount, note) values (?, ?, ?)').run(`customer-${i % 97}`, (i * 37) % 1000, 'x'.repeat(i % 200)));
    if (i % 50 === 0) {
      maxLag = Math.max(maxLag, primary.txid - replica.txid);
      follow();
    }
    if (i % 1000 === 0) {
      marks.push({ txid: primary.txid, time: primary.status().lastWriteTime, rows: i });
      await new Promise((r) => setTimeout(r, 15));
    }
  }
  await primary.waitDurable();
  const writeMs = performance.now() - t0;
  follow();
  say(
    'Wrote to the primary with capture on',
    `${fmt(N)} transactions in ${fmt(writeMs)} ms — ${fmt((N / writeMs) * 1000)} txn/s (group commit)\n` +
      `log: TXIDs ${primary.txLog.firstTxid}..${primary.txLog.lastTxid}, checksum ${checksumHex(primary.checksum)}`,
  );
  say(
    'Replica followed',
    `at TXID ${replica.txid} (primary ${primary.txid}), largest lag ${maxLag} transactions\n` +
      `checksums equal: ${checksumHex(replica.checksum) === checksumHex(primary.checksum)}; applied ${fmt(appliedBytes / 1e6, 1)} MB of pages at ${fmt(appliedBytes / 1e6 / (applyMs / 1000), 0)} MB/s\n` +
      `a reader on the replica counts ${replica.read((c) => (c.prepare('select count(*) as n from orders').get() as { n: number }).n)} orders`,
  );

  const t1 = performance.now();
  const snap = await takeSnapshot(primary);
  say('Snapshot taken while writes could go on', `full snapshot at TXID ${snap.txid} in ${fmt(performance.now() - t1, 1)} ms → ${path.relative(dir, snap.file)}`);

  const chain = new LocalChain(efs, primary.stateDir, primary.txLog);
  const t2 = performance.now();
  const c = compact(efs, chain, { spans: [100, 1000], scratchDir: dir });
  say('Compacted the history', `${c.created.length} units and ${c.snapshots.length} rolled snapshots in ${fmt(performance.now() - t2)} ms`);

  const mark = marks[2]!;
  const t3 = performance.now();
  const restored = materialize({ source: chain, target: { time: mark.time }, out: path.join(dir, 'tenant-acme.restored.db') });
  const rows = countOrders(restored.file);
  say(
    'Point-in-time restore',
    `target ${new Date(mark.time).toISOString()} → TXID ${restored.txid} (${restored.unitsApplied} units + ${restored.recordsApplied} records) in ${fmt(performance.now() - t3, 1)} ms\n` +
      `verified: every step of the checksum chain, final checksum ${checksumHex(restored.checksum)}, integrity_check ok\n` +
      `restored orders: ${rows} (expected ${mark.rows})`,
  );

  const t4 = performance.now();
  primary.close();
  const promoted = replica.promote();
  const promoteMs = performance.now() - t4;
  promoted.write((conn) => conn.prepare('insert into orders(customer, amount, note) values (?, ?, ?)').run('after-failover', 1, 'written on the promoted replica'));
  say('Promoted the replica', `new primary at TXID ${promoted.txid}, epoch ${promoted.epoch} (was ${promoted.epoch - 1}); promotion took ${fmt(promoteMs, 1)} ms`);
  promoted.close();
  console.log(`\nDone. Run \`npm test\` for the test suite and \`npm run bench -- engine\` for the benchmarks.`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
