// SwarmCDN for hls.js: segments from peers over WebRTC DataChannels, the origin as fallback.
//
//   import { SwarmCdn } from './swarmcdn.js';
//   const swarm = await SwarmCdn.create({ trackers: ['wss://tracker.example'], integrityKeys: ['<hex>'] });
//   const hls = new Hls(swarm.hlsConfig());
//   swarm.attach(hls);
//   hls.loadSource(url); hls.attachMedia(video);
//
// The wasm module (`swarmcdn_wasm.js` + `swarmcdn_wasm_bg.wasm`) sits beside this file.
import init, { SwarmNode } from './swarmcdn_wasm.js';

let ready = null;

function attr(level, name) {
  const a = level.attrs || {};
  return a[name] !== undefined ? a[name] : undefined;
}

/** The rendition description the swarm id is derived from (EXT-X-STREAM-INF attributes). */
function rendition(level) {
  const bw = attr(level, 'BANDWIDTH');
  const res = attr(level, 'RESOLUTION');
  const fps = attr(level, 'FRAME-RATE');
  const [w, h] = res ? String(res).split('x').map((n) => parseInt(n, 10)) : [undefined, undefined];
  return {
    bandwidth: bw !== undefined ? parseInt(bw, 10) : (level.bitrate || undefined),
    codecs: attr(level, 'CODECS'),
    width: Number.isFinite(w) ? w : undefined,
    height: Number.isFinite(h) ? h : undefined,
    frameRate: fps !== undefined ? parseFloat(fps) : undefined,
  };
}

function levelUrl(level) {
  return Array.isArray(level.url) ? level.url[0] : level.url;
}

function newStats() {
  const t = { start: 0, first: 0, end: 0 };
  return {
    aborted: false, loaded: 0, retry: 0, total: 0, chunkCount: 0, bwEstimate: 0,
    loading: { ...t }, parsing: { ...t }, buffering: { ...t },
  };
}

export class SwarmCdn {
  /** Loads the wasm module once and makes a client. */
  static async create(options) {
    if (!ready) ready = init(new URL('./swarmcdn_wasm_bg.wasm', import.meta.url));
    await ready;
    return new SwarmCdn(options);
  }

  constructor({ trackers, integrityKeys = [], upload, contentId, token, iceServers = [], offerTimeoutMs, recordHashes = false } = {}) {
    this.recordHashes = recordHashes;
    this.trackers = trackers || [];
    this.integrityKeys = integrityKeys;
    // Upload is off when the browser asks to save data or says the connection is metered
    // (cellular, or the older Network Information API's `metered`).
    const conn = typeof navigator !== 'undefined' && navigator.connection;
    const frugal = !!conn && (conn.saveData === true || conn.metered === true || conn.type === 'cellular');
    this.upload = upload !== undefined ? upload : !frugal;
    this.contentId = contentId;
    this.token = token;
    this.iceServers = iceServers;
    this.offerTimeoutMs = offerTimeoutMs;
    this.node = null;
    // hls.js Level -> the stream's rendition index (by object: hls.js renumbers its levels
    // when it removes one).
    this.levelRendition = new WeakMap();
    this.listeners = new Set();
    this.bytes = { http: 0, p2p: 0 };
    this.segments = []; // { sn, level, http, p2p }
    this.trace = []; // loader calls, for debugging
  }

  /** Listen to `{ type: 'segment' | 'peer-connected' | 'peer-closed' | 'integrity-failure', ... }`. */
  on(f) { this.listeners.add(f); return () => this.listeners.delete(f); }

  emit(e) { for (const f of this.listeners) { try { f(e); } catch (_) { /* a listener's problem */ } } }

  /** The stream's rendition index of hls.js's level `level` (an index into `hls.levels`). */
  indexOf(level) {
    const l = this.hls && this.hls.levels[level];
    return l ? this.levelRendition.get(l) : undefined;
  }

  /** hls.js configuration: our fragment loader, and hls.js's own playlist loader told to keep
   * the manifest's text. The players hls.js makes for interstitials (ads) load on their own. */
  hlsConfig(extra = {}) {
    const swarm = this;
    // hls.js's loader contract: one loader per fragment; `stats` is read (and kept as
    // `frag.stats`) before `load()` is called, so it is the same object on every path; exactly
    // one of onSuccess / onError / onTimeout / onAbort is called, and none after `destroy()`.
    class Loader {
      constructor(config) {
        this.fallback = new config.loader(config);
        this.stats = this.fallback.stats || newStats();
        this.callbacks = null;
        this.context = null;
        this.asset = !!config.assetPlayerId;
      }
      load(context, config, callbacks) {
        const frag = context.frag;
        const index = frag && !this.asset ? swarm.indexOf(frag.level) : undefined;
        const ranged = context.rangeStart !== undefined && context.rangeStart !== 0 && context.rangeEnd !== undefined;
        if (!swarm.node || !frag || frag.type !== 'main' || typeof frag.sn !== 'number' || index === undefined || ranged) {
          return this.fallback.load(context, config, callbacks);
        }
        // hls.js may ask for a fragment before our LEVEL_LOADED handler ran: give the node the
        // playlist first.
        const level = swarm.hls && swarm.hls.levels[frag.level];
        if (level && level.details) swarm.feed(frag.level, level.details);
        const stats = this.stats;
        stats.loading.start = performance.now();
        this.context = context;
        this.callbacks = callbacks;
        this.pending = { index, sn: frag.sn };
        swarm.trace.push(`load ${frag.level}/${frag.sn}`);
        // Takes the callbacks once: whatever ends the load first (result, timeout, abort,
        // destroy) is the only one hls.js hears of.
        const take = () => {
          const c = this.callbacks;
          this.callbacks = null;
          this.pending = null;
          clearTimeout(this.timeout);
          return c;
        };
        // hls.js leaves timeouts to loaders: the core falls back to HTTP before the deadline, so
        // this only fires when something is badly wrong.
        const policy = config && config.loadPolicy;
        const limit = (policy && policy.maxLoadTimeMs) || 20_000;
        this.timeout = setTimeout(() => {
          const c = take();
          if (!c) return;
          swarm.trace.push(`timeout ${frag.level}/${frag.sn}`);
          c.onTimeout(stats, context, null);
        }, limit);
        swarm.node.request(index, frag.sn).then((r) => {
          const c = take();
          swarm.trace.push(`done ${frag.level}/${frag.sn}${c ? '' : ' (aborted)'}`);
          if (!c) return;
          stats.loading.first = stats.loading.end = performance.now();
          stats.loaded = stats.total = r.data.byteLength;
          swarm.bytes.http += r.http;
          swarm.bytes.p2p += r.p2p;
          const seg = { sn: frag.sn, level: frag.level, url: context.url, http: r.http, p2p: r.p2p };
          swarm.segments.push(seg);
          if (swarm.recordHashes && globalThis.crypto && crypto.subtle) {
            crypto.subtle.digest('SHA-256', r.data).then((h) => {
              seg.sha256 = [...new Uint8Array(h)].map((b) => b.toString(16).padStart(2, '0')).join('');
            });
          }
          swarm.emit({ type: 'segment', ...seg });
          // `r.data` is a Uint8Array of its own buffer (offset 0, exact length).
          c.onSuccess({ url: context.url, data: r.data.buffer, code: 200 }, stats, context, null);
        }, (e) => {
          const c = take();
          swarm.trace.push(`fail ${frag.level}/${frag.sn}: ${e}`);
          if (!c) return;
          // The origin's HTTP status when it answered with an error (hls.js retries 5xx).
          if (e && e.status) {
            stats.loading.end = performance.now();
            c.onError({ code: e.status, text: String(e.message || e) }, context, null, stats);
            return;
          }
          // Any other failure (the node gone, a segment it no longer lists, a network error):
          // hls.js's own loader takes this one, on the same stats object (which it requires
          // unused).
          stats.loading.start = stats.loading.first = stats.loading.end = 0;
          try { this.fallback.load(context, config, c); } catch (err) {
            c.onError({ code: 0, text: String(err && err.message || err) }, context, null, stats);
          }
        });
      }
      abort() {
        this.fallback.abort();
        clearTimeout(this.timeout);
        const c = this.callbacks;
        this.callbacks = null;
        // The node stops fetching what nobody wants any more (it keeps prefetching what it
        // still wants for itself).
        const p = this.pending;
        this.pending = null;
        if (p && swarm.node) swarm.node.cancel(p.index, p.sn);
        if (!c) return;
        swarm.trace.push('abort');
        this.stats.aborted = true;
        if (c.onAbort) c.onAbort(this.stats, this.context, null);
      }
      destroy() {
        clearTimeout(this.timeout);
        this.callbacks = null;
        this.context = null;
        this.fallback.destroy();
      }
    }
    // The playlist loader is hls.js's own (or the one given in `extra`), told to keep the
    // text of the manifest it loads: the swarm id is derived from every rendition it lists.
    const PlaylistBase = extra.pLoader;
    class PlaylistLoader {
      constructor(config) {
        const inner = new (PlaylistBase || config.loader)(config);
        if (config.assetPlayerId) return inner;
        const load = inner.load.bind(inner);
        inner.load = (context, loadConfig, callbacks) => {
          if (context.type !== 'manifest') return load(context, loadConfig, callbacks);
          const onSuccess = callbacks.onSuccess;
          return load(context, loadConfig, {
            ...callbacks,
            onSuccess: (response, stats, ctx, details) => {
              if (typeof response.data === 'string') {
                swarm.manifest = { url: response.url || ctx.url, text: response.data };
              }
              onSuccess(response, stats, ctx, details);
            },
          });
        };
        return inner;
      }
    }
    return { ...extra, fLoader: Loader, pLoader: PlaylistLoader };
  }

  /** Gives the node a level's playlist (once per version of it). */
  feed(level, details) {
    const index = this.indexOf(level);
    if (!this.node || index === undefined || !details) return;
    if (!this.fed) this.fed = new Map();
    if (this.fed.get(index) === details) return;
    this.fed.set(index, details);
    const segments = details.fragments.map((f) => {
      const s = { sn: f.sn, duration: f.duration, url: f.url };
      if (f.byteRangeEndOffset) { s.start = f.byteRangeStartOffset; s.end = f.byteRangeEndOffset; }
      return s;
    });
    try { this.node.setPlaylist(index, !!details.live, segments); } catch (_) { /* ignored */ }
  }

  /** Follows the player: playlists, playhead, teardown. */
  attach(hls) {
    const Events = hls.constructor.Events;
    this.hls = hls;
    // A new source on the same player: the old stream's node goes.
    hls.on(Events.MANIFEST_LOADING, () => { this.dropNode(); this.manifest = null; });
    hls.on(Events.MANIFEST_PARSED, () => {
      if (this.node) return;
      const levels = hls.levels;
      const manifest = this.manifest;
      try {
        this.node = new SwarmNode({
          trackers: this.trackers,
          streamUrl: hls.url,
          contentId: this.contentId,
          renditions: levels.map(rendition),
          // Every rendition the playlist lists makes the swarm id, whatever hls.js kept.
          playlist: manifest ? manifest.text : undefined,
          trustedKeys: this.integrityKeys,
          upload: this.upload,
          token: this.token,
          iceServers: this.iceServers.map((s) => ({ ...s, urls: [].concat(s.urls) })),
          offerTimeoutMs: this.offerTimeoutMs,
        });
        this.node.onEvent((e) => this.emit(e));
      } catch (e) {
        // No P2P (for example a bad key): hls.js loads from the origin as usual.
        this.error = String(e && e.message || e);
        this.node = null;
        return;
      }
      // Each level is the rendition of the same media playlist URL; without the master
      // playlist's URIs (a media playlist loaded directly, or no text), of the same
      // attributes. One matching neither loads from the origin only.
      const uris = [];
      for (let j = 0; j < this.node.renditionCount; j++) {
        const uri = this.node.variantUri(j);
        try { uris.push(uri !== undefined && manifest ? new URL(uri, manifest.url).href : null); } catch (_) { uris.push(null); }
      }
      const byUrl = uris.some((u) => u !== null);
      levels.forEach((l, i) => {
        const j = uris.indexOf(levelUrl(l));
        const k = j >= 0 ? j : (byUrl ? undefined : this.node.renditionOf(i));
        if (k !== undefined) this.levelRendition.set(l, k);
      });
    });
    hls.on(Events.LEVEL_LOADED, (_e, data) => this.feed(data.level, data.details));
    const tick = () => {
      const media = hls.media;
      // The level being loaded (hls.js's last fragment), whose next segments the node
      // prefetches; the one under the playhead lags it by the buffer after a switch.
      const loaded = (l) => l >= 0 && hls.levels[l] && hls.levels[l].details;
      const level = loaded(hls.loadLevel) ? hls.loadLevel : hls.currentLevel;
      const index = this.indexOf(level);
      const details = hls.levels[level] && hls.levels[level].details;
      // Nothing buffered yet (startup: hls.js moves a live stream, or a VOD with a start
      // position, to where it starts only once the first fragment is appended, and until then
      // the playhead reads as the oldest fragment's): no report, so the first requests are due
      // at once rather than when playback would reach them from there.
      if (!this.node || !media || index === undefined || !details || !media.buffered.length) return;
      const t = media.currentTime;
      const frag = details.fragments.find((f) => t >= f.start && t < f.start + f.duration);
      if (!frag) return;
      let ahead = 0;
      for (let i = 0; i < media.buffered.length; i++) {
        if (media.buffered.start(i) <= t + 0.1 && t < media.buffered.end(i)) ahead = media.buffered.end(i) - t;
      }
      try { this.node.setPlayer(index, frag.sn, ahead); } catch (_) { /* ignored */ }
    };
    this.timer = setInterval(tick, 250);
    // A seek is reported as it starts: the fragments it asks for must not get their
    // deadlines from where the playhead was.
    const watch = (media) => {
      if (this.seekMedia === media) return;
      if (this.seekMedia) this.seekMedia.removeEventListener('seeking', tick);
      this.seekMedia = media;
      if (media) media.addEventListener('seeking', tick);
    };
    if (hls.media) watch(hls.media);
    hls.on(Events.MEDIA_ATTACHED, (_e, data) => watch(data.media));
    hls.on(Events.MEDIA_DETACHING, () => watch(null));
    this.unwatch = () => watch(null);
    hls.on(Events.DESTROYING, () => this.destroy());
  }

  /** `{ httpBytes, p2pBytesDown, p2pBytesUp, peers, integrityFailures, ... }` plus the bytes
   * hls.js got from each source. */
  stats() {
    const s = this.node ? this.node.stats() : {};
    return { ...s, playerHttpBytes: this.bytes.http, playerP2pBytes: this.bytes.p2p };
  }

  /** Ends this stream's node (a new source, or the player's end). */
  dropNode() {
    if (this.node) { this.node.destroy(); this.node.free(); }
    this.node = null;
    this.levelRendition = new WeakMap();
    this.fed = null;
  }

  destroy() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.unwatch) this.unwatch();
    this.unwatch = null;
    this.dropNode();
  }
}
