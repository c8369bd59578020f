// The swarm id covers every rendition of the master playlist, as a seed reads it, not the
// levels hls.js keeps: here hls.js drops an audio-only variant listed beside the video ones,
// and the pages must still meet the seed (before, their swarm id left it out and they played
// from the origin alone).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expectClean, openPages, sleep, swarm } from './p2p.mjs';
import { here } from './harness.mjs';

test('pages whose player drops a variant share the seed\'s swarm', { timeout: 240_000 }, async () => {
  const sample = resolve(here, '..', 'media');
  const media = mkdtempSync(join(tmpdir(), 'swarmcdn-media-'));
  for (const r of ['360p', '216p']) symlinkSync(join(sample, r), join(media, r));
  symlinkSync(join(sample, '216p'), join(media, 'audio'));
  writeFileSync(join(media, 'master.m3u8'), readFileSync(join(sample, 'master.m3u8'), 'utf8') +
    '#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS="mp4a.40.2"\naudio/index.m3u8\n');
  const s = await swarm({ media });
  try {
    let seedSwarm = null;
    for (let i = 0; i < 150 && seedSwarm === null; i++) {
      const stats = await (await fetch(`${s.seed.url}/stats`)).json().catch(() => ({}));
      seedSwarm = stats.streams?.[0]?.swarm ?? null;
      if (seedSwarm === null) await sleep(200);
    }
    assert.ok(seedSwarm, 'the seed never loaded the stream');
    const { pages, consoles } = await openPages(s, 2, s.pageUrl());
    await sleep(25_000);
    for (const [i, page] of pages.entries()) {
      const { levels, swarmId } = await page.evaluate(() => ({
        levels: window.hls.levels.length, swarmId: window.swarm.node && window.swarm.node.swarm,
      }));
      assert.equal(levels, 2, `page ${i}: hls.js kept ${levels} levels (the audio-only one should go)`);
      assert.equal(swarmId, seedSwarm, `page ${i}: swarm id differs from the seed's`);
    }
    const reports = await expectClean(pages, consoles);
    for (const [i, t] of reports.entries()) {
      assert.ok(t.share >= 0.5, `page ${i}: P2P share ${t.share}`);
    }
    // hls.js renumbers its levels when it removes one (a codec or key error, or
    // MediaCapabilities saying no): page 0 plays the higher level, then loses the lower one,
    // and must still get each segment of the rendition it plays (every played segment is
    // compared with the origin's bytes of its URL).
    const page = pages[0];
    await page.evaluate(() => { window.hls.currentLevel = 1; });
    await sleep(6_000);
    const before = await page.evaluate(() => ({ p2p: window.swarm.stats().playerP2pBytes, n: window.swarm.segments.length }));
    await page.evaluate(() => window.hls.removeLevel(0));
    await sleep(16_000);
    const after = await page.evaluate(() => ({
      levels: window.hls.levels.length, p2p: window.swarm.stats().playerP2pBytes,
      urls: window.swarm.segments.map((x) => x.url),
    }));
    assert.equal(after.levels, 1);
    const [t] = await expectClean([page], consoles);
    const late = after.urls.slice(before.n);
    console.log(`after the removal: ${late.length} segments (${late.map((u) => new URL(u).pathname).join(' ')}), ${after.p2p - before.p2p} bytes from peers`);
    assert.ok(late.length >= 4 && late.every((u) => u.includes('/360p/')), 'segments after the removal');
    assert.ok(after.p2p > before.p2p, 'no bytes from peers after the removal');
    assert.equal(t.stats.integrityFailures, 0);
  } finally {
    await s.close();
    rmSync(media, { recursive: true, force: true });
  }
});
