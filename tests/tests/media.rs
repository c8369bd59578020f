//! The committed sample media loops cleanly in hls.js: no fragment presents a sample later
//! than it decodes it (no B-frames), and each rendition's video lasts exactly the clip.
//!
//! hls.js ignores the init segment's edit list. After each `EXT-X-DISCONTINUITY` of the looping
//! live stream it lays the next loop where the previous fragment's video was presented to end,
//! so a composition offset (B-frames) moves every loop two frames later than the audio of the
//! previous one ended: from the second loop boundary on, a hole in the buffer and a stall in
//! every player. `scripts/make-sample-media.sh` encodes with `-bf 0` for this reason.

use swarmcdn_tests::origin::default_media_dir;

/// The boxes in `b`: (type, payload).
fn boxes(b: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= b.len() {
        let size32 = u32::from_be_bytes(b[pos..pos + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = b[pos + 4..pos + 8].try_into().unwrap();
        let (header, size) = match size32 {
            1 => (
                16,
                u64::from_be_bytes(b[pos + 8..pos + 16].try_into().unwrap()) as usize,
            ),
            0 => (8, b.len() - pos),
            n => (8, n),
        };
        assert!(
            size >= header && pos + size <= b.len(),
            "box {:?} runs past its parent",
            String::from_utf8_lossy(&kind)
        );
        out.push((kind, &b[pos + header..pos + size]));
        pos += size;
    }
    assert_eq!(pos, b.len(), "trailing bytes after the last box");
    out
}

fn child<'a>(b: &'a [u8], kind: &[u8; 4]) -> Vec<&'a [u8]> {
    boxes(b)
        .into_iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, p)| p)
        .collect()
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Track id -> (handler, timescale, default sample duration) from an init segment.
fn tracks(init: &[u8]) -> Vec<(u32, [u8; 4], u32, u32)> {
    let moov = child(init, b"moov")[0];
    let trex: Vec<(u32, u32)> = child(moov, b"mvex")
        .iter()
        .flat_map(|mvex| child(mvex, b"trex"))
        .map(|t| (be32(t, 4), be32(t, 12)))
        .collect();
    child(moov, b"trak")
        .into_iter()
        .map(|trak| {
            let tkhd = child(trak, b"tkhd")[0];
            let id = if tkhd[0] == 1 {
                be32(tkhd, 20)
            } else {
                be32(tkhd, 12)
            };
            let mdia = child(trak, b"mdia")[0];
            let mdhd = child(mdia, b"mdhd")[0];
            let timescale = if mdhd[0] == 1 {
                be32(mdhd, 20)
            } else {
                be32(mdhd, 12)
            };
            let hdlr = child(mdia, b"hdlr")[0];
            let handler: [u8; 4] = hdlr[8..12].try_into().unwrap();
            let default = trex.iter().find(|t| t.0 == id).map_or(0, |t| t.1);
            (id, handler, timescale, default)
        })
        .collect()
}

/// Per track fragment of a media segment: (track id, sum of the sample durations, composition
/// offsets of its samples). `tracks` gives the default sample durations (`trex`).
fn fragments(seg: &[u8], tracks: &[(u32, [u8; 4], u32, u32)]) -> Vec<(u32, u64, Vec<i64>)> {
    let mut out = Vec::new();
    for moof in child(seg, b"moof") {
        for traf in child(moof, b"traf") {
            let tfhd = child(traf, b"tfhd")[0];
            let flags = u32::from_be_bytes([0, tfhd[1], tfhd[2], tfhd[3]]);
            let id = be32(tfhd, 4);
            let mut at = 8;
            if flags & 0x1 != 0 {
                at += 8;
            }
            if flags & 0x2 != 0 {
                at += 4;
            }
            let default_duration = if flags & 0x8 != 0 {
                be32(tfhd, at)
            } else {
                tracks.iter().find(|t| t.0 == id).map_or(0, |t| t.3)
            };
            let mut duration = 0u64;
            let mut offsets = Vec::new();
            for trun in child(traf, b"trun") {
                let version = trun[0];
                let flags = u32::from_be_bytes([0, trun[1], trun[2], trun[3]]);
                let count = be32(trun, 4);
                let mut at = 8;
                if flags & 0x1 != 0 {
                    at += 4;
                }
                if flags & 0x4 != 0 {
                    at += 4;
                }
                for _ in 0..count {
                    let mut d = default_duration;
                    if flags & 0x100 != 0 {
                        d = be32(trun, at);
                        at += 4;
                    }
                    if flags & 0x200 != 0 {
                        at += 4;
                    }
                    if flags & 0x400 != 0 {
                        at += 4;
                    }
                    let mut cto = 0i64;
                    if flags & 0x800 != 0 {
                        let raw = be32(trun, at);
                        cto = if version == 0 {
                            i64::from(raw)
                        } else {
                            i64::from(raw as i32)
                        };
                        at += 4;
                    }
                    duration += u64::from(d);
                    offsets.push(cto);
                }
            }
            out.push((id, duration, offsets));
        }
    }
    out
}

#[test]
fn sample_media_presents_every_sample_when_it_decodes_it() {
    let dir = default_media_dir();
    for rendition in ["360p", "216p"] {
        let folder = dir.join(rendition);
        let init = std::fs::read(folder.join("init.mp4")).unwrap();
        let tracks = tracks(&init);
        let video = tracks
            .iter()
            .find(|t| &t.1 == b"vide")
            .expect("a video track");
        assert!(tracks.iter().any(|t| &t.1 == b"soun"), "an audio track");
        let mut video_ticks = 0u64;
        let mut count = 0;
        for n in 0.. {
            let Ok(seg) = std::fs::read(folder.join(format!("seg{n:03}.m4s"))) else {
                break;
            };
            count += 1;
            for (id, duration, offsets) in fragments(&seg, &tracks) {
                assert!(
                    tracks.iter().any(|t| t.0 == id),
                    "track {id} is in the init segment"
                );
                assert!(
                    offsets.iter().all(|&o| o == 0),
                    "{rendition}/seg{n:03}.m4s: track {id} has composition offsets {:?}: \
                     B-frames? (hls.js would leave a hole at each loop of the live stream)",
                    &offsets[..offsets.len().min(8)]
                );
                if id == video.0 {
                    video_ticks += duration;
                }
            }
        }
        assert_eq!(count, 24, "{rendition}: 24 one-second fragments");
        assert_eq!(
            video_ticks,
            24 * u64::from(video.2),
            "{rendition}: the video lasts the 24 s of the clip"
        );
    }
}
