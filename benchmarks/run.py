"""Benchmark chatroom against two reference servers with the C load generator.

For every scenario and server the runner starts a fresh server process on
127.0.0.1, logs the clients in and starts ``loadgen``, which opens one
websocket per client. While the clients sit connected, the runner measures the
server's memory and idle CPU. Then it writes ``go`` to the load generator's
stdin and waits until every message has reached every client. Server CPU comes
from /proc/PID/stat (utime + stime of the process and its children) and memory
from /proc/PID/status (VmRSS, VmHWM).

Exit status: 1 if any client missed a message, got one twice, or saw the
messages in a different order from the other clients, or if the deliveries did
not finish within --timeout; 2 on a setup error (build failure, a server that
does not start or exits, a load generator that stops responding).

Examples (from the repository root):
    .venv/bin/python benchmarks/run.py --smoke
    .venv/bin/python benchmarks/run.py --clients 1000 --messages 1,10
    .venv/bin/python benchmarks/run.py --sweep --plot docs/benchmarks.png
    .venv/bin/python benchmarks/run.py --mode steady --clients 1000 --rate 50 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "benchmarks"
BUILD_DIR = BENCH_DIR / "build"
LOG_DIR = BUILD_DIR / "logs"
HOST = "127.0.0.1"
PASSWORD = "bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LISTEN_RE = re.compile(r"http://(?:127\.0\.0\.1|localhost):(\d+)/")
SERVER_START_TIMEOUT_S = 30.0
SERVER_STOP_TIMEOUT_S = 15.0
SWEEP_CLIENTS = [100, 500, 1000, 2000, 5000]
ALL_SERVERS = ["chatroom", "batched", "naive"]
# The naive reference delivers about 100,000 messages per second on a 2-core machine (measured with
# this runner), so larger bursts are skipped for it unless --naive-max-deliveries is raised.
NAIVE_MAX_DELIVERIES = 3_000_000


class SetupError(Exception):
    """A server, the build or a phase of a run failed in a way that yields no measurement."""


@dataclass
class Scenario:
    clients: int
    messages: int = 1
    mode: str = "burst"
    rate: float = 0.0
    duration: float = 0.0

    @property
    def deliveries(self) -> int:
        """Return the number of message deliveries the scenario expects (messages times clients)."""
        if self.mode == "steady":
            return round(self.rate * self.duration) * self.clients
        return self.clients * self.messages * self.clients

    @property
    def label(self) -> str:
        if self.mode == "steady":
            return f"{self.clients} clients, {self.rate:g} msg/s for {self.duration:g} s"
        return f"{self.clients} clients x {self.messages} msg"


@dataclass
class RunResult:
    server: str
    scenario: Scenario
    ok: bool = False
    skipped: str = ""
    failure: str = ""
    ready: dict[str, Any] = field(default_factory=dict)
    loadgen: dict[str, Any] = field(default_factory=dict)
    login_seconds: float = 0.0
    join_cpu_seconds: float = 0.0
    rss_before_kib: int = 0
    rss_ready_kib: int = 0
    peak_rss_kib: int = 0
    idle_seconds: float = 0.0
    idle_cpu_seconds: float = 0.0
    run_cpu_seconds: float = 0.0
    run_wall_seconds: float = 0.0
    stop_seconds: float = 0.0
    load_average: float = 0.0

    @property
    def deliveries(self) -> int:
        return int(self.loadgen.get("deliveries", 0))

    @property
    def kib_per_client(self) -> float:
        return (self.rss_ready_kib - self.rss_before_kib) / self.scenario.clients

    @property
    def verdict(self) -> str:
        """Return the exactly-once column: yes, skipped, join failed or timed out, or **NO**."""
        if self.skipped:
            return "skipped"
        if self.ok:
            return "yes"
        violations = (
            "duplicates",
            "out_of_order",
            "order_mismatch_clients",
            "id_conflicts",
            "foreign_messages",
        )
        if any(self.loadgen.get(key) for key in violations):
            return "**NO**"
        if self.loadgen.get("joined", self.scenario.clients) < self.scenario.clients:
            return "join timed out" if self.loadgen.get("timed_out") else "join failed"
        if self.loadgen.get("timed_out"):
            return "timed out"
        return "**NO**"

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.run_cpu_seconds * 1e6 / self.deliveries if self.deliveries else 0.0


# ---------- processes ----------


def process_tree(pid: int) -> list[int]:
    """Return pid and all its descendants that still exist."""
    pids = [pid]
    index = 0
    while index < len(pids):
        task_dir = Path(f"/proc/{pids[index]}/task")
        index += 1
        try:
            tasks = list(task_dir.iterdir())
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                pids.extend(int(child) for child in (task / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                continue
    return pids


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of pid and its descendants (all threads included)."""
    total_ticks = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # Field 2 (comm) may contain spaces, so split after its closing parenthesis.
        # utime and stime are fields 14 and 15 (proc(5)), which are items 11 and 12 after it.
        fields = stat.rsplit(")", 1)[1].split()
        total_ticks += int(fields[11]) + int(fields[12])
    return total_ticks / CLOCK_TICKS


def load_average() -> float:
    """Return the 1-minute load average, a hint of other work competing for the cores."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def status_kib(pid: int, key: str) -> int:
    """Return a kB value such as VmRSS or VmHWM from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise SetupError(f"/proc/{pid}/status has no {key} line")


class OutputDrain:
    """Read a pipe in a thread, keep the last lines and pass each line to a queue.

    With log_path, every line is also written to that file.
    """

    def __init__(self, stream: Any, keep: int = 200, log_path: Path | None = None) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.queue: Queue[str | None] = Queue()
        self.log_path = log_path
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: Any) -> None:
        log = self.log_path.open("w") if self.log_path else None
        try:
            for line in stream:
                text = line.rstrip("\n")
                self.lines.append(text)
                self.queue.put(text)
                if log:
                    log.write(line)
        finally:
            if log:
                log.close()
            self.queue.put(None)

    def tail(self, count: int = 20) -> str:
        return "\n".join(list(self.lines)[-count:])


class ServerProcess:
    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output = OutputDrain(self.proc.stdout, log_path=log_path)
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.output.queue.get(timeout=0.2)
            except Empty:
                continue
            if line is None:
                break
            match = LISTEN_RE.search(line)
            if match:
                return int(match.group(1))
        self.stop()
        raise SetupError(
            f"server {self.name} did not print 'http://127.0.0.1:PORT/' within "
            f"{SERVER_START_TIMEOUT_S:.0f} s (exit code {self.proc.poll()}); "
            f"command: {' '.join(self.argv)}\n{self.output.tail()}"
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SetupError(
                f"server {self.name} exited with code {self.proc.returncode}; "
                f"last output:\n{self.output.tail()}"
            )

    def stop(self) -> float:
        """Stop the server with SIGTERM (SIGKILL after a timeout) and return the seconds it took."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                # The server runs in its own session, so its process group id is its pid.
                print(
                    f"server {self.name} did not exit within {SERVER_STOP_TIMEOUT_S:.0f} s "
                    "of SIGTERM; killing it",
                    file=sys.stderr,
                )
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
        return time.monotonic() - started


def default_chatroom() -> Path:
    """Return the chatroom console script beside this Python, else the one on PATH."""
    beside = Path(sys.executable).with_name("chatroom")
    if beside.exists():
        return beside
    on_path = shutil.which("chatroom")
    return Path(on_path) if on_path else beside


def chatroom_argv(chatroom: Path, data_dir: Path | None = None) -> list[str]:
    """Return the command that starts chatroom: on a journal in ``data_dir``, else in memory."""
    if not chatroom.exists():
        raise SetupError(
            f"{chatroom} not found; install chatroom into the venv first (pip install -e .)"
        )
    argv = [str(chatroom), "serve", "--host", HOST, "--port", "0", "--password", PASSWORD]
    help_text = subprocess.run(
        [str(chatroom), "serve", "--help"], capture_output=True, text=True, timeout=30, cwd=REPO
    )
    if help_text.returncode != 0:
        raise SetupError(
            f"'{chatroom} serve --help' failed with code {help_text.returncode}:\n"
            f"{help_text.stderr}"
        )
    if data_dir is not None:
        if "--data-dir" not in help_text.stdout:
            raise SetupError(f"'{chatroom} serve --help' lists no --data-dir option")
        argv += ["--data-dir", str(data_dir)]
    elif "--memory" in help_text.stdout:
        argv.append("--memory")
    return argv


def server_argv(name: str, chatroom: Path, data_dir: Path | None = None) -> list[str]:
    if name == "chatroom":
        return chatroom_argv(chatroom, data_dir)
    script = BENCH_DIR / f"reference_{name}.py"
    return [sys.executable, str(script), "--host", HOST, "--port", "0", "--password", PASSWORD]


def build_loadgen() -> Path:
    """Compile benchmarks/loadgen.c into benchmarks/build/loadgen and return its path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SetupError("gcc not found; the load generator is a C program (apt-get install gcc)")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    binary = BUILD_DIR / "loadgen"
    command = [gcc, "-O2", "-Wall", "-Wextra", "-o", str(binary), str(BENCH_DIR / "loadgen.c")]
    built = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if built.returncode != 0:
        raise SetupError(
            f"building the load generator failed:\n{' '.join(command)}\n{built.stderr}"
        )
    return binary


# ---------- one run ----------


async def login_all(port: int, count: int, concurrency: int = 64) -> list[str]:
    """Log in users bench0..bench{count-1} and return their tokens in order."""
    url = f"http://{HOST}:{port}/login"
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def login(index: int) -> str:
            async with (
                limit,
                session.post(url, json={"user": f"bench{index}", "password": PASSWORD}) as response,
            ):
                text = await response.text()
                if response.status != 200:
                    raise SetupError(
                        f"POST /login for bench{index} returned {response.status}: {text[:200]}"
                    )
                token = json.loads(text).get("token")
                if not isinstance(token, str):
                    raise SetupError(
                        f"POST /login for bench{index} returned no token: {text[:200]}"
                    )
                return token

        return list(await asyncio.gather(*(login(i) for i in range(count))))


def next_event(
    drain: OutputDrain, expected: str, deadline: float, proc: subprocess.Popen[str]
) -> dict[str, Any]:
    """Return the next loadgen JSON line whose "event" is expected.

    The result line is returned instead if it comes first (the run ended early).
    """
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SetupError(f"timed out waiting for the load generator's '{expected}' line")
        try:
            line = drain.queue.get(timeout=min(remaining, 0.5))
        except Empty:
            continue
        if line is None:
            raise SetupError(
                f"load generator exited with code {proc.wait()} before its '{expected}' line"
            )
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") in (expected, "result"):
            return dict(event)


def loadgen_argv(
    binary: Path, port: int, tokens: Path, scenario: Scenario, args: argparse.Namespace
) -> list[str]:
    argv = [
        str(binary),
        "--port", str(port),
        "--tokens", str(tokens),
        "--wait-go",
        "--settle-ms", str(args.settle_ms),
        "--timeout", str(args.timeout),
        "--join-timeout", str(args.join_timeout),
        "--connect-concurrency", str(args.connect_concurrency),
    ]  # fmt: skip
    if scenario.mode == "steady":
        argv += ["--rate", str(scenario.rate), "--duration", str(scenario.duration)]
    else:
        argv += ["--messages", str(scenario.messages)]
    return argv


def run_once(
    name: str, scenario: Scenario, binary: Path, workdir: Path, args: argparse.Namespace
) -> RunResult:
    result = RunResult(server=name, scenario=scenario, load_average=load_average())
    log_name = f"{name}-{scenario.mode}-{scenario.clients}x{scenario.messages}.log"
    # A fresh, empty journal for every run, so runs do not add up.
    data_dir = workdir / f"data-{log_name}" if args.chatroom_journal else None
    server = ServerProcess(name, server_argv(name, args.chatroom, data_dir), LOG_DIR / log_name)
    loadgen: subprocess.Popen[str] | None = None
    try:
        started = time.monotonic()
        tokens = asyncio.run(login_all(server.port, scenario.clients))
        result.login_seconds = time.monotonic() - started
        tokens_path = workdir / f"tokens-{name}.txt"
        tokens_path.write_text("\n".join(tokens) + "\n")

        server.check_alive()
        result.rss_before_kib = status_kib(server.pid, "VmRSS")
        cpu_join_start = cpu_seconds(server.pid)
        loadgen = subprocess.Popen(
            loadgen_argv(binary, server.port, tokens_path, scenario, args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        events = OutputDrain(loadgen.stdout)
        errors = OutputDrain(loadgen.stderr, log_path=LOG_DIR / f"loadgen-{log_name}")
        # The loadgen enforces the phase limits itself; the runner's own limits are a backstop.
        ready_limit = 2 * args.join_timeout + 30
        ready = next_event(events, "ready", time.monotonic() + ready_limit, loadgen)
        if ready["event"] == "result":
            result.loadgen = ready
            result.ready = ready
            result.failure = (
                f"not every client joined:\n{errors.tail()}\nserver output:\n{server.output.tail()}"
            )
            return result
        result.ready = ready
        server.check_alive()
        result.join_cpu_seconds = cpu_seconds(server.pid) - cpu_join_start
        result.rss_ready_kib = status_kib(server.pid, "VmRSS")

        if args.idle_seconds > 0:
            idle_start = cpu_seconds(server.pid)
            time.sleep(args.idle_seconds)
            result.idle_seconds = args.idle_seconds
            result.idle_cpu_seconds = cpu_seconds(server.pid) - idle_start

        cpu_start = cpu_seconds(server.pid)
        wall_start = time.monotonic()
        assert loadgen.stdin is not None
        loadgen.stdin.write("go\n")
        loadgen.stdin.flush()
        run_limit = args.timeout + scenario.duration + 30
        outcome = next_event(events, "result", time.monotonic() + run_limit, loadgen)
        result.run_wall_seconds = time.monotonic() - wall_start
        result.run_cpu_seconds = cpu_seconds(server.pid) - cpu_start
        result.peak_rss_kib = status_kib(server.pid, "VmHWM")
        result.loadgen = outcome
        result.ok = bool(outcome.get("ok"))
        loadgen.stdin.close()
        loadgen.wait(timeout=30)
        if not result.ok:
            result.failure = f"{errors.tail()}\nserver output:\n{server.output.tail()}"
        return result
    finally:
        if loadgen is not None and loadgen.poll() is None:
            loadgen.kill()
            loadgen.wait()
        result.stop_seconds = server.stop()


# ---------- reporting ----------


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def result_row(r: RunResult) -> str:
    lg = r.loadgen
    latency = lg.get("latency_us", {})
    fanout = float(lg.get("fanout_seconds", 0.0))
    loadgen_share = float(lg.get("loadgen_cpu_seconds", 0.0)) / fanout if fanout else 0.0
    idle_pct = 100 * r.idle_cpu_seconds / r.idle_seconds if r.idle_seconds else 0.0
    if r.skipped:
        return f"| {r.server} | {r.scenario.label} | skipped: {r.skipped} |" + " |" * 14
    if not r.rss_ready_kib:
        join = float(r.ready.get("join_seconds", 0.0))
        reason = f"{r.verdict}: {r.ready.get('joined', 0)} of {r.scenario.clients} joined"
        tail = " |" * 11 + f" {join:.2f} | | {r.load_average:.1f} |"
        return f"| {r.server} | {r.scenario.label} | {reason} |" + tail
    cells = [
        r.server,
        r.scenario.label,
        r.verdict,
        f"{r.deliveries:,}",
        fmt(fanout, 3),
        fmt(float(lg.get("deliveries_per_second", 0.0)), 0),
        fmt(latency.get("p50", 0.0) / 1000, 1),
        fmt(latency.get("p99", 0.0) / 1000, 1),
        fmt(latency.get("max", 0.0) / 1000, 1),
        fmt(r.run_cpu_seconds, 2),
        fmt(r.cpu_us_per_delivery, 2),
        fmt(r.peak_rss_kib / 1024, 1),
        fmt(r.kib_per_client, 1),
        fmt(idle_pct, 1) if r.idle_seconds else "-",
        fmt(float(lg.get("join_seconds", 0.0)), 2),
        fmt(100 * loadgen_share, 0),
        fmt(r.load_average, 1),
    ]
    return "| " + " | ".join(cells) + " |"


RESULT_HEADER = (
    "| server | scenario | exactly once | deliveries | fan-out s | deliveries/s "
    "| p50 ms | p99 ms | max ms | server CPU s | CPU µs/delivery | peak RSS MiB "
    "| KiB/idle client | idle CPU % | join s | loadgen CPU % | load avg |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "-"


def ratio_rows(results: list[RunResult]) -> list[str]:
    rows: list[str] = []
    by_scenario: dict[str, dict[str, RunResult]] = collections.defaultdict(dict)
    for r in results:
        by_scenario[r.scenario.label][r.server] = r
    for label, servers in by_scenario.items():
        chat = servers.get("chatroom")
        if chat is None or not chat.ok:
            continue
        for reference in ("batched", "naive"):
            ref = servers.get(reference)
            if ref is None or not ref.ok:
                continue
            rows.append(
                "| "
                + " | ".join(
                    [
                        label,
                        f"chatroom ÷ {reference}",
                        ratio(
                            chat.loadgen.get("deliveries_per_second", 0.0),
                            ref.loadgen.get("deliveries_per_second", 0.0),
                        ),
                        ratio(
                            chat.loadgen.get("latency_us", {}).get("p99", 0.0),
                            ref.loadgen.get("latency_us", {}).get("p99", 0.0),
                        ),
                        ratio(chat.cpu_us_per_delivery, ref.cpu_us_per_delivery),
                        ratio(chat.peak_rss_kib, ref.peak_rss_kib),
                        ratio(chat.kib_per_client, ref.kib_per_client),
                        ratio(chat.idle_cpu_seconds, ref.idle_cpu_seconds)
                        if chat.idle_seconds
                        else "-",
                    ]
                )
                + " |"
            )
    return rows


RATIO_HEADER = (
    "| scenario | ratio | deliveries/s | p99 latency | CPU µs/delivery | peak RSS "
    "| KiB/idle client | idle CPU |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|"
)


def markdown_report(results: list[RunResult]) -> str:
    lines = [RESULT_HEADER, *(result_row(r) for r in results)]
    ratios = ratio_rows(results)
    if ratios:
        lines += ["", RATIO_HEADER, *ratios]
    return "\n".join(lines)


def write_plot(results: list[RunResult], path: Path) -> None:
    """Plot deliveries/s and p99 latency against clients for the burst runs that passed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    burst = [r for r in results if r.scenario.mode == "burst"]
    series: dict[str, list[RunResult]] = collections.defaultdict(list)
    missing: list[str] = []
    for r in burst:
        if r.ok:
            series[f"{r.server}, {r.scenario.messages} msg/client"].append(r)
        else:
            reason = r.skipped or r.verdict.strip("*")
            missing.append(f"{r.server} {r.scenario.clients} x {r.scenario.messages} ({reason})")

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8.5), sharex=True)
    for label, runs in sorted(series.items()):
        runs.sort(key=lambda r: r.scenario.clients)
        clients = [r.scenario.clients for r in runs]
        rates = [r.loadgen["deliveries_per_second"] for r in runs]
        p99_ms = [r.loadgen["latency_us"]["p99"] / 1000 for r in runs]
        top.plot(clients, rates, marker="o", label=label)
        bottom.plot(clients, p99_ms, marker="o", label=label)

    top.set_title("Burst: every client posts at once, every client receives every message")
    top.set_ylabel("deliveries per second")
    top.set_yscale("log")
    top.grid(True, which="both", alpha=0.3)
    top.legend()
    bottom.set_ylabel("p99 delivery latency (ms)")
    bottom.set_xlabel("connected clients")
    bottom.set_yscale("log")
    bottom.grid(True, which="both", alpha=0.3)
    if missing:
        figure.text(0.01, 0.005, "Not plotted: " + "; ".join(missing), fontsize=7, wrap=True)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {path}")


# ---------- command line ----------


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers of at least 1, got {text!r}")
    return values


def server_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(ALL_SERVERS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(ALL_SERVERS)}"
        )
    return names


def add_scenario_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scenarios")
    group.add_argument(
        "--servers",
        type=server_list,
        default=ALL_SERVERS,
        help="comma-separated servers to run (default chatroom,batched,naive)",
    )
    group.add_argument(
        "--clients",
        type=int_list,
        default=[1000],
        help="comma-separated client counts (default 1000)",
    )
    group.add_argument(
        "--messages",
        type=int_list,
        default=[1],
        help="burst mode: comma-separated messages per client (default 1)",
    )
    group.add_argument(
        "--mode",
        choices=["burst", "steady"],
        default="burst",
        help="burst: every client posts at once (default); steady: a fixed total rate",
    )
    group.add_argument(
        "--rate", type=float, default=50.0, help="steady: messages per second in total (default 50)"
    )
    group.add_argument(
        "--duration", type=float, default=10.0, help="steady: seconds of posting (default 10)"
    )
    group.add_argument(
        "--sweep", action="store_true", help=f"burst with clients {SWEEP_CLIENTS} x 1 message"
    )
    group.add_argument(
        "--smoke",
        action="store_true",
        help="all servers, 50 clients x 2 messages, short limits; checks delivery only",
    )


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("timing and limits")
    group.add_argument(
        "--idle-seconds",
        type=float,
        default=5.0,
        help="seconds over which idle server CPU is measured (default 5; 0 skips)",
    )
    group.add_argument(
        "--settle-ms",
        type=int,
        default=500,
        help="milliseconds without incoming frames after the joins before posting (default 500)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="limit in seconds for delivering every message after the posts (default 120)",
    )
    group.add_argument(
        "--join-timeout",
        type=float,
        default=300.0,
        help="limit in seconds for opening all websockets, and again for the settle wait "
        "(default 300)",
    )
    group.add_argument(
        "--connect-concurrency",
        type=int,
        default=100,
        help="websockets being opened at once (default 100)",
    )
    group.add_argument(
        "--naive-max-deliveries",
        type=int,
        default=NAIVE_MAX_DELIVERIES,
        help="skip the naive reference above this many deliveries "
        f"(default {NAIVE_MAX_DELIVERIES:,})",
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("programs and output")
    group.add_argument(
        "--chatroom",
        type=Path,
        default=default_chatroom(),
        help="chatroom console script (default: the one beside this Python, else on PATH)",
    )
    group.add_argument(
        "--chatroom-journal",
        action="store_true",
        help="run chatroom with its SQLite journal, in a new data directory per run, instead "
        "of --memory; CHATROOM_JOURNAL_SYNCHRONOUS=full in the environment selects full sync",
    )
    group.add_argument(
        "--plot", type=Path, help="write a PNG of deliveries/s and p99 latency against clients"
    )
    group.add_argument("--json", type=Path, help="write all measurements as JSON")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_scenario_options(parser)
    add_limit_options(parser)
    add_output_options(parser)
    args = parser.parse_args()

    if args.smoke:
        args.clients = [50]
        args.messages = [2]
        args.mode = "burst"
        args.idle_seconds = 0.0
        args.settle_ms = 200
        args.timeout = min(args.timeout, 60.0)
        args.join_timeout = min(args.join_timeout, 60.0)
    elif args.sweep:
        args.clients = SWEEP_CLIENTS
        args.messages = [1]
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be above 0")
    return args


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    if args.mode == "steady":
        return [
            Scenario(clients=n, mode="steady", rate=args.rate, duration=args.duration)
            for n in args.clients
        ]
    return [Scenario(clients=n, messages=m) for n in args.clients for m in args.messages]


def main() -> int:
    args = parse_args()
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="chatroom-bench-") as tmp:
        workdir = Path(tmp)
        try:
            binary = build_loadgen()
            for scenario in scenarios(args):
                for name in args.servers:
                    if name == "naive" and scenario.deliveries > args.naive_max_deliveries:
                        reason = f"{scenario.deliveries:,} deliveries > --naive-max-deliveries"
                        results.append(RunResult(server=name, scenario=scenario, skipped=reason))
                        print(
                            f"skipping naive: {scenario.label}: {reason}",
                            file=sys.stderr,
                            flush=True,
                        )
                        continue
                    print(f"running {name}: {scenario.label}", file=sys.stderr, flush=True)
                    result = run_once(name, scenario, binary, workdir, args)
                    results.append(result)
                    print(result_row(result), file=sys.stderr, flush=True)
        except SetupError as error:
            print(f"\nFAILED: {error}", file=sys.stderr)
            if results:
                print(markdown_report(results))
            return 2
    print(markdown_report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    if args.plot:
        write_plot(results, args.plot)
    failed = [r for r in results if not r.ok and not r.skipped]
    for r in failed:
        print(
            f"\nFAILED ({r.verdict}): {r.server}, {r.scenario.label}: not every client "
            "received every message exactly once in one order.\n"
            f"loadgen result: {json.dumps(r.loadgen)}\n{r.failure}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
