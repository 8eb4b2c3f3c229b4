#!/usr/bin/env bash
# `workq serve` benchmarks, one command:   bash bench/serve.sh
#
# Builds the release binary (or uses WORKQ_BIN), fills a SQLite store with NJOBS (default
# 1,000,000) queued `true` jobs over 4 queues (`submit --lines` in batches of 100,000; no
# worker runs, so they stay queued), starts `workq serve` on a free loopback port without a
# token, and measures:
#   (1) GET /api/v1/status and GET /metrics: p50/p90/max of REQUESTS (default 200) requests
#       each, one keep-alive connection (one curl process, -w time_total per transfer)
#   (2) SSE latency, 1 client: each job submitted through POST /api/v1/jobs, PAUSE_MS apart,
#       to its `submitted` event on GET /api/v1/events (bench/sse.py), SSE_JOBS (default 100)
#   (3) the same with 50 clients at once (SSE_FANOUT_JOBS, default 20): every client must get
#       every event; p50 and max over all client x job pairs
#   (4) server RSS (VmRSS): 1 s after start, after the scrapes, after the 50 clients
#
# Environment: WORKQ_BIN (skip the build), NJOBS, REQUESTS, SSE_JOBS, SSE_FANOUT_JOBS, PAUSE_MS,
# KEEP_STORE=DIR (fill DIR once and reuse it on later runs; each run adds its SSE_JOBS +
# SSE_FANOUT_JOBS jobs, queue `sse`, to it).
# Needs bash >= 5, curl, python3, awk. The server is stopped on exit and the temporary
# directory removed (a KEEP_STORE directory is kept).

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
NJOBS=${NJOBS:-1000000}
BATCH=100000
REQUESTS=${REQUESTS:-200}
SSE_JOBS=${SSE_JOBS:-100}
SSE_FANOUT_JOBS=${SSE_FANOUT_JOBS:-20}
PAUSE_MS=${PAUSE_MS:-50}

# ---------------------------------------------------------------- helpers

SERVER_PID=""
TMP=""

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    if [[ $rc -ne 0 && -n "$TMP" && -d "$TMP" ]]; then
        echo "bench/serve.sh failed (exit $rc); last lines of the logs:" >&2
        tail -n 20 "$TMP"/*.log >&2 2>/dev/null
    fi
    [[ -n "$TMP" ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
pctl() { sort -g | awk -v p="$1" '{v[NR]=$1} END {i=int((NR-1)*p+0.5)+1; print v[i]}'; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
wq() { "$WORKQ" --state-dir "$STATE" "$@"; }

# timed_gets PATH N: N GETs of PATH over one keep-alive connection; prints "p50 p90 max" in
# ms and checks every answer was 200.
timed_gets() {
    local path=$1 n=$2 cfg=$TMP/curl.cfg
    : >"$cfg"
    for _ in $(seq "$n"); do
        printf 'url = "http://%s%s"\noutput = "/dev/null"\n' "$ADDR" "$path" >>"$cfg"
    done
    curl -s -K "$cfg" -w '%{http_code} %{time_total}\n' >"$TMP/times" 2>>"$TMP/curl.log"
    if awk '$1 != 200 { bad = 1 } END { exit !bad }' "$TMP/times"; then
        echo "GET $path: not every answer was 200: $(sort "$TMP/times" | awk '{print $1}' | uniq -c | tr '\n' ' ')" >&2
        return 1
    fi
    awk '{printf "%.2f\n", $2 * 1000}' "$TMP/times" >"$TMP/ms"
    echo "$(pctl 0.5 <"$TMP/ms") $(pctl 0.9 <"$TMP/ms") $(pctl 1 <"$TMP/ms")"
}

# ---------------------------------------------------------------- build

if [[ -n "${WORKQ_BIN:-}" ]]; then
    WORKQ=$WORKQ_BIN
else
    echo "== building (cargo build --release -p workq)"
    cargo build --release -p workq
    WORKQ="${CARGO_TARGET_DIR:-$ROOT/target}/release/workq"
fi
[[ -x "$WORKQ" ]] || { echo "no binary at $WORKQ" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/workq-serve-bench.XXXXXX")
STATE=${KEEP_STORE:-$TMP/store}

echo
echo "== machine"
echo "cpus (nproc):          $(nproc) ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo unknown))"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "workq:                 $("$WORKQ" --version 2>/dev/null || echo "$WORKQ")"

# ---------------------------------------------------------------- fill

echo
if [[ -n "${KEEP_STORE:-}" && -s "$STATE/workq.db" ]]; then
    FILL="reused $STATE"
    echo "== store: reusing $STATE/workq.db"
else
    echo "== store: $NJOBS queued jobs, submit --lines in batches of $BATCH over 4 queues"
    yes true | head -n "$BATCH" >"$TMP/lines.txt" || true
    t0=$(now_us)
    left=$NJOBS
    i=0
    while (( left > 0 )); do
        n=$(( left < BATCH ? left : BATCH ))
        if (( n < BATCH )); then head -n "$n" "$TMP/lines.txt" >"$TMP/last.txt"; f=$TMP/last.txt; else f=$TMP/lines.txt; fi
        wq submit --queue "q$((i % 4))" --lines "$f" >/dev/null 2>>"$TMP/cli.log"
        left=$(( left - n ))
        i=$(( i + 1 ))
    done
    t1=$(now_us)
    FILL="$(calc "($t1 - $t0) / 1e6" 1) s"
    echo "filled in $FILL"
fi
DB_MIB=$(calc "$(stat -c %s "$STATE/workq.db") / 1048576" 1)
JOBS_IN=$(wq --json status | python3 -c 'import json,sys; print(sum(q["queued"]+q["scheduled"]+q["running"]+q["succeeded"]+q["failed"]+q["cancelled"] for q in json.load(sys.stdin)["queues"]))')
echo "store: $JOBS_IN jobs, database $DB_MIB MiB"

# ---------------------------------------------------------------- server

"$WORKQ" --state-dir "$STATE" serve --listen 127.0.0.1:0 >"$TMP/serve.out" 2>>"$TMP/serve.log" &
SERVER_PID=$!
ADDR=""
for _ in $(seq 200); do
    ADDR=$(sed -n 's|^workq serve: listening on http://\([^/]*\)/.*|\1|p' "$TMP/serve.out")
    [[ -n "$ADDR" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "workq serve exited early" >&2; exit 1; }
    sleep 0.05
done
[[ -n "$ADDR" ]] || { echo "workq serve did not say where it listens within 10 s" >&2; exit 1; }
sleep 1
RSS_START=$(rss_mib "$SERVER_PID")
echo
echo "== server on $ADDR (pid $SERVER_PID): VmRSS $RSS_START MiB after 1 s"

# ---------------------------------------------------------------- (1) status and metrics

echo
echo "== (1) $REQUESTS x GET /api/v1/status and /metrics, one keep-alive connection"
# What /metrics says now: the store's metrics may be empty until Store::queue_metrics exists.
curl -s "http://$ADDR/metrics" >"$TMP/metrics.txt"
STORE_UP=$(awk '$1 == "workq_store_up" {print $2}' "$TMP/metrics.txt")
METRIC_LINES=$(grep -vc '^#' "$TMP/metrics.txt" || true)
HIST_LINES=$(grep -c '^workq_job_duration_seconds_bucket' "$TMP/metrics.txt" || true)
# (Not `read < <(...)`: a failure there would not stop the script.)
out=$(timed_gets /api/v1/status "$REQUESTS"); read -r ST50 ST90 STMAX <<<"$out"
out=$(timed_gets /metrics "$REQUESTS"); read -r ME50 ME90 MEMAX <<<"$out"
out=$(timed_gets /healthz "$REQUESTS"); read -r HZ50 HZ90 HZMAX <<<"$out"
echo "status:  p50 $ST50 ms, p90 $ST90 ms, max $STMAX ms"
echo "metrics: p50 $ME50 ms, p90 $ME90 ms, max $MEMAX ms ($METRIC_LINES samples, $HIST_LINES duration buckets, workq_store_up $STORE_UP)"
echo "healthz (no store call; the HTTP floor): p50 $HZ50 ms, p90 $HZ90 ms"
RSS_SCRAPES=$(rss_mib "$SERVER_PID")

# ---------------------------------------------------------------- (2) and (3) SSE

echo
echo "== (2) SSE, 1 client, $SSE_JOBS jobs ${PAUSE_MS} ms apart"
python3 bench/sse.py "$ADDR" 1 "$SSE_JOBS" "$PAUSE_MS" | tee "$TMP/sse1.out"
echo
echo "== (3) SSE, 50 clients, $SSE_FANOUT_JOBS jobs ${PAUSE_MS} ms apart"
python3 bench/sse.py "$ADDR" 50 "$SSE_FANOUT_JOBS" "$PAUSE_MS" | tee "$TMP/sse50.out"
field() { awk -v k="$2" '$1 == "RESULT" {for (i=3;i<=NF;i++) {split($i,a,"="); if (a[1] == k) print a[2]}}' "$1"; }
sleep 1
RSS_SSE=$(rss_mib "$SERVER_PID")
HWM=$(awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$SERVER_PID/status")
THREADS=$(awk '/^Threads:/ {print $2}' "/proc/$SERVER_PID/status")

# ---------------------------------------------------------------- summary

echo
echo "== summary ($(nproc) cpus, load at end $(cut -d' ' -f1-3 /proc/loadavg); store $JOBS_IN jobs, $DB_MIB MiB, fill $FILL)"
printf '%-46s %s\n' "figure" "measured"
printf '%-46s %s\n' "GET /api/v1/status p50 / p90 / max" "$ST50 / $ST90 / $STMAX ms"
printf '%-46s %s\n' "GET /metrics p50 / p90 / max" "$ME50 / $ME90 / $MEMAX ms (store_up $STORE_UP, $METRIC_LINES samples)"
printf '%-46s %s\n' "GET /healthz p50 (HTTP floor)" "$HZ50 ms"
printf '%-46s %s\n' "SSE commit-to-event, 1 client, p50 / p90" "$(field "$TMP/sse1.out" p50_ms) / $(field "$TMP/sse1.out" p90_ms) ms (from the ack; from at: $(field "$TMP/sse1.out" at_p50_ms) ms)"
printf '%-46s %s\n' "SSE 50 clients: received, p50 / max" "$(field "$TMP/sse50.out" received)/$(field "$TMP/sse50.out" expected), $(field "$TMP/sse50.out" p50_ms) / $(field "$TMP/sse50.out" max_ms) ms"
printf '%-46s %s\n' "server VmRSS: start / after scrapes / after SSE" "$RSS_START / $RSS_SCRAPES / $RSS_SSE MiB (peak $HWM MiB, $THREADS threads)"
if [[ "$(field "$TMP/sse1.out" received)" == 0 ]]; then
    echo "NOTE: no SSE events at all: this build's store keeps no event log (Store::events_after is the trait's empty default)"
fi
if [[ "$HIST_LINES" == 0 ]]; then
    echo "NOTE: /metrics had no histograms: this build's store has no Store::queue_metrics (the trait's empty default)"
fi
