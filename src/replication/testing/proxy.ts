/**
 * A TCP forwarder run as its own process, so a test can cut the network between two
 * servers for real: SIGKILL it and every connection through it is gone; start it
 * again on the same port and the path is back.
 *
 *   node proxy.js <listenPort> <targetPort>
 */
import * as net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const PROXY_MAIN = fileURLToPath(import.meta.url);

export interface ProxyProcess {
  listenPort: number;
  targetPort: number;
  proc: ChildProcess;
  /** SIGKILL: the cut. */
  kill(): Promise<void>;
}

export async function startProxy(listenPort: number, targetPort: number): Promise<ProxyProcess> {
  const proc = spawn(process.execPath, [PROXY_MAIN, String(listenPort), String(targetPort)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`proxy on ${listenPort} did not start: ${out}`)), 10_000);
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`proxy exited with ${code}: ${out}`));
    });
  });
  return {
    listenPort,
    targetPort,
    proc,
    kill: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

function main(listenPort: number, targetPort: number): void {
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    client.pipe(upstream);
    upstream.pipe(client);
    const close = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
  });
  server.listen(listenPort, '127.0.0.1', () => process.stdout.write(`listening ${listenPort} -> ${targetPort}\n`));
}

if (process.argv[1] === PROXY_MAIN) main(Number(process.argv[2]), Number(process.argv[3]));
