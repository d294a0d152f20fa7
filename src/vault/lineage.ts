/**
 * Epochs in the vault: which of several histories of one database is its history.
 *
 * A database's primary and secondaries share one engine id, so after a failover two
 * primaries can have shipped records for the same TXIDs under `databases/<dbId>/`: the new
 * primary (epoch e+1, from its start TXID M on) and the old one (epoch e), which may have gone
 * on accepting writes for a while after it was cut off; geo-copy brings both into each
 * region's vault. The new primary writes an **epoch marker** before it ships anything:
 *
 *   databases/<dbId>/epochs/<epoch 8 hex>.json
 *   {format: 1, dbId, epoch, startTxid, checksum, startTime, server, region, time}
 *
 * and the **lineage rule** decides what is history: for a TXID t, let E be the newest epoch
 * whose marker starts before t (startTxid < t); t is history only from objects of epoch >= E.
 * The newest lineage wins from its start on; objects of an older epoch that reach past a newer
 * epoch's start are not history: never restore points, never applied. Their TXIDs up to the
 * start are the common past and stay usable, so a batch that straddles the start is kept cut
 * at it (its newest kept TXID's commit time is the marker's `startTime`).
 *
 * A marker is immutable and written once per epoch: the put of an existing marker key fails,
 * so two servers can never both begin the same epoch (the loser gets STALE_EPOCH).
 *
 * Objects of an epoch whose marker is not in this vault (yet) make the epoch's start inferred
 * from the earliest of them; a cut needs a known commit time, so with an inferred start taken
 * from a batch a straddling older batch is dropped whole rather than cut at a guessed time.
 */
import { GeodrError, isGeodrError } from '../errors.js';
import { epochKey, epochsPrefix, MAX_EPOCH, parseEpochKey, type BatchRef, type SnapshotObjectRef } from './layout.js';
import type { VaultHistory } from './restore.js';
import type { Vault } from './vault.js';

export const MARKER_FORMAT = 1;

/** The object a new primary writes before it ships its first object of a new epoch. */
export interface EpochMarker {
  format: 1;
  dbId: string;
  epoch: number;
  /** The TXID the epoch starts from: its first record is startTxid + 1. */
  startTxid: number;
  /** Database checksum at startTxid, 16 hex. */
  checksum: string;
  /** Commit time of startTxid (ms): where an older lineage's batch is cut. */
  startTime: number;
  /** The server and region that began the epoch. */
  server: string;
  region: string;
  /** When the marker was written (ms). */
  time: number;
}

/** Where an epoch starts, from its marker or inferred from its objects. */
export interface EpochStart {
  epoch: number;
  startTxid: number;
  /** Commit time of startTxid; unknown for a start inferred from a batch. */
  startTime: number | undefined;
  inferred: boolean;
}

export interface OrphanRef {
  key: string;
  kind: 'batch' | 'snapshot' | 'ltr';
  epoch: number;
  /** Commit time of the object's newest record (what retention ages it by). */
  time: number;
}

export interface Lineage {
  /** The history: objects of the winning lineage only, batches cut at a newer epoch's start. */
  history: VaultHistory;
  /** Objects of lineages that lost: not history. */
  orphans: OrphanRef[];
  /** Every epoch start known, by epoch. */
  starts: EpochStart[];
  /** True when some start was inferred (a marker missing from this vault). */
  inferred: boolean;
  /** The lowest epoch a record or snapshot at this TXID may carry (0 when any will do). */
  requiredEpoch(txid: number): number;
}

/** The marker's bytes as stored. */
export function encodeMarker(m: EpochMarker): Buffer {
  return Buffer.from(JSON.stringify(m, null, 2));
}

/** Parses and checks a marker object; VAULT_CORRUPT naming it when it is not one for `dbId`. */
export function parseMarker(key: string, body: Buffer, dbId: string): EpochMarker {
  const corrupt = (why: string, cause?: unknown): GeodrError => new GeodrError('VAULT_CORRUPT', `epoch marker ${why}`, { object: key }, cause === undefined ? undefined : { cause });
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw corrupt('is not valid JSON', e);
  }
  const m = raw as Partial<Record<keyof EpochMarker, unknown>>;
  if (typeof raw !== 'object' || raw === null || m.format !== MARKER_FORMAT) throw corrupt(`has format ${String(m?.format)}; this build reads ${MARKER_FORMAT}`);
  const epoch = parseEpochKey(key);
  if (m.dbId !== dbId) throw corrupt(`names database ${String(m.dbId)}, it is stored under ${dbId}`);
  if (!isUint(m.epoch, MAX_EPOCH) || m.epoch !== epoch) throw corrupt(`says epoch ${String(m.epoch)}; its name says ${String(epoch)}`);
  if (!isUint(m.startTxid, Number.MAX_SAFE_INTEGER) || !isUint(m.startTime, Number.MAX_SAFE_INTEGER) || !isUint(m.time, Number.MAX_SAFE_INTEGER)) throw corrupt('lacks a valid startTxid, startTime or time');
  if (typeof m.checksum !== 'string' || !/^[0-9a-f]{16}$/.test(m.checksum)) throw corrupt('lacks a 16-hex checksum');
  if (typeof m.server !== 'string' || typeof m.region !== 'string') throw corrupt('lacks server or region');
  return { format: 1, dbId, epoch, startTxid: m.startTxid, checksum: m.checksum, startTime: m.startTime, server: m.server, region: m.region, time: m.time };
}

function isUint(v: unknown, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
}

/** Two markers describe the same beginning: same epoch, start, state and server (the write time may differ). */
export function sameBeginning(a: EpochMarker, b: EpochMarker): boolean {
  return a.dbId === b.dbId && a.epoch === b.epoch && a.startTxid === b.startTxid && a.checksum === b.checksum && a.server === b.server;
}

/** The epochs whose markers a vault holds for a database, ascending: one listing of a tiny prefix, no reads. */
export async function listMarkerEpochs(vault: Vault, dbId: string): Promise<number[]> {
  const out: number[] = [];
  for await (const o of vault.list(epochsPrefix(dbId))) {
    const e = parseEpochKey(o.key);
    if (e !== undefined) out.push(e);
  }
  return out;
}

// Markers are immutable and never deleted by retention, so a marker read once is cached for
// the vault object's lifetime: a restore or retention pass re-reads only the listing.
const markerCache = new WeakMap<Vault, Map<string, EpochMarker>>();

function cacheFor(vault: Vault): Map<string, EpochMarker> {
  let c = markerCache.get(vault);
  if (c === undefined) {
    c = new Map();
    markerCache.set(vault, c);
  }
  return c;
}

/** Every epoch marker of a database, ascending by epoch. */
export async function readMarkers(vault: Vault, dbId: string): Promise<EpochMarker[]> {
  const cache = cacheFor(vault);
  const out: EpochMarker[] = [];
  for await (const o of vault.list(epochsPrefix(dbId))) {
    if (parseEpochKey(o.key) === undefined) continue;
    let m = cache.get(o.key);
    if (m === undefined) {
      let body: Buffer;
      try {
        body = await vault.get(o.key);
      } catch (e) {
        if (isGeodrError(e, 'NOT_FOUND')) continue; // deleted between list and get
        throw e;
      }
      m = parseMarker(o.key, body, dbId);
      cache.set(o.key, m);
    }
    out.push(m);
  }
  return out;
}

/**
 * Writes a marker unless the vault already holds one for its epoch. An existing marker of
 * the same beginning (a retry after a crash or a lost response) is success; one of another
 * beginning means another server began this epoch first: STALE_EPOCH, nothing written.
 * `onPut` hears of the key either way (geo-copy listens).
 */
export async function putMarker(vault: Vault, m: EpochMarker, onPut?: (key: string) => void): Promise<EpochMarker> {
  const key = epochKey(m.dbId, m.epoch);
  let stored = m;
  try {
    await vault.put(key, encodeMarker(m));
  } catch (e) {
    if (!isGeodrError(e, 'CONFLICT')) throw e;
    stored = parseMarker(key, await vault.get(key), m.dbId);
    if (!sameBeginning(stored, m)) {
      throw new GeodrError(
        'STALE_EPOCH',
        `epoch ${m.epoch} was already begun by server ${stored.server} (${stored.region}) at TXID ${stored.startTxid}; this server cannot begin it again at TXID ${m.startTxid}`,
        { object: key, txid: m.startTxid, details: { epoch: m.epoch, server: stored.server, startTxid: stored.startTxid } },
        { cause: e },
      );
    }
  }
  cacheFor(vault).set(key, stored);
  onPut?.(key);
  return stored;
}

/**
 * Applies the lineage rule to everything the vault lists for a database. Pure: the same
 * listing gives the same answer, and applying it to its own result changes nothing.
 */
export function chooseLineage(h: VaultHistory): Lineage {
  const byEpoch = new Map<number, EpochStart>();
  for (const m of h.epochs) byEpoch.set(m.epoch, { epoch: m.epoch, startTxid: m.startTxid, startTime: m.startTime, inferred: false });
  const infer = (epoch: number, txid: number, time: number | undefined): void => {
    if (epoch <= 1) return; // epoch 1 starts at the beginning and has no marker
    const s = byEpoch.get(epoch);
    if (s !== undefined && !s.inferred) return;
    if (s === undefined || txid < s.startTxid) byEpoch.set(epoch, { epoch, startTxid: txid, startTime: time, inferred: true });
    else if (txid === s.startTxid && s.startTime === undefined) s.startTime = time;
  };
  for (const s of h.snapshots) infer(s.epoch, s.txid, s.time);
  for (const s of h.ltr) infer(s.epoch, s.txid, s.time);
  for (const b of h.batches) infer(b.epoch, b.first - 1, undefined);
  const starts = [...byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
  const requiredEpoch = (txid: number): number => {
    let e = 0;
    for (const s of starts) if (s.startTxid < txid && s.epoch > e) e = s.epoch;
    return e;
  };
  if (starts.length === 0) return { history: h, orphans: [], starts, inferred: false, requiredEpoch };

  // The cut of an epoch: the earliest start of any newer epoch. Its objects are history up to it.
  const cuts = new Map<number, EpochStart | undefined>();
  const cutOf = (epoch: number): EpochStart | undefined => {
    if (cuts.has(epoch)) return cuts.get(epoch);
    let best: EpochStart | undefined;
    for (const s of starts) {
      if (s.epoch <= epoch) continue;
      if (best === undefined || s.startTxid < best.startTxid || (s.startTxid === best.startTxid && best.startTime === undefined)) best = s;
    }
    cuts.set(epoch, best);
    return best;
  };
  const orphans: OrphanRef[] = [];
  const keepSnapshots = (list: SnapshotObjectRef[], kind: 'snapshot' | 'ltr'): SnapshotObjectRef[] =>
    list.filter((s) => {
      const cut = cutOf(s.epoch);
      if (cut === undefined || s.txid <= cut.startTxid) return true;
      orphans.push({ key: s.key, kind, epoch: s.epoch, time: s.time });
      return false;
    });
  const batches: BatchRef[] = [];
  for (const b of h.batches) {
    const cut = cutOf(b.epoch);
    if (cut === undefined || b.last <= cut.startTxid) batches.push(b);
    else if (b.first <= cut.startTxid && cut.startTime !== undefined) batches.push({ ...b, last: cut.startTxid, lastTime: cut.startTime });
    else orphans.push({ key: b.key, kind: 'batch', epoch: b.epoch, time: b.lastTime });
  }
  return {
    history: { dbId: h.dbId, snapshots: keepSnapshots(h.snapshots, 'snapshot'), ltr: keepSnapshots(h.ltr, 'ltr'), batches, epochs: h.epochs },
    orphans,
    starts,
    inferred: starts.some((s) => s.inferred),
    requiredEpoch,
  };
}
