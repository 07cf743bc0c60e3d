"""Calls to other services give up when the call they serve must be answered."""

from __future__ import annotations

import time

from hishamos_kit import outbound


def test_an_outbound_call_gets_what_is_left_of_the_inbound_deadline_and_at_most_five_seconds() -> None:
    assert outbound.timeout() == outbound.MOST_SECONDS  # a caller without a deadline
    token = outbound.inbound_deadline.set(time.monotonic() + 1.5)
    try:
        assert 1.0 < outbound.timeout() <= 1.5
        outbound.inbound_deadline.set(time.monotonic() + 60)
        assert outbound.timeout() == outbound.MOST_SECONDS
        outbound.inbound_deadline.set(time.monotonic() - 1)  # already late: fail at once, never wait
        assert 0 < outbound.timeout() < 0.01
    finally:
        outbound.inbound_deadline.reset(token)
