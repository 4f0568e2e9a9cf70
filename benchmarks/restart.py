"""Measure how long ``chatroom serve`` takes to start, and its memory, against the journal's size.

For each message count the script writes a journal of that many generated
messages into a temporary data directory, then starts ``chatroom serve`` on
it several times. It reports the seconds from starting the process to the
"Room open" log line, the resident memory (VmRSS) at that line and after
reading the newest page and page 0, and the peak (VmHWM). The journal file
is written just before, so it sits in the page cache: the times are for a
warm cache, not for a cold disk.

Example (from the repository root):
    .venv/bin/python benchmarks/restart.py --messages 0,1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from chatroom.actors.journal import JOURNAL_FILE, SqliteJournal

HOST = "127.0.0.1"
PASSWORD = "bench"
ROOM_OPEN = re.compile(r"Room open at (http://127\.0\.0\.1:\d+)/")
START_LIMIT_S = 120.0
STOP_LIMIT_S = 30.0


@dataclass
class Start:
    seconds_to_open: float
    rss_open_kib: int
    rss_after_reads_kib: int
    peak_rss_kib: int


def synthetic_payload(message_id: int) -> bytes:
    """Return a message payload in the server's format, 103 to 117 bytes for ids to 10**7."""
    user = message_id % 50
    return (
        f'{{"id":{message_id},"user":{{"id":"user-{user}","name":"user {user}"}},'
        f'"time":"2024-01-01T00:00:00.000000Z","body":"message {message_id}"}}'
    ).encode()


def status_kib(pid: int, key: str) -> int:
    """Return a kB value such as VmRSS or VmHWM from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {key} line")


def read_pages(url: str) -> None:
    """Log in and read the newest page and page 0, as a returning client would."""
    login = urllib.request.Request(
        f"{url}/login",
        data=json.dumps({"user": "bench", "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(login, timeout=30) as response:
        token = json.load(response)["token"]
    for page in (-1, 0):
        request = urllib.request.Request(
            f"{url}/history?page={page}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def start_once(chatroom: Path, data_dir: Path) -> Start:
    """Start the server on ``data_dir``, measure it, and stop it with SIGTERM."""
    argv = [str(chatroom), "serve", "--host", HOST, "--port", "0", "--data-dir", str(data_dir)]
    environment = {**os.environ, "CHATROOM_PASSWORD": PASSWORD}
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=data_dir.parent,
    )
    try:
        url = wait_for_room(process)
        seconds = time.monotonic() - started
        rss_open = status_kib(process.pid, "VmRSS")
        read_pages(url)
        return Start(
            seconds_to_open=seconds,
            rss_open_kib=rss_open,
            rss_after_reads_kib=status_kib(process.pid, "VmRSS"),
            peak_rss_kib=status_kib(process.pid, "VmHWM"),
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_LIMIT_S)


def wait_for_room(process: subprocess.Popen[str]) -> str:
    """Return the room's URL from its "Room open" log line, reading standard error in a thread."""
    found: list[str] = []
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            match = ROOM_OPEN.search(line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(START_LIMIT_S) or not found:
        raise RuntimeError("chatroom serve did not open the room:\n" + "".join(lines[-20:]))
    return found[0]


def message_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError(f"expected counts of 0 or more, got {text!r}")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--messages",
        type=message_counts,
        default=[0, 1_000_000],
        help="comma-separated journal sizes in messages (default 0,1000000)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="starts per size (default 3)")
    parser.add_argument(
        "--chatroom",
        type=Path,
        default=Path(sys.executable).with_name("chatroom"),
        help="chatroom console script (default: the one beside this Python)",
    )
    args = parser.parse_args()

    print("| messages | journal MiB | start s (median) | start s (min-max) | RSS at open MiB "
          "| RSS after 2 pages MiB | peak RSS MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for count in args.messages:
        with tempfile.TemporaryDirectory(prefix="chatroom-restart-") as tmp:
            data_dir = Path(tmp) / "data"
            written = time.monotonic()
            payloads = ((i, synthetic_payload(i)) for i in range(1, count + 1))
            SqliteJournal.create(data_dir, payloads)
            print(
                f"wrote {count:,} messages in {time.monotonic() - written:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            size = sum(path.stat().st_size for path in data_dir.glob(JOURNAL_FILE + "*"))
            starts = [start_once(args.chatroom, data_dir) for _ in range(args.repeat)]

        seconds = [start.seconds_to_open for start in starts]
        print(
            f"| {count:,} | {size / 2**20:,.1f} | {statistics.median(seconds):.2f} "
            f"| {min(seconds):.2f}-{max(seconds):.2f} "
            f"| {statistics.median(s.rss_open_kib for s in starts) / 1024:.1f} "
            f"| {statistics.median(s.rss_after_reads_kib for s in starts) / 1024:.1f} "
            f"| {max(s.peak_rss_kib for s in starts) / 1024:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
