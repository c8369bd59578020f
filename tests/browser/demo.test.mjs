// `cargo xtask demo` as a user runs it: origin, tracker and seed start, the printed demo page
// URL opens in two tabs, both play, and the page shows bytes from peers, its neighbours and
// where each segment came from.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { here, launchBrowser } from './harness.mjs';
import { sleep, until } from './p2p.mjs';

const repo = resolve(here, '..', '..');

/** A port free on loopback right now. */
function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); });
  });
}

test('cargo xtask demo serves a demo page that shows P2P in two tabs', { timeout: 600_000 }, async () => {
  const [port, trackerPort] = [await freePort(), await freePort()];
  // Its own process group, so that the test stops the demo and its children together.
  const demo = spawn('cargo', ['xtask', 'demo', '--port', String(port), '--tracker-port', String(trackerPort)], {
    cwd: repo, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let exited = null;
  demo.stdout.on('data', (d) => { out += d; });
  demo.stderr.on('data', (d) => { out += d; if (out.length > 1 << 20) out = out.slice(-(1 << 19)); });
  demo.on('exit', (code) => { exited = code; });
  const browser = await launchBrowser();
  try {
    // The first run builds the package and the binaries (already built in CI).
    await until(() => /Press Ctrl-C/.test(out) || exited !== null, 540_000, () => `the demo did not start:\n${out.slice(-4000)}`);
    assert.equal(exited, null, `the demo exited:\n${out.slice(-4000)}`);
    const url = out.match(/Open the demo page[^\n]*\n\s*(\S+)/)[1];
    await browser.context.grantPermissions(['microphone', 'camera'], { origin: new URL(url).origin });
    const pages = [];
    const errors = [];
    for (let i = 0; i < 2; i++) {
      const page = await browser.context.newPage();
      page.on('pageerror', (e) => errors.push(`${i}: ${e.message}`));
      const resp = await page.goto(url);
      assert.equal(resp.status(), 200, `the demo page answered ${resp.status()}`);
      pages.push(page);
      await sleep(3000);
    }
    await sleep(30_000);
    assert.deepEqual(errors, []);
    for (const [i, page] of pages.entries()) {
      const v = await page.evaluate(() => ({
        time: document.getElementById('video').currentTime,
        p2p: document.getElementById('p2p').textContent,
        share: document.getElementById('share').textContent,
        peers: [...document.querySelectorAll('#peers li')].map((l) => l.textContent),
        segments: document.querySelectorAll('#segments span').length,
        stats: window.swarm.stats(),
      }));
      console.log(`tab ${i}: played ${v.time.toFixed(1)} s, from peers ${v.p2p} (share ${v.share}), ` +
        `neighbours ${v.peers.join(' ')}, ${v.segments} segments shown`);
      assert.ok(v.time > 20, `tab ${i} played ${v.time} s`);
      assert.ok(v.segments > 5, `tab ${i} shows ${v.segments} segments`);
      assert.ok(v.stats.peers >= 1 && !v.peers.includes('none yet'), `tab ${i} shows no neighbour`);
      // The seed serves both tabs: most bytes come from peers, and the page says so.
      assert.ok(v.stats.playerP2pBytes > v.stats.playerHttpBytes, `tab ${i}: ${JSON.stringify(v.stats)}`);
      assert.match(v.share, /%/);
    }
  } finally {
    await browser.close();
    try { process.kill(-demo.pid, 'SIGINT'); } catch { /* gone */ }
    await until(() => exited !== null, 20_000, () => 'the demo did not stop on SIGINT').catch((e) => {
      try { process.kill(-demo.pid, 'SIGKILL'); } catch { /* gone */ }
      throw e;
    });
  }
});
