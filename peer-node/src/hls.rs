//! HLS playlists: the master playlist gives the stream's renditions (and its swarm id), each
//! media playlist the segments with their URLs and byte ranges. Parsing is done by `m3u8-rs`;
//! this module resolves URLs, byte ranges and sequence numbers and rejects what cannot be
//! played.

use std::ops::Range;
use std::time::Duration;

use swarmcdn_core::ids::{RenditionId, StreamKey, SwarmId};
use swarmcdn_core::master;
use swarmcdn_core::node::{Playlist, SegmentMeta};
use url::Url;

/// Why a playlist cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlsError {
    /// Not an HLS playlist, or broken syntax.
    #[error("malformed playlist at {url}: {reason}")]
    Malformed {
        /// The playlist's URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A URI in the playlist does not resolve against the playlist's URL.
    #[error("bad URI {uri:?} in {url}")]
    BadUri {
        /// The playlist's URL.
        url: String,
        /// The URI as written.
        uri: String,
    },
    /// Expected a media playlist, got a master playlist (or the reverse).
    #[error("{url}: expected a {expected} playlist")]
    WrongKind {
        /// The playlist's URL.
        url: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// Where bytes live: a URL and an optional byte range of it (end exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Absolute URL.
    pub url: Url,
    /// Byte range within the resource, from `EXT-X-BYTERANGE` / `BYTERANGE`.
    pub range: Option<Range<u64>>,
}

/// One rendition of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// Its fingerprint.
    pub id: RenditionId,
    /// Its media playlist.
    pub playlist_url: Url,
    /// `BANDWIDTH`, if the master playlist gave it.
    pub bandwidth: Option<u64>,
}

/// A stream: its swarm and renditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// The URL it was loaded from.
    pub url: Url,
    /// Its swarm.
    pub swarm: SwarmId,
    /// Its renditions (video variants; I-frame playlists are left out).
    pub renditions: Vec<Rendition>,
}

/// A media segment's location and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    /// Media sequence number.
    pub sequence: u64,
    /// Duration.
    pub duration: Duration,
    /// Its bytes.
    pub location: Location,
    /// The initialization segment (`EXT-X-MAP`) that applies to it.
    pub init: Option<Location>,
    /// Discontinuity before it.
    pub discontinuity: bool,
}

/// A parsed media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// The rendition.
    pub rendition: RenditionId,
    /// `EXT-X-TARGETDURATION`.
    pub target_duration: Duration,
    /// Live (no `EXT-X-ENDLIST`) or VOD.
    pub live: bool,
    /// The segments, in order.
    pub segments: Vec<SegmentInfo>,
}

impl MediaPlaylist {
    /// What the core node needs of it.
    pub fn to_core(&self) -> Playlist {
        Playlist {
            rendition: self.rendition,
            live: self.live,
            segments: self
                .segments
                .iter()
                .map(|s| SegmentMeta {
                    sequence: s.sequence,
                    duration: s.duration,
                    partial: false,
                })
                .collect(),
        }
    }
}

/// The longest segment duration accepted (an hour): anything longer is a broken playlist.
const MAX_SEGMENT_DURATION: f64 = 3600.0;

fn malformed(url: &Url, reason: impl Into<String>) -> HlsError {
    HlsError::Malformed {
        url: url.to_string(),
        reason: reason.into(),
    }
}

fn resolve(base: &Url, uri: &str) -> Result<Url, HlsError> {
    let u = base.join(uri.trim()).map_err(|_| HlsError::BadUri {
        url: base.to_string(),
        uri: uri.into(),
    })?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(HlsError::BadUri {
            url: base.to_string(),
            uri: uri.into(),
        });
    }
    Ok(u)
}

fn hls_text<'a>(url: &Url, text: &'a [u8]) -> Result<&'a [u8], HlsError> {
    master::hls_text(text).ok_or_else(|| malformed(url, master::MasterError::NotHls.to_string()))
}

/// Parses the playlist at `url`: a master playlist gives its variants; a media playlist is a
/// stream of one rendition. The swarm id is derived from `content_id` if given, else from the
/// URL.
pub fn parse_stream(url: &Url, text: &[u8], content_id: Option<&str>) -> Result<Stream, HlsError> {
    let variants = master::variants(text).map_err(|e| malformed(url, e.to_string()))?;
    let mut renditions = Vec::with_capacity(variants.len());
    for v in variants {
        renditions.push(Rendition {
            id: v.id,
            playlist_url: match &v.uri {
                Some(uri) => resolve(url, uri)?,
                None => url.clone(),
            },
            bandwidth: v.bandwidth,
        });
    }
    let ids: Vec<RenditionId> = renditions.iter().map(|r| r.id).collect();
    let key = match content_id {
        Some(c) => StreamKey::ContentId(c),
        None => StreamKey::PlaylistUrl(url.as_str()),
    };
    Ok(Stream {
        url: url.clone(),
        swarm: SwarmId::derive(key, &ids),
        renditions,
    })
}

/// Parses a media playlist of `rendition` loaded from `url`.
pub fn parse_media(
    url: &Url,
    text: &[u8],
    rendition: RenditionId,
) -> Result<MediaPlaylist, HlsError> {
    let text = hls_text(url, text)?;
    let parsed =
        m3u8_rs::parse_playlist_res(text).map_err(|e| malformed(url, master::short(&e)))?;
    let m3u8_rs::Playlist::MediaPlaylist(p) = parsed else {
        return Err(HlsError::WrongKind {
            url: url.to_string(),
            expected: "media",
        });
    };
    let live = !p.end_list && p.playlist_type != Some(m3u8_rs::MediaPlaylistType::Vod);
    let mut segments = Vec::with_capacity(p.segments.len());
    let mut init: Option<Location> = None;
    // An EXT-X-BYTERANGE without an offset continues where the previous one of the same
    // resource ended.
    let mut last_end: Option<(Url, u64)> = None;
    for (i, s) in p.segments.iter().enumerate() {
        if let Some(map) = &s.map {
            let map_url = resolve(url, &map.uri)?;
            let range = match &map.byte_range {
                Some(b) => Some(byte_range(url, b.offset.unwrap_or(0), b.length)?),
                None => None,
            };
            init = Some(Location {
                url: map_url,
                range,
            });
        }
        let seg_url = resolve(url, &s.uri)?;
        let range = match &s.byte_range {
            Some(b) => {
                let start = match b.offset {
                    Some(o) => o,
                    None => match &last_end {
                        Some((u, end)) if *u == seg_url => *end,
                        _ => {
                            return Err(malformed(
                                url,
                                "EXT-X-BYTERANGE without an offset does not follow a range of the same URI",
                            ));
                        }
                    },
                };
                let r = byte_range(url, start, b.length)?;
                last_end = Some((seg_url.clone(), r.end));
                Some(r)
            }
            None => {
                last_end = None;
                None
            }
        };
        let d = f64::from(s.duration);
        if !(0.0..=MAX_SEGMENT_DURATION).contains(&d) {
            return Err(malformed(url, format!("segment duration {d} out of range")));
        }
        let sequence = p
            .media_sequence
            .checked_add(i as u64)
            .ok_or_else(|| malformed(url, "media sequence overflows"))?;
        segments.push(SegmentInfo {
            sequence,
            duration: Duration::from_secs_f64(d),
            location: Location {
                url: seg_url,
                range,
            },
            init: init.clone(),
            discontinuity: s.discontinuity,
        });
    }
    if p.target_duration == 0 && !segments.is_empty() {
        return Err(malformed(url, "EXT-X-TARGETDURATION is missing or zero"));
    }
    Ok(MediaPlaylist {
        rendition,
        target_duration: Duration::from_secs(p.target_duration.min(3600)),
        live,
        segments,
    })
}

fn byte_range(url: &Url, start: u64, length: u64) -> Result<Range<u64>, HlsError> {
    if length == 0 {
        return Err(malformed(url, "empty byte range"));
    }
    let end = start
        .checked_add(length)
        .ok_or_else(|| malformed(url, "byte range overflows"))?;
    Ok(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn master_gives_renditions_and_a_stable_swarm() {
        let u = url("http://o.example/live/master.m3u8?token=1");
        let text = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\"\n360p/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=384x216\nhttp://cdn.example/216p/index.m3u8\n#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"if.m3u8\"\n";
        let s = parse_stream(&u, text, None).unwrap();
        assert_eq!(s.renditions.len(), 2);
        assert_eq!(
            s.renditions[0].playlist_url.as_str(),
            "http://o.example/live/360p/index.m3u8"
        );
        assert_eq!(
            s.renditions[1].playlist_url.as_str(),
            "http://cdn.example/216p/index.m3u8"
        );
        // The query does not change the swarm; a content id does.
        let s2 = parse_stream(&url("http://o.example/live/master.m3u8"), text, None).unwrap();
        assert_eq!(s.swarm, s2.swarm);
        let s3 = parse_stream(&u, text, Some("channel-1")).unwrap();
        assert_ne!(s.swarm, s3.swarm);
    }

    #[test]
    fn media_playlist_with_map_ranges_and_discontinuity() {
        let u = url("http://o.example/live/360p/index.m3u8");
        let text = b"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:41\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\nseg41.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:1.5,\n#EXT-X-BYTERANGE:1000@0\nall.m4s\n#EXTINF:2.0,\n#EXT-X-BYTERANGE:500\nall.m4s\n";
        let r = RenditionId([1; 8]);
        let p = parse_media(&u, text, r).unwrap();
        assert!(p.live);
        assert_eq!(p.target_duration, Duration::from_secs(2));
        let seqs: Vec<u64> = p.segments.iter().map(|s| s.sequence).collect();
        assert_eq!(seqs, [41, 42, 43]);
        assert_eq!(
            p.segments[0].init.as_ref().unwrap().url.as_str(),
            "http://o.example/live/360p/init.mp4"
        );
        assert!(p.segments[1].discontinuity);
        assert_eq!(p.segments[1].location.range, Some(0..1000));
        assert_eq!(p.segments[2].location.range, Some(1000..1500));
        assert_eq!(p.segments[1].duration, Duration::from_millis(1500));
        let core = p.to_core();
        assert_eq!(core.segments.len(), 3);
        assert_eq!(core.rendition, r);
    }

    #[test]
    fn vod_and_ts() {
        let u = url("http://o.example/vod/index.m3u8");
        let text = b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:6,\na.ts\n#EXTINF:6,\nb.ts\n#EXT-X-ENDLIST\n";
        let p = parse_media(&u, text, RenditionId([0; 8])).unwrap();
        assert!(!p.live);
        assert_eq!(
            p.segments[1].location.url.as_str(),
            "http://o.example/vod/b.ts"
        );
        assert_eq!(p.segments[0].sequence, 0);
        // A media playlist given as the stream is a stream of one rendition.
        let s = parse_stream(&u, text, None).unwrap();
        assert_eq!(s.renditions.len(), 1);
        assert_eq!(s.renditions[0].playlist_url, u);
    }

    #[test]
    fn bad_playlists_are_clear_errors() {
        let u = url("http://o.example/x.m3u8");
        for (text, want) in [
            (&b"<html>not found</html>"[..], "#EXTM3U"),
            (
                b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nftp://x/y\n",
                "bad URI",
            ),
            (
                b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n#EXT-X-BYTERANGE:10\na.ts\n",
                "without an offset",
            ),
            (
                b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:99999,\na.ts\n",
                "out of range",
            ),
            (
                b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n",
                "expected a media",
            ),
        ] {
            let e = parse_media(&u, text, RenditionId([0; 8])).unwrap_err();
            assert!(e.to_string().contains(want), "{e} lacks {want:?}");
        }
        let e = parse_stream(&u, b"#EXTM3U\n#EXT-X-VERSION:3\n", None);
        // An empty media playlist is a (strange) stream of one rendition, not a crash.
        assert!(e.is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let u = url("http://o.example/x.m3u8");
        let mut seed = 7u64;
        for len in 0..400usize {
            let mut text = b"#EXTM3U\n".to_vec();
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let pool = b"#EXTINF:-1.5,\nBYTERANGE@:=\"MAP URI\n0123456789abc/.?";
                text.push(pool[(seed >> 33) as usize % pool.len()]);
            }
            let _ = parse_media(&u, &text, RenditionId([0; 8]));
            let _ = parse_stream(&u, &text, None);
        }
    }
}
