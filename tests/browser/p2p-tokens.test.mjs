// Join tokens end to end: with a tracker that requires them, a page whose client holds a token
// for the stream's swarm plays from peers (a native seed holding one too); a page without one is
// refused by the tracker and plays from the origin alone, without a stall or an error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { bin, expectClean, openPages, sleep, swarm } from './p2p.mjs';

test('a page holding a join token joins the swarm; a page without one plays from the origin', { timeout: 240_000 }, async () => {
  const keys = execFileSync(bin('swarmcdn-tracker'), ['keygen']).toString();
  const secret = keys.match(/secret = "([0-9a-f]+)"/)[1];
  const pub = keys.match(/public = "([0-9a-f]+)"/)[1];
  const s = await swarm({ seed: false, trackerToml: `[tokens]\nrequired = true\nkeys = ["${pub}"]\n` });
  try {
    // The stream's swarm id, from a seed that follows it (its announces are refused).
    const probe = await s.startSeed();
    let swarmId = null;
    async function poll() {
      while (swarmId === null) {
        const stats = await (await fetch(`${probe.url}/stats`)).json().catch(() => ({}));
        swarmId = stats.streams?.[0]?.swarm ?? null;
        if (swarmId === null) await sleep(200);
      }
    }
    await Promise.race([poll(), sleep(30_000)]);
    if (swarmId === null) swarmId = '';
    probe.child.kill('SIGTERM');
    assert.ok(swarmId, 'the probe seed never loaded the stream');
    const mint = (...extra) => execFileSync(bin('swarmcdn-tracker'), ['token', '--swarm', swarmId, ...extra],
      { env: { ...process.env, SWARMCDN_TOKEN_SECRET: secret } }).toString().trim();
    // The seed's token grants the seed role; the pages' do not.
    const token = mint();
    await s.startSeed(`token = "${mint('--seed')}"\n`);
    await sleep(2_000);
    const holder = `${s.pageUrl()}&token=${token}`;
    const { pages, consoles } = await openPages(s, 2, holder);
    const stranger = await openPages(s, 1, s.pageUrl());
    await sleep(30_000);
    const [a, b] = await expectClean(pages, consoles);
    const [c] = await expectClean(stranger.pages, stranger.consoles);
    console.log(`P2P shares: holders ${(a.share * 100).toFixed(1)}%, ${(b.share * 100).toFixed(1)}%; stranger ${(c.share * 100).toFixed(1)}%`);
    assert.ok(a.share >= 0.5 && b.share >= 0.5, `holders' P2P shares ${a.share}, ${b.share}`);
    assert.equal(c.p2p, 0, 'a page without a token got bytes from peers');
    assert.ok(c.http > 0, 'the page without a token played nothing');
  } finally {
    await s.close();
  }
});
