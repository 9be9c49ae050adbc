#!/usr/bin/env bash
# Render an SVG timeline (from Profile::write_svg_timeline or the timeline_demo
# example) to PNG, to check that it draws and to publish it.
#
#   scripts/render-timeline.sh timeline.svg [timeline.png] [width_px]
#
# Uses rsvg-convert (Debian package librsvg2-bin; installed with apt-get when
# missing and this shell may do so), else headless Chromium. Fails with a message
# when neither is available.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit $(( $# < 1 ? 2 : 0 ))
fi
svg=$1
png=${2:-${svg%.svg}.png}
width=${3:-1200}
[[ -f "$svg" ]] || { echo "render-timeline: no such file: $svg" >&2; exit 1; }

if ! command -v rsvg-convert >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "render-timeline: installing librsvg2-bin" >&2
    apt-get install -y -qq librsvg2-bin >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq librsvg2-bin >/dev/null 2>&1; } \
        || true
fi

if command -v rsvg-convert >/dev/null 2>&1; then
    rsvg-convert --width "$width" --keep-aspect-ratio --background-color white -o "$png" "$svg"
else
    chrome=""
    for c in chromium chromium-browser google-chrome; do
        if command -v "$c" >/dev/null 2>&1; then chrome=$c; break; fi
    done
    [[ -n "$chrome" ]] || { echo "render-timeline: need rsvg-convert (apt-get install librsvg2-bin) or chromium" >&2; exit 1; }
    # The SVG's own size decides the window; read it from the root element.
    h=$(grep -o 'height="[0-9.]*"' "$svg" | head -1 | grep -o '[0-9.]*')
    w=$(grep -o 'width="[0-9.]*"' "$svg" | head -1 | grep -o '[0-9.]*')
    "$chrome" --headless --disable-gpu --no-sandbox --hide-scrollbars \
        --window-size="${w%.*},${h%.*}" --screenshot="$png" "file://$(realpath "$svg")" >/dev/null 2>&1
fi
[[ -s "$png" ]] || { echo "render-timeline: no PNG was written" >&2; exit 1; }
echo "$png"
