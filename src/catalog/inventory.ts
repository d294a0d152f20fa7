/**
 * Inventory sync: records a region's servers, their elastic pools (with settings) and
 * databases (pool, role, retention) in the catalog, so a mirror image of the
 * environment can be built elsewhere from the catalog alone (the seed's catalog sync
 * job). Each server's record is replaced whole at every sync.
 */
import { GeodrClient } from '../sdk/client.js';
import type { ShardMapManager } from './manager.js';
import { normalizeServer, type InventoryServer } from './model.js';

export interface InventorySource {
  /** The server's URL. */
  url: string;
  /** An admin token for it (pools are admin-only); default: the manager's token. */
  token?: string;
}

export interface SyncResult {
  synced: InventoryServer[];
  failed: Array<{ server: string; error: string }>;
}

/** Reads every server and records it; a server that fails is reported and the rest are still recorded. */
export async function syncInventory(smm: ShardMapManager, servers: readonly InventorySource[]): Promise<SyncResult> {
  const out: SyncResult = { synced: [], failed: [] };
  await Promise.all(
    servers.map(async (s) => {
      try {
        const c = new GeodrClient({ url: s.url, token: s.token ?? smm.options.token, retries: smm.options.retries, fetch: smm.options.fetch });
        const [info, pools, databases] = await Promise.all([c.server(), c.listPools(), c.listDatabases()]);
        out.synced.push(
          await smm.putInventory({
            server: normalizeServer(s.url),
            name: info.name,
            region: info.region,
            version: info.version,
            pools: pools.map((p) => ({ name: p.name, settings: { maxDatabases: p.maxDatabases, maxConcurrentOperations: p.maxConcurrentOperations, storageQuotaBytes: p.storageQuotaBytes } })),
            databases: databases.map((d) => ({ name: d.name, pool: d.pool, settings: { role: d.role, createMode: d.createMode, retentionDays: d.retentionDays } })),
          }),
        );
      } catch (e) {
        out.failed.push({ server: s.url, error: e instanceof Error ? e.message : String(e) });
      }
    }),
  );
  out.synced.sort((a, b) => a.server.localeCompare(b.server));
  return out;
}

/**
 * Syncs now and then every `everyMs` until stopped (a sync never overlaps the previous
 * one). `onResult` hears every round, failures included.
 */
export function startInventorySync(smm: ShardMapManager, servers: readonly InventorySource[], everyMs: number, onResult?: (r: SyncResult) => void): { stop: () => Promise<void> } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<void> = Promise.resolve();
  const round = (): void => {
    current = syncInventory(smm, servers).then(
      (r) => {
        onResult?.(r);
        if (!stopped) timer = setTimeout(round, everyMs);
      },
      (e: unknown) => {
        onResult?.({ synced: [], failed: [{ server: '*', error: e instanceof Error ? e.message : String(e) }] });
        if (!stopped) timer = setTimeout(round, everyMs);
      },
    );
  };
  round();
  return {
    stop: async () => {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      await current;
    },
  };
}
