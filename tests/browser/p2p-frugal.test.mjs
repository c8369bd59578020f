// The wasm client serves peers only when the viewer can afford it: a page whose browser asks
// to save data, or says its connection is metered or cellular, downloads from peers but
// uploads nothing. Two pages, no seed: the frugal page gets its segments from the other,
// which fetches every segment from the origin itself (nobody else would serve it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectClean, openPages, sleep, swarm } from './p2p.mjs';

for (const [name, connection] of [
  ['saveData', { saveData: true }],
  ['a cellular connection', { type: 'cellular', saveData: false }],
]) {
  test(`a page with ${name} downloads from peers and uploads nothing`, { timeout: 240_000 }, async () => {
    const s = await swarm({ seed: false });
    try {
      // Page 0 is the frugal one: `navigator.connection` as its browser would report it.
      const { pages, consoles } = await openPages(s, 2, s.pageUrl(false), 2000, async (page, i) => {
        if (i === 0) {
          await page.addInitScript((c) => {
            Object.defineProperty(Navigator.prototype, 'connection', { get: () => c, configurable: true });
          }, connection);
        }
      });
      await sleep(30_000);
      const [frugal, other] = await expectClean(pages, consoles);
      assert.equal(await pages[0].evaluate(() => window.swarm.upload), false);
      assert.equal(await pages[1].evaluate(() => window.swarm.upload), true);
      assert.ok(frugal.p2p > 0, 'the frugal page got nothing from its peer');
      assert.equal(frugal.stats.p2pBytesUp, 0, 'the frugal page uploaded');
      assert.equal(other.p2p, 0, 'the other page got bytes from the frugal one');
    } finally {
      await s.close();
    }
  });
}
