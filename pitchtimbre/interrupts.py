"""Ctrl-C while a model trains: the first press asks the training loop to stop at its next
logged step, where everything it saves is of one step; a second press stops at once.

Kept out of the trainer's code that keys the model cache
(:data:`~pitchtimbre.training.TRAINER_MODULES`): how a stop is asked for changes no model.

Chapter: 05_training
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_announce = True  # whether this process says what a Ctrl-C does (a worker's caller says it)


def leave_announcing_to_caller() -> None:
    """In a worker process of :mod:`pitchtimbre.parallel`: the caller tells the user once
    what Ctrl-C does, so the worker's trainer does not say it again.

    Chapter: 05_training
    """
    global _announce
    _announce = False


def restore_handler(signum: int, previous: Any) -> None:
    """Put back the handler ``signal.signal`` returned for ``signum``; ``None`` (a handler
    installed outside Python) becomes Python's default for it.

    Chapter: 05_training
    """
    if previous is None:
        previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    signal.signal(signum, previous)


def defer_ctrl_c(enabled: bool) -> tuple[dict[str, bool], Callable[[], None]]:
    """While a model trains, the first Ctrl-C (SIGINT) only asks the loop to stop at its next
    logged step, where the weights, the optimiser and every generator are those of one step;
    a second Ctrl-C stops at once (the last periodic checkpoint stays). Returns the flag and
    the function that puts the previous handler back. Off when not ``enabled`` (under
    torchrun), outside the main thread (where Python cannot install a handler) and where
    SIGINT is ignored (a background job still ignores it).

    Chapter: 05_training
    """
    asked = {"stop": False}
    if not enabled or threading.current_thread() is not threading.main_thread():
        return asked, lambda: None
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return asked, lambda: None

    def handler(signum: int, frame: object) -> None:
        if asked["stop"]:
            raise KeyboardInterrupt
        asked["stop"] = True
        if _announce:
            log.warning("Ctrl-C: stopping at the next logged step; press it again to stop at once")

    previous = signal.signal(signal.SIGINT, handler)
    return asked, lambda: restore_handler(signal.SIGINT, previous)
