/**
 * Azurite's blob service as a real child process, for tests of the Azure vault.
 * Not part of the public surface.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';

/** Azurite's well-known development account (public, documented by Microsoft). */
const ACCOUNT = 'devstoreaccount1';
const ACCOUNT_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
const START_TIMEOUT_MS = 20_000;

/**
 * Runs Azurite's main.js (argv[1]) in-process, exiting when the parent goes away: a
 * test runner that is killed (a timeout, Ctrl-C) gets no chance to stop it, and a
 * leftover Azurite would hold memory and a port until someone notices.
 */
const ORPHAN_GUARD = `
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) process.exit(0); }, 500).unref();
require(process.argv[1]);
`;

export interface Azurite {
  connectionString: string;
  /** http://127.0.0.1:<port> */
  endpoint: string;
  /** The Azurite process, e.g. to SIGSTOP it and simulate a hung service. */
  pid: number;
  /** Kills the process (SIGKILL: its data is in memory and disposable) and waits for it to exit. */
  stop(): Promise<void>;
}

function azuriteBlobMain(): string {
  const pkg = createRequire(import.meta.url).resolve('azurite/package.json');
  return path.join(path.dirname(pkg), 'dist', 'src', 'blob', 'main.js');
}

/**
 * Starts Azurite's blob service on 127.0.0.1 and resolves once it answers HTTP.
 *
 * The port: Azurite is told to listen on port 0 and the port the kernel picked is read
 * from its "successfully listens on" line, which avoids the race of probing for a free
 * port and handing it over. Data lives in memory; the working directory is a temp dir
 * so nothing lands in the repository, and telemetry (on by default) is switched off.
 *
 * @example
 * const azurite = await startAzurite();
 * const vault = await AzureVault.open({ connectionString: azurite.connectionString, container: 't1', createContainer: true });
 * await azurite.stop();
 */
export async function startAzurite(): Promise<Azurite> {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'geodr-azurite-'));
  const args = [
    azuriteBlobMain(),
    '--blobHost', '127.0.0.1',
    '--blobPort', '0',
    '--inMemoryPersistence',
    '--extentMemoryLimit', '512',
    '--silent',
    '--loose',
    // @azure/storage-blob 12.32 speaks API 2026-04-06; Azurite 3.35 knows up to 2025-11-05.
    '--skipApiVersionCheck',
    '--disableTelemetry',
  ];
  const child = spawn(process.execPath, ['-e', ORPHAN_GUARD, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killOnExit = (): void => void child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    fs.rmSync(cwd, { recursive: true, force: true });
  };

  try {
    const port = await waitForPort(child);
    const endpoint = `http://127.0.0.1:${port}`;
    await waitForHttp(`${endpoint}/${ACCOUNT}?comp=list`, Date.now() + START_TIMEOUT_MS);
    return {
      connectionString: `DefaultEndpointsProtocol=http;AccountName=${ACCOUNT};AccountKey=${ACCOUNT_KEY};BlobEndpoint=${endpoint}/${ACCOUNT};`,
      endpoint,
      pid: child.pid!,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

function waitForPort(child: ChildProcess): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => fail(new Error(`Azurite did not start within ${START_TIMEOUT_MS} ms; output: ${out}${err}`)), START_TIMEOUT_MS);
    const onExit = (code: number | null, signal: string | null): void =>
      fail(new Error(`Azurite exited before listening (code ${code}, signal ${signal}): ${err || out}`));
    function fail(e: Error): void {
      clearTimeout(timer);
      child.removeListener('exit', onExit);
      reject(e);
    }
    child.once('exit', onExit);
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const m = /successfully listens on https?:\/\/[^\s:]+:(\d+)/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        child.removeListener('exit', onExit);
        resolve(Number(m[1]));
      }
    });
    // The pipes keep being drained (the listeners stay), so a chatty Azurite never blocks on a full pipe.
  });
}

/** Resolves on any HTTP answer (a 403 for an unsigned request is fine: the server is up). */
async function waitForHttp(url: string, deadline: number): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const req = http.get(url, (res) => {
        res.resume();
        resolve(true);
      });
      req.setTimeout(1000, () => req.destroy());
      req.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`Azurite at ${url} did not answer in time`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
