#!/usr/bin/env python3
"""Cross-instance event latency, for bench/cluster.sh.

Holds an agent event stream (GET /v1/events) open on instance B (--remote)
and on instance A itself (--local), then opens anonymous sessions on A one
after another. Each opening raises `session_opened`; for each session it
records the time from sending the request on A to the event arriving on each
stream, the time A took to answer, and what B's stream adds to A's for the
same event (the relay through Redis). Prints one BENCH line (microseconds)
and, with --raw, every sample. Python's standard library only.
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse


def percentile(values, p):
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Stream(threading.Thread):
    """Reads one SSE stream, noting when each session_opened arrives."""

    def __init__(self, base, agent_token):
        super().__init__(daemon=True)
        url = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        self.conn.request("GET", "/v1/events", headers={"Authorization": "Bearer " + agent_token})
        self.response = self.conn.getresponse()
        if self.response.status != 200:
            raise SystemExit(f"{base}/v1/events answered {self.response.status}")
        self.arrived = {}
        self.lock = threading.Lock()

    def run(self):
        for raw in self.response.fp:
            line = raw.decode().rstrip("\r\n")
            if not line.startswith("data:"):
                continue
            now = time.monotonic()
            event = json.loads(line[5:])
            if event.get("kind") == "session_opened":
                with self.lock:
                    self.arrived.setdefault(event.get("session_id"), now)

    def seen(self, session_id):
        with self.lock:
            return self.arrived.get(session_id)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--origin", required=True, help="instance A: sessions open here")
    parser.add_argument("--remote", required=True, help="instance B: its stream is measured")
    parser.add_argument("--agent-token", required=True)
    parser.add_argument("--app-key", required=True)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between openings")
    parser.add_argument("--raw", help="file for every sample")
    args = parser.parse_args()

    remote = Stream(args.remote, args.agent_token)
    local = Stream(args.origin, args.agent_token)
    remote.start()
    local.start()
    origin = urllib.parse.urlsplit(args.origin)
    conn = http.client.HTTPConnection(origin.hostname, origin.port, timeout=10)
    body = json.dumps({"channel": "web", "connection": "acme"})
    headers = {"x-deskbridge-app-key": args.app_key, "Content-Type": "application/json"}

    sent = []  # (session id, sent at, answered at)
    for i in range(args.warmup + args.count):
        started = time.monotonic()
        conn.request("POST", "/v1/sessions", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        answered = time.monotonic()
        if response.status != 201:
            raise SystemExit(f"opening a session answered {response.status}: {payload!r}")
        if i >= args.warmup:
            sent.append((json.loads(payload)["session_id"], started, answered))
        time.sleep(args.interval)

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(remote.seen(s) and local.seen(s) for s, _, _ in sent):
        time.sleep(0.05)

    rows, remote_us, local_us, answer_us, added_us = [], [], [], [], []
    for session_id, started, answered in sent:
        r, l = remote.seen(session_id), local.seen(session_id)
        answer_us.append((answered - started) * 1e6)
        if r is not None:
            remote_us.append((r - started) * 1e6)
        if l is not None:
            local_us.append((l - started) * 1e6)
        if r is not None and l is not None:
            added_us.append((r - l) * 1e6)
        rows.append((session_id, answer_us[-1], None if r is None else (r - started) * 1e6,
                     None if l is None else (l - started) * 1e6))
    if args.raw:
        with open(args.raw, "w") as out:
            out.write("session_id answer_us remote_us local_us\n")
            for row in rows:
                out.write(" ".join("-" if v is None else (f"{v:.0f}" if isinstance(v, float) else v) for v in row) + "\n")
    print("BENCH events=%d remote_seen=%d local_seen=%d remote_p50_us=%d remote_p99_us=%d remote_max_us=%d "
          "local_p50_us=%d local_p99_us=%d answer_p50_us=%d answer_p99_us=%d remote_mean_us=%d "
          "added_p50_us=%d added_p99_us=%d" % (
              len(sent), len(remote_us), len(local_us),
              percentile(remote_us, 50), percentile(remote_us, 99), max(remote_us, default=0),
              percentile(local_us, 50), percentile(local_us, 99),
              percentile(answer_us, 50), percentile(answer_us, 99),
              statistics.mean(remote_us) if remote_us else 0,
              percentile(added_us, 50), percentile(added_us, 99)))
    return 0 if len(remote_us) == len(sent) else 1


if __name__ == "__main__":
    sys.exit(main())
