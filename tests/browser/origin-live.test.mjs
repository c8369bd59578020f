// hls.js in headless Chromium plays the origin's live stream across two loops of the clip with
// no stall, and the media sequence numbers keep increasing across each loop (a discontinuity).
// hls.js lays each loop after a discontinuity where it saw the previous one end: a clip whose
// frames are presented later than they are decoded (B-frames) left a hole in the buffer from
// the second loop boundary on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { here, launchBrowser, originBin, startServer, stopServer } from './harness.mjs';

test('origin live stream plays in hls.js across two loops of the clip', { timeout: 120_000 }, async () => {
  // 1 s segments, starting 22 s into the 24 s clip: the first loop comes a few seconds in, the
  // second 24 s later.
  const origin = await startServer(originBin(), [
    '--listen', '127.0.0.1:0', '--static', here,
    '--segment-duration', '1', '--live-start-offset', '22',
  ]);
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    const consoleErrors = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    await page.goto(`${origin.url}/pages/live.html`);

    // Wait for playback to start, then for it to be 2 s into the second loop of the clip.
    await page.waitForFunction(() => window.telemetry?.playing, null, { timeout: 20_000 });
    const played = () => {
      const t = window.telemetry;
      const second = t.fragments.find((f) => f.cc >= 2);
      return t.errors.length > 0 || (second !== undefined && t.currentTime >= second.start + 2);
    };
    await page.waitForFunction(played, null, { timeout: 60_000, polling: 250 });
    const t = await page.evaluate(() => window.telemetry);

    assert.deepEqual(t.errors, [], `fatal errors: ${t.errors}; console: ${consoleErrors}`);
    assert.equal(t.stalls, 0, `stalls: ${JSON.stringify(t.stallDetails)}`);

    const sns = t.fragments.filter((f) => f.level === t.fragments.at(-1).level).map((f) => f.sn);
    for (let i = 1; i < sns.length; i++) {
      assert.ok(sns[i] > sns[i - 1], `media sequence numbers increase: ${sns}`);
    }
    // The clip loops every 24 segments: fragments past each loop were loaded, each loop in a
    // new discontinuity (cc) with still-increasing media sequence numbers.
    for (const [cc, first] of [[1, 24], [2, 48]]) {
      const after = t.fragments.filter((f) => f.sn >= first && f.sn < first + 24);
      assert.ok(after.length > 0, `no fragment after loop ${cc}: ${sns}`);
      assert.ok(after.every((f) => f.cc === cc), `discontinuity counter after loop ${cc}: ${JSON.stringify(after)}`);
    }
    assert.ok(t.fragments.some((f) => f.sn < 24), 'started before the loop');

    // The origin counted what it served.
    const stats = await (await fetch(`${origin.url}/stats`)).json();
    assert.ok(stats.segment_requests >= sns.length, JSON.stringify(stats).slice(0, 200));
  } finally {
    await browser.close();
    stopServer(origin);
  }
});
