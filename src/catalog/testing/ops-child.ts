/**
 * Test child for the catalog property test: runs a list of shard map operations
 * through the SDK's ShardMapManager and SIGKILLs itself at the `killAt`-th step
 * boundary (after the GSM part of an operation, after each LSM step, after the
 * completion). Operations the random plan gets wrong (an overlap, a missing mapping)
 * are refused by the server and skipped. Prints one line per operation on stdout.
 *
 * Usage: node ops-child.js '<json plan>'
 */
import { GeodrApiError } from '../../sdk/errors.js';
import { getShardMapManager } from '../manager.js';
import type { Mapping, ShardLocation, Status } from '../model.js';

export type PlanOp =
  | { op: 'addShard'; shard: number }
  | { op: 'removeShard'; shard: number }
  | { op: 'shardStatus'; shard: number; status: Status }
  | { op: 'addRange'; low: number | null; high: number | null; shard: number }
  | { op: 'split'; pick: number; at: number }
  | { op: 'merge'; pick: number }
  | { op: 'status'; pick: number; status: Status }
  | { op: 'move'; pick: number; shard: number }
  | { op: 'remove'; pick: number };

export interface Plan {
  url: string;
  token: string;
  database: string;
  map: string;
  shards: ShardLocation[];
  ops: PlanOp[];
  /** 1-based step at which to die; beyond the last step the child finishes. */
  killAt: number;
}

const plan = JSON.parse(process.argv[2]!) as Plan;
let steps = 0;
const smm = getShardMapManager({
  url: plan.url,
  token: plan.token,
  database: plan.database,
  concurrency: 1,
  retries: 0,
  onStep: (label) => {
    steps++;
    if (steps === plan.killAt) {
      process.stdout.write(`killed at step ${steps} (${label})\n`);
      process.kill(process.pid, 'SIGKILL');
    }
  },
});

const pick = (ms: Mapping[], i: number): Mapping | undefined => (ms.length === 0 ? undefined : ms[i % ms.length]);

for (const o of plan.ops) {
  try {
    const ms = await smm.getMappings(plan.map);
    switch (o.op) {
      case 'addShard':
        await smm.addShard(plan.map, plan.shards[o.shard]!);
        break;
      case 'removeShard':
        await smm.removeShard(plan.map, plan.shards[o.shard]!);
        break;
      case 'shardStatus':
        await smm.setShardStatus(plan.map, plan.shards[o.shard]!, o.status);
        break;
      case 'addRange':
        await smm.addRangeMapping(plan.map, { low: o.low, high: o.high }, plan.shards[o.shard]!);
        break;
      case 'split': {
        const m = pick(ms, o.pick);
        if (m !== undefined) await smm.splitMapping(plan.map, m.id, o.at);
        break;
      }
      case 'merge': {
        const i = ms.length === 0 ? -1 : o.pick % ms.length;
        if (i >= 0 && i + 1 < ms.length) await smm.mergeMappings(plan.map, ms[i]!.id, ms[i + 1]!.id);
        break;
      }
      case 'status': {
        const m = pick(ms, o.pick);
        if (m !== undefined) await smm.updateMapping(plan.map, m.id, { status: o.status });
        break;
      }
      case 'move': {
        const m = pick(ms, o.pick);
        if (m !== undefined) await smm.moveMapping(plan.map, m.id, plan.shards[o.shard]!);
        break;
      }
      case 'remove': {
        const m = pick(ms, o.pick);
        if (m !== undefined) {
          await smm.takeOffline(plan.map, m.id);
          await smm.removeMapping(plan.map, m.id);
        }
        break;
      }
    }
    process.stdout.write(`${o.op} ok\n`);
  } catch (e) {
    // The random plan asks for things the shard map refuses; only those are expected here.
    if (!(e instanceof GeodrApiError) || !['CONFLICT', 'NOT_FOUND', 'INVALID_ARGUMENT'].includes(e.code)) throw e;
    process.stdout.write(`${o.op} refused: ${e.code}\n`);
  }
}
process.stdout.write(`done after ${steps} steps\n`);
