"""Run the benchmark runner in smoke mode as a subprocess.

Smoke mode starts chatroom and both reference servers, connects 50 websocket
clients to each and posts 2 messages per client. It checks only that every
client received every message exactly once and in one order; it never checks
a speed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
@pytest.mark.skipif(
    shutil.which("gcc") is None,
    reason="gcc is missing, and the benchmark load generator is a C program built with gcc",
)
def test_benchmark_smoke_delivers_exactly_once() -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )

    assert completed.returncode == 0, (
        f"benchmarks/run.py --smoke exited with {completed.returncode}\n"
        f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    )
