/**
 * Test helper: a loopback port for a server that must be configured before it starts
 * (peers are configured by URL). Ports come from below the kernel's ephemeral range,
 * so no client socket of any process can take one between this check and the bind; a
 * port another process is listening on fails the check and another is tried.
 */
import * as net from 'node:net';
import { readFileSync } from 'node:fs';

const FALLBACK_EPHEMERAL_LOW = 32768;

function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 12000 ? low : FALLBACK_EPHEMERAL_LOW;
  } catch {
    return FALLBACK_EPHEMERAL_LOW;
  }
}

const HIGH = ephemeralLow();
const LOW = HIGH - 10000;
const handedOut = new Set<number>();

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 200; tries++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    // Never twice in one process: a port handed out may not be bound yet.
    if (handedOut.has(port)) continue;
    if (await canListen(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free loopback port between ${LOW} and ${HIGH} after 200 tries`);
}
