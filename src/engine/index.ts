/**
 * The page-level transaction log engine: capture from a primary's WAL, the local
 * durable log, replicas, snapshots, compaction and materialize.
 */
export { PrimaryDatabase, type PrimaryOptions, type PrimaryStatus, type Durability, type PinnedView, type RecordListener, type WriteTransaction } from './primary.js';
export { ReplicaDatabase, type ReplicaOptions, type ReplicaPosition, type ReadTransaction, type ConversionPlan } from './replica.js';
export { TxLog, type LoggedTx } from './log.js';
export { LocalChain, type ChainSource, type UnitRef } from './chain.js';
export { materialize, planRestore, resolveTarget, integrityCheck, type MaterializeOptions, type MaterializeResult, type RestoreTarget, type RestorePlan } from './materialize.js';
export { compact, mergeUnits, rollSnapshot, DEFAULT_SPANS, type CompactOptions, type CompactResult } from './compact.js';
export { takeSnapshot, takeIncrementalSnapshot, takeDiffUnit, writeFullSnapshot, listSnapshots, type SnapshotRef, type IncrementalOptions } from './snapshot.js';
export { encodeRecord, decodeRecord, RECORD_VERSION, type TxRecord } from './record.js';
export { checksumHex, checksumFromHex, checksumEquals, hashPage, PageHashes, type Checksum } from './checksum.js';
export { NodeFs, FaultFs, type EngineFs, type FaultAction } from './fs.js';
export { MIN_SQLITE_VERSION, assertSqliteVersion, isInterrupt, openConnection, statementDeadlines, withDeadline, type Connection } from './sqlite.js';
export { readMeta, type DatabaseMeta } from './meta.js';
