#!/usr/bin/env python3
"""Latency right after a write, with hostile announcements on the pages (issue 8, finding 1).

Starts `notbetrieb serve --demo` on a fresh SQLite file, then
  1. posts, as the Menden editor, each of a set of hostile Markdown bodies of the longest allowed
     length (deep quotes, lists, emphasis, links by reference, raw HTML, ...); the server refuses
     some (422) and keeps the rest; for each kept one it times the first request of its page
     (rendering included) against the second (from the cache): the render time of that body;
  2. fills Menden with COPIES announcements of the worst kept body, so the town page, the news
     page, the feeds and the API all carry them;
  3. ROUNDS times: writes a status (which drops every rendered page), and at once fires
     concurrent first requests: the town page, the news page, the Atom feed, the API's
     announcements and /healthz, CONCURRENCY of each, all released together.
Prints per route the median and the worst latency over all rounds and their ratio to the target
(50 ms, the issue's figure), and the render time of the worst body.

    bench/after_write.py [--bin target/release/notbetrieb] [--rounds 10] [--concurrency 8]

With --baseline-bin OLD the same run is made against an older binary first (it may accept
bodies the new one refuses; the worst body it accepts is used; with --baseline-copies [1] and
--baseline-rounds [2], as its pages may take seconds each) and the ratios are printed side by side.
"""

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TARGET_MS = 50.0
TOWN = "menden-sauerland"
TOWN_AGS = "05962040"
SERVICE = "wohnsitz-anmelden"
MAX_TEXT = 20_000


def hostile_bodies():
    n = MAX_TEXT
    url = "https://example.org/" + "a" * 900
    return {
        "quotes-20000": ">" * n,
        "quotes-19-deep": ("> " * 19 + "x\n\n") * (n // 42),
        "lists-19-deep": "".join("  " * i + "- x\n" for i in range(19)) * (n // 220),
        "emphasis": "*a " * (n // 3),
        "emphasis-nested": "*_" * (n // 8) + "a" + "_*" * (n // 8),
        "brackets": "[" * n,
        "links-open": "[a](" * (n // 4),
        "reference-links": f"[x]: {url}\n\n" + "[x] " * ((n - 1000) // 4),
        "angle-brackets": "<" * n,
        "raw-html": "<div>" * (n // 5),
        "table": "|a|b|\n|-|-|\n" + "|x|y|\n" * ((n - 20) // 6),
        "plain": ("Das Bürgerbüro ist geschlossen. " * (n // 32)),
    }


class Client:
    def __init__(self, base):
        m = re.match(r"http://([^:/]+):(\d+)", base)
        self.host, self.port = m.group(1), int(m.group(2))

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=900)
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["content-type"] = "application/json"
        started = time.perf_counter()
        conn.request(method, path, body=data, headers=hdrs)
        res = conn.getresponse()
        payload = res.read()
        elapsed = (time.perf_counter() - started) * 1000
        conn.close()
        return res.status, payload, elapsed


def start(binary, workdir):
    db = os.path.join(workdir, "bench.sqlite")
    out = open(os.path.join(workdir, "server.out"), "w+")
    err = open(os.path.join(workdir, "server.err"), "w")
    env = dict(os.environ, NO_COLOR="1", RUST_LOG="warn")
    proc = subprocess.Popen([binary, "serve", "--demo", "--database", f"sqlite:{db}", "--listen", "127.0.0.1:0"],
                            stdout=out, stderr=err, env=env)
    deadline = time.time() + 600
    while time.time() < deadline:
        out.seek(0)
        m = re.search(r"listening on (http://\S+)", out.read())
        if m:
            break
        if proc.poll() is not None:
            sys.exit(f"server exited: {open(err.name).read()}")
        time.sleep(0.02)
    else:
        sys.exit("server did not start")
    token = subprocess.run([binary, "token", "add", "--database", f"sqlite:{db}", "--user", "menden", "--name", "bench"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return proc, m.group(1), token


def post_announcement(client, auth, title, body):
    status, payload, _ = client.request("POST", "/api/v1/announcements", {
        "scope": "municipality", "scope_ref": TOWN_AGS, "title": title, "body": body}, auth)
    return status, (json.loads(payload) if payload else {})


def render_times(client, auth):
    """(name, accepted, first-request ms minus cached-request ms) for each hostile body."""
    results = []
    for name, body in hostile_bodies().items():
        body = body[:MAX_TEXT]
        status, out = post_announcement(client, auth, f"Bench {name}", body)
        if status != 201:
            results.append((name, False, None, out.get("message", status)))
            continue
        path = f"/meldungen/{out['id']}"
        _, _, first = client.request("GET", path)
        _, _, cached = client.request("GET", path)
        results.append((name, True, max(first - cached, 0.0), body))
    return results


def burst(client, rounds, concurrency, auth, write=True):
    routes = {
        "town page": f"/kommunen/{TOWN}",
        "news page": "/meldungen",
        "Atom feed": "/feeds/meldungen.atom",
        "API announcements": "/api/v1/announcements",
        "/healthz": "/healthz",
    }
    latencies = {name: [] for name in routes}
    levels = ["limited", "unavailable"]
    for r in range(rounds):
        if write:
            status, payload, _ = client.request(
                "PUT", f"/api/v1/municipalities/{TOWN}/services/{SERVICE}/statement",
                {"level": levels[r % 2], "restrictions": f"Runde {r}"}, auth)
            if status != 200:
                sys.exit(f"status write failed: {status} {payload[:200]}")
        else:
            for path in routes.values():
                client.request("GET", path, headers={"accept-encoding": "gzip"})
        barrier = threading.Barrier(concurrency * len(routes))
        lock = threading.Lock()

        def hit(name, path):
            barrier.wait()
            status, _, ms = client.request("GET", path, headers={"accept-encoding": "gzip"})
            with lock:
                latencies[name].append(ms if status == 200 else float("inf"))

        threads = [threading.Thread(target=hit, args=(n, p)) for n, p in routes.items() for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return latencies


def run(binary, args, label, copies, rounds):
    with tempfile.TemporaryDirectory(prefix="nb-bench-") as workdir:
        proc, base, token = start(binary, workdir)
        try:
            client = Client(base)
            auth = {"authorization": f"Bearer {token}"}
            times = render_times(client, auth)
            accepted = [t for t in times if t[1]]
            worst = max(accepted, key=lambda t: t[2])
            for _ in range(copies):
                post_announcement(client, auth, "Bench Kopie", worst[3])
            latencies = burst(client, rounds, args.concurrency, auth)
            # The same burst with every page already rendered: what the client and the loopback
            # cost by themselves, the floor the numbers above stand on.
            floor = burst(client, rounds, args.concurrency, auth, write=False)
        finally:
            proc.terminate()
            proc.wait()
    print(f"\n== {label}: {binary}")
    print("render time of each hostile body (first request of its page minus a cached one):")
    for name, ok, ms, info in times:
        print(f"  {name:18} {'%8.1f ms' % ms if ok else 'refused':>12}" + ("" if ok else f"  ({info})"))
    print(f"worst accepted body: {worst[0]}, {worst[2]:.1f} ms")
    print(f"right after a write, {args.concurrency} concurrent first requests per route, {rounds} rounds, "
          f"{copies} copies of the worst body on the pages:")
    summary = {}
    for name, values in latencies.items():
        med, top = statistics.median(values), max(values)
        summary[name] = (med, top)
        fmed, ftop = statistics.median(floor[name]), max(floor[name])
        print(f"  {name:18} median {med:7.1f} ms  worst {top:7.1f} ms  worst/target {top / TARGET_MS:5.2f}"
              f"   | all cached: median {fmed:6.1f} ms  worst {ftop:6.1f} ms")
    return worst, summary


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    default = os.path.join(root, "target", "release", "notbetrieb")
    if not os.path.exists(default):
        default = os.path.join(root, "target", "debug", "notbetrieb")
    p.add_argument("--bin", default=default)
    p.add_argument("--baseline-bin")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--copies", type=int, default=25)
    # The baseline may take seconds per page (that is what is being fixed): fewer copies and rounds.
    p.add_argument("--baseline-copies", type=int, default=1)
    p.add_argument("--baseline-rounds", type=int, default=2)
    args = p.parse_args()
    results = []
    if args.baseline_bin:
        results.append(("baseline", run(args.baseline_bin, args, "baseline", args.baseline_copies, args.baseline_rounds)))
    results.append(("this build", run(args.bin, args, "this build", args.copies, args.rounds)))
    print(f"\n== summary (target {TARGET_MS:.0f} ms; ratio = worst latency / target)")
    for label, (worst, summary) in results:
        cells = "  ".join(f"{name} {top:.0f} ms ({top / TARGET_MS:.2f})" for name, (_, top) in summary.items())
        print(f"  {label:10} worst body {worst[0]} {worst[2]:.1f} ms | {cells}")


if __name__ == "__main__":
    main()
