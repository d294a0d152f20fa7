// Builds geodr's SQLite extension (src/engine/native/deadline.c) into dist/native.
// It lets the server interrupt a statement at its deadline; see the comment in the
// C file. Without a C compiler the build goes on and the server warns at start that
// statement deadlines are only checked between result rows.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const source = 'src/engine/native/deadline.c';
const out = 'dist/native/geodr_deadline.so';

if (process.platform !== 'linux') {
  console.warn(`build-native: statement interrupts are built on Linux only (this is ${process.platform}); skipped`);
  process.exit(0);
}
// The headers must be those of the SQLite that better-sqlite3 links.
const headers = join(dirname(createRequire(import.meta.url).resolve('better-sqlite3/package.json')), 'deps', 'sqlite3');
if (existsSync(out) && statSync(out).mtimeMs >= statSync(source).mtimeMs) process.exit(0);
mkdirSync(dirname(out), { recursive: true });
const cc = process.env.CC ?? 'cc';
// -z nodelete: SQLite unloads an extension when its connection closes, but the watchdog
// thread keeps running code from this library.
const args = ['-O2', '-Wall', '-Wextra', '-shared', '-fPIC', '-pthread', '-Wl,-z,nodelete', '-I', headers, '-o', out, source];
const r = spawnSync(cc, args, { stdio: 'inherit' });
if (r.error !== undefined || r.status !== 0) {
  console.warn(`build-native: ${cc} could not build ${out} (${r.error?.message ?? `exit ${r.status}`}); statement deadlines will only be checked between result rows`);
}
