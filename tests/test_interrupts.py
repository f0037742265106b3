"""Ctrl-C while a model trains (chapter 05): the handler the training loop installs."""

from __future__ import annotations

import logging
import signal

import pytest

from pitchtimbre import interrupts


@pytest.fixture
def interactive():
    """SIGINT as in an interactive session (a background job, as CI runs, ignores it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _presses(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Ctrl-C")]


def test_a_first_ctrl_c_asks_and_says_so_a_second_stops(interactive, caplog, monkeypatch):
    monkeypatch.setattr(interrupts, "_announce", True)
    asked, restore = interrupts.defer_ctrl_c(enabled=True)
    with caplog.at_level(logging.WARNING, logger="pitchtimbre.interrupts"):
        signal.raise_signal(signal.SIGINT)
        assert asked["stop"]
        assert _presses(caplog) == [
            "Ctrl-C: stopping at the next logged step; press it again to stop at once"
        ]
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_worker_leaves_saying_it_to_its_caller(interactive, caplog, monkeypatch):
    monkeypatch.setattr(interrupts, "_announce", True)
    interrupts.leave_announcing_to_caller()
    asked, restore = interrupts.defer_ctrl_c(enabled=True)
    with caplog.at_level(logging.WARNING, logger="pitchtimbre.interrupts"):
        signal.raise_signal(signal.SIGINT)
    restore()
    assert asked["stop"] and _presses(caplog) == []


def test_off_when_disabled_or_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
    try:
        asked, restore = interrupts.defer_ctrl_c(enabled=True)
        signal.raise_signal(signal.SIGINT)
        assert not asked["stop"] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        restore()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        asked, restore = interrupts.defer_ctrl_c(enabled=False)  # under torchrun
        with pytest.raises(KeyboardInterrupt):  # Python's own handler: it stops at once
            signal.raise_signal(signal.SIGINT)
        assert not asked["stop"]
        restore()
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_handler_installed_outside_python_comes_back_as_pythons_default():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # not what restoring gives
    stop = signal.signal(signal.SIGTSTP, signal.SIG_IGN) if hasattr(signal, "SIGTSTP") else None
    try:
        interrupts.restore_handler(signal.SIGINT, None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if stop is not None:
            interrupts.restore_handler(signal.SIGTSTP, None)
            assert signal.getsignal(signal.SIGTSTP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)
        if stop is not None:
            signal.signal(signal.SIGTSTP, stop)


def test_off_outside_the_main_thread(interactive):
    """Training started from a thread (a notebook's background job): Python refuses a signal
    handler there, so none is installed and Ctrl-C keeps its own meaning."""
    import threading

    got = {}

    def train() -> None:
        try:
            got["asked"], got["restore"] = interrupts.defer_ctrl_c(enabled=True)
        except ValueError as exc:  # "signal only works in main thread"
            got["error"] = exc

    worker = threading.Thread(target=train)
    worker.start()
    worker.join()
    assert "error" not in got and got["asked"] == {"stop": False}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    got["restore"]()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
