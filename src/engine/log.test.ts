/** The local log's own rules, seen through the labelled file-system calls it makes. */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { FaultFs, NodeFs } from './fs.js';
import { TxLog } from './log.js';
import type { TxRecord } from './record.js';
import { tempDir } from './testing/helpers.js';

const DB = '0123456789abcdef0123456789abcdef';

function record(txid: number): TxRecord {
  return {
    dbId: DB,
    epoch: 1,
    baseTxid: txid - 1,
    txid,
    full: false,
    timestamp: 1_700_000_000_000 + txid,
    timestamps: [],
    pageSize: 4096,
    commitSize: 2,
    pre: { hi: txid, lo: 0 },
    post: { hi: txid + 1, lo: 0 },
    pages: [[2, Buffer.alloc(4096, txid % 251)]],
  };
}

// Regression: later syncs reach only the newest segment, so entries buffered when a
// rotation wrote them into the old one were never fsynced.
test('a rotation fsyncs what went into the old segment before leaving it', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const efs = new FaultFs(new NodeFs(), () => undefined);
    const log = TxLog.open(efs, path.join(dir, 'log'), DB, { segmentBytes: 16 * 1024, preallocate: false });
    // Group-commit style: many appends, no sync until the end.
    for (let t = 1; t <= 12; t++) log.append(record(t), undefined);
    await log.syncAsync();
    const ops = efs.seen.filter((op) => op === 'log.append' || op === 'log.sync' || op === 'log.create');
    // Every segment created after the first must be preceded by a sync of the pending data.
    for (let i = 0; i < ops.length; i++) {
      if (ops[i] !== 'log.create' || !ops.slice(0, i).includes('log.append')) continue;
      const before = ops.slice(0, i);
      assert.ok(before.lastIndexOf('log.sync') > before.lastIndexOf('log.append'), `unsynced appends left behind at rotation: ${ops.join(' ')}`);
    }
    assert.ok(ops.filter((o) => o === 'log.create').length >= 8, 'the log rotated several times');
    assert.equal(log.hasUnsynced, false);
    log.close();
    const again = TxLog.open(new NodeFs(), path.join(dir, 'log'), DB);
    assert.equal(again.lastTxid, 12);
    assert.equal([...again.records(1, 12)].length, 12);
    again.close();
  } finally {
    cleanup();
  }
});
