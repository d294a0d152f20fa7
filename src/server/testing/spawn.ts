/**
 * Test helper: runs a real `geodr server` as a child process on a loopback port and
 * hands back its URL and tokens. kill() is a real SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const MAIN = fileURLToPath(new URL('../main.js', import.meta.url));

export interface ServerProcess {
  url: string;
  dataDir: string;
  adminToken: string;
  dataToken: string;
  proc: ChildProcess;
  /** Everything the server wrote to stdout and stderr. */
  output(): string;
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  /** Starts again on the same data directory and port. */
  restart(): Promise<ServerProcess>;
  /** Removes the data directory (after stop/kill). */
  cleanup(): void;
}

export interface SpawnOptions {
  dataDir?: string;
  port?: number;
  /** Merged into the generated config. */
  config?: Record<string, unknown>;
  /** Data token scope. */
  dataScope?: { databases?: string[]; pools?: string[] };
}

export async function spawnServer(opts: SpawnOptions = {}): Promise<ServerProcess> {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), 'geodr-srv-'));
  const adminToken = 'admin-token-0123456789abcdef';
  const dataToken = 'data-token-0123456789abcdef';
  const config = {
    name: 'test',
    region: 'local',
    port: opts.port ?? 0,
    dataDir,
    logLevel: 'info',
    tokens: [
      { name: 'admin', secret: adminToken, role: 'admin' },
      { name: 'app', secret: dataToken, role: 'data', databases: opts.dataScope?.databases ?? [], pools: opts.dataScope?.pools ?? [] },
    ],
    ...opts.config,
  };
  mkdirSync(dataDir, { recursive: true });
  const configFile = path.join(dataDir, 'test-config.json');
  writeFileSync(configFile, JSON.stringify(config));
  const proc = spawn(process.execPath, [MAIN, '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  // 'close', not 'exit': 'exit' can come before the last of the child's output has been read
  // from its pipes, and tests read output() (the "stopped" line, a start-up refusal) right after.
  const exited = new Promise<number | null>((resolve) => proc.once('close', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not become ready:\n${out}`)), 30_000);
    const check = (): void => {
      const m = /"url":"(http:\/\/[^"]+)".*"msg":"server ready"/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    proc.stdout.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before it was ready:\n${out}`));
    });
  });
  const port = Number(new URL(url).port);
  const sp: ServerProcess = {
    url,
    dataDir,
    adminToken,
    dataToken,
    proc,
    output: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      return exited;
    },
    kill: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
    restart: () => spawnServer({ ...opts, dataDir, port }),
    cleanup: () => rmSync(dataDir, { recursive: true, force: true }),
  };
  return sp;
}
