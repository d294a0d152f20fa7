/**
 * Keeps docs/ERRORS.md and ERROR_CODES in step (every code documented, no
 * documented code that does not exist, same status and retryable flag), and
 * checks the shape of GeodrError.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, GeodrError, isGeodrError, type ErrorCode } from './errors.js';

/** The repository root: the nearest directory above this file holding a package.json. */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

interface DocRow {
  line: number;
  status: string;
  retryable: string;
}

/** Table rows of docs/ERRORS.md whose first cell is a backticked error code. */
function documentedCodes(): Map<string, DocRow> {
  const file = path.join(repoRoot(), 'docs', 'ERRORS.md');
  const rows = new Map<string, DocRow>();
  fs.readFileSync(file, 'utf8')
    .split('\n')
    .forEach((text, i) => {
      if (!text.trimStart().startsWith('|')) return;
      const cells = text.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
      const m = /^`([A-Z][A-Z0-9_]*)`$/.exec(cells[0] ?? '');
      if (m === null) return;
      const code = m[1]!;
      assert.ok(!rows.has(code), `docs/ERRORS.md documents ${code} twice (lines ${rows.get(code)?.line} and ${i + 1})`);
      rows.set(code, { line: i + 1, status: cells[1] ?? '', retryable: cells[2] ?? '' });
    });
  return rows;
}

test('docs/ERRORS.md documents exactly the codes in ERROR_CODES', () => {
  const documented = new Set(documentedCodes().keys());
  const defined = new Set(Object.keys(ERROR_CODES));
  const missing = [...defined].filter((c) => !documented.has(c));
  const extra = [...documented].filter((c) => !defined.has(c));
  assert.deepEqual(
    { missing, extra },
    { missing: [], extra: [] },
    `docs/ERRORS.md is out of step with ERROR_CODES: missing from the docs [${missing.join(', ')}], documented but not defined [${extra.join(', ')}]`,
  );
});

test('each documented HTTP status and retryable flag matches ERROR_CODES', () => {
  const rows = documentedCodes();
  for (const [code, spec] of Object.entries(ERROR_CODES)) {
    const row = rows.get(code);
    if (row === undefined) continue; // reported by the test above
    assert.equal(row.status, String(spec.status), `${code} (docs/ERRORS.md line ${row.line}): status ${row.status}, ERROR_CODES says ${spec.status}`);
    const want = spec.retryable ? 'yes' : 'no';
    assert.equal(row.retryable, want, `${code} (docs/ERRORS.md line ${row.line}): retryable "${row.retryable}", ERROR_CODES says "${want}"`);
  }
});

test('every code has a valid HTTP status and a one-line summary', () => {
  for (const [code, spec] of Object.entries(ERROR_CODES)) {
    assert.ok(Number.isInteger(spec.status) && spec.status >= 400 && spec.status <= 599, `${code}: status ${spec.status}`);
    assert.ok(spec.summary.length > 0 && !spec.summary.includes('\n'), `${code}: summary`);
  }
});

test('GeodrError message names the code and the context', () => {
  const e = new GeodrError('LOG_GAP', 'TXID 7 is not in the local log', { database: 'tenant-1', txid: 7, object: '0000000000000001.seg', operation: 'log.read' });
  assert.ok(e instanceof Error);
  assert.equal(e.name, 'GeodrError');
  assert.equal(e.code, 'LOG_GAP');
  assert.match(e.message, /^LOG_GAP: TXID 7 is not in the local log/);
  assert.ok(e.message.includes('database tenant-1'), e.message);
  assert.ok(e.message.includes('TXID 7'), e.message);
  assert.ok(e.message.includes('object 0000000000000001.seg'), e.message);
  assert.ok(e.message.includes('during log.read'), e.message);
  assert.equal(new GeodrError('BUSY', 'try later').message, 'BUSY: try later');
});

test('GeodrError takes status and retryable from ERROR_CODES and keeps its cause', () => {
  const cause = new Error('ENOSPC');
  const io = new GeodrError('IO_FAILED', 'write failed', { operation: 'log.append' }, { cause });
  assert.equal(io.status, ERROR_CODES.IO_FAILED.status);
  assert.equal(io.retryable, true);
  assert.equal(io.cause, cause);
  const gap = new GeodrError('LOG_GAP', 'hole');
  assert.equal(gap.status, 409);
  assert.equal(gap.retryable, false);
});

test('GeodrError.toJSON carries code, message, retryable and context', () => {
  const details = { expected: '00000000000000aa', actual: '00000000000000bb' };
  const e = new GeodrError('REPLICA_DIVERGED', 'checksum differs', { database: 'tenant-2', txid: 42, object: 'redo.journal', details });
  const json = JSON.parse(JSON.stringify(e)) as Record<string, unknown>;
  assert.equal(json.code, 'REPLICA_DIVERGED');
  assert.equal(json.message, e.message);
  assert.equal(json.retryable, false);
  assert.equal(json.database, 'tenant-2');
  assert.equal(json.txid, 42);
  assert.equal(json.object, 'redo.journal');
  assert.deepEqual(json.details, details);
});

test('isGeodrError tells GeodrErrors apart and narrows by code', () => {
  const e: unknown = new GeodrError('STALE_EPOCH', 'old epoch', { txid: 3 });
  assert.equal(isGeodrError(e), true);
  assert.equal(isGeodrError(e, 'STALE_EPOCH'), true);
  assert.equal(isGeodrError(e, 'LOG_GAP'), false);
  assert.equal(isGeodrError(new Error('plain')), false);
  assert.equal(isGeodrError({ code: 'STALE_EPOCH' }), false);
  assert.equal(isGeodrError(undefined), false);
  if (isGeodrError(e, 'STALE_EPOCH')) {
    const code: ErrorCode = e.code; // narrowed: no cast needed
    assert.equal(code, 'STALE_EPOCH');
    assert.equal(e.context.txid, 3);
  }
});
