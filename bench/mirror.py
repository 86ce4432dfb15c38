#!/usr/bin/env python3
"""One status change → incremental export + publish, and commit → mirror current (issue 9).

For each scale (`suedwestfalen`, and `germany` with --germany): seeds the demo into a SQLite file
(kept in OUT for later runs, shared with bench/export.py), starts
`notbetrieb serve --publish-to file://OUT/mirror-SCALE` and waits for the first full publish.
Then REPS times, one after the other: sets Menden's statement for a service through the write
API (`PUT /api/v1/municipalities/menden-sauerland/services/SERVICE/statement`, a unique marker
in the restrictions, alternating levels), and
  - polls the mirror's copy of that service-in-town page until the marker is there: the time from
    the API's answer (the commit) to the mirror being current, debounce included
    (`--publish-debounce-ms`, the default 500 unless --debounce-ms);
  - reads the server's log line `mirrors updated incrementally` for that change: the files
    written and deleted, and the time of the incremental export (render + write of the touched
    parts) and of the publish to the directory, measured inside the server.
Prints median, p99 and worst of each and the ratio to the targets (export + publish < 100 ms at
demo scale, < 300 ms at Germany scale; commit → mirror < 5 s p99).

    bench/mirror.py [--bin target/release/notbetrieb] [--reps 30] [--germany] [--debounce-ms 500]
                    [--out bench/out/export]
"""

import argparse
import http.client
import json
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export import ROOT, log, seed  # noqa: E402

TOWN = "menden-sauerland"
SERVICE = "meldebescheinigung"
TARGETS = {"suedwestfalen": 100, "germany": 300}


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def token(binary, db):
    p = subprocess.run([binary, "token", "add", "--database", f"sqlite:{db}", "--user", "admin", "--name",
                        f"bench-{os.getpid()}-{time.time_ns()}"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"token add failed: {p.stderr}")
    return p.stdout.strip().splitlines()[-1]


def lines_of(stream, q):
    for raw in stream:
        q.put(raw)


def measure(binary, scale, out, reps, debounce_ms):
    db = os.path.join(out, f"{scale}.sqlite")
    seed(binary, scale, db)
    secret = token(binary, db)
    mirror = os.path.join(out, f"mirror-{scale}")
    shutil.rmtree(mirror, ignore_errors=True)
    os.makedirs(mirror)
    server = subprocess.Popen(
        [binary, "serve", "--database", f"sqlite:{db}", "--listen", "127.0.0.1:0", "--publish-to",
         f"file://{mirror}", "--publish-debounce-ms", str(debounce_ms)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
    logs = queue.Queue()
    threading.Thread(target=lines_of, args=(server.stderr, logs), daemon=True).start()
    try:
        port = None
        for line in server.stdout:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            sys.exit("the server ended before listening")
        threading.Thread(target=lines_of, args=(server.stdout, queue.Queue()), daemon=True).start()
        log(f"{scale}: waiting for the first full publish to {mirror} ...")
        t0 = time.perf_counter()
        while True:
            line = logs.get(timeout=3600)
            if "mirror updated" in line or "publishing to the mirror failed" in line:
                break
        first_s = time.perf_counter() - t0
        if "failed" in line:
            sys.exit(line)
        first_written = int(re.search(r"written=(\d+)", line).group(1))
        log(f"  first publish: {first_written} files in {first_s:.0f} s")
        page = os.path.join(mirror, "kommunen", TOWN, "leistungen", SERVICE, "index.html")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        rows = []
        for rep in range(reps):
            marker = f"BENCH-{os.getpid()}-{rep}-{time.time_ns()}"
            body = json.dumps({"level": ["limited", "unavailable"][rep % 2], "restrictions": f"Benchmark {marker}"})
            while not logs.empty():
                logs.get_nowait()
            conn.request("PUT", f"/api/v1/municipalities/{TOWN}/services/{SERVICE}/statement", body, headers)
            r = conn.getresponse()
            answer = r.read()
            committed = time.perf_counter()
            if r.status != 200:
                sys.exit(f"the write failed: {r.status} {answer[:500]!r}")
            while True:
                try:
                    with open(page, encoding="utf-8") as f:
                        if marker in f.read():
                            break
                except FileNotFoundError:
                    pass
                if time.perf_counter() - committed > 120:
                    sys.exit("the mirror did not show the change within 120 s")
                time.sleep(0.002)
            current = time.perf_counter()
            while True:
                line = logs.get(timeout=120)
                if "mirrors updated incrementally" in line:
                    break
            fields = dict(re.findall(r"(\w+)=(\d+)", line))
            row = {k: int(fields[k]) for k in ("written", "deleted", "unchanged", "export_ms", "publish_ms")}
            row["mirror_ms"] = (current - committed) * 1000
            rows.append(row)
            log(f"  change {rep + 1}: {row['written']} written, {row['deleted']} deleted, export {row['export_ms']} ms, "
                f"publish {row['publish_ms']} ms, commit→mirror {row['mirror_ms']:.0f} ms")
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(mirror, ignore_errors=True)
    inc = [r["export_ms"] + r["publish_ms"] for r in rows]
    lag = [r["mirror_ms"] for r in rows]
    written = [r["written"] for r in rows]
    target = TARGETS.get(scale, 300)
    return [
        f"## {scale}: one status change, {reps} changes, mirror in a directory, debounce {debounce_ms} ms",
        f"  first full publish: {first_written} files in {first_s:.0f} s",
        f"  files written per change: median {statistics.median(written):.0f}, max {max(written)} "
        f"(of {rows[0]['written'] + rows[0]['unchanged']} in the touched parts, {first_written} in all)",
        f"  incremental export + publish: median {statistics.median(inc):.0f} ms, p99 {percentile(inc, 99):.0f} ms, "
        f"max {max(inc):.0f} ms; export median {statistics.median(r['export_ms'] for r in rows):.0f} ms, "
        f"publish median {statistics.median(r['publish_ms'] for r in rows):.0f} ms; "
        f"median / target {statistics.median(inc) / target:.2f} (target < {target} ms)",
        f"  commit → mirror current: median {statistics.median(lag):.0f} ms, p99 {percentile(lag, 99):.0f} ms, "
        f"max {max(lag):.0f} ms; p99 / target {percentile(lag, 99) / 5000:.2f} (target < 5000 ms)",
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "notbetrieb"))
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--germany", action="store_true")
    ap.add_argument("--debounce-ms", type=int, default=500)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "export"))
    args = ap.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"no binary at {args.bin}: cargo build --release, or --bin PATH")
    os.makedirs(args.out, exist_ok=True)
    lines = [f"# bench/mirror.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores"]
    for scale in ["suedwestfalen"] + (["germany"] if args.germany else []):
        lines += measure(args.bin, scale, args.out, args.reps, args.debounce_ms)
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(args.out, "mirror-summary.txt"), "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
