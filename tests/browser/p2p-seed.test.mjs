// The wasm client in hls.js pages, over loopback with real processes: with a native seed
// (browser <-> webrtc-rs DataChannels), with a lying peer, and against the npm
// bittorrent-tracker server. Every segment a page played is compared with the origin's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bin, expectClean, openPages, run, sleep, stripAnsi, swarm, until } from './p2p.mjs';

test('pages with a native seed get most of their bytes from peers', { timeout: 240_000 }, async () => {
  const s = await swarm();
  try {
    const { pages, consoles } = await openPages(s, 2, s.pageUrl());
    await sleep(30_000);
    const reports = await expectClean(pages, consoles);
    const http = reports.reduce((a, t) => a + t.http, 0);
    const p2p = reports.reduce((a, t) => a + t.p2p, 0);
    const share = p2p / (http + p2p);
    console.log(`P2P share over the pages: ${(share * 100).toFixed(1)}%`);
    // Each page's first segments come over HTTP (their deadline is "now"), so the share grows
    // with the run's length: about 84% over 30 s.
    assert.ok(share >= 0.75, `P2P share ${share}`);
    for (const t of reports) assert.equal(t.stats.integrityFailures, 0);
  } finally {
    await s.close();
  }
});

test('a peer serving corrupt chunks is banned and no bad byte is played', { timeout: 240_000 }, async () => {
  // The seed takes one neighbour, the liar, which joins first: so the pages' only peer
  // sources of a new segment are the liar and each other, and each page asks the liar (and
  // gets the seed's genuine signed digest with corrupt chunks) before it can ban it.
  const s = await swarm({ seedToml: 'max_peers = 1\n' });
  const liar = run(bin('peer-node'), [
    'view', s.stream, '--tracker', s.tracker.url, '--trusted-key', s.publicKey,
    '--udp', '127.0.0.1:0', '--duration', '60', '--corrupt-uploads',
  ], { RUST_LOG: 'warn,swarmcdn_peer_node=info' });
  try {
    await until(() => /neighbour connected .*seed=true/.test(stripAnsi(liar.stderr())), 30_000,
      () => `the liar never connected to the seed:\n${liar.stderr().slice(-4000)}`);
    const { pages, consoles } = await openPages(s, 2, s.pageUrl());
    await sleep(35_000);
    const reports = await expectClean(pages, consoles);
    for (const [i, t] of reports.entries()) {
      assert.ok(t.stats.integrityFailures > 0, `page ${i} never asked the liar for data`);
      assert.ok(t.events.includes('integrity-failure'), `page ${i}: no integrity-failure event`);
      // Banned: the liar's connection was closed and the page went on with its other peer.
      assert.ok(t.events.includes('peer-closed'), `page ${i} kept the liar`);
    }
  } finally {
    liar.child.kill('SIGTERM');
    await s.close();
  }
});

test('against the npm bittorrent-tracker server the pages still exchange segments', { timeout: 240_000 }, async () => {
  const s = await swarm({ tracker: 'bittorrent-tracker' });
  try {
    const { pages, consoles } = await openPages(s, 2, s.pageUrl());
    await sleep(30_000);
    const reports = await expectClean(pages, consoles);
    for (const [i, t] of reports.entries()) assert.ok(t.share >= 0.5, `page ${i}: P2P share ${t.share}`);
  } finally {
    await s.close();
  }
});
