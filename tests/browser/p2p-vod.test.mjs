// Two hls.js pages play the origin's VOD (12 segments of 2 s, one level) through the SwarmCDN
// loader, with a 4 s forward buffer, so that seeks land where the player has nothing
// buffered:
//   - page A plays 6 s and pauses (its node goes on prefetching the clip: 30 s of media);
//   - page B plays from the start: its first segments are due before it has a neighbour and
//     come from the origin; from the first that came from a peer on, at least 90% of its
//     bytes come from A;
//   - B seeks ahead (the segment it lands in comes from A whole) and back to the start; A
//     seeks past where it paused and plays on;
// every seek resumes playback within 10 s, neither page stalls otherwise, both play to the
// end, and every segment played has the origin's bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectClean, openPages, report, sleep, swarm } from './p2p.mjs';

// swarm() serves 2 s segments.
const SEG_SECS = 2;
const SEGMENTS = 24 / SEG_SECS;

const time = (page) => page.evaluate(() => window.telemetry.currentTime);
const seek = (page, to) => page.evaluate((to) => window.seekTo(to), to);
const pause = (page) => page.evaluate(() => document.getElementById('video').pause());
const play = (page) => page.evaluate(() => { document.getElementById('video').play(); });

/** Waits until `page` has played to `secs`. */
async function reach(page, name, secs, ms = 30_000) {
  const end = Date.now() + ms;
  while (await time(page) < secs) {
    if (Date.now() > end) {
      const t = await report(page);
      throw new Error(`${name} did not reach ${secs} s: at ${t.currentTime} s; seeks ${JSON.stringify(t.seeks)}; loader: ${t.trace.join(', ')}`);
    }
    await sleep(200);
  }
}

/** Bytes of `t`'s segments numbered in [from, to), from peers and in all. */
function bytesOf(t, from, to) {
  const segs = t.segments.filter((g) => g.sn >= from && g.sn < to);
  return { p2p: segs.reduce((a, g) => a + g.p2p, 0), all: segs.reduce((a, g) => a + g.p2p + g.http, 0), n: segs.length };
}

const sources = (t) => JSON.stringify(t.segments.map((g) => [g.sn, g.level, g.http, g.p2p]));

test('two pages seeking in a VOD: each seek resumes, segments come from the page that has them', { timeout: 240_000 }, async () => {
  const s = await swarm({ seed: false });
  try {
    const url = s.pageUrl(false, { src: '/vod/master.m3u8', query: '&maxBuffer=4&level=0' });
    const opened = await openPages(s, 1, url);
    const a = opened.pages[0];
    const consoles = opened.consoles;
    await reach(a, 'page A', 6);
    await pause(a);
    const more = await openPages(s, 1, url);
    const b = more.pages[0];
    consoles.push(...more.consoles);
    await reach(b, 'page B', 8);
    const tb = await report(b);
    console.log(`page B (segment, level, http bytes, p2p bytes): ${sources(tb)}`);
    const first = tb.segments.find((g) => g.p2p > 0);
    assert.ok(first, `page B got nothing from peers in its first 8 s: ${sources(tb)}`);

    // Ahead of where B plays, past its buffer; then back to the start.
    await seek(b, 18);
    await reach(b, 'page B', 19.5, 15_000);
    await seek(b, 1);
    await reach(b, 'page B', 2.5, 15_000);
    // Past where A paused, and past its buffer.
    await seek(a, 14);
    await play(a);
    await reach(a, 'page A', 15.5, 15_000);

    const end = Date.now() + 60_000;
    for (const [name, page] of [['page A', a], ['page B', b]]) {
      while (!(await page.evaluate(() => window.telemetry.ended))) {
        if (Date.now() > end) throw new Error(`${name} did not play to the end: at ${await time(page)} s`);
        await sleep(500);
      }
    }
    const [ra, rb] = await expectClean([a, b], consoles);
    console.log(`page A: ${sources(ra)}\npage B: ${sources(rb)}`);
    for (const [name, t, n] of [['page A', ra, 1], ['page B', rb, 2]]) {
      console.log(`${name} seeks: ${JSON.stringify(t.seeks)}`);
      assert.equal(t.seeks.length, n, `${name} seeks`);
      for (const k of t.seeks) assert.ok(k.resumeMs !== undefined && k.resumeMs < 10_000, `${name} resumed after ${k.resumeMs} ms`);
      assert.ok(t.segments.every((g) => g.level === 0), `${name} played another level: ${sources(t)}`);
    }
    // What each played: all of the clip for B; for A, what it buffered before its pause
    // (the first 10 s at least) and all from 14 s.
    const played = (t) => new Set(t.segments.map((g) => g.sn));
    const all = [...Array(SEGMENTS).keys()];
    const missing = (t, want) => want.filter((n) => !played(t).has(n));
    assert.deepEqual(missing(rb, all), [], 'page B did not play these segments');
    assert.deepEqual(missing(ra, all.filter((n) => n < 5 || n >= 14 / SEG_SECS)), [], 'page A did not play these segments');

    const later = bytesOf(rb, first.sn, SEGMENTS);
    assert.ok(later.p2p >= later.all * 0.9, `page B got ${later.p2p} of ${later.all} bytes of segments ${first.sn}-${SEGMENTS - 1} from peers`);
    const sought = bytesOf(rb, 18 / SEG_SECS, 18 / SEG_SECS + 1);
    assert.equal(sought.n, 1, 'page B played the segment it sought to once');
    assert.equal(sought.p2p, sought.all, 'page B got part of the segment it sought to from the origin');
  } finally {
    await s.close();
  }
});
