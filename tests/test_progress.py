"""Progress on a terminal redraws in place; in a log it writes plain lines now and then."""

from __future__ import annotations

import io

from deconvviz.progress import Progress


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_plain_line_every_few_seconds_and_no_carriage_return():
    clock, log = _Clock(), io.StringIO()
    with Progress(1000, "scan", stream=log, every=5.0, clock=clock) as bar:
        for _ in range(9):  # 100 images a second for 9 seconds
            clock.t += 1.0
            bar.update(100)
        clock.t += 1.0
        bar.update(100)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 2  # one at 5 s, one when done
    assert lines[0] == "scan [##########----------] 500/1000     100 img/s     5s left"
    assert lines[1] == "scan [####################] 1000/1000     100 img/s     0s left (10.0s)"


def test_a_terminal_gets_one_bar_redrawn_in_place():
    clock, tty = _Clock(), _Tty()
    with Progress(10, "decoding", stream=tty, clock=clock) as bar:
        for _ in range(10):
            clock.t += 0.5
            bar.update(1)
    text = tty.getvalue()
    assert text.count("\r") == 11 and text.endswith("0s left\n")
    assert "\n" not in text[:-1]


def test_disabled_progress_writes_nothing():
    log = io.StringIO()
    with Progress(10, "scan", stream=log, enabled=False) as bar:
        bar.update(10)
    assert log.getvalue() == ""


def test_a_delayed_bar_stays_silent_for_short_work_and_speaks_for_long_work():
    clock, log = _Clock(), io.StringIO()
    with Progress(10, "decoding", stream=log, clock=clock, delay=2.0) as bar:
        clock.t += 1.5
        bar.update(10)
    assert log.getvalue() == ""
    with Progress(10, "decoding", stream=log, clock=clock, delay=2.0, every=1.0) as bar:
        for _ in range(5):
            clock.t += 1.0
            bar.update(2)
    assert log.getvalue().splitlines() == [
        "decoding [########------------] 4/10       2 img/s     3s left",
        "decoding [############--------] 6/10       2 img/s     2s left",
        "decoding [################----] 8/10       2 img/s     1s left",
        "decoding [####################] 10/10       2 img/s     0s left (5.0s)",
    ]


def test_work_done_before_counts_towards_the_total_not_the_rate():
    clock, log = _Clock(), io.StringIO()
    with Progress(100, "scan", stream=log, clock=clock, initial=60) as bar:
        clock.t += 4.0
        bar.update(40)
    assert log.getvalue().splitlines() == [
        "scan [####################] 100/100      10 img/s     0s left (4.0s)"
    ]
