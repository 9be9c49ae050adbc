#!/usr/bin/env bash
# Run valgrind memcheck over the CPU and OpenCL test binaries and report every
# error whose innermost frame in a stack is in this crate (`offload::`), which is
# what the soundness promise covers. Errors entirely inside drivers (PoCL, LLVM)
# are counted and listed separately, not attributed to the crate.
#
#   scripts/memcheck.sh [test-binary-name ...]     (default: the list below)
#
# Needs valgrind (Debian package valgrind; installed with apt-get when missing)
# and, for the OpenCL binaries, PoCL. Slow: memcheck runs code ~20-50x slower.
# Leak records (one-time allocations of drivers such as LLVM) are counted apart:
# they are not memory errors. A test whose assertion fails under valgrind's
# slowdown (timing-dependent checks) is listed but does not stop the run.
# Exits 1 when any error has an offload frame as its top frame.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
if ! command -v valgrind >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

bins=("$@")
if [[ ${#bins[@]} -eq 0 ]]; then
    bins=(soundness pool_panic bad_input queue async_opencl conformance opencl nbody schedule fault profile)
fi

out=$(mktemp -d)
export OFFLOAD_CACHE_DIR="$out/cache"
cargo test --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*"' | sed 's/"executable":"//; s/"$//' >"$out/bins"

ours=0
theirs=0
for name in "${bins[@]}"; do
    bin=$(grep "/${name}-[0-9a-f]*$" "$out/bins" | head -1 || true)
    if [[ -z "$bin" ]]; then
        echo "memcheck: no test binary named $name" >&2
        exit 2
    fi
    log="$out/$name.xml"
    echo "== memcheck $name"
    start=$(date +%s)
    valgrind --tool=memcheck --xml=yes --xml-file="$log" --leak-check=no \
        --child-silent-after-fork=yes "$bin" --test-threads=2 >"$out/$name.txt" 2>&1 || {
        echo "   tests that failed under valgrind (see $out/$name.txt):"
        grep '^test .* FAILED$' "$out/$name.txt" | sed 's/^/     /' || true
        [[ -s "$log" ]] || { echo "memcheck: $name wrote no log"; exit 1; }
    }
    # For each <error>, the first <fn> of its first <stack> is the top frame.
    read -r o t l < <(python3 - "$log" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ours = theirs = leaks = 0
for e in root.iter("error"):
    if (e.findtext("kind") or "").startswith("Leak_"):
        leaks += 1
        continue
    stack = e.find("stack")
    fns = [f.findtext("fn") or "?" for f in stack.iter("frame")] if stack is not None else []
    top = fns[0] if fns else "?"
    kind = e.findtext("kind")
    if "offload::" in top or top.startswith("offload"):
        ours += 1
        print(f"OFFLOAD ERROR {kind}: " + " <- ".join(fns[:6]), file=sys.stderr)
    else:
        theirs += 1
        print(f"driver error {kind}: " + " <- ".join(fns[:4]), file=sys.stderr)
print(ours, theirs, leaks)
EOF
    )
    echo "   $(grep -c '^test .* ok$' "$out/$name.txt" || true) tests ok, $(( $(date +%s) - start )) s; errors with an offload top frame: $o; other errors: $t; leak records: $l"
    ours=$((ours + o))
    theirs=$((theirs + t))
done
echo "== memcheck: errors with an offload top frame: $ours; errors elsewhere (drivers): $theirs; logs in $out"
[[ $ours -eq 0 ]]
