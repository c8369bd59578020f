// The browser client's peer connections: they use the configured STUN/TURN servers, and the
// connections of offers nobody answers are closed after the offer timeout instead of piling
// up (a browser refuses new connections past a few hundred, and P2P would stop).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectClean, openPages, sleep, swarm } from './p2p.mjs';

test('a page whose offers nobody answers uses the ICE servers given and keeps no unanswered offer past its timeout', { timeout: 240_000 }, async () => {
  const s = await swarm({ seed: false });
  try {
    // Record the configuration of every RTCPeerConnection the client makes.
    const record = (page) => page.addInitScript(() => {
      const Real = window.RTCPeerConnection;
      window.pcConfigs = [];
      window.RTCPeerConnection = function (config) {
        window.pcConfigs.push(JSON.parse(JSON.stringify(config || {})));
        return new Real(config);
      };
      window.RTCPeerConnection.prototype = Real.prototype;
      // The order of offers' local descriptions and of the reads of their gathering state.
      window.pcLog = [];
      const sld = Real.prototype.setLocalDescription;
      Real.prototype.setLocalDescription = function (...args) {
        window.pcLog.push('start');
        return sld.apply(this, args);
      };
      const gathering = Object.getOwnPropertyDescriptor(Real.prototype, 'iceGatheringState');
      Object.defineProperty(Real.prototype, 'iceGatheringState', {
        configurable: true,
        get() { window.pcLog.push('wait'); return gathering.get.call(this); },
      });
    });
    const url = `${s.pageUrl()}&offerTimeoutMs=4000`;
    // Alone in its swarm, the page's first announce carries offers nobody will answer.
    const { pages, consoles } = await openPages(s, 1, url, 0, record);
    const page = pages[0];
    let most = 0;
    for (let t = 0; t < 30; t++) {
      await sleep(500);
      const st = await page.evaluate(() => window.swarm.stats());
      most = Math.max(most, st.rtcConnections);
    }
    const made = await page.evaluate(() => window.pcConfigs);
    const st = await page.evaluate(() => window.swarm.stats());
    console.log(`peer connections made ${made.length}, held at most ${most}, now ${st.rtcConnections} (offers waiting ${st.offersWaiting})`);
    assert.ok(made.length > 0 && most > 0, 'no offer was made: the test proves nothing');
    // The first announce's offers all start gathering before the client waits for any (one
    // after another, each could wait 5 s for an unreachable STUN server).
    const log = await page.evaluate(() => window.pcLog);
    const firstWait = log.indexOf('wait');
    const startsBefore = log.slice(0, firstWait).length;
    console.log(`offers started before the first wait: ${startsBefore}`);
    assert.ok(startsBefore > 1, `offers gathered one after another: ${log.slice(0, 20).join(' ')}`);
    assert.ok(log.slice(0, firstWait).every((e) => e === 'start'));
    // Unanswered for 4 s, the offers' connections are closed.
    assert.equal(st.offersWaiting, 0, 'unanswered offers kept');
    assert.equal(st.rtcConnections, 0, 'their connections kept');
    const [t] = await expectClean(pages, consoles);
    assert.equal(t.p2p, 0);
    await page.close();
    // The STUN/TURN servers given go into every peer connection's configuration.
    const ice = await openPages(s, 1, `${s.pageUrl()}&ice=${encodeURIComponent('stun:127.0.0.1:3478')}`, 0, record);
    await ice.pages[0].waitForFunction(() => window.pcConfigs.length > 0 || window.swarm?.error, null, { timeout: 30_000 });
    assert.equal(await ice.pages[0].evaluate(() => window.swarm.error), undefined);
    const configs = await ice.pages[0].evaluate(() => window.pcConfigs);
    for (const c of configs) {
      assert.deepEqual(c.iceServers, [{ urls: ['stun:127.0.0.1:3478'] }], JSON.stringify(c));
    }
  } finally {
    await s.close();
  }
});

test('an origin response that stalls is given up before the player times out', { timeout: 240_000 }, async () => {
  const s = await swarm({ seed: false });
  try {
    // The fourth media segment's first request gets no response at all; every other request
    // goes through.
    let seen = 0;
    let hung = null;
    const { pages, consoles } = await openPages(s, 1, s.pageUrl(false), 0, async (page) => {
      await page.route(/\/live\/[^/]+\/seg-\d+\.m4s/, (route) => {
        seen += 1;
        if (seen === 4 && hung === null) {
          hung = new URL(route.request().url()).pathname;
          return; // never answered
        }
        return route.continue();
      });
    });
    const page = pages[0];
    await sleep(40_000);
    const t = await page.evaluate(() => ({
      trace: window.swarm.trace, segments: window.swarm.segments.map((x) => x.url),
      time: window.telemetry.currentTime, errors: window.telemetry.errors, stalls: window.telemetry.stalls,
    }));
    console.log(`hung ${hung}; played ${t.time.toFixed(1)} s, stalls ${t.stalls}; loader: ${t.trace.filter((x) => !x.startsWith('load') && !x.startsWith('done')).join(', ') || 'no timeout, failure or abort'}`);
    assert.ok(hung, 'no request was held: the test proves nothing');
    assert.deepEqual(t.errors, [], 'fatal errors');
    // The client gave the stalled response up itself, and playback went on past it (hls.js
    // then takes that segment from another rendition, or skips it on a live stream).
    assert.ok(t.trace.some((x) => x.includes('no response for 10 s')), 'the stalled response was never given up');
    const sn = (u) => Number(/seg-(\d+)\.m4s/.exec(u)[1]);
    assert.ok(t.segments.some((u) => sn(u) > sn(hung) + 3), 'playback did not go on past the held segment');
    assert.ok(!t.trace.some((x) => x.startsWith('timeout')), 'hls.js\'s loader timed out: the client waited on the stalled response');
    assert.ok(t.time > 25, `played only ${t.time} s`);
    assert.equal(consoles.length, 0, consoles.join('\n'));
  } finally {
    await s.close();
  }
});
