// Configuration and names: every bad value is refused with a message naming it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { tempDir } from '../engine/testing/helpers.js';
import { GeodrError } from '../errors.js';
import { loadConfig } from './config.js';
import { validateName } from './names.js';
import { MAIN } from './testing/spawn.js';

const admin = [{ name: 'admin', secret: 'a-long-enough-secret', role: 'admin' }];

function refused(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e) => e instanceof GeodrError && e.code === 'INVALID_ARGUMENT' && pattern.test(e.message));
}

test('config: file, environment and flags layer; bad values are named', (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const file = path.join(dir, 'c.json');
  fs.writeFileSync(file, JSON.stringify({ dataDir: 'data', port: 1000, tokens: admin }));
  let c = loadConfig({ file });
  assert.equal(c.dataDir, path.join(dir, 'data'), 'relative to the file');
  assert.equal(c.port, 1000);
  assert.equal(c.limits.maxOpenDatabases, 256);
  c = loadConfig({ file, env: { GEODR_PORT: '2000', GEODR_REGION: 'westus' } });
  assert.equal(c.port, 2000);
  assert.equal(c.region, 'westus');
  c = loadConfig({ file, env: { GEODR_PORT: '2000' }, overrides: { port: 3000 } });
  assert.equal(c.port, 3000);
  c = loadConfig({ overrides: { dataDir: dir }, env: { GEODR_ADMIN_TOKEN: 'env-admin-token-123456' } });
  assert.equal(c.tokens[0]!.role, 'admin');

  refused(() => loadConfig({ file: path.join(dir, 'missing.json') }), /cannot read config file/);
  fs.writeFileSync(file, '{"dataDir": ');
  refused(() => loadConfig({ file }), /not valid JSON/);
  const bad: Array<[unknown, RegExp]> = [
    [{ dataDir: dir, tokens: admin, port: 70000 }, /port/],
    [{ dataDir: dir, tokens: admin, colour: 'red' }, /colour/],
    [{ dataDir: dir, tokens: [] }, /no admin token/],
    [{ dataDir: dir, tokens: [{ name: 'a', secret: 'short', role: 'admin' }] }, /16 characters/],
    [{ dataDir: dir, tokens: [{ name: 'a', role: 'admin' }] }, /exactly one of/],
    [{ dataDir: dir, tokens: [{ name: 'a', secret: 'a-long-enough-secret', role: 'root' }] }, /tokens\.0\.role/],
    [{ dataDir: dir, tokens: admin, name: '../etc' }, /name/],
    [{ dataDir: dir, tokens: admin, limits: { statementTimeoutMs: 0 } }, /limits\.statementTimeoutMs/],
    [{ dataDir: dir, tokens: admin, durability: 'sometimes' }, /durability/],
    [{ tokens: admin }, /dataDir/],
    [[1, 2], /JSON object/],
  ];
  for (const [cfg, pattern] of bad) {
    fs.writeFileSync(file, JSON.stringify(cfg));
    refused(() => loadConfig({ file }), pattern);
  }
  refused(() => loadConfig({ overrides: { dataDir: dir }, env: { GEODR_PORT: 'eighty', GEODR_ADMIN_TOKEN: 'env-admin-token-123456' } }), /GEODR_PORT/);
});

test('names: safe ones pass, and anything that could escape a directory or confuse a route is refused', () => {
  for (const ok of ['tenant-1', 'A', 'a.b_c-d', 'x'.repeat(128), 'Pool1']) assert.equal(validateName('database', ok), ok);
  for (const bad of ['', '..', 'a/b', 'a\\b', '.x', '-x', 'a\u0001', 'x'.repeat(129), 'tempdb', 'MASTER', 'v2', 'a b', 'é']) {
    assert.throws(() => validateName('database', bad), (e) => e instanceof GeodrError && e.code === 'INVALID_ARGUMENT' && /database name/.test(e.message), JSON.stringify(bad));
  }
  fc.assert(
    fc.property(fc.string({ maxLength: 200 }), (s) => {
      let accepted = true;
      try {
        validateName('pool', s);
      } catch {
        accepted = false;
      }
      if (accepted) {
        assert.ok(!s.includes('/') && !s.includes('\\') && !s.includes('..') && s.length <= 128 && ![...s].some((ch) => ch.charCodeAt(0) < 0x20));
        assert.equal(path.basename(s), s, 'an accepted name is a plain file name');
      }
    }),
    { numRuns: 2000 },
  );
});

test('geodr server exits 2 with a clear message on a bad flag or config', (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  let r = spawnSync(process.execPath, [MAIN, '--port', 'abc', '--data-dir', dir], { encoding: 'utf8', env: { ...process.env, GEODR_ADMIN_TOKEN: 'env-admin-token-123456' } });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--port "abc" is not an integer/);
  r = spawnSync(process.execPath, [MAIN, '--bogus'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /bogus/);
  r = spawnSync(process.execPath, [MAIN, '--data-dir', dir], { encoding: 'utf8', env: { ...process.env, GEODR_ADMIN_TOKEN: '' } });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /no admin token/);
  r = spawnSync(process.execPath, [MAIN, '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0);
  assert.match(r.stdout, /--data-dir/);
});
