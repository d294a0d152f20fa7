/** The `geodr dev` command group: run a deployment locally. */
import type { Command } from 'commander';
import { loadDeployment } from './deployment.js';
import { DEFAULT_STATE_DIR, devDown, devStatus, devUp, type DevState } from './dev.js';

function printState(state: DevState, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(state, null, 2)}\n`);
    return;
  }
  const lines = [`deployment ${state.deployment.name} (state in ${state.stateDir})`, ''];
  const w = Math.max(...state.servers.map((s) => s.name.length));
  for (const s of state.servers) lines.push(`  ${s.name.padEnd(w)}  ${s.region.padEnd(10)} ${s.url.padEnd(24)} ${s.state}${s.pid !== undefined ? ` (pid ${s.pid})` : ''}`);
  lines.push('', `  admin token: ${state.tokens.admin}`, `  app token:   ${state.tokens.app}   (data role, the deployment's pools)`, '');
  const first = state.servers[0];
  if (first !== undefined) {
    lines.push(`Try:  GEODR_URL=${first.url} GEODR_TOKEN=${state.tokens.admin} npx geodr db list`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

export function registerDevCommands(program: Command): void {
  const dev = program.command('dev').description('run a deployment on this machine, one process per server');
  const json = (): boolean => program.opts<{ json?: boolean }>().json === true;
  dev
    .command('up')
    .description('start every server of a deployment (default: two paired regions) and wait until all are ready')
    .argument('[file]', 'deployment file (JSON); omitted: the default two-region deployment')
    .option('--state-dir <dir>', 'where data, tokens, configs and logs live', process.env.GEODR_DEV_DIR ?? DEFAULT_STATE_DIR)
    .action(async (file: string | undefined, o: { stateDir: string }) => {
      const state = await devUp(loadDeployment(file), { stateDir: o.stateDir, log: json() ? undefined : (l) => process.stderr.write(`${l}\n`) });
      printState(state, json());
    });
  dev
    .command('down')
    .description('stop the servers (they drain first); their state stays for the next "dev up"')
    .option('--state-dir <dir>', 'state directory', process.env.GEODR_DEV_DIR ?? DEFAULT_STATE_DIR)
    .action(async (o: { stateDir: string }) => {
      const n = await devDown({ stateDir: o.stateDir, log: (l) => process.stderr.write(`${l}\n`) });
      if (json()) process.stdout.write(`${JSON.stringify({ stopped: n })}\n`);
      else process.stdout.write(`stopped ${n} server(s)\n`);
    });
  dev
    .command('status')
    .description('show the servers of the local deployment, their endpoints and tokens')
    .option('--state-dir <dir>', 'state directory', process.env.GEODR_DEV_DIR ?? DEFAULT_STATE_DIR)
    .action(async (o: { stateDir: string }) => {
      printState(await devStatus({ stateDir: o.stateDir }), json());
    });
}
