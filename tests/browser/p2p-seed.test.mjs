// The wasm client in hls.js pages with a native seed node (webrtc-rs): browser <-> native
// DataChannels work, the pages play without a stall and get most of their bytes from peers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { here, launchBrowser, originBin, startServer, stopServer } from './harness.mjs';

const repo = resolve(here, '..', '..');
const bin = (name) => join(repo, 'target', 'debug', name);

/** Starts a process printing `listening on <scheme>://…`; resolves with that URL. */
function start(cmd, args) {
  return new Promise((ok, fail) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); fail(new Error(`${cmd} did not start\n${err}`)); }, 30_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (\S+)/);
      if (m) { clearTimeout(timer); ok({ url: m[1], child, stderr: () => err }); }
    });
    child.stderr.on('data', (d) => { err += d; if (err.length > 1 << 20) err = err.slice(-(1 << 19)); });
    child.on('exit', (code) => { clearTimeout(timer); fail(new Error(`${cmd} exited ${code}\n${err}`)); });
  });
}

/** The npm package (`cargo xtask package`), served by the origin under /dist. */
function stageDist() {
  const dist = join(here, 'dist');
  mkdirSync(dist, { recursive: true });
  const pkg = join(repo, 'target', 'npm', 'swarmcdn');
  for (const f of ['swarmcdn.js', 'swarmcdn_wasm.js', 'swarmcdn_wasm_bg.wasm']) {
    copyFileSync(join(pkg, f), join(dist, f));
  }
}

test('pages with a native seed get their segments from peers', { timeout: 180_000 }, async () => {
  stageDist();
  const dir = mkdtempSync(join(tmpdir(), 'swarmcdn-p2p-'));
  const origin = await startServer(originBin(), [
    '--listen', '127.0.0.1:0', '--static', here,
    '--segment-duration', '2', '--live-start-offset', '12',
  ]);
  const tracker = await start(bin('swarmcdn-tracker'), ['--listen', '127.0.0.1:0']);
  const key = join(dir, 'seed.key');
  const publicKey = execFileSync(bin('peer-node'), ['keygen', '--out', key]).toString().trim();
  const stream = `${origin.url}/live/master.m3u8`;
  const config = join(dir, 'seed.toml');
  writeFileSync(config, `trackers = ["${tracker.url}"]\nkey_file = "${key}"\nmetrics_listen = "127.0.0.1:0"\n\n` +
    `[[streams]]\nurl = "${stream}"\n\n[webrtc]\nudp = ["127.0.0.1:0"]\n`);
  const seed = await start(bin('peer-node'), ['seed', '--config', config]);
  const browser = await launchBrowser();
  try {
    await browser.context.grantPermissions(['microphone', 'camera'], { origin: origin.url });
    const url = `${origin.url}/pages/p2p.html?src=/live/master.m3u8&tracker=${encodeURIComponent(tracker.url)}&key=${publicKey}`;
    const pages = [];
    const consoles = [];
    for (let i = 0; i < 2; i++) {
      const page = await browser.context.newPage();
      page.on('console', (m) => { if (m.type() === 'error') consoles.push(`${i}: ${m.text()}`); });
      page.on('pageerror', (e) => consoles.push(`${i}: ${e.message}`));
      await page.goto(url);
      pages.push(page);
      await new Promise((r) => setTimeout(r, 2000));
    }
    await new Promise((r) => setTimeout(r, 30_000));
    for (const [i, page] of pages.entries()) {
      const t = await page.evaluate(() => ({
        ...window.telemetry, stats: window.swarm.stats(), error: window.swarm.error,
        trace: window.swarm.trace.slice(0, 20),
      }));
      const share = t.stats.playerP2pBytes / Math.max(1, t.stats.playerP2pBytes + t.stats.playerHttpBytes);
      console.log(`page ${i}: played ${t.currentTime.toFixed(1)} s, stalls ${t.stalls}, http ${t.stats.playerHttpBytes}, p2p ${t.stats.playerP2pBytes} (${(share * 100).toFixed(1)}%), peers ${t.stats.peers}, events ${t.events.join(',')}`);
      assert.equal(t.error, undefined, `P2P off: ${t.error}`);
      assert.deepEqual(t.errors, [], `fatal errors; console: ${consoles.join('\n')}`);
      assert.ok(t.playing, `page ${i} not playing; loader: ${t.trace.join(', ')}`);
      assert.equal(t.stalls, 0, 'stalls');
      assert.equal(t.stats.integrityFailures, 0);
      assert.ok(share >= 0.6, `P2P share ${share}; console: ${consoles.join('\n')}\nseed: ${seed.stderr().slice(-3000)}`);
    }
  } finally {
    await browser.close();
    for (const s of [seed, tracker]) if (s.child.exitCode === null) s.child.kill('SIGTERM');
    stopServer(origin);
    rmSync(dir, { recursive: true, force: true });
  }
});
