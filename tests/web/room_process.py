"""Run ``chatroom serve`` as a real process on a loopback port, for tests that need one.

Tests of shutdown, crashes and memory need the server in its own process: to
send it signals, kill it, or read its memory use from /proc.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

PASSWORD = "correct horse"
_ROOM_OPEN = re.compile(r"Room open at (http://\S+)/")


class RoomProcess:
    """A ``chatroom serve`` child process; its standard error is collected line by line."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        # Each process gets a data directory of its own, so no journal is shared.
        self._data_dir = tempfile.TemporaryDirectory(prefix="chatroom-test-")
        environment = {
            **os.environ,
            "CHATROOM_PASSWORD": PASSWORD,
            "CHATROOM_DATA_DIR": self._data_dir.name,
            **(env or {}),
        }
        command = [sys.executable, "-m", "chatroom.web.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", "0", *args]
        self.process = subprocess.Popen(
            command,
            env=environment,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._started = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self._started.wait(start_timeout):
            self.kill()
            raise RuntimeError("chatroom serve did not start:\n" + "".join(self.lines[-20:]))

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            match = _ROOM_OPEN.search(line)
            if match and not self._started.is_set():
                self.url = match.group(1)
                self._started.set()
        self._started.set()

    def wait_for_line(self, fragment: str, timeout: float) -> bool:
        """Wait until a log line containing ``fragment`` appears; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(fragment in line for line in self.lines):
                return True
            time.sleep(0.05)
        return False

    def peak_rss_kib(self) -> int:
        """Return the process's peak resident memory (VmHWM) in KiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        assert match, status
        return int(match.group(1))

    def terminate(self, timeout: float = 30.0) -> int:
        """Send SIGTERM and return the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> RoomProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.kill()
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self._data_dir.cleanup()
