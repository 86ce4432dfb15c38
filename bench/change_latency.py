#!/usr/bin/env python3
"""Time from a change in the database to its visibility on a municipality page.

For each repetition: write a statement for the town whose restrictions text carries a unique
marker, then poll the page (plain HTTP/1.1, keep-alive, no compression) until the marker shows.

The change is written with `notbetrieb import` of a one-line statements CSV when that works
(`--method auto` tries it first, `--method import` insists on it); otherwise directly with
sqlite3: update (or insert) the row in `statements` and bump `data_version` in `meta`, which is
what the server polls.

Prints one JSON object per repetition on stdout and a final summary object.
"""

import argparse
import csv
import datetime
import http.client
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

COLUMNS = ["scope_ags", "service_slug", "level", "restrictions", "workaround", "backlog",
           "expected_return", "author", "stated_at"]


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def connect(path):
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 30000")
    return db


def pick_statement(db, slug):
    """The town's AGS and a service whose town-level statement is shown on the town page."""
    row = db.execute("SELECT ags FROM municipalities WHERE slug = ?", (slug,)).fetchone()
    if not row:
        sys.exit(f"no municipality with slug {slug!r} in the database")
    ags = row[0]
    row = db.execute(
        "SELECT st.service_slug FROM statements st JOIN services s ON s.slug = st.service_slug "
        "WHERE st.scope_ags = ? ORDER BY s.sort_order, s.slug LIMIT 1", (ags,)).fetchone()
    if row:
        return ags, row[0], True
    row = db.execute(
        "SELECT slug FROM services WHERE responsibility = 'municipality' ORDER BY sort_order, slug LIMIT 1").fetchone()
    if not row:
        row = db.execute("SELECT slug FROM services ORDER BY sort_order, slug LIMIT 1").fetchone()
    return ags, row[0], False


def statement_row(ags, service, marker):
    return {
        "scope_ags": ags, "service_slug": service, "level": "limited",
        "restrictions": f"Benchmark {marker}", "workaround": "", "backlog": "", "expected_return": "",
        "author": "bench", "stated_at": now_rfc3339(),
    }


def write_sqlite(db, row):
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "INSERT INTO statements (" + ",".join(COLUMNS) + ") VALUES (" + ",".join("?" * len(COLUMNS)) + ") "
        "ON CONFLICT (scope_ags, service_slug) DO UPDATE SET level = excluded.level, "
        "restrictions = excluded.restrictions, stated_at = excluded.stated_at, version = statements.version + 1",
        [row[c] for c in COLUMNS])
    cur = db.execute("SELECT value FROM meta WHERE key = 'data_version'").fetchone()
    version = int(cur[0]) + 1 if cur else 1
    for key, value in (("data_version", str(version)), ("changed_at", now_rfc3339())):
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                   (key, value))
    db.execute("COMMIT")


def write_import(binary, db_path, row, workdir):
    path = os.path.join(workdir, "statements.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerow(row)
    p = subprocess.run([binary, "import", "--database", f"sqlite:{db_path}", path],
                       capture_output=True, text=True)
    return p.returncode == 0, (p.stderr or p.stdout).strip()


class Poller:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = u.hostname, u.port or 80, u.path
        self.conn = None

    def get(self):
        for _ in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                self.conn.request("GET", self.path, headers={"Accept-Encoding": "identity"})
                r = self.conn.getresponse()
                return r.status, r.read().decode("utf-8", "replace")
            except (http.client.HTTPException, OSError):
                self.conn = None
        raise RuntimeError("page not reachable")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--db", required=True, help="path of the server's SQLite file")
    ap.add_argument("--url", required=True, help="page to poll")
    ap.add_argument("--slug", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--method", choices=["auto", "import", "sqlite"], default="auto")
    ap.add_argument("--poll-interval", type=float, default=0.002, help="seconds between page requests")
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()

    db = connect(args.db)
    ags, service, existed = pick_statement(db, args.slug)
    poller = Poller(args.url)
    method = args.method
    import_note = ""
    latencies, write_ms = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for rep in range(args.reps):
            marker = f"BENCH-{os.getpid()}-{rep}-{time.time_ns()}"
            row = statement_row(ags, service, marker)
            t0 = time.perf_counter()
            used = method
            if method in ("auto", "import"):
                ok, msg = write_import(args.binary, args.db, row, workdir)
                if ok:
                    used = method = "import"
                elif method == "import":
                    sys.exit(f"notbetrieb import failed: {msg}")
                else:
                    import_note = msg.splitlines()[-1] if msg else "failed"
                    used = method = "sqlite"
                    t0 = time.perf_counter()
                    write_sqlite(db, row)
            else:
                write_sqlite(db, row)
            t1 = time.perf_counter()
            polls = 0
            while True:
                status, body = poller.get()
                polls += 1
                if status == 200 and marker in body:
                    break
                if time.perf_counter() - t0 > args.timeout:
                    sys.exit(f"change not visible after {args.timeout} s")
                time.sleep(args.poll_interval)
            t2 = time.perf_counter()
            latencies.append((t2 - t0) * 1000)
            write_ms.append((t1 - t0) * 1000)
            print(json.dumps({"rep": rep, "method": used, "write_ms": round((t1 - t0) * 1000, 1),
                              "visible_ms": round((t2 - t0) * 1000, 1), "polls": polls}), flush=True)
            time.sleep(0.3)
    print(json.dumps({
        "summary": True, "method": method, "import_note": import_note, "ags": ags, "service": service,
        "statement_existed": existed, "reps": args.reps,
        "visible_ms_median": round(statistics.median(latencies), 1),
        "visible_ms_min": round(min(latencies), 1), "visible_ms_max": round(max(latencies), 1),
        "write_ms_median": round(statistics.median(write_ms), 1),
    }), flush=True)


if __name__ == "__main__":
    main()
