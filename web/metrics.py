"""Prometheus metrics of one room, served at ``GET /metrics`` through ``prometheus_client``.

Each room has a :class:`Metrics` object with its own ``CollectorRegistry``,
so several rooms in one process (as in the tests) never share a counter.

Where each value is taken:

- counters move where their event happens: in the HTTP handlers, in a
  session actor's thread (rate-limited messages) or on the event loop when a
  fan-out batch is written (:meth:`Metrics.record_batch`), once per batch
  and never once per delivery;
- gauges that read another thread's state are sampled at scrape time: the
  token count by an ask to the auth actor, awaited before the output is
  generated, and the mailbox depths by :class:`MailboxCollector`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import pykka
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from chatroom.actors.auth import AuthActor
from chatroom.actors.base import Actor, mailbox_depth
from chatroom.actors.session import SessionActor
from chatroom.actors.store import MessageStoreActor
from chatroom.web.bridge import ActorTimeoutError
from chatroom.web.config import ConfigError

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TokenCounter = Callable[[], Awaitable[int]]

ACTOR_KINDS: dict[str, type[Actor]] = {
    "auth": AuthActor,
    "store": MessageStoreActor,
    "session": SessionActor,
}

SCRAPE_ASK_TIMEOUT = 1.0
"""Seconds a scrape waits for the auth actor's token count; Prometheus's default timeout is 10."""

LOGIN_FAILURE_REASONS = ("wrong_password", "rate_limited")
HISTORY_OUTCOMES = ("ok", "bad_request", "unauthorized", "unavailable", "error")

# Batches contain one message when the room is quiet and up to one mailbox's
# worth of posts in a burst (1000 at once in the burst tests).
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every metric of one room, in its own registry.

    Counters may be incremented from any thread: ``prometheus_client``
    guards each value with a lock.
    """

    def __init__(self, connected_sockets: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry

        self.connected_sockets = Gauge(
            "chatroom_connected_sockets", "Open websockets.", registry=registry
        )
        self.connected_sockets.set_function(connected_sockets)
        self.logged_in_tokens = Gauge(
            "chatroom_logged_in_tokens",
            "Tokens in the auth actor's table, expired ones not yet swept included. "
            "NaN when the auth actor did not answer during the scrape.",
            registry=registry,
        )

        self.messages_posted = Counter(
            "chatroom_messages_posted",
            "Chat messages posted, counted when their fan-out batch is written.",
            registry=registry,
        )
        self.deliveries = Counter(
            "chatroom_deliveries",
            "Messages handed to client sockets: messages per batch times recipients, "
            "replays on reconnect included.",
            registry=registry,
        )
        self.deliveries_dropped = Counter(
            "chatroom_deliveries_dropped",
            "Messages not sent to a client: still in its socket's write buffer when it was "
            "closed for being slow, or reaching its outbox after it began closing.",
            registry=registry,
        )
        self.slow_clients_closed = Counter(
            "chatroom_slow_clients_closed",
            "Clients closed with 1008 because their outbound queue was over its bound.",
            registry=registry,
        )
        self.login_failures = Counter(
            "chatroom_login_failures",
            "Rejected logins, by reason.",
            ["reason"],
            registry=registry,
        )
        self.rate_limited_messages = Counter(
            "chatroom_rate_limited_messages",
            "Messages rejected because their client posted faster than post_rate.",
            registry=registry,
        )
        self.history_requests = Counter(
            "chatroom_history_requests",
            "GET /history requests, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.fanout_batch_size = Histogram(
            "chatroom_fanout_batch_messages",
            "Chat messages per fan-out batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "chatroom_delivery_latency_seconds",
            "Seconds from the post of a batch's oldest message to the moment the event loop "
            "has written the batch to every recipient's socket; one observation per batch.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        registry.register(MailboxCollector())

        # Labelled series appear with 0 before their first event, so a rate() has a start.
        for reason in LOGIN_FAILURE_REASONS:
            self.login_failures.labels(reason)
        for outcome in HISTORY_OUTCOMES:
            self.history_requests.labels(outcome)

    def record_batch(self, recipients: int, message_count: int, posted_at: float | None) -> None:
        """Count one fan-out batch just written to ``recipients`` sockets, on the event loop.

        ``posted_at`` is the ``time.monotonic()`` at which the batch's oldest
        message was posted, or None for a batch that contains no new post (a
        replay for one newcomer, or presence events only).
        """
        if message_count:
            self.deliveries.inc(message_count * recipients)
        if posted_at is None:
            return
        self.messages_posted.inc(message_count)
        self.fanout_batch_size.observe(message_count)
        self.delivery_latency.observe(time.monotonic() - posted_at)

    def count_history_request(self, status: int) -> None:
        """Count a ``GET /history`` request by the HTTP status of its response."""
        self.history_requests.labels(history_outcome(status)).inc()


def history_outcome(status: int) -> str:
    """Name the outcome of a history request from its HTTP status."""
    if 200 <= status < 300:
        return "ok"
    if status in (401, 403):
        return "unauthorized"
    if 400 <= status < 500:
        return "bad_request"
    if status == 503:
        return "unavailable"
    return "error"


class MailboxCollector:
    """Samples, at scrape time, how many messages wait in the mailboxes of each actor kind.

    Reading a mailbox's length never waits on its actor, so the scrape never blocks.

    NOTE: pykka's ``ActorRegistry`` is process-wide, so when one process runs
    several rooms (as the tests do), every room reports the actors of all of them.
    """

    def collect(self) -> Iterable[Metric]:
        waiting = GaugeMetricFamily(
            "chatroom_actor_mailbox_messages",
            "Messages waiting in the mailboxes of all running actors of a kind.",
            labels=["actor"],
        )
        fullest = GaugeMetricFamily(
            "chatroom_actor_mailbox_max_messages",
            "Messages waiting in the fullest mailbox of a kind.",
            labels=["actor"],
        )
        running = GaugeMetricFamily(
            "chatroom_actors", "Running actors of a kind.", labels=["actor"]
        )
        for kind, actor_class in ACTOR_KINDS.items():
            depths = [
                mailbox_depth(ref.actor_inbox)
                for ref in pykka.ActorRegistry.get_by_class(actor_class)
            ]
            waiting.add_metric([kind], sum(depths))
            fullest.add_metric([kind], max(depths, default=0))
            running.add_metric([kind], len(depths))
        return [waiting, fullest, running]


def scrape_handler(metrics: Metrics, count_tokens: TokenCounter) -> Handler:
    """Build the ``GET /metrics`` handler.

    It awaits the auth actor's token count first, without blocking the loop,
    then lets ``prometheus_client`` generate the output, which negotiates the
    Prometheus text or OpenMetrics format from the Accept header.
    """
    expose = make_aiohttp_handler(metrics.registry, disable_compression=True)

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            metrics.logged_in_tokens.set(await count_tokens())
        except (ActorTimeoutError, pykka.ActorDeadError) as exc:
            logger.warning(
                f"Metrics scrape: the auth actor's token count failed ({exc!r}); "
                "chatroom_logged_in_tokens is NaN"
            )
            metrics.logged_in_tokens.set(math.nan)
        return await expose(request)

    return handle


@contextlib.asynccontextmanager
async def loopback_listener(handler: Handler, port: int) -> AsyncIterator[str]:
    """Serve ``handler`` at ``/metrics`` on 127.0.0.1:``port`` and yield its URL.

    The listener has no access log, so a scrape every few seconds does not
    flood the log. Raises :class:`ConfigError` when the port is taken.
    """
    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen for metrics on 127.0.0.1:{port}: {exc.strerror}; "
            "set metrics_port to a free port"
        ) from exc

    bound_port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{bound_port}/metrics"
    logger.info(f"Metrics at {url}")
    try:
        yield url
    finally:
        await runner.cleanup()
