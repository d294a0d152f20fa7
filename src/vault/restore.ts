/**
 * Restoring from a vault. The objects a restore needs (one full snapshot, then the record
 * batches after it up to the target) are downloaded into a scratch directory laid out as
 * an engine state directory (meta.json, snapshots/, log/), and the engine's materialize
 * builds and verifies the file from it: checksums at every record, the target's checksum,
 * integrity_check. A hole in the vault's chain is LOG_GAP naming the missing range.
 *
 * Everything here reads the database's history through the lineage rule
 * (src/vault/lineage.ts): after a failover, objects the deposed primary shipped past the new
 * epoch's start are not history, and are never listed as restore points or applied.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GeodrError } from '../errors.js';
import { LocalChain, materialize, NodeFs, TxLog, type MaterializeResult, type TxRecord } from '../engine/index.js';
import { writeMeta } from '../engine/meta.js';
import { decodeHeader } from '../engine/record.js';
import { fullSnapshotName } from '../engine/snapshot.js';
import { decodeBatch } from './batch.js';
import { hex16, metaPrefix, parseBatchKey, parseSnapshotKey, recordsPrefix, snapshotsPrefix, ltrPrefix, type BatchRef, type DatabaseDescriptor, type SnapshotObjectRef } from './layout.js';
import { chooseLineage, readMarkers, type EpochMarker } from './lineage.js';
import type { Vault } from './vault.js';

export type VaultTarget = { txid: number } | { time: number } | 'latest';

export interface VaultHistory {
  dbId: string;
  snapshots: SnapshotObjectRef[];
  ltr: SnapshotObjectRef[];
  batches: BatchRef[];
  /** Epoch markers, ascending by epoch. */
  epochs: EpochMarker[];
}

async function collect<T>(it: AsyncIterable<{ key: string }>, parse: (k: string) => T | undefined): Promise<T[]> {
  const out: T[] = [];
  for await (const o of it) {
    const p = parse(o.key);
    if (p !== undefined) out.push(p);
  }
  return out;
}

/** Lists what the vault holds for a database: every object, of every lineage (see {@link chooseLineage}). */
export async function readHistory(vault: Vault, dbId: string): Promise<VaultHistory> {
  const [snapshots, ltr, batches, epochs] = await Promise.all([
    collect(vault.list(snapshotsPrefix(dbId)), parseSnapshotKey),
    collect(vault.list(ltrPrefix(dbId)), parseSnapshotKey),
    collect(vault.list(recordsPrefix(dbId)), parseBatchKey),
    readMarkers(vault, dbId),
  ]);
  return { dbId, snapshots, ltr, batches, epochs };
}

/** The newest descriptor of a database, or undefined when the vault has none. */
export async function readDescriptor(vault: Vault, dbId: string): Promise<DatabaseDescriptor | undefined> {
  let last: string | undefined;
  for await (const o of vault.list(metaPrefix(dbId))) last = o.key;
  if (last === undefined) return undefined;
  const buf = await vault.get(last);
  try {
    return JSON.parse(buf.toString('utf8')) as DatabaseDescriptor;
  } catch (e) {
    throw new GeodrError('VAULT_CORRUPT', 'a database descriptor is not valid JSON', { object: last }, { cause: e });
  }
}

export interface RestorePoints {
  earliest: { txid: number; time: number } | undefined;
  latest: { txid: number; time: number } | undefined;
  /** Records missing from the vault after `latest` (later records exist but cannot be reached). */
  gap?: { from: number; to: number };
}

/**
 * The window a database can be restored to from this vault: from its oldest kept full
 * snapshot to the last record shipped, as long as the records between are contiguous.
 * Only the winning lineage counts (TXIDs a deposed primary shipped alone are not points).
 */
export function restorePoints(h: VaultHistory): RestorePoints {
  return windowOf(chooseLineage(h).history);
}

/** The window of a history that is one lineage already. */
function windowOf(h: VaultHistory): RestorePoints {
  const first = h.snapshots[0];
  if (first === undefined) return { earliest: undefined, latest: undefined };
  let earliest = { txid: first.txid, time: first.time };
  let latest = { txid: first.txid, time: first.time };
  for (const s of h.snapshots) if (s.txid > latest.txid) latest = { txid: s.txid, time: s.time };
  let next = first.txid + 1;
  let gap: { from: number; to: number } | undefined;
  for (const b of h.batches) {
    if (b.last < next) continue;
    if (b.first > next) {
      // A hole. A snapshot inside the next batch's range bridges it; a snapshot beyond the
      // hole starts a later window (what lies before it is an island, e.g. left by a retention
      // pass that was interrupted); with neither, nothing after the hole is reachable.
      const bridge = h.snapshots.filter((s) => s.txid >= b.first - 1 && s.txid <= b.last).pop();
      const restart = bridge === undefined ? h.snapshots.find((s) => s.txid >= next) : undefined;
      if (bridge === undefined && restart === undefined) {
        gap = { from: next, to: b.first - 1 };
        break;
      }
      const from = (bridge ?? restart)!;
      if (restart !== undefined) earliest = { txid: restart.txid, time: restart.time };
      if (from.txid > latest.txid) latest = { txid: from.txid, time: from.time };
      next = from.txid + 1;
      if (b.last < next) continue;
      if (b.first > next) {
        gap = { from: next, to: b.first - 1 };
        break;
      }
    }
    next = b.last + 1;
    if (b.last > latest.txid) latest = { txid: b.last, time: b.lastTime };
  }
  return { earliest, latest, ...(gap !== undefined ? { gap } : {}) };
}

export interface VaultRestoreOptions {
  vault: Vault;
  dbId: string;
  target: VaultTarget;
  /** The database file to create. */
  out: string;
  /** Scratch space for downloaded objects (removed afterwards). */
  scratchDir: string;
  /** Use this snapshot list (e.g. long-term backups) instead of the short-term ones. */
  useLtr?: boolean;
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
}

export interface VaultRestoreResult extends MaterializeResult {
  /** Commit time of the TXID restored to. */
  time: number;
  snapshotKey: string;
  batchesRead: number;
}

function cancelled(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw signal.reason instanceof Error ? signal.reason : new GeodrError('CANCELLED', 'restore cancelled');
}

/** Restores a database from the vault to a TXID, a time, or the latest point. */
/**
 * The part of a database's history a restore to a TXID (or the latest point) needs: the
 * newest snapshot at or before it and the batches after the snapshot before that one. The
 * full listing grows with history (a week of batches); this one with the snapshot interval.
 * Falls back to the full listing whenever the short one does not connect.
 */
async function historyFor(o: VaultRestoreOptions): Promise<VaultHistory> {
  const t = o.target;
  if (o.useLtr === true || (t !== 'latest' && !('txid' in t))) return readHistory(o.vault, o.dbId);
  const [snapshots, ltr, epochs] = await Promise.all([
    collect(o.vault.list(snapshotsPrefix(o.dbId)), parseSnapshotKey),
    collect(o.vault.list(ltrPrefix(o.dbId)), parseSnapshotKey),
    readMarkers(o.vault, o.dbId),
  ]);
  const lineage = chooseLineage({ dbId: o.dbId, snapshots, ltr, batches: [], epochs });
  // A missing marker is inferred from objects, and the short listing does not show them all.
  if (lineage.inferred) return readHistory(o.vault, o.dbId);
  const kept = lineage.history.snapshots;
  const want = t === 'latest' ? Number.MAX_SAFE_INTEGER : t.txid;
  const i = kept.findLastIndex((s) => s.txid <= want);
  if (i <= 0) return readHistory(o.vault, o.dbId);
  const base = kept[i]!;
  const prefix = recordsPrefix(o.dbId);
  const batches = await collect(o.vault.list(prefix, { startAfter: `${prefix}${hex16(kept[i - 1]!.txid)}` }), parseBatchKey);
  const h: VaultHistory = { dbId: o.dbId, snapshots: snapshots.filter((s) => s.txid >= base.txid), ltr, batches, epochs };
  const partial = chooseLineage(h);
  if (partial.inferred) return readHistory(o.vault, o.dbId);
  const first = partial.history.batches.find((b) => b.last > base.txid);
  if (first !== undefined && first.first > base.txid + 1) return readHistory(o.vault, o.dbId);
  return h;
}

export async function restoreFromVault(o: VaultRestoreOptions): Promise<VaultRestoreResult> {
  const lineage = chooseLineage(await historyFor(o));
  const h = lineage.history;
  const snapshots = o.useLtr === true ? h.ltr : h.snapshots;
  const points = windowOf({ ...h, snapshots });
  if (points.earliest === undefined || points.latest === undefined) {
    throw new GeodrError('NO_SNAPSHOT', 'the vault holds no full snapshot of this database', { database: o.dbId, object: snapshotsPrefix(o.dbId) });
  }
  const target = await resolveVaultTarget(o, h, snapshots, points);
  const snap = [...snapshots].reverse().find((s) => s.txid <= target);
  if (snap === undefined) {
    throw new GeodrError('TARGET_OUT_OF_RANGE', `TXID ${target} is before the oldest snapshot (TXID ${points.earliest.txid})`, { database: o.dbId, txid: target });
  }
  const dir = fs.mkdtempSync(path.join(o.scratchDir, 'vault-restore-'));
  const efs = new NodeFs();
  try {
    const needed = h.batches.filter((b) => b.last > snap.txid && b.first <= target);
    const total = 1 + needed.length;
    let done = 0;
    const step = (): void => o.onProgress?.((++done / total) * 0.8);
    // The snapshot, under the name the engine's chain expects.
    const snapBytes = await o.vault.get(snap.key);
    const header = decodeHeader(snapBytes, { object: snap.key, dbId: o.dbId });
    if (!header.full || header.txid !== snap.txid || header.epoch !== snap.epoch) {
      throw new GeodrError('VAULT_CORRUPT', `the snapshot holds ${header.full ? 'a full' : 'a partial'} unit at TXID ${header.txid}, epoch ${header.epoch}; its name says a full one at ${snap.txid}, epoch ${snap.epoch}`, {
        database: o.dbId,
        object: snap.key,
      });
    }
    fs.mkdirSync(path.join(dir, 'snapshots'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'snapshots', fullSnapshotName(snap.txid)), snapBytes);
    writeMeta(efs, dir, { dbId: o.dbId, role: 'primary', epoch: header.epoch, pageSize: header.pageSize, base: { txid: snap.txid, checksum: header.post, timestamp: snap.time } });
    step();
    cancelled(o.signal);
    const log = TxLog.open(efs, path.join(dir, 'log'), o.dbId, { preallocate: false });
    try {
      let next = snap.txid + 1;
      for (const b of needed) {
        if (b.first > next) {
          throw new GeodrError('LOG_GAP', `the vault has no records ${next}..${b.first - 1}`, { database: o.dbId, txid: next, object: recordsPrefix(o.dbId) });
        }
        // Decoded against its name (a lineage view may have cut `last`); records past the cut are not history.
        const recs: TxRecord[] = decodeBatch(await o.vault.get(b.key), parseBatchKey(b.key)!, o.dbId);
        for (const r of recs) {
          if (r.txid < next || r.txid > target || r.txid > b.last) continue;
          if (r.epoch < lineage.requiredEpoch(r.txid)) {
            throw new GeodrError('VAULT_CORRUPT', `record ${r.txid} has epoch ${r.epoch}, but epoch ${lineage.requiredEpoch(r.txid)} had begun before it`, { database: o.dbId, txid: r.txid, object: b.key });
          }
          log.append(r, undefined);
          next = r.txid + 1;
        }
        step();
        cancelled(o.signal);
      }
      if (next <= target) throw new GeodrError('LOG_GAP', `the vault's records end at TXID ${next - 1}, before ${target}`, { database: o.dbId, txid: next });
      log.sync();
    } finally {
      log.close();
    }
    const result = materialize({
      source: new LocalChain(efs, dir),
      target: { txid: target },
      out: o.out,
      efs,
      signal: o.signal,
      onProgress: (d, t) => o.onProgress?.(0.8 + (0.2 * d) / Math.max(1, t)),
    });
    return { ...result, time: result.timestamp ?? snap.time, snapshotKey: snap.key, batchesRead: needed.length };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function resolveVaultTarget(o: VaultRestoreOptions, h: VaultHistory, snapshots: SnapshotObjectRef[], points: RestorePoints): Promise<number> {
  const earliest = points.earliest!;
  const latest = points.latest!;
  const t = o.target;
  const gap = points.gap;
  const gapError = (): GeodrError =>
    new GeodrError('LOG_GAP', `the vault is missing records ${gap!.from}..${gap!.to}; the latest point before the gap is TXID ${latest.txid}: restore to it explicitly if that loss is acceptable`, {
      database: o.dbId,
      txid: gap!.from,
      object: recordsPrefix(o.dbId),
    });
  if (t === 'latest') {
    if (gap !== undefined) throw gapError();
    return latest.txid;
  }
  if ('txid' in t && gap !== undefined && t.txid > latest.txid) throw gapError();
  if ('time' in t && gap !== undefined && t.time > latest.time) throw gapError();
  if ('txid' in t) {
    if (!Number.isSafeInteger(t.txid) || t.txid < earliest.txid || t.txid > latest.txid) {
      throw new GeodrError('TARGET_OUT_OF_RANGE', `TXID ${t.txid} is outside the restorable range ${earliest.txid}..${latest.txid}`, { database: o.dbId, txid: t.txid });
    }
    if (o.useLtr === true && !snapshots.some((s) => s.txid === t.txid)) {
      throw new GeodrError('TARGET_OUT_OF_RANGE', `no long-term backup at TXID ${t.txid}`, { database: o.dbId, txid: t.txid });
    }
    return t.txid;
  }
  if (t.time < earliest.time) {
    throw new GeodrError('TARGET_OUT_OF_RANGE', `${new Date(t.time).toISOString()} is before the earliest restore point ${new Date(earliest.time).toISOString()}`, { database: o.dbId });
  }
  if (t.time >= latest.time) return latest.txid;
  // The newest TXID committed at or before the time: snapshots and batch ends bound it;
  // the batch that spans the time is read to find the exact record.
  let best = earliest.txid;
  for (const s of snapshots) if (s.time <= t.time && s.txid > best) best = s.txid;
  const spanning = h.batches.find((b) => b.lastTime > t.time && b.last > best);
  for (const b of h.batches) if (b.lastTime <= t.time && b.last > best && b.last <= latest.txid) best = b.last;
  if (spanning !== undefined) {
    for (const r of decodeBatch(await o.vault.get(spanning.key), parseBatchKey(spanning.key)!, o.dbId)) if (r.timestamp <= t.time && r.txid > best && r.txid <= spanning.last) best = r.txid;
  }
  return best;
}

