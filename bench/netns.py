"""A private network namespace holding one veth pair, for the benchmarks that capture live
(bench/live_bench.py, bench/scrape_load.py). Needs root and iproute2."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator


def sh(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def namespace(prefix: str) -> Iterator[tuple[str, str, str]]:
    """(namespace, sending end, capturing end); IPv6 off so no router solicitations add packets."""
    tag = uuid.uuid4().hex[:6]
    ns, tx, rx = f"{prefix}-{tag}", f"{prefix[:3]}{tag}a", f"{prefix[:3]}{tag}b"
    res = sh(["ip", "netns", "add", ns])
    if res.returncode != 0:
        raise SystemExit(f"cannot create a network namespace: {res.stderr.strip()}")
    try:
        for cmd in (
            ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
            ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            ["ip", "-n", ns, "link", "add", tx, "type", "veth", "peer", "name", rx],
            ["ip", "-n", ns, "link", "set", tx, "up"],
            ["ip", "-n", ns, "link", "set", rx, "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
        ):
            res = sh(cmd)
            if res.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)}: {res.stderr.strip()}")
        yield ns, tx, rx
    finally:
        sh(["ip", "netns", "del", ns])
