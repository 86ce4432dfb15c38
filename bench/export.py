#!/usr/bin/env python3
"""Full static export against Hugo, side by side in one run (issue 9), and the export at
all-of-Germany scale on its own.

For each scale (`suedwestfalen`, the demo, about 7,000 pages in two languages; `nrw`, the 396
towns of North Rhine-Westphalia, one federal state):
  1. seeds the demo into a fresh SQLite file (`notbetrieb serve --demo SCALE`, stopped once it
     listens);
  2. exports it once and from that export generates a Hugo project with the same pages: every
     exported HTML page becomes a Markdown file at the same URL (front matter `url`), its <main>
     turned into Markdown (headings, paragraphs, lists, links) so that Hugo renders as much text
     as notbetrieb does; the page chrome (head, header, footer) is the Hugo base template, and the
     stylesheet is copied;
  3. ROUNDS times, alternating, with both outputs removed before each run, writing to memory
     (tmpfs, /dev/shm) and then to the disk (OUT): `notbetrieb export`
     (every page, the JSON API, feeds, CAP, sitemap, a .gz beside every file) and
     `hugo` (the HTML pages and a sitemap only, no compression: less work than notbetrieb's);
     wall time, CPU time and peak memory (ru_maxrss) of each, the median of the rounds and the
     ratio hugo / notbetrieb (target: >= 5).
With --germany, the 10,796 towns of Germany are seeded and exported once: time, files, bytes and
peak memory (Hugo is not run at that scale: it would not fit this machine's memory).

    bench/export.py [--bin target/release/notbetrieb] [--scales suedwestfalen,nrw] [--rounds 3]
                    [--germany] [--out bench/out/export]

Needs Debian's `hugo` (apt-get install hugo). Prints a summary and writes it to OUT/summary.txt.
"""

import argparse
import html
import html.parser
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run_rusage(cmd):
    """Runs cmd, returns (wall s, cpu s, peak RSS MiB, stdout+stderr tail)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    chunks = []
    # Read the output while waiting, so that a chatty child never blocks on a full pipe.
    while True:
        b = p.stdout.read(65536)
        if not b:
            break
        chunks.append(b)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    text = b"".join(chunks).decode("utf-8", "replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, text


def seed(binary, scale, db_path):
    """The demo `scale` in a fresh SQLite file at db_path (kept for later runs)."""
    if os.path.exists(db_path):
        return 0.0
    log(f"seeding the {scale} demo into {db_path} ...")
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "serve", "--demo", scale, "--database", f"sqlite:{db_path}", "--listen",
                          "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if "listening on" in line:
            break
    else:
        sys.exit(f"seeding {scale} failed: the server ended")
    seconds = time.perf_counter() - t0
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    return seconds


def tree_stats(path):
    files = size = pages = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(dirpath, n))
            if n == "index.html":
                pages += 1
    return files, size, pages


class MainToMarkdown(html.parser.HTMLParser):
    """The text of a page's <main> as Markdown: headings, paragraphs, list items and links."""

    BLOCK = {"p", "div", "section", "article", "dl", "dt", "dd", "tr", "table", "ul", "ol", "details", "summary",
             "form", "fieldset", "figure", "aside", "header", "footer", "nav"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0  # inside <main> while > 0
        self.title = ""
        self.in_title = False
        self.out = []
        self.href = None
        self.link_text = []

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        if tag == "main":
            self.depth += 1
            return
        if not self.depth:
            return
        if re.fullmatch(r"h[1-6]", tag):
            self.out.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in self.BLOCK:
            self.out.append("\n\n")
        elif tag == "br":
            self.out.append("  \n")
        elif tag == "a":
            self.href = dict(attrs).get("href") or ""
            self.link_text = []

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if tag == "main":
            self.depth -= 1
        elif self.depth and tag == "a" and self.href is not None:
            text = " ".join("".join(self.link_text).split()) or self.href
            self.out.append(f"[{text.replace('[', '(').replace(']', ')')}]({self.href})")
            self.href = None
        elif self.depth and (tag in self.BLOCK or re.fullmatch(r"h[1-6]", tag)):
            self.out.append("\n\n")

    def handle_data(self, data):
        if self.in_title:
            self.title += data
        if not self.depth:
            return
        if self.href is not None:
            self.link_text.append(data)
        else:
            # Markdown's own characters stay text.
            self.out.append(re.sub(r"([\\`*_#<>\[\]])", r"\\\1", " ".join(data.split()) + (" " if data[-1:].isspace() else "")))

    def markdown(self):
        return re.sub(r"\n{3,}", "\n\n", "".join(self.out)).strip() + "\n"


def hugo_project(export_dir, project):
    """A Hugo project with every HTML page of export_dir at the same URL."""
    shutil.rmtree(project, ignore_errors=True)
    content = os.path.join(project, "content", "p")
    os.makedirs(content)
    os.makedirs(os.path.join(project, "layouts", "_default"))
    os.makedirs(os.path.join(project, "static", "static"))
    shutil.copy(os.path.join(export_dir, "static", "style.css"), os.path.join(project, "static", "static", "style.css"))
    home = open(os.path.join(export_dir, "index.html"), encoding="utf-8").read()
    # The chrome around <main> of the home page becomes the base template.
    head, rest = home.split("<main", 1)
    tail = rest.split("</main>", 1)[1]
    head = re.sub(r"<title>.*?</title>", "<title>{{ .Title }}</title>", head, flags=re.S)
    if "{{" in head.replace("{{ .Title }}", "") + tail:
        sys.exit("the page chrome holds '{{', which Hugo would read as a template")
    base = head + '{{ block "main" . }}{{ end }}' + tail
    with open(os.path.join(project, "layouts", "_default", "baseof.html"), "w", encoding="utf-8") as f:
        f.write(base)
    main = '{{ define "main" }}<main id="inhalt">{{ .Content }}</main>{{ end }}\n'
    for name in ("single.html", "list.html"):
        with open(os.path.join(project, "layouts", "_default", name), "w", encoding="utf-8") as f:
            f.write(main)
    with open(os.path.join(project, "layouts", "index.html"), "w", encoding="utf-8") as f:
        f.write('{{ define "main" }}<main id="inhalt">{{ .Content }}</main>{{ end }}\n')
    with open(os.path.join(project, "config.toml"), "w", encoding="utf-8") as f:
        f.write('baseURL = "http://127.0.0.1:8080/"\nlanguageCode = "de"\ntitle = "notbetrieb"\n'
                'disableKinds = ["taxonomy", "term", "RSS"]\n[markup.goldmark.renderer]\nunsafe = false\n')
    pages = 0
    md_bytes = 0
    for dirpath, _, names in os.walk(export_dir):
        if "index.html" not in names:
            continue
        rel = os.path.relpath(dirpath, export_dir)
        url = "/" if rel == "." else "/" + rel.replace(os.sep, "/") + "/"
        parser = MainToMarkdown()
        parser.feed(open(os.path.join(dirpath, "index.html"), encoding="utf-8").read())
        body = parser.markdown()
        title = " ".join(html.unescape(parser.title).split()).replace('"', "'")
        if url == "/":
            target = os.path.join(project, "content", "_index.md")
            front = f'---\ntitle: "{title}"\n---\n'
        else:
            target = os.path.join(content, f"{pages}.md")
            front = f'---\ntitle: "{title}"\nurl: "{url}"\n---\n'
        with open(target, "w", encoding="utf-8") as f:
            f.write(front + body)
        md_bytes += len(body.encode())
        pages += 1
    # The section's own list page is not one of ours.
    with open(os.path.join(content, "_index.md"), "w", encoding="utf-8") as f:
        f.write("---\ntitle: p\n_build:\n  render: never\n---\n")
    return pages, md_bytes


def compare(binary, scale, out, rounds, places):
    db = os.path.join(out, f"{scale}.sqlite")
    seed(binary, scale, db)
    project = os.path.join(out, f"{scale}-hugo")
    first = os.path.join(out, f"{scale}-export")
    run_rusage([binary, "export", "--database", f"sqlite:{db}", "--out", first])
    files, size, pages = tree_stats(first)
    log(f"{scale}: export has {pages} pages, {files} files, {size / 1e6:.0f} MB; generating the Hugo project ...")
    hugo_pages, md_bytes = hugo_project(first, project)
    shutil.rmtree(first, ignore_errors=True)
    lines = [
        f"## {scale}: full export, notbetrieb vs hugo ({rounds} rounds each, medians)",
        f"  notbetrieb: {pages} HTML pages, {files} files (JSON, feeds, CAP, .gz included), {size / 1e6:.1f} MB",
    ]
    for place, where in places:
        ours = os.path.join(where, f"{scale}-export")
        theirs = os.path.join(where, f"{scale}-hugo-public")
        export_cmd = [binary, "export", "--database", f"sqlite:{db}", "--out", ours]
        hugo_cmd = ["hugo", "--quiet", "--source", project, "--destination", theirs]
        rows = {"notbetrieb": [], "hugo": []}
        for r in range(rounds):
            for name, cmd, target in (("notbetrieb", export_cmd, ours), ("hugo", hugo_cmd, theirs)):
                shutil.rmtree(target, ignore_errors=True)
                subprocess.run(["sync"])
                wall, cpu, rss, _ = run_rusage(cmd)
                rows[name].append((wall, cpu, rss))
                log(f"  {place} round {r + 1} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MiB peak")
        h_files, h_size, h_pages = tree_stats(theirs)
        med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in rows.items()}
        if place == places[0][0]:
            lines.append(f"  hugo:       {h_pages} HTML pages, {h_files} files, {h_size / 1e6:.1f} MB "
                         f"(from {hugo_pages} Markdown pages, {md_bytes / 1e6:.1f} MB of Markdown)")
        lines += [
            f"  [{place}] notbetrieb: {med['notbetrieb'][0]:.2f} s wall, {med['notbetrieb'][1]:.2f} s CPU, "
            f"{med['notbetrieb'][2]:.0f} MiB peak; hugo: {med['hugo'][0]:.2f} s wall, {med['hugo'][1]:.2f} s CPU, "
            f"{med['hugo'][2]:.0f} MiB peak",
            f"  [{place}] ratio hugo/notbetrieb: {med['hugo'][0] / med['notbetrieb'][0]:.1f}x wall, "
            f"{med['hugo'][1] / med['notbetrieb'][1]:.1f}x CPU (target >= 5x)",
        ]
        shutil.rmtree(theirs, ignore_errors=True)
        shutil.rmtree(ours, ignore_errors=True)
    return lines


def germany(binary, out):
    free = shutil.disk_usage(out).free
    if free < 40e9:
        return [f"## germany: skipped, only {free / 1e9:.0f} GB free (needs about 40 GB)"]
    db = os.path.join(out, "germany.sqlite")
    seed_s = seed(binary, "germany", db)
    target = os.path.join(out, "germany-export")
    shutil.rmtree(target, ignore_errors=True)
    wall, cpu, rss, _ = run_rusage([binary, "export", "--database", f"sqlite:{db}", "--out", target])
    files, size, pages = tree_stats(target)
    lines = [
        "## germany: full export (10,796 towns)",
        *([f"  seeding: {seed_s:.0f} s"] if seed_s else []),
        f"  {pages} HTML pages, {files} files, {size / 1e9:.2f} GB",
        f"  {wall:.1f} s wall, {cpu:.1f} s CPU, {rss:.0f} MiB peak memory, "
        f"{files / wall:.0f} files/s",
    ]
    shutil.rmtree(target, ignore_errors=True)
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "notbetrieb"))
    ap.add_argument("--scales", default="suedwestfalen,nrw")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--germany", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "export"))
    ap.add_argument("--tmpfs", default="/dev/shm", help="a memory file system for the second set of runs ('' for none)")
    args = ap.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"no binary at {args.bin}: cargo build --release, or --bin PATH")
    if shutil.which("hugo") is None:
        sys.exit("hugo is missing: apt-get install hugo")
    os.makedirs(args.out, exist_ok=True)
    version = subprocess.run(["hugo", "version"], capture_output=True, text=True).stdout.strip()
    lines = [f"# bench/export.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, {version}"]
    # The outputs go to memory (tmpfs) as well as to the disk: on a disk that other work fills and
    # empties, the kernel's search for free inodes can cost more than all the rendering, and more
    # for notbetrieb's three times as many files.
    places = [("disk", args.out)]
    if os.path.isdir(args.tmpfs):
        os.makedirs(os.path.join(args.tmpfs, "notbetrieb-bench"), exist_ok=True)
        places.insert(0, ("tmpfs", os.path.join(args.tmpfs, "notbetrieb-bench")))
    for scale in [s for s in args.scales.split(",") if s]:
        lines += compare(args.bin, scale, args.out, args.rounds, places)
    if args.germany:
        lines += germany(args.bin, args.out)
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(args.out, "summary.txt"), "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
