// Helpers of the P2P browser tests: the served package, the processes (origin, tracker, seed,
// headless peers), pages playing through the SwarmCDN loader, and what they report.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { here, launchBrowser, originBin, startServer, stopServer } from './harness.mjs';

const repo = resolve(here, '..', '..');
export const bin = (name) => join(repo, 'target', 'debug', name);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `text` without terminal colour codes (the processes' logs). */
export const stripAnsi = (text) => text.replace(/\x1b\[[0-9;]*m/g, '');

/** Resolves when `cond()` holds, polling; rejects with `why()` after `ms`. */
export async function until(cond, ms, why) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(why());
    await sleep(200);
  }
}

/** Starts a process printing `listening on <scheme>://…`; resolves with that URL. */
export function start(cmd, args, opts = {}) {
  return new Promise((ok, fail) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
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

/** A process that runs to its end (a headless viewer). */
export function run(cmd, args, env = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  return { child, stderr: () => err };
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

/**
 * Origin (live, 2 s segments, of the sample media or of `media`, a folder like
 * `tests/media`; `originArgs`: more of its flags), a tracker (ours, or the npm bittorrent-tracker server), and optionally a seed
 * node with extra TOML. Returns handles and `close()`.
 */
export async function swarm({ seed = true, seedToml = '', streamToml = '', tracker = 'ours', trackerToml = '', media, originArgs = [] } = {}) {
  stageDist();
  const dir = mkdtempSync(join(tmpdir(), 'swarmcdn-p2p-'));
  const procs = [];
  const origin = await startServer(originBin(), [
    '--listen', '127.0.0.1:0', '--static', here,
    '--segment-duration', '2', '--live-start-offset', '12',
    ...(media ? ['--media', media] : []), ...originArgs,
  ]);
  const trackerConfig = join(dir, 'tracker.toml');
  writeFileSync(trackerConfig, trackerToml);
  const t = tracker === 'ours'
    ? await start(bin('swarmcdn-tracker'), ['--listen', '127.0.0.1:0', '--config', trackerConfig])
    : await start('node', [join(repo, 'tracker', 'tests', 'interop', 'bench-server.mjs')],
      { cwd: join(repo, 'tracker', 'tests', 'interop') });
  procs.push(t);
  const key = join(dir, 'seed.key');
  const publicKey = execFileSync(bin('peer-node'), ['keygen', '--out', key]).toString().trim();
  const stream = `${origin.url}/live/master.m3u8`;
  let seeds = 0;
  /** Starts a seed following the stream (`streamToml`: more lines of its `[[streams]]` entry). */
  const startSeed = async (streamToml = '', seedToml = '') => {
    const config = join(dir, `seed${seeds++}.toml`);
    writeFileSync(config, `trackers = ["${t.url}"]\nkey_file = "${key}"\nmetrics_listen = "127.0.0.1:0"\n\n` +
      `[[streams]]\nurl = "${stream}"\n${streamToml}\n[webrtc]\nudp = ["127.0.0.1:0"]\n${seedToml}`);
    const p = await start(bin('peer-node'), ['seed', '--config', config]);
    procs.push(p);
    return p;
  };
  const seedProc = seed ? await startSeed(streamToml, seedToml) : null;
  const browser = await launchBrowser();
  await browser.context.grantPermissions(['microphone', 'camera'], { origin: origin.url });
  return {
    origin, tracker: t, seed: seedProc, publicKey, stream, browser, procs, startSeed,
    /**
     * The P2P page's URL (`keys`: trust the seed's key, else unverified; `src`: the master
     * playlist's path on the origin; `query`: more of the page's parameters).
     */
    pageUrl(keys = true, { src = '/live/master.m3u8', query = '' } = {}) {
      return `${origin.url}/pages/p2p.html?src=${src}&tracker=${encodeURIComponent(t.url)}` +
        (keys ? `&key=${publicKey}` : '') + query;
    },
    async close() {
      await browser.close();
      for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGTERM');
      stopServer(origin);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Opens `n` pages, `gapMs` apart; console errors are collected in `consoles`. `prepare(page, i)`
 * runs before a page loads (init scripts).
 */
export async function openPages(s, n, url, gapMs = 2000, prepare = async () => {}) {
  const pages = [];
  const consoles = [];
  for (let i = 0; i < n; i++) {
    const page = await s.browser.context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') consoles.push(`${i}: ${m.text()}`); });
    page.on('pageerror', (e) => consoles.push(`${i}: ${e.message}`));
    await prepare(page, i);
    await page.goto(url);
    pages.push(page);
    if (i + 1 < n) await sleep(gapMs);
  }
  return { pages, consoles };
}

/** What a page reports: telemetry, the client's stats, its segments and its loader trace. */
export async function report(page) {
  const t = await page.evaluate(() => ({
    ...window.telemetry, stats: window.swarm.stats(), error: window.swarm.error,
    segments: window.swarm.segments, trace: window.swarm.trace.slice(0, 20),
  }));
  t.http = t.stats.playerHttpBytes;
  t.p2p = t.stats.playerP2pBytes;
  t.share = t.p2p / Math.max(1, t.http + t.p2p);
  return t;
}

export function describe(i, t) {
  return `page ${i}: played ${t.currentTime.toFixed(1)} s (playing ${t.startupMs} ms after load), stalls ${t.stalls}, http ${t.http}, ` +
    `p2p ${t.p2p} (${(t.share * 100).toFixed(1)}%), origin requests ${t.stats.httpRequests} (${t.stats.deadlineFallbacks} at the deadline), peers ${t.stats.peers}, uplink ${t.stats.uplinkBytesPerSec} B/s (${t.stats.uploadSlots} slots), integrity failures ${t.stats.integrityFailures}, events ${t.events.join(',')}` +
    (t.stallDetails.length ? `, hls.js: ${JSON.stringify(t.stallDetails)}` : '');
}

/** Every segment a page played, compared with the origin's bytes. */
export async function checkSegments(t) {
  const bad = [];
  for (const s of t.segments) {
    if (!s.sha256) continue;
    const body = Buffer.from(await (await fetch(s.url)).arrayBuffer());
    const want = createHash('sha256').update(body).digest('hex');
    if (want !== s.sha256) bad.push(s.sn);
  }
  return { checked: t.segments.filter((s) => s.sha256).length, bad };
}

/**
 * Every page played with P2P on, no fatal error and no stall (the `waiting` events and hls.js
 * buffer stalls the page counts), filled in hls.js's `frag.stats` on every path of the loader,
 * and played only segments with the origin's bytes. Returns the pages' reports.
 */
export async function expectClean(pages, consoles) {
  const reports = [];
  for (const [i, page] of pages.entries()) {
    const t = await report(page);
    console.log(describe(i, t));
    assert.equal(t.error, undefined, `page ${i}: P2P off: ${t.error}`);
    assert.deepEqual(t.errors, [], `page ${i}: fatal errors; console: ${consoles.join('\n')}`);
    assert.ok(t.playing, `page ${i} not playing; loader: ${t.trace.join(', ')}`);
    assert.equal(t.stalls, 0, `page ${i} stalled`);
    assert.deepEqual(t.badStats, [], `page ${i}: fragments whose stats the loader left unset`);
    const { checked, bad } = await checkSegments(t);
    assert.ok(checked > 5, `page ${i}: only ${checked} segments hashed`);
    assert.deepEqual(bad, [], `page ${i} played segments that differ from the origin's`);
    reports.push(t);
  }
  return reports;
}
