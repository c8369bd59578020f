// The wasm client hands an origin response's body to the node as it arrives, not at its end:
// so the node can serve a segment's first chunks to neighbours while the rest is still coming,
// and it measures the origin right (time to first byte, then throughput). With the origin
// pacing segment bodies at a known rate, the page's estimates must match it. Handed over whole
// at the end, the body's download time would count as time to first byte and the throughput
// would come out many times the origin's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectClean, openPages, sleep, swarm } from './p2p.mjs';

const PACE = 200_000; // bytes per second, per response

test('the client measures a slow origin from the body as it streams', { timeout: 180_000 }, async () => {
  const s = await swarm({ seed: false, originArgs: ['--pace-bytes-per-sec', String(PACE)] });
  try {
    const { pages, consoles } = await openPages(s, 1, s.pageUrl(false));
    await sleep(24_000);
    const [t] = await expectClean(pages, consoles);
    const { originBytesPerSec: rate, originTtfbMs: ttfb, httpRequests } = t.stats;
    console.log(`origin: ${httpRequests} requests, estimated ${rate} B/s, time to first byte ${ttfb} ms`);
    assert.ok(httpRequests >= 5, `only ${httpRequests} origin requests`);
    assert.ok(rate >= PACE / 2 && rate <= PACE * 2, `estimated ${rate} B/s, paced at ${PACE}`);
    // Loopback: the first byte comes at once; the estimate starts at 300 ms and falls.
    assert.ok(ttfb < 150, `time to first byte estimated at ${ttfb} ms`);
  } finally {
    await s.close();
  }
});
