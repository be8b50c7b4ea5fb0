"""Least privilege, checked on the running processes (docs/security.md):

* `camwatch run --user camwatch` (the dedicated system user the systemd unit and the images use)
  opens its capture as root, then every thread of every process in its tree (the daemon, its metrics
  thread, a dumpcap child, fanout workers) runs as camwatch with no supplementary groups, no_new_privs,
  and no capability but CAP_NET_RAW in any set (the daemon keeps exactly that one);
* the firmware scan worker the daemon uses for carved images, started with those same credentials,
  has no network (a fresh network namespace: loopback only, down) and a private temp dir (TMPDIR
  is a fresh 0700 directory owned by the user, removed when the worker exits).

Root only (namespaces, veth, useradd); the `camwatch` user is created if missing and then removed.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require_tool
from tests.integration import test_live_capture as live
from tests.integration.test_live_capture import SAMPLE_PACKETS, Netns, daemon

pytestmark = live.pytestmark
netns = live.netns
workdir = live.workdir

USER = "camwatch"
NET_RAW = 1 << 13


@pytest.fixture(scope="module")
def camwatch_user() -> Iterator[pwd.struct_passwd]:
    """The dedicated system user (deploy/systemd/camwatch.service's install line)."""
    created = False
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        res = subprocess.run(
            [require_tool("useradd"), "--system", "--user-group", "--no-create-home",
             "--home-dir", "/var/lib/camwatch", "--shell", "/usr/sbin/nologin", USER],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if res.returncode != 0:
            pytest.skip(f"cannot create the {USER} system user here: {res.stderr.strip()}")
        created = True
        pw = pwd.getpwnam(USER)
    try:
        yield pw
    finally:
        if created:
            subprocess.run([require_tool("userdel"), USER], capture_output=True, check=False)


def status(pid: int, tid: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status"
    text = Path(path).read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            children = (task / "children").read_text().split()
            todo.extend(int(c) for c in children)
    return out


def assert_only_net_raw(pid: int, tid: int, pw: pwd.struct_passwd) -> None:
    st = status(pid, tid)
    where = f"pid {pid} task {tid} ({st.get('Name')})"
    assert st["Uid"].split() == [str(pw.pw_uid)] * 4, where
    assert st["Gid"].split() == [str(pw.pw_gid)] * 4, where
    assert st["Groups"].strip() == "", where
    assert st["NoNewPrivs"].strip() == "1", where
    for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"):
        # nothing beyond CAP_NET_RAW (dumpcap even gives that up once its capture is open)
        assert int(st[field], 16) & ~NET_RAW == 0, f"{where}: {field} {st[field]}"


@pytest.mark.parametrize("extra", [(), ("--backend", "dumpcap"), ("--workers", "2")],
                         ids=["afpacket", "dumpcap", "fanout"])  # fmt: skip
def test_daemon_as_camwatch_user_keeps_only_cap_net_raw_in_every_thread(
    extra: tuple[str, ...], netns: Netns, workdir: Path, camwatch_user: pwd.struct_passwd
) -> None:
    if "dumpcap" in extra:
        require_tool("dumpcap")
    pw = camwatch_user
    os.chown(workdir, pw.pw_uid, pw.pw_gid)
    with daemon(netns, workdir, "--user", USER, *extra) as d:
        d.wait_ready()
        live.replay(netns)
        d.wait_packets(SAMPLE_PACKETS)  # captures after the drop
        pids = process_tree(d.proc.pid)
        if "dumpcap" in extra:
            assert any(status(p)["Name"].strip() == "dumpcap" for p in pids), pids
        if "--workers" in extra:
            assert len(pids) >= 3, pids
        for pid in pids:
            for task in Path(f"/proc/{pid}/task").iterdir():
                assert_only_net_raw(pid, int(task.name), pw)
        main = status(d.proc.pid)
        assert int(main["CapEff"], 16) == int(main["CapBnd"], 16) == NET_RAW  # kept, and only it
        rc = d.stop()
    assert rc == 0, d.log.read_text()
    assert "dropped privileges to camwatch" in d.log.read_text()
    for path in (d.state / "camwatch.db", d.events):
        assert path.stat().st_uid == pw.pw_uid, path


# --------------------------------------------------------------------------- firmware worker


def probe() -> dict[str, Any]:
    """Runs inside the firmware scan worker: what a hostile image's parser could reach."""
    result: dict[str, Any] = {"interfaces": [name for _i, name in socket.if_nameindex()]}
    for target in (("127.0.0.1", 9), ("192.0.2.1", 80)):  # loopback and a routed TEST-NET address
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2.0)
        try:
            s.connect(target)
            result[target[0]] = 0
        except OSError as exc:
            result[target[0]] = exc.errno
        finally:
            s.close()
    tmp = os.environ.get("TMPDIR", "")
    st = os.stat(tmp)
    fd, scratch = tempfile.mkstemp()
    os.close(fd)
    from analyzers.firmware.scanner import worker_probe

    result.update(
        tmpdir=tmp,
        tmp_mode=stat.S_IMODE(st.st_mode),
        tmp_uid=st.st_uid,
        scratch_in_tmpdir=os.path.dirname(scratch) == tmp,
        uid=os.getuid(),
        sandbox=worker_probe()["sandbox"],
    )
    return result


WORKER_SNIPPET = """
import json, os, sys
sys.path.insert(0, {repo!r})
from agent.firmware_worker import FirmwareWorker
from tests.integration.test_privileges import probe
worker = FirmwareWorker()
result = worker._executor().submit(probe).result(timeout=120)
worker.close()
result["tmpdir_left"] = os.path.exists(result["tmpdir"])
print(json.dumps(result))
"""


def test_firmware_worker_with_daemon_credentials_has_no_network_and_a_private_tmpdir(
    camwatch_user: pwd.struct_passwd,
) -> None:
    setpriv = require_tool("setpriv")
    pw = camwatch_user
    # The daemon's credentials after `--user camwatch` (or under the systemd unit).
    creds = [setpriv, "--reuid", USER, "--regid", USER, "--clear-groups", "--no-new-privs",
             "--inh-caps", "-all,+net_raw", "--ambient-caps", "+net_raw",
             "--bounding-set", "-all,+net_raw"]  # fmt: skip
    res = subprocess.run(
        [*creds, sys.executable, "-c", WORKER_SNIPPET.format(repo=str(REPO))],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd="/",
        env={**os.environ, "TMPDIR": "/tmp"},
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    if "no network sandbox" in result["sandbox"]:
        pytest.skip(f"user namespaces unavailable to unprivileged users here: {result['sandbox']}")
    assert "network-isolated" in result["sandbox"], result
    assert result["interfaces"] == ["lo"], result
    assert result["127.0.0.1"] == errno.ENETUNREACH, result  # even loopback is down
    assert result["192.0.2.1"] == errno.ENETUNREACH, result
    assert Path(result["tmpdir"]).name.startswith("camwatch-fw-")
    assert result["tmp_mode"] == 0o700 and result["scratch_in_tmpdir"], result
    # inside the worker's user namespace the owner shows as the mapped user (or the overflow id)
    assert result["tmp_uid"] in (pw.pw_uid, result["uid"]), result
    assert result["tmpdir_left"] is False, result
