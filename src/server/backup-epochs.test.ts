// The backup service across a failover, in process with its real parts (store, host, vaults,
// geo-copy both ways): server X's primary is deposed while it keeps writing, server Y's copy
// of it is promoted and calls beginEpoch. Y ships the new lineage; the marker reaches X's
// vault; X's shipping stops and its stale-epoch listeners hear of it; both vaults restore
// Y's state. A database whose record says secondary is never shipped, verified or given
// restore points, even when its role flips while it is open.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { checksumHex, ReplicaDatabase, takeSnapshot } from '../engine/index.js';
import { tempDir } from '../engine/testing/helpers.js';
import { isGeodrError } from '../errors.js';
import { FsVault } from '../vault/fs.js';
import { parseBatchKey, parseSnapshotKey, recordsPrefix, snapshotsPrefix } from '../vault/layout.js';
import { listMarkerEpochs, readMarkers } from '../vault/lineage.js';
import { readHistory, restoreFromVault, restorePoints } from '../vault/restore.js';
import { BackupService } from './backup.js';
import { ServerConfigSchema } from './config.js';
import { DatabaseHost } from './host.js';
import { OperationManager } from './operations.js';
import { ServerService } from './service.js';
import { MetaStore } from './store.js';

interface Node {
  store: MetaStore;
  host: DatabaseHost;
  service: ServerService;
  backup: BackupService;
  stop(): Promise<void>;
}

const root = tempDir();
after(() => root.cleanup());

async function node(name: string, region: string, own: string, paired: string): Promise<Node> {
  const dataDir = path.join(root.dir, name);
  fs.mkdirSync(dataDir, { recursive: true });
  const config = ServerConfigSchema.parse({
    name,
    region,
    dataDir,
    durability: 'commit',
    logLevel: 'silent',
    vault: { type: 'fs', path: path.join(root.dir, own) },
    pairedVault: { type: 'fs', path: path.join(root.dir, paired) },
    backup: { shipIntervalMs: 50, snapshotEveryRecords: 10, verifyEveryMs: 0, retentionEveryMs: 3_600_000, compression: 'gzip' },
  });
  const store = new MetaStore(path.join(dataDir, 'server.db'));
  const ref: { backup?: BackupService } = {};
  const host = new DatabaseHost({
    dataDir,
    store,
    maxOpenDatabases: 100,
    idleCloseMs: 60_000,
    writeWaitMs: 2000,
    durability: 'commit',
    groupCommitMs: 2,
    keepOpen: (t) => ref.backup?.mustStayOpen(t) ?? false,
  });
  const service = new ServerService(dataDir, store, host, new OperationManager(store, () => 4));
  service.ensurePool('default');
  const backup = await BackupService.open(config, store, host, pino({ level: 'silent' }));
  ref.backup = backup;
  service.backup = backup;
  backup.start();
  return {
    store,
    host,
    service,
    backup,
    stop: async () => {
      await backup.stop();
      await host.closeAll();
      store.close();
    },
  };
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function insert(n: Node, db: string, count: number, tag: string): Promise<number> {
  return n.host.use(db, (t) => {
    for (let i = 0; i < count; i++) t.db.write((c) => c.prepare('insert into t(v) values (?)').run(`${tag}${i}`));
    return t.db.txid;
  });
}

/**
 * Positive proof that `n`'s shipping loop ran since the call, before a "nothing was shipped"
 * assertion: writes to a probe database, each shipped before the next. Ticks never overlap and
 * a tick ships only what was durable when it reached the database, so the second of three
 * ran whole after this call.
 */
async function shippingRan(n: Node, probe: string): Promise<void> {
  if (n.store.getDatabase(probe) === undefined) {
    n.service.createDatabase(probe, { pool: 'default' });
    await n.host.use(probe, (tn) => tn.db.write((c) => c.exec('create table t(id integer primary key, v text)')));
  }
  const probeId = n.store.getDatabase(probe)!.dbId;
  for (let i = 0; i < 3; i++) {
    const txid = await insert(n, probe, 1, 'probe');
    await until(`${probe} shipped up to ${txid}`, () => (n.backup.shipper.state(probeId)?.shippedTxid ?? 0) >= txid);
  }
}

async function epochOneKeys(dir: string, dbId: string): Promise<string[]> {
  const v = new FsVault(dir);
  const out: string[] = [];
  for (const prefix of [recordsPrefix(dbId), snapshotsPrefix(dbId)]) for await (const o of v.list(prefix)) if ((parseBatchKey(o.key) ?? parseSnapshotKey(o.key))?.epoch === 1) out.push(o.key);
  return out;
}

test('failover: beginEpoch starts the new lineage, the deposed primary is fenced and told, secondaries are never backed up here', { timeout: 60_000 }, async (t) => {
  const x = await node('tenants-x', 'eastus', 'vx', 'vy');
  const y = await node('tenants-y', 'westus', 'vy', 'vx');
  t.after(async () => {
    await x.stop();
    await y.stop();
  });
  const stale: Array<[string, number]> = [];
  x.backup.onStaleEpoch((database, epoch) => stale.push([database, epoch]));
  const unsubscribe = x.backup.onStaleEpoch(() => {
    throw new Error('a listener that throws is logged, not fatal');
  });

  // X: the primary, shipping.
  x.service.createDatabase('shop', { pool: 'default' });
  await x.host.use('shop', (tn) => tn.db.write((c) => c.exec('create table t(id integer primary key, v text)')));
  const m = await insert(x, 'shop', 15, 'x');
  const dbId = x.store.getDatabase('shop')!.dbId;
  await until('X shipped up to M', () => x.backup.shipper.state(dbId)?.shippedTxid === m);

  // Y: first a primary of its own under the same name (shipping, open), then its files are
  // replaced by a replica of X's database and its role flips to secondary while it is open.
  y.service.createDatabase('shop', { pool: 'default' });
  await y.host.use('shop', (tn) => tn.db.write((c) => c.exec('create table own(x)')));
  const ownId = y.store.getDatabase('shop')!.dbId;
  await until('Y shipped its own database', () => (y.backup.shipper.state(ownId)?.shippedTxid ?? 0) >= 1);
  const seed = path.join(root.dir, 'seed.full');
  await x.host.use('shop', async (tn) => {
    const ref = await takeSnapshot(tn.db);
    fs.copyFileSync(ref.file, seed);
  });
  const paths = y.host.paths(y.store.getDatabase('shop')!.id);
  await y.host.withExclusive('shop', async () => {
    y.store.setReplicationState('shop', { role: 'secondary', epoch: 1, epochs: [], fencedBy: null });
    fs.rmSync(paths.stateDir, { recursive: true, force: true });
    fs.rmSync(paths.file, { force: true });
    const replica = ReplicaDatabase.create({ file: paths.file, stateDir: paths.stateDir }, seed, dbId);
    const recs = await x.host.use('shop', (tn) => [...tn.db.records(replica.txid + 1, m)]);
    if (recs.length > 0) replica.apply(recs);
    assert.equal(replica.txid, m);
    replica.close();
    y.store.setDbId('shop', dbId);
  });
  const asSecondary = y.store.getDatabase('shop')!;
  // Before the probe below exists on Y.
  assert.equal((await y.backup.verifyNext())?.database, undefined, 'nothing of Y is verified: its only database is a secondary');
  await shippingRan(y, 'probe-y');
  assert.equal(y.backup.shipper.state(dbId), undefined, 'a secondary is never shipped');
  await assert.rejects(y.backup.restorePointsOf(dbId), (e) => isGeodrError(e, 'CONFLICT') && /geo-secondary/.test(e.message) && /primary's server holds the backups/.test(e.message));
  await assert.rejects(y.backup.verifyDatabaseBackup(asSecondary), (e) => isGeodrError(e, 'CONFLICT') && /geo-secondary/.test(e.message));
  assert.equal(y.backup.mustStayOpen({ record: asSecondary, db: { dbId } } as never), false);

  // Forced failover: Y's copy becomes the primary at epoch 2 while X, cut off, goes on writing.
  const promoted = ReplicaDatabase.open({ file: paths.file, stateDir: paths.stateDir }).promote({ epoch: 2 });
  const start = { txid: promoted.txid, checksum: checksumHex(promoted.checksum) };
  promoted.close();
  y.store.setReplicationState('shop', { role: 'primary', epoch: 2, epochs: [{ epoch: 2, startTxid: m, checksum: start.checksum, server: 'tenants-y', time: Date.now() }], fencedBy: null });
  await y.backup.beginEpoch('shop');
  await y.backup.beginEpoch('shop'); // repeated after a crash: the same marker, no damage
  const [marker] = await readMarkers(y.backup.vault, dbId);
  assert.deepEqual({ epoch: marker!.epoch, startTxid: marker!.startTxid, checksum: marker!.checksum, server: marker!.server, region: marker!.region }, { epoch: 2, startTxid: m, checksum: start.checksum, server: 'tenants-y', region: 'westus' });
  await assert.rejects(x.backup.beginEpoch('shop'), (e) => isGeodrError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(x.backup.beginEpoch('nope'), (e) => isGeodrError(e, 'NOT_FOUND'));

  const k = await insert(y, 'shop', 12, 'y');
  await insert(x, 'shop', 20, 'x-alone');
  await until('Y shipped the new lineage', () => y.backup.shipper.state(dbId)?.shippedTxid === k);
  assert.equal(y.backup.shipper.state(dbId)?.epoch, 2);

  // The marker reaches X's vault by geo-copy; X, still writing, looks again within 2 s of
  // shipping, is fenced and tells its listeners.
  await until('the marker reached X', async () => (await listMarkerEpochs(new FsVault(path.join(root.dir, 'vx')), dbId)).includes(2));
  await until(
    'X heard of epoch 2',
    async () => {
      if (stale.length === 0) await insert(x, 'shop', 1, 'x-alone-');
      return stale.length > 0;
    },
    20_000,
  );
  assert.deepEqual(stale, [['shop', 2]]);
  unsubscribe();
  assert.match(x.backup.status({ dbId, txid: 0 }).halted ?? '', /epoch 2/);
  // The listener is told from inside one upload's fence check; another upload that passed its
  // check just before (a snapshot shipped beside the records, or a batch) may still be landing
  // in X's vault, and the lineage rule keeps it out of history. Let X's shipping of shop settle
  // (the running ship, then any snapshot) before taking what X had uploaded.
  await x.host.use('shop', (tn) => x.backup.shipper.ship(tn.db, () => x.backup.descriptor(tn.record)));
  await x.backup.shipper.idle(dbId);
  const before = await epochOneKeys(path.join(root.dir, 'vx'), dbId);
  await insert(x, 'shop', 5, 'x-after');
  await shippingRan(x, 'probe-x');
  assert.deepEqual(await epochOneKeys(path.join(root.dir, 'vx'), dbId), before, 'X uploads nothing once fenced');

  // Both regions' vaults hold both lineages now; both restore Y's state, never X's tail.
  const yState = await y.host.use('shop', (tn) => ({ txid: tn.db.txid, checksum: checksumHex(tn.db.checksum) }));
  for (const n of [x, y]) {
    await until('geo-copies settle', async () => restorePoints(await readHistory(n.backup.vault, dbId)).latest?.txid === yState.txid);
    const out = path.join(root.dir, `restored-${n === x ? 'x' : 'y'}.sqlite`);
    const r = await restoreFromVault({ vault: n.backup.vault, dbId, target: 'latest', out, scratchDir: root.dir });
    assert.deepEqual({ txid: r.txid, checksum: checksumHex(r.checksum) }, yState);
    fs.rmSync(out);
  }
  assert.equal((await x.backup.restorePointsOf(dbId)).latest?.txid, yState.txid);
  const verified = await y.backup.verifyDatabaseBackup(y.store.getDatabase('shop')!);
  assert.deepEqual(verified, { database: 'shop', txid: yState.txid, error: null });
  // Retention on the deposed side leaves the database to the new primary's server.
  const kept = (await readHistory(x.backup.vault, dbId)).batches.length;
  await x.backup.applyRetention(Date.now() + 365 * 86_400_000);
  assert.equal((await readHistory(x.backup.vault, dbId)).batches.length, kept);
});
