"""Fixtures shared by the actor tests and the web tests."""

from __future__ import annotations

from collections.abc import Iterator

import pykka
import pytest

from tests.helpers import FakeOutbox


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    """Stop every actor a test left running, so no thread outlives its test."""
    yield
    # Stop them all at once rather than one by one, so the store handles the
    # sessions' unsubscribes in a few batches instead of one fan-out each.
    futures = [ref.stop(block=False) for ref in pykka.ActorRegistry.get_all()]
    pykka.get_all(futures, timeout=30)


@pytest.fixture
def fake_outbox() -> FakeOutbox:
    return FakeOutbox()
