/**
 * Statement deadlines (native/deadline.c through withDeadline): a statement that
 * never yields a row is interrupted, only on its own connection, only while armed,
 * and connections closed while armed leave the watchdog sound.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { isInterrupt, openConnection, statementDeadlines, withDeadline, type Connection } from './sqlite.js';
import { tempDir } from './testing/helpers.js';

const FOREVER = 'select max(i) from (with recursive n(i) as (select 1 union all select i + 1 from n) select i from n)';
const SHORT = 'select count(*) as n from (with recursive n(i) as (select 1 union all select i + 1 from n where i < 20000) select i from n)';

test('the deadline extension is built and loaded (npm run build compiles it)', () => {
  assert.ok(statementDeadlines(), 'dist/native/geodr_deadline.so is missing: was there a C compiler at build time?');
});

test('property: an endless statement is interrupted at its deadline, only on its connection, and nothing else is', () => {
  const { dir, cleanup } = tempDir();
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          conn: fc.nat(3),
          action: fc.constantFrom('forever', 'short', 'short-armed', 'write-forever', 'reopen'),
          ms: fc.integer({ min: 1, max: 30 }),
        }),
        { minLength: 1, maxLength: 12 },
      ),
      (steps) => {
        const file = path.join(dir, 'd.sqlite');
        const conns: Connection[] = [];
        const open = (): Connection => {
          const c = openConnection(file);
          c.pragma('journal_mode = wal');
          c.exec('create table if not exists t(x)');
          return c;
        };
        for (let i = 0; i < 4; i++) conns.push(open());
        const rows = (c: Connection): number => (c.prepare('select count(*) as n from t').get() as { n: number }).n;
        const start = rows(conns[0]!);
        try {
          for (const s of steps) {
            const c = conns[s.conn]!;
            if (s.action === 'reopen') {
              // Closed while armed: the watchdog must forget it. (withDeadline loads the
              // extension into the connection; the raw call then arms it without disarming.)
              withDeadline(c, 60_000, () => undefined);
              c.prepare('select __geodr_deadline(?)').get(s.ms);
              c.close();
              conns[s.conn] = open();
            } else if (s.action === 'short') {
              assert.equal((c.prepare(SHORT).get() as { n: number }).n, 20000, 'an unarmed statement is never interrupted');
            } else if (s.action === 'short-armed') {
              assert.equal(withDeadline(c, 60_000, () => (c.prepare(SHORT).get() as { n: number }).n), 20000);
            } else {
              const run = s.action === 'forever' ? () => c.prepare(FOREVER).get() : () => c.prepare(`insert into t ${FOREVER}`).run();
              assert.throws(() => withDeadline(c, s.ms, run), (e) => isInterrupt(e));
            }
          }
          for (const c of conns) assert.equal(rows(c), start, 'an interrupted write left nothing behind');
        } finally {
          for (const c of conns) if (c.open) c.close();
        }
      },
    ),
    { numRuns: 40 },
  );
  cleanup();
});

test('a deadline that fires after its statement ended does not reach the next statement', async () => {
  const c = openConnection(':memory:');
  try {
    for (let i = 0; i < 200; i++) {
      // Armed for 1 ms around a statement that may or may not finish in time; either way
      // the statement after it, unarmed, must run.
      try {
        withDeadline(c, 1, () => c.prepare(SHORT).get());
      } catch (e) {
        assert.ok(isInterrupt(e), String(e));
      }
      assert.equal((c.prepare('select 41 + 1 as v').get() as { v: number }).v, 42);
    }
  } finally {
    c.close();
  }
});
