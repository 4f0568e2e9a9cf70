"""Run the browser client's pure-logic tests with Node's built-in test runner.

They live in tests/client/*.test.mjs and import the client's ES modules
directly, so they need Node but no browser.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_client_logic_node_suite() -> None:
    test_files = sorted(str(path) for path in (REPO / "tests" / "client").glob("*.test.mjs"))
    assert test_files, "no tests/client/*.test.mjs files found"

    completed = subprocess.run(
        ["node", "--test", *test_files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
