#!/usr/bin/env bash
# Interleaved A/B of the 1000-job drain between two workq binaries (e.g. the last landed release
# build and this one), so both see the same machine at the same moment:
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]     # ROUNDS defaults to 10
#
# Each round, for each binary in turn: a fresh state dir, one worker with 2 slots, `submit --lines`
# of 1000 `/bin/true`, `wait --all`; the wall time from the submit to the end of the wait.
# Prints each round and the medians. Everything it starts is stopped, its temp files removed.
set -euo pipefail
export LC_ALL=C
[[ $# -ge 2 ]] || { echo "usage: bash bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]" >&2; exit 2; }
OLD=$1 NEW=$2 ROUNDS=${3:-10}
TMP=$(mktemp -d)
WP=""
trap '[[ -n "$WP" ]] && kill "$WP" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
seq 1000 | sed 's|.*|/bin/true|' > "$TMP/lines.txt"

drain() {
    local bin=$1 d; d=$(mktemp -d -p "$TMP")
    "$bin" --state-dir "$d/.workq" worker start -w 2 -q & WP=$!
    until "$bin" --state-dir "$d/.workq" workers list 2>/dev/null | grep -q idle; do sleep 0.05; done
    local t0=$EPOCHREALTIME
    "$bin" --state-dir "$d/.workq" submit --lines "$TMP/lines.txt" > /dev/null
    "$bin" --state-dir "$d/.workq" wait --all -q
    local t1=$EPOCHREALTIME
    kill "$WP"; wait "$WP" 2>/dev/null || true; WP=""
    rm -rf "$d"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

for i in $(seq "$ROUNDS"); do
    o=$(drain "$OLD"); n=$(drain "$NEW")
    echo "round $i: old $o s, new $n s"
    echo "$o" >> "$TMP/old"; echo "$n" >> "$TMP/new"
done
median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mo=$(median "$TMP/old"); mn=$(median "$TMP/new")
awk -v o="$mo" -v n="$mn" 'BEGIN { printf "median: old %.3f s, new %.3f s, new/old %.2f\n", o, n, n / o }'
