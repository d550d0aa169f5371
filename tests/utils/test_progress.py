"""The plain-text progress lines (what a log file gets instead of a live bar)."""

import re

import pytest

from synthloop.utils.progress import PeriodicLines, announce, format_duration, format_rate


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_with_rate_and_eta():
    clock, lines = FakeClock(), []
    show = PeriodicLines(lines.append, interval=10.0, clock=clock)
    show("baseline training", 0, 400)
    for step in range(1, 400):  # 4 steps per second for 100 s
        clock.now += 0.25
        show("baseline training", step, 400)
    # a line at 10 s, 20 s, ..., 90 s: one per interval, not one per call
    assert len(lines) == 9, lines
    first = lines[0]
    assert first == "baseline training: 40/400 (10%), 4.00/s, elapsed 10 s, eta 1 min 30 s"
    last = lines[-1]
    assert last.startswith("baseline training: 360/400 (90%), 4.00/s, elapsed 1 min 30 s, eta 10 s")


def test_a_finished_task_and_a_message_print_at_once():
    clock, lines = FakeClock(), []
    show = PeriodicLines(lines.append, interval=3600.0, clock=clock)
    announce(show, "building the cache in /tmp/x")
    assert lines == ["building the cache in /tmp/x"]
    show("paste", 0, 50)
    clock.now += 5.0
    show("paste", 50, 50)
    show("paste", 50, 50)  # a repeated final call does not print again
    assert lines[1:] == ["paste: 50/50 (100%), 10.0/s, elapsed 5 s, done"]


def test_units_a_resumed_count_and_a_task_that_starts_again():
    clock, lines = FakeClock(), []
    show = PeriodicLines(lines.append, interval=1.0, clock=clock)
    show.units["paste"] = "img"
    show("paste", 300, 1000)  # resumed: 300 images were already there, the rate counts only new ones
    clock.now += 2.0
    show("paste", 500, 1000)
    assert lines == ["paste: 500/1000 (50%), 100 img/s, elapsed 2 s, eta 5 s"]
    clock.now += 1.0
    show("paste", 10, 1000)  # a new run of the same task: its clock restarts
    clock.now += 1.0
    show("paste", 20, 1000)
    assert lines[-1] == "paste: 20/1000 (2%), 10.0 img/s, elapsed 1 s, eta 1 min 38 s"


def test_no_rate_before_progress():
    clock, lines = FakeClock(), []
    show = PeriodicLines(lines.append, interval=0.0, clock=clock)
    show("cycle 1: synthesizer", 0, 60)
    assert re.fullmatch(r"cycle 1: synthesizer: 0/60 \(0%\), --/s, elapsed 0 s, eta --", lines[0])


def test_announce_without_a_callback_and_bad_interval():
    announce(None, "nobody listens")  # no error
    with pytest.raises(ValueError, match="interval"):
        PeriodicLines(print, interval=-1)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0 s"), (59.6, "1 min 00 s"), (125, "2 min 05 s"), (3725, "1 h 02 min")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("rate", "unit", "text"), [(1234.4, "img", "1,234 img/s"), (12.34, "", "12.3/s"), (0.321, "", "0.32/s")])
def test_format_rate(rate, unit, text):
    assert format_rate(rate, unit) == text
