// The npm bittorrent-tracker client (what WebTorrent uses) against the SwarmCDN tracker: two
// clients announce in one swarm, an offer reaches the other, its answer comes back, scrape
// counts are right, and stopping removes the peer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import Client from 'bittorrent-tracker';

const here = dirname(fileURLToPath(import.meta.url));
const trackerBin = process.env.TRACKER_BIN || resolve(here, '..', '..', '..', 'target', 'debug', 'swarmcdn-tracker');

function startTracker() {
  return new Promise((res, rej) => {
    const child = spawn(trackerBin, ['--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); rej(new Error('tracker did not start')); }, 20_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (ws:\/\/\S+)/);
      if (m) { clearTimeout(timer); res({ url: m[1], child }); }
    });
    child.stderr.on('data', () => {});
    child.on('exit', (code) => { clearTimeout(timer); rej(new Error(`tracker exited ${code}`)); });
  });
}

const once = (emitter, event, ms = 10_000) => new Promise((res, rej) => {
  const t = setTimeout(() => rej(new Error(`no ${event} in ${ms} ms`)), ms);
  emitter.once(event, (...args) => { clearTimeout(t); res(args); });
});

// The client shares one WebSocket per announce URL within a process; real viewers each have
// their own, so each client here gets its own URL (the tracker accepts any path).
function client(url, infoHash, name) {
  const c = new Client({
    infoHash,
    peerId: randomBytes(20).toString('hex'),
    announce: [`${url}/announce/${name}`],
    port: 6881,
    getAnnounceOpts: () => ({ numwant: 1 }),
  });
  c.on('error', (e) => { throw e; });
  c.warnings = [];
  c.on('warning', (w) => c.warnings.push(String(w)));
  return c;
}

test('bittorrent-tracker clients signal through the SwarmCDN tracker', { timeout: 60_000 }, async () => {
  const tracker = await startTracker();
  const infoHash = randomBytes(20).toString('hex');
  const a = client(tracker.url, infoHash, 'a');
  const b = client(tracker.url, infoHash, 'b');
  const c = client(tracker.url, infoHash, 'c');
  try {
    const aUpdate = once(a, 'update');
    a.start();
    const [ua] = await aUpdate;
    assert.equal(ua.incomplete + ua.complete, 1);

    // B joins: its offer is relayed to A (A gets a peer), A's answer goes back (B gets a peer).
    const aPeer = once(a, 'peer');
    const bPeer = once(b, 'peer');
    b.start();
    const [pa] = await aPeer;
    const [pb] = await bPeer;
    assert.equal(pa.id, b.peerId, 'A received B\'s offer');
    assert.equal(pb.id, a.peerId, 'B received A\'s answer');

    // Scrape counts both.
    const scrape = once(c, 'scrape');
    c.scrape();
    const [s] = await scrape;
    assert.equal(s.complete + s.incomplete, 2);

    // Stopping removes B.
    const stopped = once(b, 'update');
    b.stop();
    await stopped.catch(() => {});
    let left = -1;
    for (let i = 0; i < 50 && left !== 1; i++) {
      const sc = once(c, 'scrape');
      c.scrape();
      const [r] = await sc;
      left = r.complete + r.incomplete;
      if (left !== 1) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(left, 1, 'B left the swarm');
    assert.deepEqual(a.warnings.filter((w) => !w.includes('Connection error')), []);
  } finally {
    for (const x of [a, b, c]) x.destroy();
    tracker.child.kill('SIGTERM');
  }
});
