/** Prometheus metrics of one server, gathered from live state at scrape time where possible. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { LinkView, ReplicationManager } from '../replication/manager.js';
import type { DatabaseHost } from './host.js';
import type { MetaStore } from './store.js';
import type { BackupService } from './backup.js';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly statements: Counter<'database' | 'kind'>;
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;

  constructor(host: () => DatabaseHost, store: () => MetaStore, labels: { server: string; region: string }, backup: () => BackupService | undefined = () => undefined) {
    this.registry.setDefaultLabels(labels);
    collectDefaultMetrics({ register: this.registry });
    this.statements = new Counter({
      name: 'geodr_sql_statements_total',
      help: 'SQL statements run, by database and kind (read or write); rate() gives the write rate.',
      labelNames: ['database', 'kind'],
      registers: [this.registry],
    });
    this.httpRequests = new Counter({
      name: 'geodr_http_requests_total',
      help: 'HTTP requests by route and status.',
      labelNames: ['method', 'route', 'status'],
      registers: [this.registry],
    });
    new Gauge({
      name: 'geodr_open_databases',
      help: 'Databases open in the LRU (each holds descriptors and a page cache).',
      registers: [this.registry],
      collect() {
        this.set(host().openCount);
      },
    });
    new Gauge({
      name: 'geodr_databases',
      help: 'Databases hosted, open or not.',
      registers: [this.registry],
      collect() {
        this.set(store().listDatabases().length);
      },
    });
    new Gauge({
      name: 'geodr_database_txid',
      help: 'Last TXID of each open database.',
      labelNames: ['database'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const t of host().openTenants()) this.set({ database: t.name }, t.db.txid);
      },
    });
    new Gauge({
      name: 'geodr_database_log_bytes',
      help: 'Bytes of local transaction log kept by each open database.',
      labelNames: ['database'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const t of host().openTenants()) this.set({ database: t.name }, dirBytes(path.join(t.db.stateDir, 'log')));
      },
    });
    new Gauge({
      name: 'geodr_database_checkpoints',
      help: 'WAL checkpoints of each open database since it was opened.',
      labelNames: ['database'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const t of host().openTenants()) this.set({ database: t.name }, t.db.status().checkpoints);
      },
    });
    new Gauge({
      name: 'geodr_backup_unshipped_records',
      help: 'Records of each open database committed locally but not yet in the vault (geo-restore RPO in records).',
      labelNames: ['database'],
      registers: [this.registry],
      collect() {
        this.reset();
        const b = backup();
        if (b !== undefined) for (const t of host().openTenants()) this.set({ database: t.name }, b.status({ dbId: t.db.dbId, txid: t.db.txid }).unshippedRecords);
      },
    });
    new Gauge({
      name: 'geodr_backup_alarm',
      help: 'Open databases whose vault shipping is failing (retrying with backoff) or halted: alert on > 0.',
      registers: [this.registry],
      collect() {
        const b = backup();
        let n = 0;
        if (b !== undefined) {
          for (const t of host().openTenants()) {
            const st = b.status({ dbId: t.db.dbId, txid: t.db.txid });
            if (st.halted !== null || (st.failures > 0 && st.unshippedRecords > 0)) n++;
          }
        }
        this.set(n);
      },
    });
    new Gauge({
      name: 'geodr_backup_shipped_txid',
      help: 'Last TXID of each open database in the region vault.',
      labelNames: ['database'],
      registers: [this.registry],
      collect() {
        this.reset();
        const b = backup();
        if (b !== undefined) for (const t of host().openTenants()) this.set({ database: t.name }, b.status({ dbId: t.db.dbId, txid: t.db.txid }).shippedTxid);
      },
    });
    new Gauge({
      name: 'geodr_backup_geo_copied_txid',
      help: 'TXID up to which the paired region vault (GRS) holds every batch of each open database.',
      labelNames: ['database'],
      registers: [this.registry],
      collect() {
        this.reset();
        const b = backup();
        if (b !== undefined) for (const t of host().openTenants()) this.set({ database: t.name }, b.status({ dbId: t.db.dbId, txid: t.db.txid }).geo?.copiedTxid ?? 0);
      },
    });
    new Gauge({
      name: 'geodr_backup_last_verified_restore_seconds',
      help: 'Unix time of the last restore test of each database backup (0 = never); failed tests are counted in geodr_backup_failed_verifications.',
      labelNames: ['database'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const d of store().listDatabases()) if (d.verifiedAt > 0) this.set({ database: d.name }, Math.floor(d.verifiedAt / 1000));
      },
    });
    new Gauge({
      name: 'geodr_backup_failed_verifications',
      help: 'Databases whose last restore test failed.',
      registers: [this.registry],
      collect() {
        this.set(store().listDatabases().filter((d) => d.verifiedError !== null).length);
      },
    });
    new Gauge({
      name: 'geodr_operations',
      help: 'Operations by state.',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        this.reset();
        const counts = store().countOperationsByState();
        for (const s of ['Pending', 'InProgress', 'Succeeded', 'Failed', 'Cancelled']) this.set({ state: s }, counts[s] ?? 0);
      },
    });
  }

  /** Geo-replication: link lag and state, seen from this server's side of each link, and role changes. */
  addReplication(replication: () => ReplicationManager | undefined): void {
    const views = (): LinkView[] => replication()?.allLinks() ?? [];
    new Gauge({
      name: 'geodr_replication_lag_transactions',
      help: 'Transactions the secondary of each link has not applied yet (primary side: not acknowledged).',
      labelNames: ['database', 'partner', 'role'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const l of views()) this.set({ database: l.database, partner: l.partnerServer, role: l.role }, l.lagTxids);
      },
    });
    new Gauge({
      name: 'geodr_replication_lag_seconds',
      help: 'How far behind in time the secondary of each link is (commit time of its oldest missing transaction).',
      labelNames: ['database', 'partner', 'role'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const l of views()) if (l.lagMs !== null) this.set({ database: l.database, partner: l.partnerServer, role: l.role }, l.lagMs / 1000);
      },
    });
    new Gauge({
      name: 'geodr_replication_link_up',
      help: '1 while the link streams (CATCH_UP), 0 while seeding or suspended.',
      labelNames: ['database', 'partner', 'role', 'state'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const l of views()) this.set({ database: l.database, partner: l.partnerServer, role: l.role, state: l.state }, l.state === 'CATCH_UP' ? 1 : 0);
      },
    });
    new Gauge({
      name: 'geodr_replication_events_total',
      help: 'Role changes and repairs since start: failovers, forced failovers, fences, rejoins, re-seeds.',
      labelNames: ['event'],
      registers: [this.registry],
      collect() {
        this.reset();
        const r = replication();
        if (r !== undefined) for (const [event, n] of Object.entries(r.counters)) this.set({ event }, n);
      },
    });
  }
}

function dirBytes(dir: string): number {
  let n = 0;
  try {
    for (const e of fs.readdirSync(dir)) n += fs.statSync(path.join(dir, e)).size;
  } catch {
    // a database closed between listing and stat: count what was seen
  }
  return n;
}
