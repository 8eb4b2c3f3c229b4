#!/usr/bin/env bash
# workq benchmarks, one command:   bash bench/run.sh
#
# Builds the release binary, then in a fresh temporary directory measures:
#   (a) 1000 x `/bin/true` through one worker with 2 slots (submit --lines + wait --all)
#       against `xargs -P2` running the same 1000 `sh -c` commands; median of 3 each
#   (a') the same with `exec /bin/true`, which workq must also hand to sh (no plain-line shortcut)
#   (b) wall time of one `workq submit -- true` (no worker running, and with an idle worker)
#   (c) submit-to-start latency on an idle worker, p50/p95, against running the same job directly:
#       through the library (cargo bench latency) to a static C program's own timestamp (built
#       with cc; without one, a Rust program's), and with `date` as the job; and through the CLI
#   (d) RSS of an idle worker
#   (e) claim+finish cost with 1,000 and 1,000,000 jobs queued (cargo bench, workq-store)
#   (f) wall time of `submit --lines` with 10,000 lines
# plus the machine: nproc and the disk's synchronous-write rate in the temp directory.
#
# Environment: SAMPLES (default 50) for (b) and (c); REPS (default 3) for (a);
# SKIP_STORE_BENCH=1 skips (e). Needs bash >= 5 (EPOCHREALTIME), coreutils, awk, dd, xargs.
# Everything it starts is stopped on exit and the temporary directory is removed.

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SAMPLES=${SAMPLES:-50}
REPS=${REPS:-3}
NJOBS=1000

# ---------------------------------------------------------------- helpers

WORKER_PIDS=()
TMP=""

cleanup() {
    local rc=$?
    set +e
    local pid
    for pid in "${WORKER_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    if [[ $rc -ne 0 && -n "$TMP" && -d "$TMP" ]]; then
        echo "bench/run.sh failed (exit $rc); last lines of the logs:" >&2
        tail -n 20 "$TMP"/*.log >&2 2>/dev/null
    fi
    [[ -n "$TMP" ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Microseconds since the epoch, without forking (bash 5).
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# Median / percentile of numbers on stdin (nearest rank on the sorted list).
pctl() { sort -g | awk -v p="$1" '{v[NR]=$1} END {i=int((NR-1)*p+0.5)+1; print v[i]}'; }
median() { pctl 0.5; }
# Float arithmetic.
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo "met"; else echo "NOT met"; fi; }

wq() { "$WORKQ" --state-dir "$1" "${@:2}"; }

# start_worker STATE_DIR NAME SLOTS: starts a worker in the background, waits until it is
# registered, and sets WPID.
start_worker() {
    local dir=$1 name=$2 slots=$3
    "$WORKQ" --state-dir "$dir" worker start "$name" -w "$slots" 2>>"$TMP/worker-$name.log" &
    WPID=$!
    WORKER_PIDS+=("$WPID")
    local i
    for i in $(seq 200); do
        if wq "$dir" --json status 2>/dev/null | grep -q "\"pid\":$WPID[,}]"; then
            return 0
        fi
        kill -0 "$WPID" 2>/dev/null || { echo "worker $name exited early" >&2; return 1; }
        sleep 0.05
    done
    echo "worker $name did not register within 10 s" >&2
    return 1
}

stop_worker() {
    local pid=$1 rc=0
    kill -TERM "$pid"
    wait "$pid" || rc=$?
    [[ $rc -eq 0 ]] || echo "warning: worker $pid exited with $rc after SIGTERM" >&2
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------- build

echo "== building (cargo build --release -p workq; cargo bench --no-run)"
cargo build --release -p workq
cargo bench -p workq --bench latency --no-run
if [[ -z "${SKIP_STORE_BENCH:-}" ]]; then
    cargo bench -p workq-store --bench claim --no-run
fi
WORKQ="${CARGO_TARGET_DIR:-$ROOT/target}/release/workq"
[[ -x "$WORKQ" ]] || { echo "no binary at $WORKQ" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/workq-bench.XXXXXX")

# ---------------------------------------------------------------- machine

NPROC=$(nproc)
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo unknown)
FS=$(df -T "$TMP" | awk 'NR==2 {print $2}')
t0=$(now_us)
dd if=/dev/zero of="$TMP/fsync.test" bs=4k count=1000 oflag=dsync status=none
t1=$(now_us)
rm -f "$TMP/fsync.test"
FSYNC_RATE=$(calc "1000 / (($t1 - $t0) / 1e6)" 0)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "== machine"
echo "cpus (nproc):          $NPROC ($CPU)"
echo "temp dir:              $TMP ($FS)"
echo "sync 4 KiB writes:     $FSYNC_RATE /s (dd bs=4k count=1000 oflag=dsync)"
echo "load average at start: $LOAD"
echo "workq:                 $("$WORKQ" --version 2>/dev/null || echo "$WORKQ")"

# ---------------------------------------------------------------- (a) throughput

echo
echo "== (a) $NJOBS x /bin/true, 2 slots: workq (submit --lines + wait --all) vs xargs -P2"
A=$TMP/a
LINES=$TMP/lines.txt
yes /bin/true | head -n "$NJOBS" >"$LINES" || true
[[ $(wc -l <"$LINES") -eq $NJOBS ]]
LINES_SH=$TMP/lines-sh.txt
yes 'exec /bin/true' | head -n "$NJOBS" >"$LINES_SH" || true
start_worker "$A" throughput 2
A_WORKER=$WPID
WQ_TIMES=()
XA_TIMES=()
WQ_SH_TIMES=()
XA_SH_TIMES=()
# CPU accounting, to see where the time goes: user+system seconds of the submit and wait
# processes (bash `time`), of the worker itself and of the jobs it reaped (/proc/PID/stat).
TIMEFORMAT='%U %S'
TICK=$(getconf CLK_TCK)
proc_cpu() { awk -v t="$TICK" '{ printf "%.3f %.3f\n", ($14 + $15) / t, ($16 + $17) / t }' "/proc/$1/stat"; }
read -r W_SELF0 W_KIDS0 < <(proc_cpu "$A_WORKER")
: >"$TMP/cpu-submit" ; : >"$TMP/cpu-wait" ; : >"$TMP/cpu-xargs"
for r in $(seq "$REPS"); do
    # Interleaved so that a disturbance hits both sides alike.
    t0=$(now_us)
    { time wq "$A" submit --lines "$LINES" >/dev/null 2>>"$TMP/cli.log" ; } 2>>"$TMP/cpu-submit"
    { time wq "$A" wait --all 2>>"$TMP/cli.log" ; } 2>>"$TMP/cpu-wait"
    t1=$(now_us)
    WQ_TIMES+=("$(calc "($t1 - $t0) / 1e6" 3)")

    t0=$(now_us)
    { time xargs -P2 -I{} sh -c {} <"$LINES" ; } 2>>"$TMP/cpu-xargs"
    t1=$(now_us)
    XA_TIMES+=("$(calc "($t1 - $t0) / 1e6" 3)")
    echo "run $r: workq ${WQ_TIMES[-1]} s, xargs ${XA_TIMES[-1]} s"
done
read -r W_SELF1 W_KIDS1 < <(proc_cpu "$A_WORKER")
# (a') Not counted in the CPU figures above; jobs that go through sh on both sides.
for r in $(seq "$REPS"); do
    t0=$(now_us)
    wq "$A" submit --lines "$LINES_SH" >/dev/null 2>>"$TMP/cli.log"
    wq "$A" wait --all 2>>"$TMP/cli.log"
    t1=$(now_us)
    WQ_SH_TIMES+=("$(calc "($t1 - $t0) / 1e6" 3)")
    t0=$(now_us)
    xargs -P2 -I{} sh -c {} <"$LINES_SH"
    t1=$(now_us)
    XA_SH_TIMES+=("$(calc "($t1 - $t0) / 1e6" 3)")
    echo "run $r (exec /bin/true, both through sh): workq ${WQ_SH_TIMES[-1]} s, xargs ${XA_SH_TIMES[-1]} s"
done
unset TIMEFORMAT
A_WQ=$(printf '%s\n' "${WQ_TIMES[@]}" | median)
A_XA=$(printf '%s\n' "${XA_TIMES[@]}" | median)
A_RATIO=$(calc "$A_WQ / $A_XA" 2)
A_RSS_AFTER=$(rss_kib "$A_WORKER")
per_job_ms() { awk -v n=$((NJOBS * REPS)) '{ s += $1 + $2 } END { printf "%.2f", s * 1000 / n }' "$1"; }
A_CPU_WORKER=$(calc "($W_SELF1 - $W_SELF0) * 1000 / ($NJOBS * $REPS)" 2)
A_CPU_JOBS=$(calc "($W_KIDS1 - $W_KIDS0) * 1000 / ($NJOBS * $REPS)" 2)
A_CPU_SUBMIT=$(per_job_ms "$TMP/cpu-submit")
A_CPU_WAIT=$(per_job_ms "$TMP/cpu-wait")
A_CPU_XARGS=$(per_job_ms "$TMP/cpu-xargs")
A_SH_WQ=$(printf '%s\n' "${WQ_SH_TIMES[@]}" | median)
A_SH_XA=$(printf '%s\n' "${XA_SH_TIMES[@]}" | median)
A_SH_RATIO=$(calc "$A_SH_WQ / $A_SH_XA" 2)
SUCCEEDED=$(wq "$A" --json status | grep -o '"succeeded":[0-9]*' | head -1 | cut -d: -f2)
[[ "$SUCCEEDED" -eq $((2 * NJOBS * REPS)) ]] || { echo "expected $((2 * NJOBS * REPS)) succeeded jobs, status says $SUCCEEDED" >&2; exit 1; }
stop_worker "$A_WORKER"
echo "median: workq $A_WQ s ($(calc "$NJOBS / $A_WQ" 0) jobs/s), xargs $A_XA s ($(calc "$NJOBS / $A_XA" 0) jobs/s), ratio $A_RATIO (target <= 1.10)"
echo "median, both through sh: workq $A_SH_WQ s, xargs $A_SH_XA s, ratio $A_SH_RATIO"
echo "(workq time = submit start to wait --all exit; wait looks every 20 ms)"
echo "CPU per job (user+sys, ms; $NPROC cpus, 2 slots): workq: worker $A_CPU_WORKER + jobs $A_CPU_JOBS + submit $A_CPU_SUBMIT + wait $A_CPU_WAIT = $(calc "$A_CPU_WORKER + $A_CPU_JOBS + $A_CPU_SUBMIT + $A_CPU_WAIT" 2); xargs (incl. its sh children): $A_CPU_XARGS"

# ---------------------------------------------------------------- (b) submit wall time

echo
echo "== (b) one 'workq submit -- true', $SAMPLES calls each"
B=$TMP/b
wq "$B" submit -- true >/dev/null 2>>"$TMP/cli.log"   # creates the store; not timed
# Every loop is paced 50 ms apart (one-off calls; back-to-back calls come out ~0.5 ms faster).
B_SPAWN=()
for _ in $(seq "$SAMPLES"); do
    t0=$(now_us); /bin/true; t1=$(now_us)
    B_SPAWN+=("$((t1 - t0))")
    sleep 0.05
done
B_NOWORKER=()
for _ in $(seq "$SAMPLES"); do
    t0=$(now_us)
    wq "$B" submit -- true >/dev/null 2>>"$TMP/cli.log"
    t1=$(now_us)
    B_NOWORKER+=("$((t1 - t0))")
    sleep 0.05
done
start_worker "$B" latency 1
B_WORKER=$WPID
wq "$B" wait --all 2>>"$TMP/cli.log"    # drain the jobs queued above
sleep 0.5
B_WITHWORKER=()
for _ in $(seq "$SAMPLES"); do
    t0=$(now_us)
    wq "$B" submit -- true >/dev/null 2>>"$TMP/cli.log"
    t1=$(now_us)
    B_WITHWORKER+=("$((t1 - t0))")
    sleep 0.05    # let the worker run it: each submit meets an idle worker
done
wq "$B" wait --all 2>>"$TMP/cli.log"
B_SPAWN_MS=$(printf '%s\n' "${B_SPAWN[@]}" | median | awk '{printf "%.2f", $1/1000}')
B_NOW_MS=$(printf '%s\n' "${B_NOWORKER[@]}" | median | awk '{printf "%.2f", $1/1000}')
B_NOW_P95=$(printf '%s\n' "${B_NOWORKER[@]}" | pctl 0.95 | awk '{printf "%.2f", $1/1000}')
B_WW_MS=$(printf '%s\n' "${B_WITHWORKER[@]}" | median | awk '{printf "%.2f", $1/1000}')
B_WW_P95=$(printf '%s\n' "${B_WITHWORKER[@]}" | pctl 0.95 | awk '{printf "%.2f", $1/1000}')
echo "no worker running:        median $B_NOW_MS ms, p95 $B_NOW_P95 ms (target median <= 3 ms)"
echo "one idle worker (rings):  median $B_WW_MS ms, p95 $B_WW_P95 ms"
echo "baseline fork+exec of /bin/true from bash: median $B_SPAWN_MS ms"

# ---------------------------------------------------------------- (c) submit-to-start latency

echo
echo "== (c) submit-to-start latency on an idle worker (1 slot), $SAMPLES jobs"
# The job is `date +%s%N` run directly (no shell): it stamps the time it started running into
# its log. Submit-to-start is measured from the job's created_at, which submit takes inside its
# transaction, before the commit and the doorbell ring, to that stamp: it includes the commit,
# the worker's wake-up, claim and spawn, and date's own start-up. created_at has millisecond
# resolution (truncated), so the figure errs high by up to 1 ms. Also shown: from submit's
# return (it can be negative: the job may start while submit is still exiting), the baseline
# of bash starting the same `date`, and the full figure from just before the submit process is
# forked (its own start-up included).
C_LAT=()
C_POST=()
C_SUB=()
C_ENQ=()
for i in $(seq "$SAMPLES"); do
    t0=$(now_us)
    id=$(wq "$B" submit -- date +%s%N 2>>"$TMP/cli.log")
    t1=$(now_us)
    f=$B/logs/$(printf '%03d' $((id / 1000)))/$id.1.log
    for _ in $(seq 2000); do [[ -s $f ]] && break; sleep 0.005; done
    [[ -s $f ]] || { echo "job $id did not run within 10 s (no $f)" >&2; exit 1; }
    started_ns=$(<"$f")
    C_LAT+=("$((started_ns / 1000 - t0))")
    C_POST+=("$((started_ns / 1000 - t1))")
    C_SUB+=("$((t1 - t0))")
    created=$(wq "$B" --json show "$id" 2>>"$TMP/cli.log" | grep -o '"created_at":"[^"]*"' | cut -d'"' -f4)
    created_ms=$(date -d "$created" +%s%3N)
    C_ENQ+=("$((started_ns / 1000 - created_ms * 1000))")
    sleep 0.1    # the worker finishes the job and goes idle again
done
C_BASE=()
for i in $(seq "$SAMPLES"); do
    f=$TMP/cb.$i
    t0=$(now_us)
    date +%s%N >"$f"
    started_ns=$(<"$f")
    C_BASE+=("$((started_ns / 1000 - t0))")
    sleep 0.05
done
ms() { awk '{printf "%.2f", $1/1000}'; }
C_P50=$(printf '%s\n' "${C_LAT[@]}" | median | ms)
C_P95=$(printf '%s\n' "${C_LAT[@]}" | pctl 0.95 | ms)
C_SUB50=$(printf '%s\n' "${C_SUB[@]}" | median | ms)
C_POST50=$(printf '%s\n' "${C_POST[@]}" | median | ms)
C_POST95=$(printf '%s\n' "${C_POST[@]}" | pctl 0.95 | ms)
C_ENQ50=$(printf '%s\n' "${C_ENQ[@]}" | median | ms)
C_ENQ95=$(printf '%s\n' "${C_ENQ[@]}" | pctl 0.95 | ms)
C_ENQMAX=$(printf '%s\n' "${C_ENQ[@]}" | pctl 1 | ms)
C_B50=$(printf '%s\n' "${C_BASE[@]}" | median | ms)
C_B95=$(printf '%s\n' "${C_BASE[@]}" | pctl 0.95 | ms)
echo "submit-to-start (created_at -> job running): p50 $C_ENQ50 ms, p95 $C_ENQ95 ms, max $C_ENQMAX ms (target p50 <= 2 ms)"
echo "from submit's return:                        p50 $C_POST50 ms, p95 $C_POST95 ms"
echo "baseline, bash starting the same date:       p50 $C_B50 ms, p95 $C_B95 ms"
echo "from before the submit process is forked:    p50 $C_P50 ms, p95 $C_P95 ms (the submit call itself: p50 $C_SUB50 ms)"
# The same through the library, timed from the moment Client::submit returns (committed and rung).
WORKQ_BIN="$WORKQ" SAMPLES="$SAMPLES" TMPDIR="$TMP" cargo bench -q -p workq --bench latency 2>>"$TMP/cargo.log" | tee "$TMP/latency.out"
lat_field() { awk -v k="$1" '$1 == "RESULT" && $2 == "latency" {for (i=3;i<=NF;i++) {split($i,a,"="); if (a[1] == k) print a[2]}}' "$TMP/latency.out"; }
C_ACK50=$(lat_field p50_ms)
C_ACK95=$(lat_field p95_ms)
C_ACKBASE=$(lat_field baseline_p50_ms)
C_DATE50=$(lat_field date_p50_ms)
C_DATEBASE=$(lat_field date_baseline_p50_ms)
B_RSS_AFTER=$(rss_kib "$B_WORKER")
stop_worker "$B_WORKER"

# ---------------------------------------------------------------- (d) idle RSS

echo
echo "== (d) idle worker RSS"
D=$TMP/d
start_worker "$D" idle 2
sleep 1
D_RSS=$(rss_kib "$WPID")
D_HWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$WPID/status")
D_THREADS=$(awk '/^Threads:/ {print $2}' "/proc/$WPID/status")
stop_worker "$WPID"
D_MIB=$(calc "$D_RSS / 1024" 1)
echo "fresh worker, 1 s idle: VmRSS $D_MIB MiB (peak $(calc "$D_HWM / 1024" 1) MiB, $D_THREADS threads) (target <= 8 MiB)"
echo "after work, idle: 2-slot worker after $((NJOBS * REPS)) jobs $(calc "$A_RSS_AFTER / 1024" 1) MiB; 1-slot worker after $((2 * SAMPLES)) jobs $(calc "$B_RSS_AFTER / 1024" 1) MiB"

# ---------------------------------------------------------------- (f) 10,000-line submit

echo
echo "== (f) submit --lines with 10,000 lines (no worker), 5 runs"
F=$TMP/f
yes 'echo a job line' | head -n 10000 >"$TMP/lines10k.txt" || true
wq "$F" submit -- true >/dev/null 2>>"$TMP/cli.log"   # creates the store; not timed
F_TIMES=()
for _ in $(seq 5); do
    t0=$(now_us)
    wq "$F" submit --lines "$TMP/lines10k.txt" >/dev/null 2>>"$TMP/cli.log"
    t1=$(now_us)
    F_TIMES+=("$(calc "($t1 - $t0) / 1e6" 3)")
done
F_MED=$(printf '%s\n' "${F_TIMES[@]}" | median)
echo "runs: ${F_TIMES[*]} s; median $F_MED s (target < 0.5 s)"

# ---------------------------------------------------------------- (e) store claim cost

E_RATIO=""
if [[ -z "${SKIP_STORE_BENCH:-}" ]]; then
    echo
    echo "== (e) claim+finish cost vs backlog (cargo bench -p workq-store --bench claim)"
    E_KEEP=$TMP/e-store
    WORKQ_BENCH_KEEP=$E_KEEP TMPDIR=$TMP cargo bench -q -p workq-store --bench claim 2>>"$TMP/cargo.log" | tee "$TMP/claim.out"
    mean_of() { awk -v n="$1" '$1 == "RESULT" && $2 == "n=" n {for (i=1;i<=NF;i++) if ($i ~ /^mean_us=/) {sub("mean_us=","",$i); print $i}}' "$TMP/claim.out"; }
    ratio_of() { awk -v n="$1" '$1 == "RESULT" && $2 == "ratio" && $3 == "n=" n {split($4,a,"="); print a[2]}' "$TMP/claim.out"; }
    E_SMALL=$(mean_of 1000)
    E_LARGE=$(mean_of 1000000)
    E_FIN=$(mean_of 1000000/1000)
    E_RATIO=$(ratio_of 1000000)
    E_FIN_RATIO=$(ratio_of 1000000/1000)

    # The command line against the store of 1,000,000 jobs, all but 1,000 finished.
    echo
    echo "== (e') the command line against 1,000,000 jobs, all but 1,000 finished (median of 20)"
    time_cmd() {
        local t=() i t0 t1
        for i in $(seq 20); do
            t0=$(now_us); wq "$E_KEEP" "$@" >/dev/null 2>>"$TMP/cli.log"; t1=$(now_us)
            t+=("$((t1 - t0))")
        done
        printf '%s\n' "${t[@]}" | median | ms
    }
    E_SUBMIT=$(time_cmd submit -- true)
    E_STATUS=$(time_cmd status)
    E_LIST=$(time_cmd list --limit 50)
    E_LISTQ=$(time_cmd list --state queued --limit 50)
    E_DB_MIB=$(calc "$(stat -c %s "$E_KEEP/workq.db") / 1048576" 0)
    echo "submit -- true: $E_SUBMIT ms; status: $E_STATUS ms; list --limit 50: $E_LIST ms; list --state queued --limit 50: $E_LISTQ ms (database $E_DB_MIB MiB)"
    echo "claim+finish: $E_FIN us per pair with 1M mostly finished, $E_SMALL us with 1,000 queued (${E_FIN_RATIO}x)"
    rm -rf "$E_KEEP"
fi

# ---------------------------------------------------------------- summary

echo
echo "== summary (nproc $NPROC, $FSYNC_RATE sync writes/s, load at start $LOAD, at end $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-44s %-30s %-12s %s\n' "figure" "measured" "target" "verdict"
printf '%-44s %-30s %-12s %s\n' "(a) 1000 jobs, 2 slots: workq / xargs -P2" "${A_RATIO}x ($A_WQ s / $A_XA s)" "<= 1.10" "$(verdict "$A_RATIO <= 1.10")"
printf '%-44s %-30s %-12s %s\n' "(a') the same, both through sh" "${A_SH_RATIO}x ($A_SH_WQ s / $A_SH_XA s)" "-" "-"
printf '%-44s %-30s %-12s %s\n' "(b) submit -- true, median, no worker" "$B_NOW_MS ms" "<= 3 ms" "$(verdict "$B_NOW_MS <= 3")"
printf '%-44s %-30s %-12s %s\n' "(b) submit -- true, median, idle worker" "$B_WW_MS ms" "<= 3 ms" "$(verdict "$B_WW_MS <= 3")"
printf '%-44s %-30s %-12s %s\n' "(c) submit-to-start p50 (p95), from the ack" "$C_ACK50 ms ($C_ACK95 ms)" "p50 <= 2 ms" "$(verdict "$C_ACK50 <= 2")"
printf '%-44s %-30s %-12s %s\n' "(c) the stamp started directly (p50)" "$C_ACKBASE ms" "-" "-"
printf '%-44s %-30s %-12s %s\n' "(c) with date as the job (direct: $C_DATEBASE ms)" "$C_DATE50 ms" "-" "-"
printf '%-44s %-30s %-12s %s\n' "(c) from created_at, CLI submit (p50)" "$C_ENQ50 ms" "-" "-"
printf '%-44s %-30s %-12s %s\n' "(d) idle worker RSS" "$D_MIB MiB" "<= 8 MiB" "$(verdict "$D_MIB <= 8")"
printf '%-44s %-30s %-12s %s\n' "(f) submit --lines, 10,000 lines (median)" "$F_MED s" "< 0.5 s" "$(verdict "$F_MED < 0.5")"
if [[ -n "$E_RATIO" ]]; then
    printf '%-44s %-30s %-12s %s\n' "(e) claim+finish, 1M vs 1k queued (mean)" "${E_RATIO}x ($E_LARGE / $E_SMALL us)" "<= 1.5x" "$(verdict "$E_RATIO <= 1.5")"
    printf '%-44s %-30s %-12s %s\n' "(e) the same, 1M mostly finished vs 1k" "${E_FIN_RATIO}x ($E_FIN / $E_SMALL us)" "<= 1.5x" "$(verdict "$E_FIN_RATIO <= 1.5")"
    printf '%-44s %-30s %-12s %s\n' "(e') 1M mostly finished: submit/status/list" "$E_SUBMIT / $E_STATUS / $E_LIST ms" "-" "-"
fi
