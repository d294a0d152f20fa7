/**
 * Readers during apply: connections reading a replica while it applies records
 * see whole transactions only. Every primary transaction moves money between
 * accounts and appends a ledger row with an overflow-page memo, so the total is
 * constant and the ledger count equals the transfers done; a torn or stale read
 * breaks one of the two.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep, setImmediate as tick } from 'node:timers/promises';
import { PrimaryDatabase } from './primary.js';
import { ReplicaDatabase } from './replica.js';
import { takeSnapshot } from './snapshot.js';
import type { Connection } from './sqlite.js';
import { dumpHash, integrity, prng, tempDir } from './testing/helpers.js';

const ACCOUNTS = 200;
const TOTAL = ACCOUNTS * 1000;

function books(c: Connection): { total: number; ledger: number; moved: number } {
  const a = c.prepare('select sum(balance) as total from accounts').get() as { total: number };
  const l = c.prepare('select count(*) as n, coalesce(sum(amount), 0) as moved from ledger').get() as { n: number; moved: number };
  return { total: a.total, ledger: l.n, moved: l.moved };
}

function balances(c: Connection): string {
  return (c.prepare('select group_concat(balance) as b from (select balance from accounts order by id)').get() as { b: string }).b;
}

test('readers of a replica never see a partial or stale-mixed transaction', { timeout: 120_000 }, async () => {
  const { dir, cleanup } = tempDir();
  const rand = prng(Number(process.env.GEODR_SEED ?? 0x5eed));
  const p = PrimaryDatabase.open({ file: path.join(dir, 'p.db'), durability: 'group', checkpointFrames: 200 });
  p.write((c) => {
    c.exec('create table accounts(id integer primary key, balance integer not null, pad blob)');
    c.exec('create table ledger(id integer primary key, src int, dst int, amount int, memo blob)');
    const st = c.prepare('insert into accounts(id, balance, pad) values (?, 1000, ?)');
    // Padding spreads the accounts over many pages, so one transfer touches several.
    for (let i = 1; i <= ACCOUNTS; i++) st.run(i, Buffer.alloc(300, i % 250));
  });
  const r = ReplicaDatabase.create({ file: path.join(dir, 'r.db') }, path.join(p.stateDir, 'snapshots', '0000000000000000.full'), p.dbId);
  r.apply([...p.records(1)]);
  let transfers = 0;
  let reads = 0;
  let lastLedger = 0;
  let stop = false;
  const violations: string[] = [];

  const check = (c: Connection, where: string): { ledger: number } => {
    const b = books(c);
    if (b.total !== TOTAL) violations.push(`${where}: total ${b.total}`);
    return b;
  };

  // A reader that polls between applies, with one connection kept open throughout
  // (it must notice every new version through the header's change counter).
  const poller = (async () => {
    while (!stop) {
      r.read((c) => {
        const b = check(c, 'poll');
        if (b.ledger < lastLedger) violations.push(`poll: ledger went back from ${lastLedger} to ${b.ledger}`);
        lastLedger = b.ledger;
      });
      reads++;
      await tick();
    }
  })();

  // Long read transactions that span awaits: their view must not change under them.
  const longReads = (async () => {
    let applyDuring = 0;
    while (!stop) {
      const tx = await r.beginRead();
      const before = check(tx.conn, 'long-begin');
      const appliesBefore = r.applies;
      await sleep(3);
      const after = check(tx.conn, 'long-end');
      if (after.ledger !== before.ledger) violations.push(`long read saw ledger ${before.ledger} then ${after.ledger}`);
      if (r.applies !== appliesBefore) applyDuring++;
      tx.end();
      await sleep(1);
    }
    return applyDuring;
  })();

  try {
    for (let round = 0; round < 250; round++) {
      const k = 1 + Math.floor(rand() * 4);
      for (let i = 0; i < k; i++) {
        const src = 1 + Math.floor(rand() * ACCOUNTS);
        const dst = 1 + Math.floor(rand() * ACCOUNTS);
        const amount = 1 + Math.floor(rand() * 50);
        // Most transfers only update pages in place: the file keeps its size and free
        // list, so only the change counter tells a reader's cache it is stale.
        const logged = rand() < 0.25;
        p.write((c) => {
          c.prepare('update accounts set balance = balance - ? where id = ?').run(amount, src);
          c.prepare('update accounts set balance = balance + ? where id = ?').run(amount, dst);
          if (logged) c.prepare('insert into ledger(src, dst, amount, memo) values (?, ?, ?, ?)').run(src, dst, amount, Buffer.alloc(1500 + Math.floor(rand() * 6000), round % 250));
        });
        if (logged) transfers++;
      }
      await r.applyWhenIdle([...p.records(r.txid + 1)]);
      // Fresh, not just consistent: a reader whose cache survived the apply would
      // still see a whole (old) state, so compare with the primary at the same TXID.
      assert.equal(r.txid, p.txid);
      assert.equal(r.read(balances), p.read(balances), `reader is stale at TXID ${r.txid}`);
      await tick();
    }
  } finally {
    stop = true;
  }
  await poller;
  const applyDuringLongRead = await longReads;
  assert.deepEqual(violations, []);
  assert.equal(applyDuringLongRead, 0, 'no apply ran inside an open read transaction');
  assert.ok(reads > 100, `the poller read ${reads} times`);
  const final = r.read(books);
  assert.equal(final.total, TOTAL);
  assert.equal(final.ledger, transfers);
  assert.equal(r.read(integrity), 'ok');
  r.close();
  p.close();
  cleanup();
});

test('seeding with createAsync lets other work run between chunks and builds the same replica as create', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const p = PrimaryDatabase.open({ file: path.join(dir, 'p.db') });
    // About 24 MiB: three 8 MiB chunks of the unit, so at least two pauses.
    for (let b = 0; b < 6; b++) p.write((c) => {
      if (b === 0) c.exec('create table t(x blob)');
      const st = c.prepare('insert into t values (randomblob(4000))');
      for (let i = 0; i < 1000; i++) st.run();
    });
    const snap = await takeSnapshot(p, path.join(dir, 'snap'), { durable: false });
    let turns = 0;
    let ticking = true;
    const ticker = (async () => {
      while (ticking) {
        await tick();
        turns++;
      }
    })();
    const a = await ReplicaDatabase.createAsync({ file: path.join(dir, 'a.db') }, snap.file, p.dbId);
    const during = turns;
    ticking = false;
    await ticker;
    assert.ok(during >= 2, `other work ran ${during} times while the replica was built`);
    const b = ReplicaDatabase.create({ file: path.join(dir, 'b.db') }, snap.file, p.dbId);
    assert.equal(a.txid, p.txid);
    assert.equal(a.read(dumpHash), b.read(dumpHash));
    assert.equal(a.read(dumpHash), p.read(dumpHash));
    assert.equal(a.read(integrity), 'ok');
    a.close();
    b.close();
    p.close();
  } finally {
    cleanup();
  }
});
