#!/usr/bin/env python3
"""Notifications at scale (issue 10), in one run:

1. Fan-out: the demo seeded into a SQLite file with SUBSCRIBERS confirmed subscriptions to
   Menden's vehicle registration (written straight into the database, as if each had been
   confirmed); `notbetrieb serve --smtp-url` against an SMTP sink in this process (aiosmtpd,
   counting mails, nothing written); one status change through the write API. Reported: the time
   from the API's answer to the first and the last mail at the sink, mails per second,
   notbetrieb's CPU time per 1,000 mails and its peak memory (VmHWM), and the sink's own CPU time
   beside it: when the sink's CPU is close to the wall time, the sink is the bottleneck.
2. Latency: with `--notify-window-s 1`, REPS changes one after the other for one subscriber and
   one webhook (a receiver in this process): the time from the API's answer to the mail and to
   the webhook; median, p99 and worst (target p99 < 5 s).

    bench/notify.py [--bin target/release/notbetrieb] [--subscribers 100000] [--reps 20]
                    [--out bench/out/notify]

Needs aiosmtpd (PyPI); when this Python lacks it, the script runs itself again with the Python
that scripts/test installs it into (~/.cache/notbetrieb/aiosmtpd-*/bin/python).
"""
import argparse
import glob
import http.client
import http.server
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time

try:
    import aiosmtpd  # noqa: F401
except ImportError:
    candidates = [os.environ.get("NOTBETRIEB_TEST_AIOSMTPD_PYTHON", "")] + sorted(
        glob.glob(os.path.expanduser("~/.cache/notbetrieb/aiosmtpd-*/bin/python")))
    for python in candidates:
        if python and os.path.exists(python) and not os.environ.get("NOTBETRIEB_BENCH_REEXEC"):
            os.environ["NOTBETRIEB_BENCH_REEXEC"] = "1"
            os.execv(python, [python] + sys.argv)
    sys.exit("aiosmtpd is missing: pip install aiosmtpd (or run scripts/test once, which installs it)")

from aiosmtpd.controller import Controller  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export import ROOT, log, seed  # noqa: E402

TOWN, AGS, SERVICE = "menden-sauerland", "05962040", "fahrzeug-zulassen"


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Counting:
    """An SMTP sink that only counts, and notes when mails for each address arrived."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.first = None
        self.last = None
        self.arrivals = {}

    async def handle_DATA(self, server, session, envelope):
        now = time.perf_counter()
        with self.lock:
            self.count += 1
            self.first = self.first or now
            self.last = now
            for rcpt in envelope.rcpt_tos:
                self.arrivals.setdefault(rcpt, []).append(now)
        return "250 OK"


class Hooks(http.server.BaseHTTPRequestHandler):
    arrivals = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Hooks.arrivals.append(time.perf_counter())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def token(binary, db, user):
    p = subprocess.run([binary, "token", "add", "--database", f"sqlite:{db}", "--user", user, "--name",
                        f"bench-{time.time_ns()}"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"token add failed: {p.stderr}")
    return p.stdout.strip().splitlines()[-1]


def add_subscribers(db, n, offset=0):
    c = sqlite3.connect(db)
    c.executemany(
        "INSERT INTO subscriptions (id, email, lang, municipality_ags, service_slug, area, confirmed, confirm_token_hash,"
        " created_at, expires_at, confirmed_at, consent_version, consent_text, client_hash)"
        " VALUES (?, ?, 'de', ?, ?, '', 1, ?, '2026-12-01T00:00:00Z', '2026-12-04T00:00:00Z', '2026-12-01T00:00:00Z',"
        " 'bench', 'bench', '')",
        ((f"{offset + i:032x}", f"abo-{offset + i}@example.org", AGS, SERVICE, f"bench-{offset + i}") for i in range(n)))
    c.commit()
    c.close()


def start(binary, db, smtp_port, window):
    server = subprocess.Popen(
        [binary, "serve", "--database", f"sqlite:{db}", "--listen", "127.0.0.1:0", "--smtp-url",
         f"smtp://127.0.0.1:{smtp_port}", "--mail-from", "bench@example.org", "--notify-window-s", str(window),
         "--webhook-allow-private"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in server.stdout:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
            return server, int(m.group(1))
    sys.exit("the server ended before listening")


def change(port, secret, level, marker):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = json.dumps({"level": level, "restrictions": marker})
    conn.request("PUT", f"/api/v1/municipalities/{TOWN}/services/{SERVICE}/statement", body,
                 {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    r = conn.getresponse()
    answer = r.read()
    if r.status != 200:
        sys.exit(f"the write failed: {r.status} {answer[:300]!r}")
    return time.perf_counter()


def fresh(db):
    """No database at `db` (nor its WAL files), so that seeding starts from nothing."""
    for path in (db, db + "-wal", db + "-shm"):
        if os.path.exists(path):
            os.remove(path)


def fan_out(binary, out, n, sink, smtp_port):
    db = os.path.join(out, "fanout.sqlite")
    fresh(db)
    seed(binary, "suedwestfalen", db)
    add_subscribers(db, n)
    secret = token(binary, db, "menden")
    server, port = start(binary, db, smtp_port, 1)
    try:
        time.sleep(2)  # the notifier's first round: what is now is what everybody knows
        cpu0, sink0 = cpu_seconds(server.pid), time.process_time()
        committed = change(port, secret, "unavailable", "Benchmark")
        while sink.count < n:
            if time.perf_counter() - committed > 3600:
                sys.exit(f"only {sink.count} of {n} mails within an hour")
            time.sleep(0.05)
        cpu, sink_cpu = cpu_seconds(server.pid) - cpu0, time.process_time() - sink0
        wall = sink.last - committed
        return {
            "first_ms": (sink.first - committed) * 1000, "all_s": wall, "per_s": n / (sink.last - sink.first),
            "cpu_s": cpu, "cpu_per_1000": cpu / n * 1000, "peak_mib": peak_mib(server.pid), "sink_cpu_s": sink_cpu,
        }
    finally:
        server.terminate()
        server.wait()


def latency(binary, out, reps, sink, smtp_port):
    db = os.path.join(out, "latency.sqlite")
    fresh(db)
    seed(binary, "suedwestfalen", db)
    add_subscribers(db, 1, offset=10_000_000)
    address = f"abo-{10_000_000}@example.org"
    secret = token(binary, db, "menden")
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    server, port = start(binary, db, smtp_port, 1)
    mails, hooks = [], []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/api/v1/webhooks", json.dumps({"url": f"http://127.0.0.1:{receiver.server_port}/",
                                                              "municipalities": [TOWN]}),
                     {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 201:
            sys.exit(f"registering the webhook failed: {r.status} {r.read()[:300]!r}")
        r.read()
        time.sleep(2)
        for rep in range(reps):
            seen_mail = len(sink.arrivals.get(address, []))
            seen_hook = len(Hooks.arrivals)
            committed = change(port, secret, ["limited", "unavailable"][rep % 2], f"Latenz {rep}")
            while len(sink.arrivals.get(address, [])) <= seen_mail or len(Hooks.arrivals) <= seen_hook:
                if time.perf_counter() - committed > 60:
                    sys.exit("no mail or webhook within 60 s")
                time.sleep(0.005)
            mails.append((sink.arrivals[address][seen_mail] - committed) * 1000)
            hooks.append((Hooks.arrivals[seen_hook] - committed) * 1000)
            log(f"  change {rep + 1}: mail after {mails[-1]:.0f} ms, webhook after {hooks[-1]:.0f} ms")
            time.sleep(1.2)
    finally:
        server.terminate()
        server.wait()
        receiver.shutdown()
    return mails, hooks


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "notbetrieb"))
    p.add_argument("--subscribers", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "notify"))
    args = p.parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"no binary at {args.bin}: cargo build --release")
    os.makedirs(args.out, exist_ok=True)
    sink = Counting()
    import socket
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        smtp_port = free.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        log(f"fan-out to {args.subscribers} subscribers ...")
        f = fan_out(args.bin, args.out, args.subscribers, sink, smtp_port)
        log(f"latency, {args.reps} changes ...")
        mails, hooks = latency(args.bin, args.out, args.reps, sink, smtp_port)
    finally:
        controller.stop()
    lines = [
        f"# bench/notify.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores",
        f"## one change fanned out to {args.subscribers} confirmed subscribers (local aiosmtpd sink)",
        f"  first mail after {f['first_ms']:.0f} ms, all after {f['all_s']:.1f} s: {f['per_s']:.0f} mails/s",
        f"  notbetrieb: {f['cpu_s']:.1f} s CPU ({f['cpu_per_1000']:.2f} s per 1,000 mails), peak {f['peak_mib']:.0f} MiB",
        f"  sink: {f['sink_cpu_s']:.1f} s CPU (its CPU / the wall time of sending: "
        f"{f['sink_cpu_s'] / f['all_s']:.2f}; notbetrieb's: {f['cpu_s'] / f['all_s']:.2f})",
        f"## commit → first mail and first webhook, --notify-window-s 1, {args.reps} changes",
        f"  mail: median {percentile(mails, 50):.0f} ms, p99 {percentile(mails, 99):.0f} ms, max {max(mails):.0f} ms;"
        f" p99 / target {percentile(mails, 99) / 5000:.2f} (target < 5000 ms)",
        f"  webhook: median {percentile(hooks, 50):.0f} ms, p99 {percentile(hooks, 99):.0f} ms, max {max(hooks):.0f} ms;"
        f" p99 / target {percentile(hooks, 99) / 5000:.2f} (target < 5000 ms)",
    ]
    print("\n".join(lines))
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
