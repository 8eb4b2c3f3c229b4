#!/usr/bin/env bash
# PostgreSQL benchmarks, one command:   bash bench/pg.sh
#
# Builds the release binary, starts a throwaway PostgreSQL cluster (the server binaries of this
# machine; as the `postgres` user when run as root; 127.0.0.1 only; fsync off) and measures:
#   claim+finish throughput with 1, 2 and 4 workers;
#   1000 x /bin/true through one worker with 2 slots against xargs -P2 (median of 3);
#   submit-to-start latency on an idle worker (p50/p95 of 20).
# Everything it starts is stopped, and the cluster removed, when it ends.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo build --release -p workq
WORKQ_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/workq" cargo bench -p workq-store --bench pg
