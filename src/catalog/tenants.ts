/**
 * The tenant catalog: tenants by name, each with a key in a list shard map (where it
 * routes), its pool, and the TXID its database was last restored or repatriated at.
 * Locations and online/offline come from the shard map itself, so the catalog and
 * routing can never disagree about where a tenant is.
 */
import { GeodrError } from '../errors.js';
import { GeodrApiError } from '../sdk/errors.js';
import { formatKey, type KeyType, type ShardKey } from './keys.js';
import type { ShardMapManager } from './manager.js';
import { formatLocation, normalizeLocation, validateCatalogName, type Mapping, type Shard, type ShardLocation, type ShardMapInfo, type Status, type Tenant } from './model.js';

export class TenantCatalog {
  constructor(
    readonly smm: ShardMapManager,
    /** The list map holding one mapping per tenant key. */
    readonly map = 'tenants',
  ) {
    validateCatalogName('shard map', map);
  }

  /** Creates the shard map manager's tables and the tenants' list map if missing. */
  async ensure(keyType: KeyType = 'string'): Promise<ShardMapInfo> {
    await this.smm.catalog.send({ method: 'PUT', path: this.smm.gsmPath('') });
    return this.smm.createListShardMap(this.map, keyType);
  }

  /**
   * Registers a tenant whose database is at `location`: the location becomes a shard if
   * it is not one, the key gets a mapping to it, and the catalog a row. Repeating the
   * call (after an interruption, say) finishes what is missing; a key that already routes
   * elsewhere is a CONFLICT.
   */
  async registerTenant(name: string, key: ShardKey, location: ShardLocation, opts: { pool?: string; status?: Status } = {}): Promise<Tenant> {
    validateCatalogName('tenant', name);
    const info = await this.smm.mapInfo(this.map);
    if (info.kind !== 'list') throw new GeodrError('INVALID_ARGUMENT', `tenant map ${this.map} must be a list map`);
    const loc = normalizeLocation(location);
    const keyText = formatKey(info.keyType, key);
    let shard: Shard | undefined = await this.smm.getShard(this.map, loc);
    if (shard === undefined) {
      try {
        shard = await this.smm.addShard(this.map, loc);
      } catch (e) {
        shard = isCode(e, 'CONFLICT') ? await this.smm.getShard(this.map, loc) : undefined;
        if (shard === undefined) throw e;
      }
    }
    let mapping: Mapping | undefined;
    try {
      mapping = (await this.smm.lookup(this.map, key)).mapping;
    } catch (e) {
      if (!isCode(e, 'NOT_FOUND')) throw e;
    }
    if (mapping !== undefined && mapping.shardId !== shard.id) {
      throw new GeodrApiError('CONFLICT', `key ${keyText} of map ${this.map} already routes to shard ${mapping.shardId}, not ${formatLocation(loc)}`, { status: 409 });
    }
    if (mapping === undefined) await this.smm.addPointMapping(this.map, key, loc, opts.status === undefined ? {} : { status: opts.status });
    return this.smm.putTenantRow(name, { map: this.map, key: keyText, ...(opts.pool === undefined ? {} : { pool: opts.pool }) });
  }

  getTenant(name: string): Promise<Tenant> {
    return this.smm.getTenant(name);
  }

  listTenants(): Promise<Tenant[]> {
    return this.smm.listTenants();
  }

  /** Takes the tenant's mapping offline (routing answers TENANT_OFFLINE) or brings it online. */
  async setTenantStatus(name: string, status: Status): Promise<Tenant> {
    const t = await this.smm.getTenant(name);
    if (t.mappingId === null) throw new GeodrApiError('NOT_FOUND', `tenant ${name} has no mapping in ${t.map}`, { status: 404 });
    await this.smm.updateMapping(t.map, t.mappingId, { status });
    return this.smm.getTenant(name);
  }

  /**
   * Records the TXID the tenant's database was restored (or repatriated) at: comparing
   * it with the database's TXID later tells exactly whether the tenant changed since.
   */
  recordRestore(name: string, point: { txid: number; time?: Date | string }, kind: 'restored' | 'repatriated' = 'restored'): Promise<Tenant> {
    const body = { txid: point.txid, ...(point.time === undefined ? {} : { time: point.time instanceof Date ? point.time.toISOString() : point.time }) };
    return this.smm.patchTenantRow(name, kind === 'restored' ? { lastRestored: body } : { lastRepatriated: body });
  }

  /** Removes a tenant: its mapping goes offline, then away, then its catalog row. */
  async removeTenant(name: string): Promise<void> {
    const t = await this.smm.getTenant(name);
    if (t.mappingId !== null) {
      if (t.status === 'online') await this.smm.updateMapping(t.map, t.mappingId, { status: 'offline' });
      await this.smm.removeMapping(t.map, t.mappingId);
    }
    await this.smm.deleteTenantRow(name);
  }
}

function isCode(e: unknown, code: string): boolean {
  return e instanceof GeodrApiError && e.code === code;
}
