"""The README runs as written.

- Every ```python block is **executed**, each in its own empty namespace, in a fresh interpreter (a
  subprocess in an empty temporary folder), so a snippet that uses a name it never defines fails here.
- Every command in a ```bash block is **parsed**: ``make X`` must name a Makefile target, and a
  ``synthloop ...`` command must name a subcommand whose options and arguments click accepts (the
  same parser the console script uses, without running the command); every ``examples/...`` file
  it names must exist. Config files named ``my_*.yaml`` are placeholders for the reader's own.
- The cheap commands (:data:`EXECUTED`: ``paste``, ``vis``, ``replay``, ``convert``, ``render``) are
  also **executed**, in order, in a temporary folder that links ``examples/``, with overrides that
  make them small (:data:`SMALL`). The others (``terse`` on the digits, ``demo``/``make demo``,
  ``terse-train``, ``make test``/``bench*``) take minutes to hours and are only parsed; their
  jobs have their own tests (tests/cli, tests/jobs).

Also: every ``.PHONY`` target of the Makefile is named in the README (``make <target>``), and
``examples/render.yaml`` renders.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from synthloop.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"

EXECUTED = ("paste", "vis", "replay", "convert", "render")
"""Subcommands the test runs (each takes seconds with :data:`SMALL`)."""
SMALL = {
    "paste": ["num_images=4", "scene.canvas=[96,128]", "backgrounds.pool=2"],
    "render": ["count=24", "batch_size=8", "size=[16,16]", "supersample=1"],
}
"""Overrides appended to an executed command (a later ``key=value`` wins)."""
SYNTHLOOP = ("synthloop", ".venv/bin/synthloop")


def blocks(language: str) -> list[str]:
    """The contents of every fenced block of ``language`` in the README, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), flags=re.DOTALL | re.MULTILINE)


def commands() -> list[list[str]]:
    """Every command line of the README's bash blocks, split like a shell would (comments dropped)."""
    return [argv for block in blocks("bash") for line in block.splitlines() if (argv := shlex.split(line, comments=True))]


def make_targets() -> tuple[set[str], list[str]]:
    """``(all rule names, the .PHONY targets)`` of the Makefile."""
    text = MAKEFILE.read_text()
    rules = set(re.findall(r"^([A-Za-z0-9_.-]+):", text, flags=re.MULTILINE))
    phony = re.search(r"^\.PHONY:(.*)$", text, flags=re.MULTILINE)
    assert phony is not None, "the Makefile has no .PHONY line"
    return rules, phony.group(1).split()


def parse(argv: list[str]) -> tuple[str, Any]:
    """Parse a ``synthloop ...`` command line with the real CLI (typer's click), without running it."""
    assert argv[0] in SYNTHLOOP, argv
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    name = argv[1]
    assert name in commands, f"README names an unknown subcommand: {shlex.join(argv)}"
    try:
        ctx = commands[name].make_context(name, argv[2:])
    except Exception as e:  # noqa: BLE001 - the vendored click's UsageError / BadParameter
        pytest.fail(f"README command does not parse: {shlex.join(argv)}: {getattr(e, 'format_message', e.__str__)()}")
    return name, ctx


def test_the_readme_has_code_blocks():
    assert len(blocks("python")) >= 2 and len(commands()) >= 8


# runs each block in its own empty namespace, in one fresh interpreter (torch is imported once)
RUN_BLOCKS = """
import json, sys, traceback
for i, code in enumerate(json.load(sys.stdin)):
    try:
        exec(compile(code, f"README python block {i + 1}", "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        sys.exit(10 + i)
"""


def test_python_blocks_run(tmp_path):
    code = blocks("python")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-c", RUN_BLOCKS], input=json.dumps(code), check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    failed = code[r.returncode - 10] if 10 <= r.returncode < 10 + len(code) else "(none: the interpreter failed)"
    assert r.returncode == 0, f"README python block failed:\n{failed}\n{r.stderr[-3000:]}"


def test_every_command_parses_and_names_existing_examples():
    rules, _ = make_targets()
    seen = set()
    for argv in commands():
        if argv[0] == "make":
            assert set(argv[1:]) <= rules, f"README names a make target the Makefile lacks: {shlex.join(argv)}"
            continue
        name, ctx = parse(argv)
        seen.add(name)
        for arg in argv[2:]:
            if arg.endswith((".yaml", ".yml", ".json")) and "=" not in arg and not Path(arg).name.startswith("my_"):
                assert (ROOT / arg).is_file(), f"README command names a missing file {arg}: {shlex.join(argv)}"
        ctx.close()
    assert {"paste", "vis", "replay", "convert", "terse", "render"} <= seen


def test_cheap_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    runner = CliRunner()
    ran = []
    for argv in commands():
        if argv[0] not in SYNTHLOOP or argv[1] not in EXECUTED:
            continue
        args = argv[1:] + SMALL.get(argv[1], [])
        r = runner.invoke(app, args)
        assert r.exit_code == 0, f"README command failed: {shlex.join(argv)}\n{r.output}"
        ran.append(argv[1])
    assert set(ran) == set(EXECUTED), ran
    assert (tmp_path / "runs/paste/annotations.json").is_file() and (tmp_path / "runs/paste/sheet.png").is_file()
    assert (tmp_path / "runs/paste_yolo").is_dir()
    assert len(list((tmp_path / "runs/render/images").rglob("*.png"))) == 24


def test_every_make_target_is_in_the_readme():
    text = README.read_text()
    _, phony = make_targets()
    missing = [t for t in phony if not re.search(rf"`make {re.escape(t)}`", text)]
    assert not missing, f"make targets the README does not list: {missing}"


def test_render_example_config_runs(tmp_path):
    example = ROOT / "examples" / "render.yaml"
    out = tmp_path / "render"
    r = CliRunner().invoke(app, ["render", str(example), "--out", str(out), "count=20", "batch_size=10"])
    assert r.exit_code == 0, r.output
    run = json.loads((out / "run.json").read_text())
    assert run["count"] == 20 and len(run["classes"]) == 10
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 20 and {c["name"] for c in coco["categories"]} == set("0123456789")
    pngs = sorted((out / "images").rglob("*.png"))
    assert len(pngs) == 20
    from synthloop.data.images import load_image

    assert load_image(pngs[0]).shape == (32, 32, 3)  # the example's size and channels
