#!/usr/bin/env bash
# gpu-check: prove offload's CUDA path on a machine with an NVIDIA GPU.
#
# On the GPU machine (CUDA driver + toolkit present, no network, nothing to be
# installed), from the repository root:
#
#   scripts/gpu-check.sh            build (release, --offline), run the test suite with
#                                   OFFLOAD_REQUIRE=cuda,nvrtc, run the examples on
#                                   --device cuda, run the bench's cuda suite, and print
#                                   a summary table last (< 5 minutes).
#
# The machine has no network, so the crates must arrive with the repository. Prepare
# on a networked machine with the same OS/architecture:
#
#   scripts/gpu-check.sh --prepare  1. target/cargo-home: a cargo registry (index +
#                                      .crate files) for an offline build there;
#                                   2. target/gpu-bin: stripped release test and example
#                                      binaries, for a GPU machine without a Rust toolchain.
#
# Carry both folders with the repository (they are under target/, so git ignores
# them). On the GPU machine the script builds with cargo when it can (using
# target/cargo-home as CARGO_HOME when present, else the machine's own registry),
# and otherwise runs the prebuilt binaries in target/gpu-bin. A vendor directory
# works too: if vendor/ or target/vendor/ exists it replaces crates.io.
#
# Logs go to $OUT/gpu-check/ when OUT is set, else target/gpu-check/.
# Environment: CUDA_HOME (toolkit root, default /usr/local/cuda), GPU_CHECK_BUDGET
# (seconds, default 270: a step killed at the budget gets 5 s more to die,
# and the whole run must stay under 5 minutes), GPU_CHECK_BUILD_LIMIT (seconds, default 200),
# GPU_CHECK_QUICK=1 (bench --quick).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
t_start=$(date +%s)
budget=${GPU_CHECK_BUDGET:-270}

if [ -n "${OUT:-}" ]; then logs="$OUT/gpu-check"; else logs="$root/target/gpu-check"; fi
mkdir -p "$logs"

# ---------------------------------------------------------------- prepare mode
if [ "${1:-}" = "--prepare" ]; then
  set -e
  host_target=$(rustc -vV | sed -n 's/^host: //p')
  echo "== fetching crates into target/cargo-home (for $host_target)"
  mkdir -p target/cargo-home
  CARGO_HOME="$root/target/cargo-home" cargo fetch --target "$host_target"
  rm -rf target/cargo-home/registry/src   # re-extracted from registry/cache when building
  echo "== building release test and example binaries"
  : > "$logs/prepare.json"
  cargo test --release --no-run --message-format=json >> "$logs/prepare.json"
  cargo build --release --examples --message-format=json >> "$logs/prepare.json"
  rm -rf target/gpu-bin && mkdir -p target/gpu-bin/tests target/gpu-bin/examples
  # One JSON object per line; pick compiler-artifact lines that have an executable.
  grep '"reason":"compiler-artifact"' "$logs/prepare.json" | grep '"executable":"' | while IFS= read -r line; do
    exe=$(printf '%s' "$line" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
    name=$(printf '%s' "$line" | sed -n 's/.*"target":{[^}]*"name":"\([^"]*\)".*/\1/p')
    kind=$(printf '%s' "$line" | sed -n 's/.*"target":{"kind":\["\([a-z-]*\)"\].*/\1/p')
    if [ -z "$exe" ] || [ -z "$name" ]; then continue; fi
    case "$kind" in
      example) dest=target/gpu-bin/examples/$name ;;
      *) dest=target/gpu-bin/tests/$name ;;
    esac
    cp "$exe" "$dest"
    strip --strip-debug "$dest" 2>/dev/null || true
  done
  ls -l target/gpu-bin/tests target/gpu-bin/examples
  du -sh target/gpu-bin target/cargo-home
  echo "== prepared: carry target/gpu-bin and target/cargo-home with the repository"
  exit 0
fi

# ---------------------------------------------------------------- helpers
rows=()          # "step|result|seconds|detail"
remaining() { echo $(( budget - ($(date +%s) - t_start) )); }

# run_step NAME LIMIT_SECONDS LOGFILE CMD...: run with a timeout, record a row.
run_step() {
  local name=$1 limit=$2 log=$3; shift 3
  local left; left=$(remaining)
  if [ "$left" -le 5 ]; then rows+=("$name|SKIP|0|time budget spent"); return 2; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s) -> $log"
  local t0; t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" > "$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  tail -n 5 "$log" | sed 's/^/   | /'
  if [ $rc -eq 0 ]; then rows+=("$name|PASS|$dt|");
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then rows+=("$name|FAIL|$dt|timed out after ${limit}s");
  else rows+=("$name|FAIL|$dt|exit $rc, see $(basename "$log")"); fi
  return $rc
}

# shellcheck disable=SC2317  # called from the EXIT trap
summary() {
  echo
  echo "================ gpu-check summary ($(( $(date +%s) - t_start )) s, logs in $logs) ================"
  printf '%-28s %-6s %6s  %s\n' "step" "result" "secs" "detail"
  for r in ${rows[@]+"${rows[@]}"}; do
    IFS='|' read -r a b c d <<< "$r"
    printf '%-28s %-6s %6s  %s\n' "$a" "$b" "$c" "$d"
  done
  if [ -s "$logs/bench-cuda.log" ]; then
    echo
    echo "bench (cuda suite): offload vs in-run reference"
    grep '^BENCH ' "$logs/bench-cuda.log" | sed 's/^BENCH /  /'
    awk '/^cuda measure/{p=1} p' "$logs/bench-cuda.log" | sed 's/^/  /'
  fi
  if [ -s "$logs/nbody-262k.log" ]; then
    echo
    echo "nbody N=262144 on cuda (target >= 40 TFLOP/s on an H100):"
    grep -E 'GFLOP/s|energy' "$logs/nbody-262k.log" | sed 's/^/  /'
  fi
  if [ -s "$logs/tests.log" ]; then
    echo
    echo "tests: $(grep -c '^test .* ok$' "$logs/tests.log") ok, $(grep -c '^test .* FAILED$' "$logs/tests.log") failed, $(grep -c '^SKIP' "$logs/tests.log") skip lines"
    grep '^test .* FAILED$' "$logs/tests.log" | head -n 10 | sed 's/^/  /'
  fi
}
trap summary EXIT

# ---------------------------------------------------------------- environment
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -a)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current --format=csv 2>&1
  command -v nvcc >/dev/null && nvcc --version 2>&1 | tail -n 2
  command -v cargo >/dev/null && cargo --version && rustc --version
  nproc
} > "$logs/environment.log" 2>&1
cat "$logs/environment.log"

# NVRTC: the toolkit's (matches the driver best), else a Python wheel's, else a
# carried .venv. cudarc (built for CUDA 12) dlopens only libnvrtc.so and
# libnvrtc.so.{12,11,10,9,1}: a CUDA 13 install without the unversioned
# libnvrtc.so (runtime-only packages, pip wheels) holds only libnvrtc.so.13, which
# it would not find. Then a private folder gets a libnvrtc.so link to it.
has_nvrtc() { compgen -G "$1/libnvrtc.so*" >/dev/null 2>&1; }
nvrtc_dir=""
for base in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-*; do
  [ -n "$base" ] || continue
  for d in "$base/lib64" "$base/lib" "$base/targets/x86_64-linux/lib" "$base/targets/sbsa-linux/lib"; do
    if has_nvrtc "$d"; then nvrtc_dir=$d; break 2; fi
  done
done
if [ -z "$nvrtc_dir" ] && ! ldconfig -p 2>/dev/null | grep -Eq 'libnvrtc\.so(\.(12|11|1))? '; then
  for d in /opt/*/.venv/lib/python3*/site-packages/nvidia/cu1[0-9]/lib \
           /opt/*/.venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib \
           /usr/local/lib/python3*/dist-packages/nvidia/cu1[0-9]/lib \
           /usr/local/lib/python3*/dist-packages/nvidia/cuda_nvrtc/lib \
           "$root"/.venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib; do
    if has_nvrtc "$d"; then nvrtc_dir=$d; break; fi
  done
  if [ -z "$nvrtc_dir" ]; then   # only a versioned name in the loader cache
    cached=$(ldconfig -p 2>/dev/null | sed -n 's/^[[:space:]]*libnvrtc\.so\.[0-9][0-9.]* .*=> //p' | head -n 1)
    [ -n "$cached" ] && nvrtc_dir=$(dirname "$cached")
  fi
fi
if [ -n "$nvrtc_dir" ]; then
  lib_path=$nvrtc_dir
  if ! [ -e "$nvrtc_dir/libnvrtc.so" ] && ! [ -e "$nvrtc_dir/libnvrtc.so.12" ] && ! [ -e "$nvrtc_dir/libnvrtc.so.11" ]; then
    versioned=$(compgen -G "$nvrtc_dir/libnvrtc.so.[0-9]*" | sort -V | tail -n 1)
    if [ -n "$versioned" ]; then
      link_dir="$root/target/gpu-check-lib"
      mkdir -p "$link_dir" && ln -sf "$versioned" "$link_dir/libnvrtc.so"
      lib_path="$link_dir:$nvrtc_dir"
      echo "NVRTC: linked $link_dir/libnvrtc.so -> $versioned"
    fi
  fi
  export LD_LIBRARY_PATH="$lib_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "NVRTC from $nvrtc_dir"
else
  echo "NVRTC: relying on the dynamic loader's default search path"
fi
export OFFLOAD_REQUIRE=cuda,nvrtc
export OFFLOAD_CACHE_DIR="$logs/cache"   # fresh: exercises NVRTC and the PTX cache
rm -rf "$OFFLOAD_CACHE_DIR"
bench_flags=()
[ "${GPU_CHECK_QUICK:-0}" = "1" ] && bench_flags+=(--quick)

# ---------------------------------------------------------------- build
mode=""
cargo_flags=(--release --offline)
if [ -d "$root/target/cargo-home/registry" ]; then export CARGO_HOME="$root/target/cargo-home"; fi
for v in vendor target/vendor; do
  if [ -d "$root/$v" ]; then
    cargo_flags+=(--config "source.crates-io.replace-with=\"vendored-sources\"" --config "source.vendored-sources.directory=\"$root/$v\"")
    break
  fi
done
if command -v cargo >/dev/null; then
  if run_step "build (cargo, offline)" "${GPU_CHECK_BUILD_LIMIT:-200}" "$logs/build.log" \
      bash -c 'cargo test "$@" --no-run && cargo build "$@" --examples' _ "${cargo_flags[@]}"; then
    mode=cargo
  fi
fi
if [ -z "$mode" ] && [ -d "$root/target/gpu-bin/tests" ]; then
  mode=prebuilt
  rows+=("build|SKIP|0|using prebuilt binaries in target/gpu-bin")
fi
if [ -z "$mode" ]; then
  rows+=("build|FAIL|0|no offline build: carry target/cargo-home or vendor/ (cargo) or target/gpu-bin (no cargo); see scripts/gpu-check.sh --prepare")
  exit 1
fi

example_exists() { [ -e "examples/$1.rs" ] || [ -e "examples/$1/main.rs" ]; }
run_example() {   # run_example STEP NAME LOG ARGS...
  local step=$1 name=$2 log=$3; shift 3
  if [ "$mode" = cargo ]; then
    run_step "$step" 120 "$log" cargo run "${cargo_flags[@]}" --example "$name" -- "$@"
  else
    run_step "$step" 120 "$log" "target/gpu-bin/examples/$name" "$@"
  fi
}

# ---------------------------------------------------------------- tests
if [ "$mode" = cargo ]; then
  run_step "tests (OFFLOAD_REQUIRE=cuda)" 150 "$logs/tests.log" cargo test "${cargo_flags[@]}" --no-fail-fast
else
  # shellcheck disable=SC2016  # expanded by the inner bash
  run_step "tests (OFFLOAD_REQUIRE=cuda)" 150 "$logs/tests.log" bash -c '
    rc=0
    for t in target/gpu-bin/tests/*; do echo "### $t"; "$t" || rc=1; done
    exit $rc'
fi

# ---------------------------------------------------------------- examples
example_exists devices && run_example "example devices" devices "$logs/example-devices.log"
for ex in vector_add nbody; do
  if example_exists "$ex"; then
    run_example "example $ex --device cuda" "$ex" "$logs/example-$ex.log" --device cuda
  else
    rows+=("example $ex|SKIP|0|not in this tree")
  fi
done

# N-body at the size of the GPU target (>= 40 TFLOP/s on an H100 at N >= 262144).
if example_exists nbody; then
  run_example "nbody N=262144 cuda" nbody "$logs/nbody-262k.log" --device cuda --bodies 262144 --steps 10 --quiet
fi

# ---------------------------------------------------------------- bench
# (an empty array expands to nothing also under `set -u` on bash < 4.4)
run_example "bench cuda suite" bench "$logs/bench-cuda.log" cuda --strict ${bench_flags[@]+"${bench_flags[@]}"}

# The exit trap prints the summary table last; the status says whether anything failed.
for r in ${rows[@]+"${rows[@]}"}; do
  # A step skipped because the budget ran out proved nothing: that is a failure too.
  case "$r" in *"|FAIL|"* | *"|time budget spent") exit 1 ;; esac
done
exit 0
