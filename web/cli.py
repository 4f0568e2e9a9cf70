"""The ``chatroom`` command line: ``chatroom serve`` starts one room.

``chatroom export`` and ``chatroom import`` copy a room's history out of and
into a data directory as JSON Lines.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pykka
from aiohttp import web

from chatroom.actors.journal import JournalError
from chatroom.web import backup
from chatroom.web.app import create_app
from chatroom.web.config import ConfigError, Settings
from chatroom.web.logs import AccessLogger, setup_logging

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("config.toml")


def package_version() -> str:
    try:
        return importlib.metadata.version("chatroom")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatroom",
        description="A password-protected chat room: Pykka actors behind an aiohttp server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="start a room",
        description="Start a room and serve its browser client, HTTP API and websocket.",
    )
    serve.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port; 0 picks a free port (default: 8080)")
    serve.add_argument(
        "--password",
        help="the room password; prefer CHATROOM_PASSWORD or --password-file, "
        "which keep it out of the process list",
    )
    serve.add_argument(
        "--password-file", type=Path, metavar="PATH", help="read the room password from this file"
    )
    serve.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="TOML file of settings (default: ./config.toml when it exists)",
    )
    add_data_dir_options(serve, with_config=False)
    serve.add_argument(
        "--memory",
        action="store_true",
        help="keep the history in memory only, without a journal; it is lost when the room stops",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="lowest level of log records to print (default: INFO)",
    )
    serve.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="log line format on standard error (default: text)",
    )
    serve.add_argument(
        "--trace-actors",
        action="store_true",
        help="log every message each actor receives (actor, message type, mailbox depth) "
        "at DEBUG on the chatroom.trace logger, whatever --log-level is",
    )

    export = commands.add_parser(
        "export",
        help="write the history as JSON Lines to standard output",
        description="Write every message of a data directory's journal to standard output, "
        "one JSON object per line, oldest first. A server may keep running on the directory.",
    )
    add_data_dir_options(export)
    restore = commands.add_parser(
        "import",
        help="read a JSON Lines history from standard input into an empty data directory",
        description="Create a data directory's journal from JSON Lines on standard input, "
        "as written by 'chatroom export'. The directory must hold no messages yet, and no "
        "server may run on it. Nothing is written unless every line is valid.",
    )
    add_data_dir_options(restore)
    return parser


def add_data_dir_options(parser: argparse.ArgumentParser, *, with_config: bool = True) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="directory of the room's journal (default: data_dir from the settings, ./data)",
    )
    if with_config:
        parser.add_argument(
            "--config",
            type=Path,
            metavar="PATH",
            help="TOML file of settings, read for data_dir (default: ./config.toml when it exists)",
        )


def read_password(args: argparse.Namespace) -> str:
    """Return the password from --password, --password-file or CHATROOM_PASSWORD, in that order."""
    if args.password:
        return str(args.password)
    if args.password_file is not None:
        try:
            password: str = args.password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"cannot read password file {args.password_file}: {exc.strerror}"
            ) from exc
        if not password:
            raise ConfigError(f"password file {args.password_file} is empty")
        return password
    password = os.environ.get("CHATROOM_PASSWORD", "")
    if password:
        return password
    raise ConfigError(
        "a password is required: use --password-file PATH, CHATROOM_PASSWORD or --password"
    )


def load_settings(args: argparse.Namespace) -> tuple[Settings, Path | None]:
    config_path = args.config or os.environ.get("CHATROOM_CONFIG")
    if config_path is None and DEFAULT_CONFIG.is_file():
        config_path = DEFAULT_CONFIG
    path = Path(config_path) if config_path is not None else None
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "data_dir": str(args.data_dir) if args.data_dir is not None else None,
    }
    return Settings.load(path, os.environ, overrides), path


async def serve(settings: Settings, password: str, data_dir: Path | None = None) -> None:
    """Run the room until SIGINT or SIGTERM, then close every socket and stop the actors.

    With ``data_dir``, the history is journaled there; without it, it stays in memory.
    """
    app = create_app(settings, password, data_dir=data_dir)
    runner = web.AppRunner(
        app,
        access_log_class=AccessLogger,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
        ) from exc

    host, port = runner.addresses[0][:2]
    shown_host = f"[{host}]" if ":" in host else host
    history = f"data directory {data_dir}" if data_dir is not None else "history in memory only"
    logger.info(f"Room open at http://{shown_host}:{port}/ ({history}, event loop: {loop_name()})")
    tune_garbage_collector()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    logger.info("Stopping the room")
    await runner.cleanup()


def tune_garbage_collector() -> None:
    """Make the cyclic garbage collector run rarely, so its pauses do not delay deliveries.

    Every message allocates futures, locks and dicts, so with the default
    thresholds (700, 10, 10) full collections came often, and each walked the
    objects of every connected client. Measured with benchmarks/run.py on 2
    cores, 1000 clients at 50 messages a second: p99 delivery latency 17.5 ms
    with a max of 105 ms by default, 12.9 ms with a max of 16 ms with these
    thresholds. Objects alive at start are frozen out of the collections.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("export", "import"):
        return transfer_history(args)

    setup_logging(args.log_level, args.log_format, trace_actors=args.trace_actors)
    try:
        settings, config_path = load_settings(args)
        password = read_password(args)
    except ConfigError as exc:
        print(f"chatroom: error: {exc}", file=sys.stderr)
        return 2
    logger.info(f"Settings from {config_path or 'built-in defaults'}")

    data_dir = None if args.memory else Path(settings.data_dir)
    install_uvloop()
    try:
        asyncio.run(serve(settings, password, data_dir))
    except (ConfigError, JournalError) as exc:
        print(f"chatroom: error: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_leftover_actors()
    logger.info("Room stopped")
    return 0


def transfer_history(args: argparse.Namespace) -> int:
    """Run ``chatroom export`` or ``chatroom import``; return the exit status."""
    setup_logging("WARNING", "text")
    try:
        settings, _ = load_settings(args)
        data_dir = Path(settings.data_dir)
        if args.command == "export":
            count = backup.export_history(data_dir, sys.stdout.buffer)
            print(f"chatroom: exported {count} messages from {data_dir}", file=sys.stderr)
        else:
            count = backup.import_history(data_dir, sys.stdin.buffer)
            print(f"chatroom: imported {count} messages into {data_dir}", file=sys.stderr)
    except (ConfigError, JournalError, backup.InvalidHistoryError) as exc:
        print(f"chatroom: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of the export stopped early, as `chatroom export | head` does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def stop_leftover_actors() -> None:
    """Stop actors that outlived the server: each one is a bug, so log it."""
    leftovers = pykka.ActorRegistry.get_all()
    if leftovers:
        logger.warning(f"Stopping {len(leftovers)} actors left running: {leftovers[:5]}")
        pykka.ActorRegistry.stop_all(timeout=5)
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            logger.warning(f"Thread {thread.name} is still running at exit")


if __name__ == "__main__":
    sys.exit(main())
