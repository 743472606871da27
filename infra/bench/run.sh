#!/usr/bin/env bash
# The benchmark harness's one command: infra/bench/run.sh [--quick] [--no-build]
#
# Builds the release binaries, installs wrk if missing, then runs `aigw-bench run` (pinned to
# core 1), which starts the simulator (core 1), the gateway and the pass-through proxy (core 0)
# on 127.0.0.1, measures every section and writes infra/bench/RESULTS.md. Whatever happens, the
# trap stops every process the run started. See infra/bench/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

if [ "$(nproc)" -lt 2 ]; then
    echo "run.sh: needs at least 2 cores (gateway on core 0, load and backend on core 1)" >&2
    exit 1
fi
command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
command -v callgrind_control >/dev/null || (apt-get update && apt-get install -y valgrind)
command -v taskset >/dev/null || (apt-get update && apt-get install -y util-linux)

usage="usage: infra/bench/run.sh [--quick] [--no-build] [--only SECTION[,SECTION...]]"
args=()
build=1
out="$here/RESULTS.md"
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;   # reuse target/release binaries (e.g. while the tree does not build)
        --quick) args+=("$1") ;;
        # Some sections only (latency, throughput, instructions, streams, memory, coldstart,
        # growth), printed and written beside the published table, never over it.
        --only)
            [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
            args+=("$1" "$2"); out="$here/RESULTS.partial.md"; shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
done
if [ "$build" = 1 ]; then
    cargo build --release -p aigw-bench -p gateway -p aigw-simulator
fi
for bin in aigw-bench passthrough gateway simulator; do
    [ -x "target/release/$bin" ] || { echo "run.sh: target/release/$bin is missing" >&2; exit 1; }
done

# Thousands of open streams need thousands of sockets per process.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

pidfile="$(mktemp)"
cleanup() {
    while read -r pid; do
        kill "$pid" 2>/dev/null || true
    done <"$pidfile"
    rm -f "$pidfile"
}
trap cleanup EXIT INT TERM

# Bounded: a full run takes about 12 minutes.
AIGW_BENCH_PIDFILE="$pidfile" timeout 1500 \
    taskset -c 1 "$root/target/release/aigw-bench" run "${args[@]}" \
    --out "$out" --lua "$here/post.lua"
