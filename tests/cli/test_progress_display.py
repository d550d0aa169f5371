"""The command line's one progress display: a live bar on a terminal, plain periodic lines with
rate and ETA otherwise (a log file), and the built-in digit scenes announcing their cache build."""

import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.cli._app import PROGRESS_INTERVAL_ENV, ProgressDisplay, progress_interval
from synthloop.data.mnist import wheels_dir
from synthloop.errors import InputError

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# a plain progress line: task, done/total, percentage, rate, elapsed, ETA
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # a terminal's control codes
LINE = re.compile(r"^paste: (\d+)/40 \((\d+)%\), [\d.,]+ img/s, elapsed \d+ s, eta \d+ s$", re.MULTILINE)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_not_a_terminal_prints_a_line_per_interval():
    buf, clock = io.StringIO(), FakeClock()
    with ProgressDisplay(console=Console(file=buf, force_terminal=False, width=200), interval=5.0, clock=clock) as show:
        assert not show.live
        count = show.counter("render", "img")
        count(0, 0)  # a job with nothing to do says nothing
        for done in range(1, 31):  # 1 image/s
            clock.now += 1.0
            count(done, 30)
        show("digit scenes: train", 0, 4)
    lines = buf.getvalue().splitlines()
    # the rate and the elapsed time count from the task's first report (image 1 at t = 1 s)
    assert lines[0] == "render: 5/30 (17%), 1.00 img/s, elapsed 4 s, eta 25 s"
    assert [int(line.split(":")[1].split("/")[0]) for line in lines] == [5, 10, 15, 20, 25, 30]
    assert lines[-1] == "render: 30/30 (100%), 1.00 img/s, elapsed 29 s, done"


def test_terminal_shows_a_live_bar_and_a_line_per_finished_task():
    buf = io.StringIO()
    with ProgressDisplay(console=Console(file=buf, force_terminal=True, width=160), interval=0.0) as show:
        assert show.live
        show("building the digits-in-scenes data set in /somewhere", 0, 0)
        show("baseline training", 3, 10)
        show("baseline training", 10, 10)
    text = ANSI.sub("", buf.getvalue()).replace("\r", "\n")
    assert "building the digits-in-scenes data set in /somewhere" in text
    assert "baseline training: 10/10 (100%)" in text and "done" in text
    assert "3/10" not in text.split("done")[-1]  # the finished bar is gone, its line stays


def test_terminal_keeps_where_an_interrupted_task_stopped():
    buf = io.StringIO()
    with pytest.raises(KeyboardInterrupt), ProgressDisplay(console=Console(file=buf, force_terminal=True, width=160)) as show:
        show("cycle 1: synthesizer", 0, 60)
        show("cycle 1: synthesizer", 12, 60)
        raise KeyboardInterrupt
    text = ANSI.sub("", buf.getvalue()).replace("\r", "\n")
    assert re.search(r"^cycle 1: synthesizer: 12/60 \(20%\), [\d.,]+/s, elapsed \d+ s, eta ", text, flags=re.MULTILINE), text


def test_quiet_shows_nothing():
    buf = io.StringIO()
    with ProgressDisplay(enabled=False, console=Console(file=buf, force_terminal=False), interval=0.0) as show:
        show("a message", 0, 0)
        show("task", 1, 2)
        show("task", 2, 2)
    assert buf.getvalue() == ""


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(PROGRESS_INTERVAL_ENV, raising=False)
    assert progress_interval() == 10.0
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "2.5")
    assert progress_interval() == 2.5
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "soon")
    with pytest.raises(InputError, match=PROGRESS_INTERVAL_ENV):
        progress_interval()


def test_paste_into_a_log_prints_periodic_progress_lines(tmp_path, monkeypatch):
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")  # a line at every update: the test need not wait 10 s
    tiny = ["num_images=40", "scene.canvas=[32,32]", "instances.limit=50", "backgrounds.sources=[gradient]"]
    r = runner.invoke(app, ["paste", str(EXAMPLES / "paste_builtin.yaml"), *tiny, "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    found = LINE.findall(r.output)
    assert len(found) >= 2, r.output  # several lines while it runs, not one bar at the end
    assert [int(d) for d, _ in found] == sorted(int(d) for d, _ in found)
    assert "paste: 40/40 (100%)" in r.output and "wrote 40 images" in r.output


def test_terse_announces_the_digit_scenes_cache_build(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "wheels").symlink_to(wheels_dir(), target_is_directory=True)  # MNIST from the shared cache
    monkeypatch.setenv("SYNTHLOOP_CACHE", str(cache))
    sizes = "{train: 4, val: 2, test: 1}"
    args = [
        "terse",
        str(EXAMPLES / "terse_detection" / "digits.yaml"),
        f"real.sizes={sizes}",
        f"eval.val.sizes={sizes}",
        "eval.shifted.limit=1",
        "foregrounds.digits=20",
    ]
    # a missing checkpoint stops the job right after its data are loaded (the cache build is what is tested)
    args += [f"model.checkpoint={tmp_path / 'missing.pt'}", "--out", str(tmp_path / "run")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "checkpoint not found" in r.output, r.output
    folder = cache / "digit_scenes" / "v1-seed0-4-2-1"
    text = " ".join(r.output.split())
    assert f"building the digits-in-scenes data set (7 images, first use only; minutes on a small CPU) in {folder}" in text
    for split, n in (("train", 4), ("val", 2), ("test", 1)):
        assert f"digit scenes: {split}: {n}/{n} (100%)" in text
    assert (folder / "train" / "annotations.json").is_file()

    again = runner.invoke(app, args)  # cached now: no announcement
    assert again.exit_code == 2 and "checkpoint not found" in again.output
    assert "building the digits-in-scenes" not in again.output and "digit scenes: train" not in again.output
