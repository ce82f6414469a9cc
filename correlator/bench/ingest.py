#!/usr/bin/env python3
"""Ingest benchmark: the correlator against Prometheus Alertmanager, same load,
one after the other, on this machine.

Load (both tools): wrk POSTs batches of 10 distinct alerts, cycling over
1000 hosts x 5 apps. Alertmanager gets them at /api/v2/alerts (its own API);
the correlator at /api/v1/ingest/events, each event with a fresh id so that
every one is stored durably (committed to the SQLite WAL and the WAL
fdatasynced), correlated and committed before the 2xx. Then a memory phase loads 100,000 distinct active
alerts (1000 hosts x 5 apps x 20 alert names) into each and reports RSS per
active alert.

Rounds: 3 by default. Each round runs both tools back to back (the order
alternates between rounds), and the summary reports the median of the
per-round ratios: this VM's speed drifts by 10-20% over minutes, and a ratio
of two adjacent runs cancels most of the drift. The memory phase runs once.

wrk threads: 1 by default (--threads 2 gave no better figures on 2 cores). Each
wrk thread sends its own event ids, and the run is refused when the log holds
fewer events than were acknowledged (lost events, or a load that repeated ids
and so measured cheap resends).

Connections: 256 by default. The load stands for a fleet of 1000 hosts whose
agents and Alertmanagers post concurrently, so a central receiver holds
hundreds of connections; both tools get the same number. --connections 32
gives the figure of earlier runs.

Usage: correlator/bench/ingest.py [--duration 15] [--rounds 3] [--connections 256] [--threads 1]
Needs: wrk, prometheus-alertmanager (apt-get install wrk prometheus-alertmanager),
and a release build (the script runs cargo build --release itself).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOSTS, APPS = 1000, 5
APP_NAMES = ["FINCORP-APP-TRANSPROC", "FINCORP-APP-HFT", "FINCORP-APP-CRM", "FINCORP-APP-CORE", "FINCORP-APP-INSURANCE"]

# The load generator must not be what limits the measurement on a 2-core
# machine: every request (headers and body) is rendered once at start, and a
# request only swaps in fresh event ids (for the correlator, so each event is
# stored) or nothing (Alertmanager merges repeats by labels, as it does in
# production). Ids have a fixed width, so Content-Length is known up front.
LUA = r"""
local slots = %(slots)s
local counter = 0
local out = {}
-- Each wrk thread gets its own number as the global `tid`, so threads never
-- send the same ids (`threads` counts them in the main Lua state).
local threads = 0
setup = function(thread) thread:set("tid", threads); threads = threads + 1 end
request = function()
  local parts = slots[(counter %% #slots) + 1]
  counter = counter + 1
  if #parts == 1 then
    return parts[1]
  end
  -- 10000000000 + n prints as 11 digits: a fixed width without string.format.
  local prefix = "t" .. ((tid or 0) %% 10) .. "-" .. (10000000000 + counter %% 10000000000) .. "-"
  local n = 1
  out[1] = parts[1]
  for i = 2, #parts do
    out[n + 1] = prefix
    out[n + 2] = parts[i]
    n = n + 2
  end
  return table.concat(out, "", 1, n)
end
"""
# What the Lua above puts in place of each @@ID@@: "t0-10000000001-".
ID_PREFIX_LEN = 15


def lua_string(text):
    """A Lua string literal (long brackets would turn CRLF into LF)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r").replace("\n", "\\n")
    return '"' + escaped + '"'


def slots(kind, names, path, host):
    """Requests carrying 10 distinct alerts each over HOSTS x APPS x names, as
    Lua tables of pieces; event id prefixes go between the pieces."""
    space = HOSTS * APPS * names
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    out = []
    for b in range(space // 10):
        events = []
        for i in range(10):
            k = b * 10 + i
            host_name, app, name = f"host-{k % HOSTS}", APP_NAMES[(k // HOSTS) % APPS], f"HighCPU{k // (HOSTS * APPS)}"
            if kind == "am":
                events.append(json.dumps({"labels": {"alertname": name, "host": host_name, "app": app, "severity": "warning"},
                                          "annotations": {"summary": "cpu high"}, "startsAt": started}))
            else:
                events.append(json.dumps({"id": f"@@ID@@{i}", "source": "prometheus", "name": name, "host": host_name,
                                          "app": app, "severity": "warning", "summary": "cpu high"}))
        body = "[" + ",".join(events) + "]" if kind == "am" else '{"events":[' + ",".join(events) + "]}"
        length = len(body.replace("@@ID@@", "x" * ID_PREFIX_LEN).encode())
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\n\r\n")
        pieces = (head + body).split("@@ID@@")
        out.append("{" + ",".join(lua_string(p) for p in pieces) + "}")
    return "{" + ",\n".join(out) + "}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_up(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{url} did not come up")


def lua(script, kind, names, base, path):
    host = base.split("://", 1)[1]
    with open(script, "w") as f:
        f.write(LUA % {"slots": slots(kind, names, path, host)})


def wrk(url, script, duration, connections, threads):
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    p50 = re.search(r"\s50%\s+(\S+)", out).group(1)
    p99 = re.search(r"\s99%\s+(\S+)", out).group(1)
    return {"rps": rps, "requests": total, "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else "", "p50": p50, "p99": p99}


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=60).status


def fill(url, kind, names):
    """Posts HOSTS x APPS x names distinct alerts once, in batches of 500."""
    batch, n = [], 0
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    for k in range(HOSTS * APPS * names):
        host, app, name = f"host-{k % HOSTS}", APP_NAMES[(k // HOSTS) % APPS], f"HighCPU{k // (HOSTS * APPS)}"
        if kind == "am":
            batch.append({"labels": {"alertname": name, "host": host, "app": app, "severity": "warning"},
                          "annotations": {"summary": "cpu high"}, "startsAt": started})
        else:
            batch.append({"id": f"fill-{k}", "source": "prometheus", "name": name, "host": host, "app": app,
                          "severity": "warning"})
        if len(batch) == 500:
            post(url, batch if kind == "am" else {"events": batch})
            batch, n = [], n + 500
    if batch:
        post(url, batch if kind == "am" else {"events": batch})


def run_alertmanager(tmp, args, names):
    port = free_port()
    cfg = os.path.join(tmp, "am.yml")
    with open(cfg, "w") as f:
        f.write("route:\n  receiver: 'null'\n  group_by: [host]\n  group_wait: 30s\n  group_interval: 5m\n"
                "  repeat_interval: 4h\nreceivers:\n  - name: 'null'\n")
    proc = subprocess.Popen(["prometheus-alertmanager", f"--config.file={cfg}", f"--storage.path={tmp}/am",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}", "/api/v2/alerts", "/-/ready"


def run_correlator(tmp, args, names):
    port = free_port()
    os.makedirs(f"{tmp}/pb", exist_ok=True)
    cfg = os.path.join(tmp, "correlator.yaml")
    with open(cfg, "w") as f:
        f.write(f"version: 1\nlisten: 127.0.0.1:{port}\nstate_dir: {tmp}/state\nagent_auth:\n  keys:\n"
                "    - id: fleet\n      secret: { env: FINCORP_AGENT_KEY }\nplaybooks_dir: pb\n")
    env = dict(os.environ, FINCORP_AGENT_KEY="bench-key-0123456789abcdef0123", RUST_LOG="warn")
    proc = subprocess.Popen([os.path.join(ROOT, "target/release/fincorp-correlator"), "--config", cfg],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}", "/api/v1/ingest/events", "/healthz"


def throughput(name, start, kind, args):
    """One wrk run against a fresh instance of the tool."""
    result = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        proc, base, path, health = start(tmp, args, 1)
        try:
            wait_up(base + health)
            script = os.path.join(tmp, "load.lua")
            lua(script, kind, 1, base, path)
            cpu0 = cpu_seconds(proc.pid)
            w = wrk(base + path, script, args.duration, args.connections, args.threads)
            cpu = (cpu_seconds(proc.pid) - cpu0) / args.duration
            result.update(alerts_per_s=w["rps"] * 10, requests=w["requests"], non2xx=w["non2xx"],
                          socket_errors=w["socket_errors"], p50=w["p50"], p99=w["p99"], cpu_cores=cpu,
                          rss_mib_after_load=rss_kib(proc.pid) / 1024)
            print(f"   {name:12} {w['rps'] * 10:>9,.0f} alerts/s ({w['rps']:,.0f} requests/s, p50 {w['p50']}, "
                  f"p99 {w['p99']}), {cpu:.2f} cores, non-2xx {w['non2xx']} {w['socket_errors']}", flush=True)
            if name == "correlator":
                db = sqlite3.connect(f"file:{tmp}/state/correlator.db?mode=ro", uri=True)
                stored = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
                result["events_stored"] = stored
                if stored < w["requests"] * 10:
                    # Every acknowledged event must be in the log; fewer means
                    # lost events, or a load that repeated ids (resends are
                    # cheaper): either way the figure is not valid.
                    sys.exit(f"fewer events stored ({stored:,}) than acknowledged ({w['requests'] * 10:,})")
                print(f"   {'':12} events durably stored: {stored:,} (requests x 10 = {w['requests'] * 10:,}, "
                      f"the difference is requests in flight when wrk stopped)", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return result


def memory(name, start, kind, args):
    """RSS per active alert: HOSTS x APPS x names distinct alerts, once."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-mem-") as tmp:
        proc, base, path, health = start(tmp, args, args.names)
        try:
            wait_up(base + health)
            time.sleep(1)
            before = rss_kib(proc.pid)
            n = HOSTS * APPS * args.names
            t0 = time.time()
            fill(base + path, kind, args.names)
            time.sleep(2)
            after = rss_kib(proc.pid)
            per = (after - before) * 1024 / n
            print(f"   {name:12} {n:,} active alerts loaded in {time.time() - t0:.1f}s: RSS {before / 1024:.1f} -> "
                  f"{after / 1024:.1f} MiB = {per:,.0f} bytes per active alert", flush=True)
            return dict(active_alerts=n, rss_mib_idle=before / 1024, rss_mib_loaded=after / 1024, bytes_per_alert=per)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=15, help="seconds of wrk load per tool and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of both tools back to back")
    ap.add_argument("--connections", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--names", type=int, default=20, help="alert names in the memory phase (x 5000 alerts)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    for tool in ("wrk", "prometheus-alertmanager"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install wrk prometheus-alertmanager")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "fincorp-correlator"], cwd=ROOT, check=True)
    tools = {"alertmanager": (run_alertmanager, "am"), "correlator": (run_correlator, "ev")}
    runs = {name: [] for name in tools}
    ratios = []
    print(f"load: {args.connections} connections, {args.threads} wrk threads, {args.duration} s per tool and round",
          flush=True)
    for r in range(args.rounds):
        print(f"\n== round {r + 1} of {args.rounds}", flush=True)
        order = list(tools) if r % 2 == 0 else list(reversed(tools))
        for name in order:
            runs[name].append(throughput(name, *tools[name], args))
        ratios.append(runs["correlator"][-1]["alerts_per_s"] / runs["alertmanager"][-1]["alerts_per_s"])
        print(f"   ratio this round: {ratios[-1]:.2f}x", flush=True)
    print("\n== memory", flush=True)
    mem = {name: memory(name, *tools[name], args) for name in tools}
    med = {name: {k: statistics.median(run[k] for run in runs[name]) for k in ("alerts_per_s", "cpu_cores")}
           for name in tools}
    am, co = med["alertmanager"], med["correlator"]
    ratio = statistics.median(ratios)
    print(f"\n== summary: medians of {args.rounds} rounds (same machine, same load, back to back)")
    print(f"   {'':24} {'alerts/s':>12} {'cores':>6} {'alerts/s/core':>14} {'RSS MiB':>8} {'bytes/active alert':>19}")
    for name, label in (("alertmanager", "prometheus-alertmanager"), ("correlator", "fincorp-correlator")):
        m = med[name]
        print(f"   {label:24} {m['alerts_per_s']:>12,.0f} {m['cpu_cores']:>6.2f} "
              f"{m['alerts_per_s'] / max(m['cpu_cores'], 0.01):>14,.0f} {mem[name]['rss_mib_loaded']:>8.1f} "
              f"{mem[name]['bytes_per_alert']:>19,.0f}")
    per_core = (co["alerts_per_s"] / co["cpu_cores"]) / (am["alerts_per_s"] / am["cpu_cores"])
    print(f"   ratio (correlator / alertmanager): {ratio:.2f}x alerts/s, median of the rounds "
          f"({', '.join(f'{x:.2f}' for x in ratios)}; target >= 5x, durable)")
    print(f"   {per_core:.2f}x alerts/s per core used; memory {mem['correlator']['bytes_per_alert']:,.0f} B "
          f"per active alert (target <= 1024 B)")
    print("   note: wrk runs on the same machine; the faster the server, the more CPU wrk takes from it")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "memory": mem, "ratios": ratios, "ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
