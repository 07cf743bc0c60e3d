"""The stop signals of the local stack: Ctrl-C (SIGINT), SIGTERM, and SIGHUP (its terminal closed, ssh dropped)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """A stop signal, raised in the main thread wherever it is (as KeyboardInterrupt is), so that start-up stops
    at once rather than after it finishes. A BaseException: no `except Exception` may swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# The stop signal received, if any: Python drops an exception raised while it runs a weakref callback or a
# __del__ (a SIGTERM during an import lost this way let `make migrate` finish), so start-up also asks.
_received: list[int] = []


def check() -> None:
    """Raise Stopped if a stop signal came, even one whose exception was lost."""
    if _received:
        raise Stopped(_received[0])


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A handler that does nothing, rather than SIG_IGN, which the children would inherit."""


def ignore_stop() -> None:
    """From now on stop signals change nothing: the stack is stopping already."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _ignore)


def raise_on_stop() -> None:
    """Raise Stopped on the first stop signal and ignore the ones after it: stopping must not be cut short.
    A signal ignored already stays so: under `nohup`, a closed terminal is not meant to stop the stack."""

    def handler(signum: int, frame: FrameType | None) -> None:
        ignore_stop()
        _received.append(signum)
        raise Stopped(signum)

    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Stop signals that arrive in the block are handled after it: cut short, it would leave something behind
    (a child started but not yet recorded, a cluster half initialised, a server half started)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread handles signals
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _: received.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if received:
            signal.raise_signal(received[0])
