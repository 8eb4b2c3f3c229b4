#!/usr/bin/env python3
"""SSE latency of `workq serve`, for bench/serve.sh:

    python3 bench/sse.py HOST:PORT CLIENTS JOBS [PAUSE_MS]

Opens CLIENTS streams on GET /api/v1/events, then submits JOBS jobs one at a time through
POST /api/v1/jobs (PAUSE_MS apart, default 50), and times, for every client and job, the
arrival of the job's `submitted` event:

  from the ack:  from the moment the POST's 201 answer had been read (the job was committed
                 before the server answered, so this errs low by the answer's trip back)
  from `at`:     from the event's own `at` stamp, written in the submit's transaction
                 (millisecond resolution, truncated: errs high by up to 1 ms)

Prints a human-readable summary and one machine-readable `RESULT sse ...` line; exits 1
only when a stream or a submit failed (events that never came are counted, not fatal).
Standard library only.
"""

import http.client
import json
import sys
import threading
import time
from datetime import datetime


def pctl(values, p):
    """Nearest rank on the sorted list, as bench/run.sh's pctl does."""
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int((len(v) - 1) * p + 0.5))]


def reader(host, port, subscribed, arrivals, failures):
    """Follows one stream; records, per job id, when its `submitted` event arrived."""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        conn.request("GET", "/api/v1/events", headers={"Accept": "text/event-stream"})
        resp = conn.getresponse()
        if resp.status != 200:
            failures.append(f"events: HTTP {resp.status}")
            subscribed.release()
            return
        # The handler subscribes before it answers: from here on nothing is missed.
        subscribed.release()
        event, data = None, None
        while True:
            line = resp.readline()
            if not line:
                return
            t = time.time()
            line = line.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line == "":
                if event == "job" and data:
                    d = json.loads(data)
                    if d.get("kind") == "submitted":
                        arrivals[d["id"]] = (t, d.get("at"))
                event, data = None, None
    except Exception as e:  # a bench helper: report and let the totals show the loss
        failures.append(f"events: {e}")
        subscribed.release()


def stamp_secs(rfc3339):
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: sse.py HOST:PORT CLIENTS JOBS [PAUSE_MS]")
    host, port = sys.argv[1].rsplit(":", 1)
    port = int(port)
    clients, jobs = int(sys.argv[2]), int(sys.argv[3])
    pause = (int(sys.argv[4]) if len(sys.argv) > 4 else 50) / 1000.0

    subscribed = threading.Semaphore(0)
    failures = []
    arrivals = [dict() for _ in range(clients)]
    for a in arrivals:
        threading.Thread(
            target=reader, args=(host, port, subscribed, a, failures), daemon=True
        ).start()
    for _ in range(clients):
        subscribed.acquire()
    if failures:
        sys.exit(f"sse.py: {failures[0]}")
    time.sleep(0.2)

    acks = {}
    conn = http.client.HTTPConnection(host, port, timeout=30)
    body = json.dumps({"shell": "true", "queue": "sse"})
    for _ in range(jobs):
        conn.request("POST", "/api/v1/jobs", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = resp.read()
        t = time.time()
        if resp.status != 201:
            sys.exit(f"sse.py: submit answered {resp.status}: {answer[:200]!r}")
        acks[json.loads(answer)["id"]] = t
        time.sleep(pause)
    # Let the last events arrive.
    deadline = time.time() + 5
    while time.time() < deadline and any(len(a) < jobs for a in arrivals):
        time.sleep(0.05)

    from_ack, from_at, received = [], [], 0
    for a in arrivals:
        for job, t_ack in acks.items():
            if job in a:
                received += 1
                t, at = a[job]
                from_ack.append((t - t_ack) * 1000)
                if at:
                    from_at.append((t - stamp_secs(at)) * 1000)
    expected = clients * jobs
    print(f"{clients} client(s), {jobs} jobs: {received}/{expected} events received")
    print(f"  from the submit's ack: p50 {pctl(from_ack, .5):.2f} ms, p90 {pctl(from_ack, .9):.2f} ms, "
          f"max {pctl(from_ack, 1):.2f} ms")
    print(f"  from the event's at:   p50 {pctl(from_at, .5):.2f} ms, p90 {pctl(from_at, .9):.2f} ms, "
          f"max {pctl(from_at, 1):.2f} ms")
    print(f"RESULT sse clients={clients} jobs={jobs} received={received} expected={expected} "
          f"p50_ms={pctl(from_ack, .5):.2f} p90_ms={pctl(from_ack, .9):.2f} max_ms={pctl(from_ack, 1):.2f} "
          f"at_p50_ms={pctl(from_at, .5):.2f} at_max_ms={pctl(from_at, 1):.2f}")
    if failures:
        print(f"errors: {failures[:3]}", file=sys.stderr)
        sys.exit(1)
    # Missing events are a result, not an error: the totals above say how many (a store
    # without an event log sends none).


if __name__ == "__main__":
    main()
