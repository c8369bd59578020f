//! A stream's renditions as its playlist lists them, the input of its swarm id.
//!
//! Every peer of a stream must derive the same [`SwarmId`](crate::ids::SwarmId), so every peer
//! reads the renditions the same way: the seed node from the master playlist it fetched, the
//! browser client from the bytes hls.js fetched, never from the player's own list (hls.js
//! leaves out variants it cannot play, for example an audio-only one next to video ones, or
//! one of a codec the browser lacks).
//!
//! Parsing is done by `m3u8-rs`. I-frame playlists are left out, and variants with the same
//! [`RenditionId`] (redundant streams) count once, the first one listed.

use crate::ids::{RenditionAttributes, RenditionId};

/// One rendition of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Its fingerprint.
    pub id: RenditionId,
    /// Its media playlist's URI as written (relative to the playlist's URL), or `None` when the
    /// playlist is itself the only rendition's media playlist.
    pub uri: Option<String>,
    /// `BANDWIDTH`, if given.
    pub bandwidth: Option<u64>,
}

/// Why a playlist gives no renditions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterError {
    /// It does not start with `#EXTM3U`.
    #[error("does not start with #EXTM3U")]
    NotHls,
    /// Broken syntax (the parser's message, cut short).
    #[error("{0}")]
    Syntax(String),
    /// A master playlist without a single (non-I-frame) variant.
    #[error("master playlist lists no variant")]
    NoVariant,
}

/// `text` from its `#EXTM3U` on, past an optional byte-order mark and white space; `None` if
/// it is not an HLS playlist.
pub fn hls_text(text: &[u8]) -> Option<&[u8]> {
    let start = text
        .strip_prefix(b"\xef\xbb\xbf")
        .unwrap_or(text)
        .trim_ascii_start();
    start.starts_with(b"#EXTM3U").then_some(start)
}

/// The renditions of the stream whose playlist is `text`: a master playlist's variants, in the
/// order listed; anything else starting with `#EXTM3U` is taken for a media playlist, a stream
/// of one rendition with no attributes.
pub fn variants(text: &[u8]) -> Result<Vec<Variant>, MasterError> {
    let text = hls_text(text).ok_or(MasterError::NotHls)?;
    if !m3u8_rs::is_master_playlist(text) {
        // A media playlist, read as such where its segments are wanted (the browser leaves
        // that to the player: only master playlists are parsed here, which keeps the media
        // playlist parser out of the wasm client).
        return Ok(vec![Variant {
            id: RenditionId::from_attributes(&RenditionAttributes::default()),
            uri: None,
            bandwidth: None,
        }]);
    }
    let m = m3u8_rs::parse_master_playlist_res(text).map_err(|e| MasterError::Syntax(short(&e)))?;
    let mut out: Vec<Variant> = Vec::new();
    for v in m.variants.iter().filter(|v| !v.is_i_frame) {
        let attrs = RenditionAttributes {
            bandwidth: Some(v.bandwidth),
            codecs: v.codecs.clone(),
            resolution: v.resolution.map(|r| {
                (
                    u32::try_from(r.width).unwrap_or(u32::MAX),
                    u32::try_from(r.height).unwrap_or(u32::MAX),
                )
            }),
            frame_rate: v.frame_rate,
            name: None,
        };
        let id = RenditionId::from_attributes(&attrs);
        if out.iter().any(|r| r.id == id) {
            continue;
        }
        out.push(Variant {
            id,
            uri: Some(v.uri.clone()),
            bandwidth: Some(v.bandwidth),
        });
    }
    if out.is_empty() {
        return Err(MasterError::NoVariant);
    }
    Ok(out)
}

/// A parser error's debug text, at most 160 bytes (it can quote the whole input).
pub fn short(e: &impl std::fmt::Debug) -> String {
    let s = format!("{e:?}");
    let mut end = s.len().min(160);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\n\
        #EXT-X-STREAM-INF:BANDWIDTH=1280000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",FRAME-RATE=30\n\
        720p/index.m3u8\n\
        #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI=\"720p/iframes.m3u8\"\n\
        #EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS=\"mp4a.40.2\"\n\
        audio/index.m3u8\n\
        #EXT-X-STREAM-INF:BANDWIDTH=1280000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",FRAME-RATE=30\n\
        backup/720p/index.m3u8\n";

    #[test]
    fn a_master_playlist_gives_every_variant_but_i_frames_and_redundant_copies() {
        let v = variants(MASTER.as_bytes()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].uri.as_deref(), Some("720p/index.m3u8"));
        assert_eq!(v[1].uri.as_deref(), Some("audio/index.m3u8"));
        assert_eq!(v[1].bandwidth, Some(64_000));
        let audio = RenditionId::from_attributes(&RenditionAttributes {
            bandwidth: Some(64_000),
            codecs: Some("mp4a.40.2".into()),
            ..Default::default()
        });
        assert_eq!(v[1].id, audio);
    }

    #[test]
    fn a_media_playlist_is_one_rendition() {
        let text = b"\xef\xbb\xbf #EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n";
        let v = variants(text).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].uri, None);
        assert_eq!(
            v[0].id,
            RenditionId::from_attributes(&RenditionAttributes::default())
        );
    }

    #[test]
    fn what_is_not_a_playlist_is_refused() {
        assert_eq!(variants(b"<html>"), Err(MasterError::NotHls));
        assert_eq!(variants(b""), Err(MasterError::NotHls));
        let only_iframes = "#EXTM3U\n#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI=\"i.m3u8\"\n";
        assert!(variants(only_iframes.as_bytes()).is_err());
    }
}
