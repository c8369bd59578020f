// hls.js in headless Chromium plays the origin's live stream: playback advances past 10 s
// with no stall, and the media sequence numbers keep increasing across a loop of the clip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { here, launchBrowser, originBin, startServer, stopServer } from './harness.mjs';

test('origin live stream plays in hls.js across a loop of the clip', { timeout: 120_000 }, async () => {
  // 1 s segments, starting 18 s into the 24 s clip: the loop comes a few seconds in.
  const origin = await startServer(originBin(), [
    '--listen', '127.0.0.1:0', '--static', here,
    '--segment-duration', '1', '--live-start-offset', '18',
  ]);
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    const consoleErrors = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    await page.goto(`${origin.url}/pages/live.html`);

    // Wait for playback to start, then for 10 s of it.
    await page.waitForFunction(() => window.telemetry?.playing, null, { timeout: 20_000 });
    const start = await page.evaluate(() => window.telemetry.currentTime);
    await page.waitForFunction(
      (s) => window.telemetry.currentTime >= s + 10 || window.telemetry.errors.length > 0,
      start, { timeout: 40_000, polling: 250 });
    const t = await page.evaluate(() => window.telemetry);

    assert.deepEqual(t.errors, [], `fatal errors: ${t.errors}; console: ${consoleErrors}`);
    assert.ok(t.currentTime >= start + 10, `played ${t.currentTime - start} s`);
    assert.equal(t.stalls, 0, `stalls: ${JSON.stringify(t.stallDetails)}`);

    const sns = t.fragments.filter((f) => f.level === t.fragments.at(-1).level).map((f) => f.sn);
    for (let i = 1; i < sns.length; i++) {
      assert.ok(sns[i] > sns[i - 1], `media sequence numbers increase: ${sns}`);
    }
    // The clip loops every 24 segments: a fragment past the loop was loaded, in a new
    // discontinuity (cc) with a still-increasing media sequence number.
    const afterLoop = t.fragments.filter((f) => f.sn >= 24);
    assert.ok(afterLoop.length > 0, `no fragment after the loop: ${sns}`);
    assert.ok(afterLoop.every((f) => f.cc >= 1), `discontinuity counter after the loop: ${JSON.stringify(afterLoop)}`);
    assert.ok(t.fragments.some((f) => f.sn < 24), 'started before the loop');

    // The origin counted what it served.
    const stats = await (await fetch(`${origin.url}/stats`)).json();
    assert.ok(stats.segment_requests >= sns.length, JSON.stringify(stats).slice(0, 200));
  } finally {
    await browser.close();
    stopServer(origin);
  }
});
