/**
 * The catalog, client side (re-exported by `geodr/sdk`): the shard map manager, the
 * recovery manager, the tenant catalog and inventory sync. Server routes are in
 * routes.ts and are not part of this entry point.
 */
export { KEY_TYPES, MAX_KEY_BYTES, formatKey, keyValue, normalizeKey, parseKeyText, type KeyType, type ShardKey } from './keys.js';
export { RESOLUTIONS, formatLocation, normalizeServer } from './model.js';
export type {
  DifferenceKind,
  InventoryServer,
  LocalChange,
  LocalMapping,
  LocalShard,
  LocalShardMap,
  LocalShardStatus,
  MapKind,
  Mapping,
  MappingDifference,
  MappingDifferenceResolution,
  Status as MappingStatus,
  PendingOperation,
  OperationStep,
  RecoveryToken,
  Shard,
  ShardLocation,
  ShardMapInfo,
  Tenant,
} from './model.js';
export { ShardMapManager, createShardMapManager, getShardMapManager, type CatalogOptions, type MappingSpec, type PendingRecovery, type ShardMapManagerOptions } from './manager.js';
export { RecoveryManager, type RebuildOptions, type RebuildResult, type ResolveResult } from './recovery.js';
export { TenantCatalog } from './tenants.js';
export { startInventorySync, syncInventory, type InventorySource, type SyncResult } from './inventory.js';
