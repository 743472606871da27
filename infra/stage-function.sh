#!/usr/bin/env bash
# Stage one function as a deployable Function App folder:
#   target/functionapp/<function>/{host.json, handler, <function folders>/function.json}
# Usage: infra/stage-function.sh router [--target x86_64-unknown-linux-musl]
set -euo pipefail
cd "$(dirname "$0")/.."
fn="${1:?usage: infra/stage-function.sh <function> [--target TRIPLE]}"
shift
target_args=()
bin_dir=target/release
if [ "${1:-}" = "--target" ]; then
  target_args=(--target "$2")
  bin_dir="target/$2/release"
fi
[ -d "functions/$fn/functionapp" ] || { echo "no function app folder functions/$fn/functionapp" >&2; exit 2; }
cargo build --release --locked -p "$fn" "${target_args[@]}"
out="target/functionapp/$fn"
rm -rf "$out"
mkdir -p "$out"
cp host.json "$out/"
cp -r "functions/$fn/functionapp/." "$out/"
cp "$bin_dir/$fn" "$out/handler"
[ -f local.settings.json ] && cp local.settings.json "$out/"
echo "staged $out"
