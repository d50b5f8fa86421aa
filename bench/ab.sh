#!/usr/bin/env bash
# Side by side: `t5edge bench` of several binaries, alternating round by
# round, so that the machine's drift (10-20% within minutes on a loaded VM)
# falls on every binary alike. Prints each binary's per-round medians,
# sorted, and their median.
#
#   bench/ab.sh ROUNDS BIN1 BIN2 [BIN...] -- BENCH ARGS
#   bench/ab.sh 6 old/t5edge target/release/t5edge -- \
#       --model ../shared/models/t5-efficient-tiny-nl2-synth --workload w3 --dtype f32 --runs 100
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
rounds=$1
shift
bins=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    bins+=("$1")
    shift
done
[ "${1:-}" = "--" ] || { echo "ab.sh: missing -- before the bench arguments" >&2; exit 2; }
shift
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for ((r = 0; r < rounds; r++)); do
    for i in "${!bins[@]}"; do
        # The median latency of this round, in ms.
        "${bins[$i]}" bench "$@" --json | python3 -c 'import json, sys; print("%.3f" % json.load(sys.stdin)["median_ms"])' >>"$out/$i"
    done
done
for i in "${!bins[@]}"; do
    sort -n "$out/$i" | tr '\n' ' ' | awk -v b="${bins[$i]}" '{n = NF; printf "%s: %s  median %s\n", b, $0, (n % 2 ? $((n + 1) / 2) : ($(n / 2) + $(n / 2 + 1)) / 2)}'
done
