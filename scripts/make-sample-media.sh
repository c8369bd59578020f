#!/usr/bin/env bash
# Makes the sample media committed in tests/media: a 24 s H.264/AAC clip in two renditions,
# as fMP4/CMAF HLS with 1-second fragments (a keyframe every second), from ffmpeg's own test
# sources (nothing is downloaded). The origin serves segments of k seconds by concatenating k
# fragments, so every segment duration that divides 24 is available.
#
# No B-frames (-bf 0): with them every frame is presented after it is decoded (a composition
# offset of two frames, which only the init segment's edit list takes back, and hls.js does
# not read edit lists). After each EXT-X-DISCONTINUITY of the looping live stream, hls.js
# places the next loop by the first frame's presentation time, so every loop would start two
# frames later than the previous one ended: from the second loop boundary on, a hole in the
# buffer and a stall in every player.
#
# Usage: scripts/make-sample-media.sh [output-dir]   (default: tests/media)
set -euo pipefail

out=${1:-"$(dirname "$0")/../tests/media"}
duration=24
fps=30

command -v ffmpeg >/dev/null || { echo "ffmpeg is needed (apt-get install ffmpeg)" >&2; exit 1; }
mkdir -p "$out"

make_rendition() {
  local name=$1 size=$2 vbitrate=$3 abitrate=$4 freq=$5
  local dir="$out/$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=${size}:rate=${fps}" \
    -f lavfi -i "sine=frequency=${freq}:sample_rate=48000" \
    -t "$duration" \
    -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p -bf 0 \
    -b:v "$vbitrate" -maxrate "$vbitrate" -bufsize "$vbitrate" \
    -g "$fps" -keyint_min "$fps" -sc_threshold 0 -force_key_frames 'expr:gte(t,n_forced*1)' \
    -c:a aac -b:a "$abitrate" -ac 2 \
    -fflags +bitexact -flags:v +bitexact -flags:a +bitexact -map_metadata -1 \
    -f hls -hls_time 1 -hls_playlist_type vod -hls_segment_type fmp4 \
    -hls_fmp4_init_filename init.mp4 -hls_segment_filename "$dir/seg%03d.m4s" \
    "$dir/index.m3u8"
}

make_rendition 360p 640x360 600k 96k 440
make_rendition 216p 384x216 250k 64k 440

cat > "$out/master.m3u8" <<M3U8
#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=800000,AVERAGE-BANDWIDTH=700000,RESOLUTION=640x360,FRAME-RATE=30.000,CODECS="avc1.4d401e,mp4a.40.2"
360p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=350000,AVERAGE-BANDWIDTH=320000,RESOLUTION=384x216,FRAME-RATE=30.000,CODECS="avc1.4d400d,mp4a.40.2"
216p/index.m3u8
M3U8

du -sh "$out"
