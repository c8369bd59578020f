// Types of the SwarmCDN hls.js integration (swarmcdn.js).

/** Options of a SwarmCDN client. */
export interface SwarmCdnOptions {
  /** Tracker WebSocket URLs; each stream uses the one chosen by rendezvous hashing. */
  trackers: string[];
  /** Hex ed25519 public keys of the operator's seeds: only digests they signed are trusted. */
  integrityKeys?: string[];
  /** Serve peers (default: true; false when the browser asks to save data or reports a metered or cellular connection). */
  upload?: boolean;
  /** The operator's id of the stream, when the seeds use one instead of the playlist URL. */
  contentId?: string;
  /** A join token for the stream's swarm, for trackers that require one (`swarmcdn-tracker token`). */
  token?: string;
  /** STUN/TURN servers for the peer connections, as in `RTCConfiguration.iceServers`. Without them, viewers behind NAT reach only peers on their own network (and seeds with public addresses). */
  iceServers?: { urls: string | string[]; username?: string; credential?: string }[];
  /** How long a connection offered to the swarm waits for an answer before it is closed, ms (default 60 000). */
  offerTimeoutMs?: number;
  /** Keep the SHA-256 of every segment handed to hls.js in `segments` (for tests). */
  recordHashes?: boolean;
}

/** Counters of the client. */
export interface SwarmCdnStats {
  httpBytes?: number;
  p2pBytesDown?: number;
  p2pBytesUp?: number;
  peers?: number;
  integrityFailures?: number;
  /** Peer connections held: neighbours, connections being set up, and offers waiting for an answer. */
  rtcConnections?: number;
  /** Offers sent to the tracker and not answered yet. */
  offersWaiting?: number;
  segmentsDelivered?: number;
  cacheBytes?: number;
  /** Origin requests the client made. */
  httpRequests?: number;
  /** Origin fallbacks forced by a segment's deadline (peers too slow or nobody had it). */
  deadlineFallbacks?: number;
  /** Bytes received from peers and thrown away (cancelled, superseded or failed). */
  abortedP2pBytes?: number;
  /** The uplink's measured rate in bytes per second; 0 until uploads measured it. */
  uplinkBytesPerSec?: number;
  /** Neighbours served at once now (fewer than configured on a slow uplink). */
  uploadSlots?: number;
  /** The origin's measured throughput in bytes per second (first byte to last); 0 until measured. */
  originBytesPerSec?: number;
  /** The origin's estimated time to first byte, in milliseconds. */
  originTtfbMs?: number;
  /** Bytes of the segments hls.js got through the loader, from the origin. */
  playerHttpBytes: number;
  /** Bytes of the segments hls.js got through the loader, from peers. */
  playerP2pBytes: number;
}

export type SwarmCdnEvent =
  | { type: 'segment'; sn: number; level: number; http: number; p2p: number }
  | { type: 'peer-connected' | 'peer-closed' | 'integrity-failure'; peer: string };

export class SwarmCdn {
  /** Loads the wasm module (once) and makes a client. */
  static create(options: SwarmCdnOptions): Promise<SwarmCdn>;
  /** hls.js configuration with SwarmCDN's fragment loader and playlist loader (hls.js's own, keeping the
   * master playlist's text for the swarm id), merged over `extra`. */
  hlsConfig<T extends object>(extra?: T): T & { fLoader: unknown; pLoader: unknown };
  /** Follows an hls.js instance made with `hlsConfig()`: playlists, playhead, teardown. */
  attach(hls: unknown): void;
  /** Listens to events; returns a function that stops listening. */
  on(listener: (event: SwarmCdnEvent) => void): () => void;
  stats(): SwarmCdnStats;
  /** The segments handed to hls.js, with their sources. */
  segments: Array<{ sn: number; level: number; url: string; http: number; p2p: number; sha256?: string }>;
  /** Set when P2P could not start (hls.js then loads from the origin as usual). */
  error?: string;
  /** Leaves the swarm (also done on `hls.destroy()`). */
  destroy(): void;
}
