/**
 * The vault codec benchmark: what each compression choice of CodecVault buys
 * (stored size) and costs (encode and decode speed), and what AES-256-GCM adds,
 * on what the vault really stores: transaction records and full snapshots made
 * of SQLite page images.
 *
 * The payload is a real ~8 MiB SQLite database built with better-sqlite3 (customers,
 * orders and events with text, integers, JSON and secondary indexes, after some
 * updates and deletes so pages carry free space as in a live database), encoded with
 * the engine's record codec two ways:
 *   records   16-page units (64 KiB of pages), the shape the shipper writes most
 *   snapshot  one full unit of every page, the shape of a full snapshot
 * Figures are totals over both (16 MiB of plaintext); MB/s is MiB of plaintext per
 * second, best of three rounds, one object at a time (as the shipper puts them).
 *
 * `measureCodecs()` returns the figures; run directly (`node dist/bench/vault-codec.js`)
 * it prints a table. The result informs DEFAULT_COMPRESSION in src/vault/codec.ts.
 */
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { encodeRecord, type TxRecord } from '../src/engine/record.js';
import { prng } from '../src/engine/testing/helpers.js';
import { decodeObject, encodeObject, type CodecOptions, type Compression } from '../src/vault/codec.js';
import type { Keyring } from '../src/vault/keys.js';

export interface CodecFigures {
  /** Stored bytes / plaintext bytes (lower is better; encryption adds 36-100 bytes per object). */
  ratio: number;
  encodeMBps: number;
  decodeMBps: number;
}

interface Variant {
  name: string;
  compression: Compression;
  level?: number;
  encrypt: boolean;
}

/** The variants measured; the first four are the choices the configuration offers at their default levels. */
const VARIANTS: Variant[] = [
  { name: 'none', compression: 'none', encrypt: false },
  { name: 'gzip', compression: 'gzip', encrypt: false },
  { name: 'brotli', compression: 'brotli', encrypt: false },
  { name: 'deflate', compression: 'deflate', encrypt: false },
  { name: 'gzip-1', compression: 'gzip', level: 1, encrypt: false },
  { name: 'brotli-3', compression: 'brotli', level: 3, encrypt: false },
  { name: 'brotli-4', compression: 'brotli', level: 4, encrypt: false },
  { name: 'brotli-7', compression: 'brotli', level: 7, encrypt: false },
  { name: 'none+aes', compression: 'none', encrypt: true },
  { name: 'brotli+aes', compression: 'brotli', encrypt: true },
];

const ROUNDS = 3;
const PAGES_PER_RECORD = 16;
const TARGET_BYTES = 8 * 1024 * 1024;

/** Measures every variant; keys are variant names (`none`, `gzip`, `brotli`, `deflate`, `gzip-1`, ..., `brotli+aes`). */
export async function measureCodecs(): Promise<Record<string, CodecFigures>> {
  const objects = buildPayload();
  const plainBytes = objects.reduce((n, o) => n + o.length, 0);
  const keyring: Keyring = { active: 'bench', keys: new Map([['bench', randomBytes(32)]]) };
  const out: Record<string, CodecFigures> = {};
  for (const v of VARIANTS) {
    const opts: CodecOptions = { compression: v.compression, level: v.level, keyring: v.encrypt ? keyring : undefined };
    let encodeBest = Infinity;
    let decodeBest = Infinity;
    let stored = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const encoded: Buffer[] = [];
      let t = performance.now();
      for (let i = 0; i < objects.length; i++) encoded.push(await encodeObject(objectKey(i), objects[i]!, opts));
      encodeBest = Math.min(encodeBest, performance.now() - t);
      stored = encoded.reduce((n, o) => n + o.length, 0);
      t = performance.now();
      for (let i = 0; i < encoded.length; i++) {
        const back = await decodeObject(objectKey(i), encoded[i]!, opts.keyring);
        if (back.length !== objects[i]!.length) throw new Error(`${v.name}: object ${i} decoded to ${back.length} bytes`);
      }
      decodeBest = Math.min(decodeBest, performance.now() - t);
    }
    const mib = plainBytes / (1024 * 1024);
    out[v.name] = { ratio: stored / plainBytes, encodeMBps: mib / (encodeBest / 1000), decodeMBps: mib / (decodeBest / 1000) };
  }
  return out;
}

function objectKey(i: number): string {
  return `databases/0123456789abcdef0123456789abcdef/records/${String(i).padStart(16, '0')}`;
}

/** Encoded records and one full snapshot of a freshly built ~8 MiB SQLite database. */
function buildPayload(): Buffer[] {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'geodr-codec-bench-'));
  try {
    const file = path.join(dir, 'app.db');
    buildDatabase(file);
    const bytes = readFileSync(file);
    const pageSize = bytes.readUInt16BE(16) === 1 ? 65536 : bytes.readUInt16BE(16);
    const pageCount = Math.floor(bytes.length / pageSize);
    const pages: Array<[number, Uint8Array]> = [];
    for (let p = 0; p < pageCount; p++) pages.push([p + 1, bytes.subarray(p * pageSize, (p + 1) * pageSize)]);
    const base: Omit<TxRecord, 'pages' | 'baseTxid' | 'txid' | 'full'> = {
      dbId: '0123456789abcdef0123456789abcdef',
      epoch: 1,
      timestamp: 1_760_000_000_000,
      timestamps: [],
      pageSize,
      commitSize: pageCount,
      pre: { hi: 0x12345678, lo: 0x9abcdef0 },
      post: { hi: 0x0fedcba9, lo: 0x87654321 },
    };
    const objects: Buffer[] = [];
    for (let i = 0; i < pages.length; i += PAGES_PER_RECORD) {
      const txid = 100 + i / PAGES_PER_RECORD;
      objects.push(encodeRecord({ ...base, baseTxid: txid - 1, txid, full: false, pages: pages.slice(i, i + PAGES_PER_RECORD) }));
    }
    objects.push(encodeRecord({ ...base, baseTxid: 1000, txid: 1000, full: true, pages }));
    return objects;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const WORDS = (
  'invoice shipped pending refund premium basic gold silver annual monthly trial cancelled renewal ' +
  'paris berlin tokyo lagos lima austin denver oslo madrid seoul delivery pickup express standard ' +
  'customer support ticket resolved escalated note discount coupon welcome loyalty points balance'
).split(' ');
const FIRST = 'ada alan grace linus ken dennis barbara edsger donald margaret john tim guido anders'.split(' ');
const LAST = 'lovelace turing hopper torvalds thompson ritchie liskov dijkstra knuth hamilton backus lee rossum hejlsberg'.split(' ');
const COUNTRIES = ['FR', 'DE', 'JP', 'NG', 'PE', 'US', 'NO', 'ES', 'KR', 'GB', 'BR', 'IN'];
const STATUSES = ['new', 'paid', 'shipped', 'delivered', 'refunded', 'cancelled'];

function buildDatabase(file: string): void {
  const rnd = prng(42);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const sentence = (n: number): string => Array.from({ length: 1 + Math.floor(rnd() * n) }, () => pick(WORDS)).join(' ');
  const db = new Database(file);
  try {
    db.pragma('journal_mode = DELETE');
    db.exec(`
      CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE,
        country TEXT NOT NULL, created_at INTEGER NOT NULL, balance_cents INTEGER NOT NULL);
      CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
        status TEXT NOT NULL, total_cents INTEGER NOT NULL, created_at INTEGER NOT NULL, note TEXT);
      CREATE INDEX orders_by_customer ON orders(customer_id, created_at);
      CREATE INDEX orders_by_status ON orders(status);
      CREATE TABLE events (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL);
      CREATE INDEX events_by_at ON events(at);
    `);
    const addCustomer = db.prepare('INSERT INTO customers (name, email, country, created_at, balance_cents) VALUES (?, ?, ?, ?, ?)');
    const addOrder = db.prepare('INSERT INTO orders (customer_id, status, total_cents, created_at, note) VALUES (?, ?, ?, ?, ?)');
    const addEvent = db.prepare('INSERT INTO events (at, kind, payload) VALUES (?, ?, ?)');
    const pageCount = db.prepare<[], { n: number }>('SELECT page_count * page_size AS n FROM pragma_page_count(), pragma_page_size()');
    let customers = 0;
    let t = 1_700_000_000_000;
    while (pageCount.get()!.n < TARGET_BYTES) {
      db.transaction(() => {
        for (let i = 0; i < 200; i++) {
          const first = pick(FIRST);
          const last = pick(LAST);
          customers++;
          addCustomer.run(`${first} ${last}`, `${first}.${last}.${customers}@example.com`, pick(COUNTRIES), t, Math.floor(rnd() * 1_000_000));
          for (let k = 0; k < 3; k++) {
            t += Math.floor(rnd() * 60_000);
            addOrder.run(1 + Math.floor(rnd() * customers), pick(STATUSES), Math.floor(rnd() * 50_000), t, rnd() < 0.4 ? sentence(12) : null);
            addEvent.run(t, pick(['login', 'order', 'payment', 'email']), JSON.stringify({ customer: customers, ip: `10.${Math.floor(rnd() * 255)}.${Math.floor(rnd() * 255)}.7`, words: sentence(6) }));
          }
        }
        // Churn: live databases carry free space and freelist pages, not just packed rows.
        db.prepare('UPDATE orders SET status = ?, note = ? WHERE id % 17 = ?').run(pick(STATUSES), sentence(20), Math.floor(rnd() * 17));
        db.prepare('DELETE FROM events WHERE id % 29 = ?').run(Math.floor(rnd() * 29));
      })();
    }
  } finally {
    db.close();
  }
}

/** The figures as a text table. */
export function formatCodecTable(figures: Record<string, CodecFigures>): string {
  const lines = [`${'variant'.padEnd(10)} ${'stored/plain'.padStart(12)} ${'encode MiB/s'.padStart(13)} ${'decode MiB/s'.padStart(13)}`];
  for (const [name, f] of Object.entries(figures)) {
    lines.push(`${name.padEnd(10)} ${f.ratio.toFixed(3).padStart(12)} ${f.encodeMBps.toFixed(0).padStart(13)} ${f.decodeMBps.toFixed(0).padStart(13)}`);
  }
  return lines.join('\n');
}

if (process.argv[1] !== undefined && pathToFileURL(realpathSync(process.argv[1])).href === import.meta.url) {
  console.log(formatCodecTable(await measureCodecs()));
}
