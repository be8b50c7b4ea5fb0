"""Scrape load: many concurrent Prometheus-style clients on /metrics while `camwatch run` analyses
traffic at full speed.

`python bench/scrape_load.py` creates a private network namespace with a veth pair, starts
`camwatch run` on one end, keeps `tcpreplay --topspeed` looping a generated camera-mix capture into
the other end, and runs CLIENTS concurrent scrapers (inside the namespace) for SECONDS. Each scraper
repeatedly opens a connection, sends what Prometheus sends (OpenMetrics Accept header, gzip),
reads the whole answer and checks it (status 200, Content-Length, gunzip, `camwatch_up`, `# EOF`).
It prints requests, errors, latency median/p90/p99/max, scrapes/s, and the packets the daemon
analysed meanwhile (the same run without scrapers gives the baseline rate). Needs root and tcpreplay.

`python bench/scrape_load.py client --url URL [--clients N] [--seconds S]` runs only the scrapers
and prints one JSON object (tests/integration/test_scrape_load.py uses it inside its namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from netns import namespace, sh

REPO = Path(__file__).resolve().parents[1]
CAMWATCH = str(Path(sys.executable).with_name("camwatch"))
BIG_PCAP = REPO / "bench" / "out" / "camera_mix_1000000.pcap"
CLIENT_TIMEOUT = 10.0  # seconds: Prometheus' default scrape_timeout; a slower scrape is a failed one
# What Prometheus 2.x sends (scrape.go): OpenMetrics preferred, gzip accepted.
ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


# --------------------------------------------------------------------------- scrapers


async def _scrape_once(host: str, port: int, path: str) -> str | None:
    """One scrape; None when it was a good answer, else what was wrong."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return f"connect: {exc.strerror or exc}"
    try:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: {ACCEPT}\r\n"
            "Accept-Encoding: gzip\r\nUser-Agent: camwatch-scrape-load\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        raw = await reader.read()
    except OSError as exc:
        return f"io: {exc.strerror or exc}"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return "no complete response header"
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        return f"status {lines[0][:60]!r}"
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if int(headers.get("content-length", "-1")) != len(body):
        return f"content-length {headers.get('content-length')} but {len(body)} body bytes"
    if headers.get("content-encoding") == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as exc:
            return f"bad gzip body: {exc}"
    if b"\ncamwatch_up " not in body or not body.rstrip().endswith(b"# EOF"):
        return "incomplete exposition (no camwatch_up or no # EOF)"
    return None


async def _client(host: str, port: int, path: str, until: float, out: list[tuple[float, str | None]]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        start = loop.time()
        try:
            problem = await asyncio.wait_for(_scrape_once(host, port, path), CLIENT_TIMEOUT)
        except TimeoutError:
            problem = f"timeout after {CLIENT_TIMEOUT:.0f} s"
        out.append((loop.time() - start, problem))


def run_clients(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` concurrent scrapers for `seconds`; latency percentiles in milliseconds."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/metrics"
    results: list[tuple[float, str | None]] = []

    async def main() -> None:
        until = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(*(_client(host, port, path, until, results) for _ in range(clients)))

    started = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - started
    latencies = sorted(t for t, _ in results)
    errors = Counter(p for _, p in results if p is not None)

    def pct(q: float) -> float:
        if not latencies:
            return 0.0
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(results),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(5)),
        "scrapes_per_second": round(len(results) / elapsed, 1) if elapsed else 0.0,
        "median_ms": round(1000 * statistics.median(latencies), 1) if latencies else 0.0,
        "p90_ms": round(pct(0.90), 1),
        "p99_ms": round(pct(0.99), 1),
        "max_ms": round(1000 * latencies[-1], 1) if latencies else 0.0,
    }


# --------------------------------------------------------------------------- orchestration


def processed(ns: str, url: str) -> int:
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    body = sh(["ip", "netns", "exec", ns, sys.executable, "-c", code], timeout=30).stdout
    m = re.search(r"^camwatch_processed_packets_total (\S+)$", body, re.M)
    return int(float(m.group(1))) if m else -1


def clients_in_ns(ns: str, url: str, clients: int, seconds: float) -> dict[str, Any]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, __file__, "client", "--url", url]
    res = sh([*cmd, "--clients", str(clients), "--seconds", str(seconds)], timeout=seconds + 120)
    if res.returncode != 0:
        raise SystemExit(f"scrapers failed: {res.stderr.strip()}")
    return dict(json.loads(res.stdout))


def measure(clients: int, seconds: float, pcap: Path) -> dict[str, Any]:
    with namespace("cwscrape") as (ns, tx, rx), tempfile.TemporaryDirectory(prefix="camwatch-scrape-") as tmp:
        port = 19000 + uuid.uuid4().int % 900
        url = f"http://127.0.0.1:{port}/metrics"
        log = Path(tmp) / "daemon.log"
        cmd = ["ip", "netns", "exec", ns, CAMWATCH, "run", "-i", rx, "--state-dir", f"{tmp}/state"]
        cmd += ["--events", f"{tmp}/events.ndjson", "--listen", f"127.0.0.1:{port}"]
        with open(log, "wb") as out:
            daemon = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            feeder: subprocess.Popen[bytes] | None = None
            try:
                deadline = time.monotonic() + 60
                while processed(ns, url) < 0:
                    if daemon.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"daemon did not start:\n{log.read_text()[-2000:]}")
                    time.sleep(0.3)
                replay = ["tcpreplay", "-q", "-i", tx, "--topspeed", "--loop=0", str(pcap)]
                feeder = subprocess.Popen(
                    ["ip", "netns", "exec", ns, *replay],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(2.0)  # traffic flowing before the scrapers start
                idle_start, t0 = processed(ns, url), time.monotonic()
                time.sleep(seconds)
                baseline_pps = (processed(ns, url) - idle_start) / (time.monotonic() - t0)
                loaded_start, t1 = processed(ns, url), time.monotonic()
                result = clients_in_ns(ns, url, clients, seconds)
                result["loaded_pps"] = round((processed(ns, url) - loaded_start) / (time.monotonic() - t1))
                result["baseline_pps"] = round(baseline_pps)
                quiet = clients_in_ns(ns, url, 1, 3.0)
                result["single_client_median_ms"] = quiet["median_ms"]
            finally:
                for proc in (feeder, daemon):
                    if proc is not None and proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                        try:
                            proc.wait(timeout=60)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait(timeout=10)
            if "Traceback" in log.read_text():
                raise SystemExit(f"daemon failed:\n{log.read_text()[-3000:]}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    c = sub.add_parser("client", help="only run the scrapers against URL and print JSON")
    c.add_argument("--url", required=True)
    c.add_argument("--clients", type=int, default=100)
    c.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pcap", type=Path, help=f"capture to loop (default {BIG_PCAP} or a generated one)")
    args = parser.parse_args(argv)
    if args.mode == "client":
        print(json.dumps(run_clients(args.url, args.clients, args.seconds)))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("needs root: creates a network namespace and a veth pair")
    with tempfile.TemporaryDirectory(prefix="camwatch-scrape-pcap-") as tmp:
        pcap = args.pcap or BIG_PCAP
        if not pcap.is_file():
            from agent.samplegen import generate

            pcap = Path(tmp) / "mix.pcap"
            generate(pcap, 200_000, snaplen=256)
        result = measure(args.clients, args.seconds, pcap)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
