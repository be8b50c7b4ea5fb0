"""Live capture through Wireshark's `dumpcap`: `dumpcap -w - -P -i IFACE [-f FILTER]` piped into the
existing pcap reader (agent.capture.pcapfile).

This is the privilege-separated alternative to the AF_PACKET ring (agent.capture.afpacket): only the
small dumpcap process needs CAP_NET_RAW (Wireshark's own design), the Python process needs nothing
when dumpcap carries the capability itself (`setcap cap_net_raw+ep /usr/bin/dumpcap`, or the Debian
`wireshark` group). It costs one more copy of every packet (kernel -> dumpcap -> pipe -> camwatch).

A thread reads the pipe with the pcap reader and queues the batches; the owner thread waits on
`fileno()` (a wake-up pipe) like it waits on an AF_PACKET socket. Reads return whatever the pipe
holds (one `read1()`), so a quiet link does not hold packets back until a 1 MiB chunk is full.

dumpcap reports its kernel counters only when it exits ("Packets received/dropped on interface ...");
`stats()` therefore returns the packets read so far and, after the end, dumpcap's final drop count.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from typing import IO

from agent.capture.afpacket import CaptureSetupError, permission_hint
from agent.capture.pcapfile import CaptureReader, RecordBatch
from agent.errors import CamwatchError

__all__ = ["DumpcapSource"]

START_TIMEOUT = 15.0  # seconds for dumpcap to open the interface and write the pcap header
_FINAL_STATS = re.compile(r"Packets received/dropped on interface .*: (\d+)/(\d+)")


class _PipeReader(CaptureReader):
    """CaptureReader over a pipe: each read returns what is available instead of a full chunk."""

    _primed = False

    def _read(self, size: int) -> tuple[bytes, str | None]:
        stream = self._stream
        if stream is None:
            raise CamwatchError(f"{self.path}: reader is closed")
        data = stream.read1(size)
        if not self._primed:
            # The header must be complete before the format is detected.
            self._primed = True
            while data and len(data) < 24:
                more = stream.read1(size)
                if not more:
                    break
                data += more
        return data, None


class DumpcapSource:
    """One interface captured by a dumpcap child process."""

    backend = "dumpcap"

    def __init__(
        self, interface: str, index: int = 0, *, capture_filter: str = "", buffer_mb: int = 32
    ) -> None:
        self.name = interface
        self.index = index
        self.linktype = 1
        try:
            socket.if_nametoindex(interface)
        except OSError:
            raise CaptureSetupError(f"{interface}: no such network interface") from None
        dumpcap = shutil.which("dumpcap")
        if dumpcap is None:
            raise CaptureSetupError(
                "the dumpcap backend needs dumpcap (Debian/Ubuntu package wireshark-common)"
            )
        cmd = [dumpcap, "-q", "-P", "-w", "-", "-i", interface, "-B", str(max(1, buffer_mb))]
        if capture_filter:
            cmd += ["-f", capture_filter]
        self._queue: queue.SimpleQueue[RecordBatch | None] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stderr: deque[str] = deque(maxlen=20)
        self._started = threading.Event()
        self._ended = threading.Event()
        self._read_error: str | None = None
        self._packets = 0  # read, not yet reported by stats()
        self._drops_reported = False
        self.final_stats: tuple[int, int] | None = None
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            self._close_wake()
            raise CaptureSetupError(f"{interface}: cannot run dumpcap: {exc.strerror or exc}") from None
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._err_thread = threading.Thread(
            target=self._drain_stderr, args=(self.proc.stderr,), name=f"dumpcap-err-{interface}", daemon=True
        )
        self._err_thread.start()
        self._thread = threading.Thread(
            target=self._pump, args=(self.proc.stdout,), name=f"dumpcap-{interface}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._started.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._err_thread.join(timeout=2)
                problem = self._failure()
                self.close()
                raise CaptureSetupError(f"{interface}: {problem}")

    # -- threads ---------------------------------------------------------------------------------
    def _drain_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)
                m = _FINAL_STATS.search(line)
                if m:
                    self.final_stats = (int(m.group(1)), int(m.group(2)))

    def _pump(self, stream: IO[bytes]) -> None:
        try:
            with _PipeReader(f"/proc/self/fd/{stream.fileno()}") as reader:
                self._started.set()
                for batch in reader.batches():
                    batch.interface = self.index
                    self._queue.put(batch)
                    self._wake()
        except CamwatchError as exc:
            self._read_error = str(exc)
        except OSError as exc:
            self._read_error = f"reading from dumpcap: {exc.strerror or exc}"
        finally:
            self._ended.set()
            self._queue.put(None)
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _failure(self) -> str:
        lines = [ln for ln in self._stderr if not ln.startswith(("Capturing on", "File:"))]
        text = " ".join(ln.removeprefix("dumpcap: ") for ln in lines[:2]) or "dumpcap did not start"
        if "permission" in text.lower() or "not permitted" in text.lower():
            return f"{permission_hint()} (dumpcap said: {text})"
        return f"dumpcap failed: {text}"

    # -- the source interface ---------------------------------------------------------------------
    def fileno(self) -> int:
        return self._wake_r

    def read(self, max_blocks: int | None = None) -> list[RecordBatch]:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_r, 4096):
                pass
        out: list[RecordBatch] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._packets += len(item)
                out.append(item)
        return out

    def stats(self) -> tuple[int, int]:
        """(packets read, drops) since the previous call; drops are known only after dumpcap ended."""
        packets, self._packets = self._packets, 0
        drops = 0
        if self.final_stats is not None and not self._drops_reported:
            self._drops_reported = True
            drops = self.final_stats[1]
        return packets, drops

    def error(self) -> str | None:
        if not self._ended.is_set():
            return None
        if self._read_error:
            return self._read_error
        return self._failure() if self.proc.poll() not in (0, None) else "dumpcap ended"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask dumpcap to finish (SIGTERM), then wait for the reader to see the end of the pipe."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._thread.join(timeout=timeout)
        self._err_thread.join(timeout=2)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stop()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._close_wake()

    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __repr__(self) -> str:
        return f"<DumpcapSource {self.name} pid {self.proc.pid}>"
