/**
 * Benchmark entry point: `node dist/bench/run.js NAME [options]` runs benchmark NAME;
 * with no name it lists them. An unknown name (or option) exits with code 2 so
 * scripts can tell a typo from a failed run (exit 1).
 */
import { ENGINE_USAGE, runEngineBench } from './engine.js';
import { UsageError } from './common.js';
import { SERVER_USAGE, runServerBench } from './server.js';
import { BACKUP_USAGE, runBackupBench } from './backup.js';
import { REPLICATION_USAGE, runReplicationBench } from './replication.js';
import { CATALOG_USAGE, runCatalogBench } from './catalog.js';

interface Bench {
  summary: string;
  usage: string;
  run: (args: string[]) => Promise<void>;
}

const BENCHES = new Map<string, Bench>([
  ['engine', { summary: 'capture throughput, replica apply, materialize vs cp, history scaling', usage: ENGINE_USAGE, run: runEngineBench }],
  ['server', { summary: 'SQL endpoint reads and writes over HTTP, vs in-process; RSS of 10,000 idle databases', usage: SERVER_USAGE, run: runServerBench }],
  ['replication', { summary: 'replication lag at 1,000 txn/s, sustained rate, seeding vs cp, planned and forced failover, sync vs async', usage: REPLICATION_USAGE, run: runReplicationBench }],
  ['backup', { summary: 'shipping and geo-copy lag at 1,000 txn/s, restore from the vault vs cp, PITR history scaling, vault bytes', usage: BACKUP_USAGE, run: runBackupBench }],
  ['catalog', { summary: 'routing lookups (warm cache, LSM-validated), recovery of 10,000 shards moved server', usage: CATALOG_USAGE, run: runCatalogBench }],
]);

function list(): void {
  console.log('usage: node dist/bench/run.js NAME [options]   (or: npm run bench -- NAME [options])\n');
  console.log('benchmarks:');
  for (const [name, b] of BENCHES) {
    console.log(`  ${name.padEnd(10)} ${b.summary}`);
    console.log(b.usage.replace(/^/gm, '             '));
  }
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'list' || name === '--help' || name === '-h') {
    list();
    return 0;
  }
  const bench = BENCHES.get(name);
  if (bench === undefined) {
    console.error(`unknown benchmark ${JSON.stringify(name)}; available: ${[...BENCHES.keys()].join(', ')}`);
    return 2;
  }
  try {
    await bench.run(rest);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`${name}: ${e.message}\n${bench.usage}`);
      return 2;
    }
    throw e;
  }
}

process.exitCode = await main(process.argv.slice(2));
