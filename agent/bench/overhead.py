#!/usr/bin/env python3
"""Agent overhead benchmark: fincorp-agent side by side with Prometheus
node_exporter + process-exporter, all scraped every second.

What it does (SPEC §8, issue 3 "Must show" 3):
  * installs prometheus-node-exporter and prometheus-process-exporter with
    apt-get if they are missing (needs root; otherwise install them first);
  * builds the release agent (`cargo build --release -p fincorp-agent`);
  * starts ~500 extra idle processes, and 5 fake FINCORP apps (each a parent
    and a child) matched by exe, cmdline and pidfile selectors;
  * serves the apps' health endpoints and a stand-in correlator (ingest and
    the command long poll) from a tiny HTTP server in this script;
  * runs the agent with 1 s sampling, the 5 apps with an HTTP probe each, and
    node_exporter + process-exporter (configured for the same 5 apps);
  * scrapes all three /metrics endpoints every second;
  * measures each tool's CPU (utime+stime from /proc/<pid>/stat) and RSS
    (VmRSS) over the window after a warm-up, and prints a table with
    medians and the ratios.

Usage:  sudo python3 agent/bench/overhead.py [--seconds 60] [--idle 500]
Python 3.11 standard library only. Runs in about (warmup + seconds) + build.
Not part of CI: it measures, it does not assert (exit 0 unless a tool fails).
"""

import argparse
import http.server
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
APPS = [
    # name, selector kind, exe / marker
    ("FINCORP-APP-TRANSPROC", "exe", "transproc-server"),
    ("FINCORP-APP-HFT", "exe", "hft-engine"),
    ("FINCORP-APP-CRM", "cmdline", "fincorp-bench-crm"),
    ("FINCORP-APP-CORE", "pidfile", "core-banking"),
    ("FINCORP-APP-INSURANCE", "cmdline", "fincorp-bench-claims-worker"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(cmd, package):
    if shutil.which(cmd):
        return
    if os.geteuid() != 0:
        sys.exit(f"{cmd} is missing: apt-get install -y {package} (as root), then run again")
    print(f"installing {package} ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


class Handler(http.server.BaseHTTPRequestHandler):
    """App health endpoints and a stand-in correlator."""

    def log_message(self, *args):
        pass

    def _reply(self, code, body, ctype="application/json"):
        data = body.encode()
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a probe timeout under load)

    def do_GET(self):
        if self.path.startswith("/health/"):
            self._reply(200, "status: UP\n", "text/plain")
        else:
            self._reply(404, "{}")

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        if self.path == "/api/v1/ingest/agent":
            self._reply(200, json.dumps({"accepted": 0, "duplicates": 0}))
        elif self.path == "/api/v1/agent/commands/poll":
            time.sleep(25)  # a long poll with nothing to do
            self._reply(200, json.dumps({"commands": []}))
        else:
            self._reply(204, "")


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="measurement window (default 60)")
    ap.add_argument("--warmup", type=int, default=15, help="seconds before measuring (default 15)")
    ap.add_argument("--idle", type=int, default=500, help="extra idle processes (default 500)")
    ap.add_argument("--no-build", action="store_true", help="use the existing target/release/fincorp-agent")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = ap.parse_args()

    need("prometheus-node-exporter", "prometheus-node-exporter")
    need("prometheus-process-exporter", "prometheus-process-exporter")
    if not args.no_build:
        print("building the release agent ...", flush=True)
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "fincorp-agent"], cwd=REPO, check=True)
    agent_bin = REPO / "target/release/fincorp-agent"
    if not agent_bin.exists():
        sys.exit(f"{agent_bin} is missing; run without --no-build")

    work = Path(tempfile.mkdtemp(prefix="fincorp-bench-"))
    procs = []  # everything we start, killed at the end

    def start(cmd, **kw):
        # Each in its own process group, so its children are stopped with it.
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=kw.pop("stderr", subprocess.DEVNULL), start_new_session=True, **kw)
        procs.append(p)
        return p

    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.handle_error = lambda *a: None
        threading.Thread(target=server.serve_forever, daemon=True).start()
        http_port = server.server_address[1]

        # ~500 idle processes.
        sleep_bin = shutil.which("sleep")
        for _ in range(args.idle):
            start([sleep_bin, "100000"])
        # The 5 apps: a parent and a child each.
        bindir = work / "bin"
        bindir.mkdir()
        pidfile = work / "core-banking.pid"
        for name, kind, token in APPS:
            if kind in ("exe", "pidfile"):
                exe = bindir / token
                shutil.copy("/bin/sh", exe)
                p = start([str(exe), "-c", f"{sleep_bin} 100000 & wait"])
                if kind == "pidfile":
                    pidfile.write_text(f"{p.pid}\n")
            else:
                start(["/bin/sh", "-c", f"{sleep_bin} 100000 & wait", token])

        apps_yaml = ""
        pe_names = ""
        for name, kind, token in APPS:
            sel = {"exe": f"exe: {token}", "cmdline": f"cmdline: '{token}'",
                   "pidfile": f"pidfile: {pidfile}"}[kind]
            apps_yaml += f"""  - name: {name}
    select:
      {sel}
    probe:
      http:
        url: http://127.0.0.1:{http_port}/health/{name}
        timeout: 500ms
        expect_body: UP
    rules:
      - name: cpu_high
        when: cpu > 80
        for: 2s
      - name: latency_high
        when: latency_ms > 250
        for: 5s
      - name: down
        when: up < 1
        for: 5s
"""
            match = {"exe": f"exe: [{token}]", "pidfile": f"exe: [{token}]",
                     "cmdline": f"cmdline: ['{token}']"}[kind]
            pe_names += f"  - name: {name}\n    {match}\n"

        metrics_port = free_port()
        (work / "agent.yaml").write_text(f"""version: 1
host: bench-host
sample_interval: 1s
discovery_interval: 2s
heartbeat_interval: 10s
state_dir: state
metrics:
  listen: 127.0.0.1:{metrics_port}
correlator:
  url: http://127.0.0.1:{http_port}
  key_id: bench
  secret: {{ env: FINCORP_AGENT_KEY }}
apps:
{apps_yaml}host_rules:
  - name: host_cpu_high
    when: cpu > 95
    for: 1m
  - name: host_memory_high
    when: mem_used_pct > 95
    for: 1m
""")
        (work / "process-exporter.yml").write_text(f"process_names:\n{pe_names}")

        agent = start([str(agent_bin), "--config", str(work / "agent.yaml")],
                      env={**os.environ, "FINCORP_AGENT_KEY": "bench-key-0123456789abcdef0123456789",
                           "RUST_LOG": "warn"},
                      stderr=open(work / "agent.log", "w"))
        ne_port, pe_port = free_port(), free_port()
        node = start(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{ne_port}"])
        pe = start(["prometheus-process-exporter", "-web.listen-address", f"127.0.0.1:{pe_port}",
                    "-config.path", str(work / "process-exporter.yml")])
        tools = {"fincorp-agent": agent, "node_exporter": node, "process-exporter": pe}
        urls = {
            "fincorp-agent": f"http://127.0.0.1:{metrics_port}/metrics",
            "node_exporter": f"http://127.0.0.1:{ne_port}/metrics",
            "process-exporter": f"http://127.0.0.1:{pe_port}/metrics",
        }

        scrape_errors = {k: 0 for k in urls}
        last_agent_metrics = [""]
        stop = threading.Event()

        def scraper():
            while not stop.is_set():
                t = time.monotonic()
                for name, url in urls.items():
                    try:
                        with urllib.request.urlopen(url, timeout=2) as r:
                            body = r.read().decode()
                        if name == "fincorp-agent":
                            last_agent_metrics[0] = body
                    except Exception:
                        scrape_errors[name] += 1
                stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))

        threading.Thread(target=scraper, daemon=True).start()
        total_procs = len(os.listdir("/proc"))
        print(f"{sum(1 for e in os.listdir('/proc') if e.isdigit())} processes on the host; "
              f"warming up {args.warmup}s, then measuring {args.seconds}s ...", flush=True)
        time.sleep(args.warmup)
        for name, p in tools.items():
            if p.poll() is not None:
                sys.exit(f"{name} exited early with {p.returncode}; see {work}")

        # Per-second CPU and RSS samples.
        cpu = {k: [proc_cpu_seconds(p.pid)] for k, p in tools.items()}
        rss = {k: [] for k in tools}
        t0 = time.monotonic()
        times = [t0]
        for _ in range(args.seconds):
            time.sleep(1)
            times.append(time.monotonic())
            for k, p in tools.items():
                cpu[k].append(proc_cpu_seconds(p.pid))
                rss[k].append(proc_rss_mb(p.pid))
        stop.set()
        elapsed = times[-1] - times[0]

        def stats(k):
            total_pct = (cpu[k][-1] - cpu[k][0]) / elapsed * 100
            # Medians over 10 s windows: CPU ticks are 10 ms, too coarse per second.
            step = 10
            windows = [(cpu[k][i + step] - cpu[k][i]) / (times[i + step] - times[i]) * 100
                       for i in range(0, len(times) - step, step)]
            return {
                "cpu_pct": total_pct,
                "cpu_pct_median_10s": statistics.median(windows) if windows else total_pct,
                "rss_mb_median": statistics.median(rss[k]),
                "rss_mb_max": max(rss[k]),
            }

        res = {k: stats(k) for k in tools}
        both = {
            "cpu_pct": res["node_exporter"]["cpu_pct"] + res["process-exporter"]["cpu_pct"],
            "cpu_pct_median_10s": res["node_exporter"]["cpu_pct_median_10s"]
            + res["process-exporter"]["cpu_pct_median_10s"],
            "rss_mb_median": res["node_exporter"]["rss_mb_median"] + res["process-exporter"]["rss_mb_median"],
            "rss_mb_max": res["node_exporter"]["rss_mb_max"] + res["process-exporter"]["rss_mb_max"],
        }
        res["node+process exporters"] = both

        interval = next((l.split()[1] for l in last_agent_metrics[0].splitlines()
                         if l.startswith("fincorp_agent_sample_interval_seconds ")), "?")
        samples = next((l.split()[1] for l in last_agent_metrics[0].splitlines()
                        if l.startswith("fincorp_agent_samples_total ")), "?")
        procs_known = next((l.split()[1] for l in last_agent_metrics[0].splitlines()
                            if l.startswith("fincorp_agent_known_processes ")), "?")
        app_lines = [l for l in last_agent_metrics[0].splitlines() if l.startswith("fincorp_app_processes{")]
        probe_lines = [l for l in last_agent_metrics[0].splitlines() if l.startswith("fincorp_app_probe_up{")]

        print()
        print(f"window {elapsed:.0f}s after {args.warmup}s warm-up; {args.idle} extra idle processes "
              f"({procs_known} known to the agent); everything scraped every 1s")
        print(f"agent: sample interval {interval}s, {samples} samples; "
              f"apps: {', '.join(l.split('=')[1].split('}')[0] + '=' + l.split()[-1] for l in app_lines)}")
        print(f"probes up: {sum(1 for l in probe_lines if l.split()[-1] in ('1', '1.0'))}/{len(probe_lines)}; "
              f"scrape errors: {scrape_errors}")
        print()
        print(f"{'tool':<26}{'CPU % of one core':>18}{'median (10s)':>14}{'RSS MB median':>15}{'RSS MB max':>12}")
        for k, r in res.items():
            print(f"{k:<26}{r['cpu_pct']:>18.3f}{r['cpu_pct_median_10s']:>14.3f}"
                  f"{r['rss_mb_median']:>15.1f}{r['rss_mb_max']:>12.1f}")
        a = res["fincorp-agent"]
        ratio_cpu = a["cpu_pct"] / both["cpu_pct"] if both["cpu_pct"] else float("nan")
        ratio_rss = a["rss_mb_median"] / both["rss_mb_median"] if both["rss_mb_median"] else float("nan")
        print()
        print(f"agent / (node_exporter + process-exporter): CPU {ratio_cpu:.2f}x, RSS {ratio_rss:.2f}x")
        ok_cpu = a["cpu_pct"] <= 0.5
        ok_rss = a["rss_mb_max"] <= 15
        print(f"targets: CPU <= 0.5% of one core: {'met' if ok_cpu else 'NOT met'} ({a['cpu_pct']:.3f}%); "
              f"RSS <= 15 MB: {'met' if ok_rss else 'NOT met'} ({a['rss_mb_max']:.1f} MB max)")
        if args.json:
            print(json.dumps({"results": res, "ratio_cpu": ratio_cpu, "ratio_rss": ratio_rss,
                              "idle_processes": args.idle, "seconds": elapsed}))
        del total_procs
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)  # the process and its children
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
