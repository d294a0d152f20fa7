/**
 * Chaos: 100 cycles of taking the primary away under write load — SIGKILL (then a
 * restart) or SIGSTOP (then SIGCONT) at a random moment — forcing the secondary to
 * take over, and bringing the old primary back, which must rejoin as a secondary.
 *
 * Invariants checked:
 * - every write acknowledged with sync durability is on the final primary;
 * - every other acknowledged write is on the final primary or in a lost-transactions
 *   copy kept by a deposed primary;
 * - a killed primary never serves a write once it is back (the new epoch exists);
 * - reads that carry the newest epoch seen never go back in (epoch, TXID);
 * - at the end both copies have the same checksum and pass integrity_check.
 * The seed is printed; GEODR_SEED replays a run.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { prng } from '../engine/testing/helpers.js';
import { Cluster, eventually } from './testing/cluster.js';

const CYCLES = Number(process.env.GEODR_CHAOS_CYCLES ?? 100);
const TOKEN = 'admin-token-0123456789abcdef';

interface Reply {
  status: number;
  body: any;
  headers: Headers;
}

async function call(url: string, method: string, route: string, body?: unknown, headers: Record<string, string> = {}, timeoutMs = 3000): Promise<Reply | undefined> {
  try {
    const r = await fetch(`${url}${route}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await r.text();
    return { status: r.status, body: text === '' ? undefined : JSON.parse(text), headers: r.headers };
  } catch {
    return undefined; // no answer: the outcome is unknown, so nothing is acknowledged
  }
}

test(`chaos: ${CYCLES} cycles of losing the primary under load, forced failover, and its return`, { timeout: 900_000 }, async () => {
  const seed = Number(process.env.GEODR_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const rand = prng(seed);
  const note = `seed ${seed} (replay with GEODR_SEED=${seed})`;
  // Short heartbeat and sync timeouts make the chaos; the peer timeout stays roomy, because a
  // restarted old primary that hears from no partner in 3 tries takes writes again.
  const c = await Cluster.start(['a', 'b'], { config: () => ({ replication: { heartbeatMs: 100, peerTimeoutMs: 2000, maxBackoffMs: 100, syncTimeoutMs: 400, failoverTimeoutMs: 2000 } }) });
  try {
    const url = (n: string): string => c.node(n).url;
    await call(url('a'), 'PUT', '/v1/databases/chaos', {});
    await call(url('a'), 'POST', '/v1/databases/chaos/query', { sql: 'create table t(k text primary key, sync integer, pad blob)' });
    const add = await call(url('a'), 'POST', '/v1/databases/chaos/replicationLinks', { partnerServer: 'b' });
    assert.equal(add?.status, 202, note);
    await eventually(async () => (await call(url('b'), 'GET', '/v1/databases/chaos'))?.body.status === 'Online', 30_000, 'seeded');

    let primary = 'a';
    let secondary = 'b';
    const acked = new Map<string, boolean>(); // key -> acknowledged with sync durability
    let seq = 0;
    let seen = { epoch: 0, txid: 0 };
    const kills = { kill: 0, stop: 0 };

    for (let cycle = 0; cycle < CYCLES; cycle++) {
      let writing = true;
      let ackedThisCycle = 0;
      const target = primary;
      const writeLoop = async (): Promise<void> => {
        while (writing) {
          const k = `c${cycle}-${seq++}`;
          const sync = rand() < 0.3;
          const r = await call(url(target), 'POST', '/v1/databases/chaos/query', { sql: 'insert into t(k, sync, pad) values (?, ?, randomblob(200))', args: [k, sync ? 1 : 0] }, sync ? { 'geodr-durability': 'sync' } : {}, 400);
          if (r?.status === 200) {
            acked.set(k, sync);
            ackedThisCycle++;
          } else if (r === undefined) {
            // No answer: once the primary is gone, stop; before that, a slow answer is no reason to.
            if (!writing) break;
            await new Promise((res) => setTimeout(res, 20));
          }
        }
      };
      // Several writers at once, so some acknowledged writes have not reached the secondary when the primary goes.
      const writer = Promise.all([writeLoop(), writeLoop(), writeLoop(), writeLoop()]);
      // Reads with the newest epoch seen: they never go back.
      const rd = await call(url(target), 'POST', '/v1/databases/chaos/query', { sql: 'select count(*) from t' }, { 'geodr-min-epoch': String(seen.epoch) });
      if (rd?.status === 200) {
        const now = { epoch: Number(rd.headers.get('geodr-epoch')), txid: Number(rd.body.txid) };
        assert.ok(now.epoch > seen.epoch || (now.epoch === seen.epoch && now.txid >= seen.txid), `read went back from ${JSON.stringify(seen)} to ${JSON.stringify(now)}; ${note}`);
        seen = now;
      }
      // The random moment counts from the first acknowledged write, so every cycle has real
      // load however slow the machine is.
      await eventually(() => ackedThisCycle > 0, 15_000, `cycle ${cycle}: a write acknowledged; ${note}`);
      await new Promise((r) => setTimeout(r, 10 + rand() * 120));
      const mode = rand() < 0.5 ? 'kill' : 'stop';
      kills[mode]++;
      if (mode === 'kill') await c.kill(primary);
      else c.node(primary).server.proc.kill('SIGSTOP');
      writing = false;
      await writer;

      const links = await call(url(secondary), 'GET', '/v1/databases/chaos/replicationLinks');
      const fo = await call(url(secondary), 'POST', `/v1/databases/chaos/replicationLinks/${links?.body.value[0].id}/forceFailoverAllowDataLoss`, undefined, {}, 10_000);
      assert.equal(fo?.status, 200, `cycle ${cycle}: forced failover ${JSON.stringify(fo?.body)}; ${note}`);

      if (mode === 'kill') {
        await c.restart(primary);
        // Back, it must refuse a write: the new epoch exists.
        const w = await call(url(primary), 'POST', '/v1/databases/chaos/query', { sql: "insert into t(k) values ('must-not-land')" }, {}, 10_000);
        assert.notEqual(w?.status, 200, `cycle ${cycle}: the returned old primary took a write; ${note}`);
      } else {
        c.node(primary).server.proc.kill('SIGCONT');
      }
      const old = primary;
      primary = secondary;
      secondary = old;
      try {
        await eventually(
          async () => {
            const o = await call(url(secondary), 'GET', '/v1/databases/chaos');
            const n = await call(url(primary), 'GET', '/v1/databases/chaos');
            return o?.body.role === 'secondary' && o.body.status === 'Online' && o.body.txid === n?.body.txid && o.body.checksum === n?.body.checksum;
          },
          30_000,
          `cycle ${cycle}: ${secondary} rejoins ${primary}; ${note}`,
        );
      } catch (e) {
        for (const n of [secondary, primary]) {
          const v = await call(url(n), 'GET', '/v1/databases/chaos');
          const l = await call(url(n), 'GET', '/v1/databases/chaos/replicationLinks');
          const o = await call(url(n), 'GET', '/v1/operations?database=chaos');
          console.log(n, JSON.stringify(v?.body), JSON.stringify(l?.body), JSON.stringify(o?.body.value.slice(0, 3)));
          console.log(c.node(n).server.output().split('\n').filter((x) => !/"level":30/.test(x)).slice(-12).join('\n').slice(-6000), 'exit', c.node(n).server.proc.exitCode, c.node(n).server.proc.signalCode);
        }
        throw e;
      }
    }

    // Final checks.
    const rows = await call(url(primary), 'POST', '/v1/databases/chaos/query', { sql: 'select k from t' });
    const present = new Set<string>((rows!.body.rows as string[][]).map((r) => r[0]!));
    assert.equal(present.has('must-not-land'), false, note);
    const kept = new Set<string>();
    for (const n of ['a', 'b']) {
      const lostDir = path.join(c.node(n).server.dataDir, 'lost');
      if (!fs.existsSync(lostDir)) continue;
      for (const d of fs.readdirSync(lostDir)) {
        for (const f of ['database.sqlite', 'db.sqlite']) {
          const file = path.join(lostDir, d, f);
          if (!fs.existsSync(file)) continue;
          const db = new Database(file, { readonly: true });
          try {
            for (const r of db.prepare('select k from t').all() as Array<{ k: string }>) kept.add(r.k);
          } finally {
            db.close();
          }
        }
      }
    }
    let lostButReported = 0;
    for (const [k, sync] of acked) {
      if (present.has(k)) continue;
      assert.equal(sync, false, `sync-acknowledged ${k} was lost; ${note}`);
      assert.ok(kept.has(k), `acknowledged ${k} is neither present nor in a lost-transactions copy; ${note}`);
      lostButReported++;
    }
    const pv = (await call(url(primary), 'GET', '/v1/databases/chaos'))!.body;
    const sv = (await call(url(secondary), 'GET', '/v1/databases/chaos'))!.body;
    assert.equal(sv.checksum, pv.checksum, note);
    assert.equal(pv.epoch, CYCLES + 1, note);
    const verify = await call(url(primary), 'POST', '/v1/databases/chaos/verify');
    assert.equal(verify?.status, 202, note);
    await eventually(async () => (await call(url(primary), 'GET', `/v1/operations/${verify.body.id}`))?.body.state === 'Succeeded', 20_000, 'verify');
    const syncCount = [...acked.values()].filter((s) => s).length;
    console.log(`chaos: ${CYCLES} cycles (${kills.kill} SIGKILL, ${kills.stop} SIGSTOP), ${acked.size} writes acknowledged (${syncCount} sync), ${lostButReported} lost and reported; ${note}`);
    assert.ok(syncCount > 0 && acked.size > CYCLES, `the load was real; ${note}`);
  } finally {
    for (const n of c.nodes.values()) n.server.proc.kill('SIGCONT');
    await c.stop();
  }
});
