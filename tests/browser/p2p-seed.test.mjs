// The wasm client in hls.js pages, over loopback with real processes: with a native seed
// (browser <-> webrtc-rs DataChannels), with a lying peer, and against the npm
// bittorrent-tracker server. Every segment a page played is compared with the origin's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bin, expectClean, openPages, run, sleep, swarm } from './p2p.mjs';

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
  // A seed serving one viewer at a time, so pages turn to the liar too.
  const s = await swarm({ seedToml: '\n[upload]\nslots = 1\n' });
  const liar = run(bin('peer-node'), [
    'view', s.stream, '--tracker', s.tracker.url, '--trusted-key', s.publicKey,
    '--udp', '127.0.0.1:0', '--duration', '60', '--corrupt-uploads',
  ]);
  try {
    await sleep(5000);
    const { pages, consoles } = await openPages(s, 2, s.pageUrl());
    await sleep(35_000);
    const reports = await expectClean(pages, consoles);
    const failures = reports.reduce((a, t) => a + t.stats.integrityFailures, 0);
    assert.ok(failures > 0, 'the liar was never asked for data: the test proves nothing');
    for (const t of reports) {
      if (t.stats.integrityFailures > 0) assert.ok(t.events.includes('integrity-failure'));
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
