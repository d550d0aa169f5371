"""``synthloop improve``: make a detector better with synthetic data, by the feedback loop that
measured best (issue 12: "whichever of TERSE / imitation / policy is best becomes the default of
``synthloop terse``'s successor command").

The config is a ``synthloop terse`` job config or a ``synthloop imitate`` job config with one more
top-level key, ``method``:

- ``terse``: the TERSE scene loop (:mod:`synthloop.jobs.terse_detection`; ``eval`` sets, ``loop``
  = :class:`~synthloop.loops.terse_detection.SceneTerseConfig`),
- ``imitate``: imitation training (:mod:`synthloop.jobs.imitate`; ``val`` / ``test`` splits,
  ``loop`` = :class:`~synthloop.loops.imitation.ImitationConfig`).

Without ``method`` the job runs :data:`DEFAULT_METHOD`, the method with the best 3-seed shifted-test
AP80 among the learned feedback loops in ``benchmarks/results/detection_methods.json``
(:data:`DEFAULT_EVIDENCE` says what was measured). The learned generator policy
(:mod:`synthloop.loops.policy`) is a benchmark row, not a job (yet): it is not a choice here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthloop.config import load_yaml, parse_override
from synthloop.errors import ConfigError

METHODS = ("terse", "imitate")
DEFAULT_METHOD = "imitate"
DEFAULT_EVIDENCE = (
    "benchmarks/results/detection_methods.json (3 seeds, 250 real scenes, commit 1cd05f9), AP80 mean in-distribution / mild "
    "shifted: imitation 41.0 / 18.1, TERSE with every plausibility option 39.7 / 18.0, TERSE as in the paper 38.9 / 16.4, the "
    "baseline 38.3 / 17.4 (the learned policy, not a method here, 41.8 / 18.2); every difference is within the pooled std (~3-4)"
)
"""Why :data:`DEFAULT_METHOD`: the measured rows it was chosen on."""


@dataclass
class ImproveConfig:
    """The method and its job's validated config."""

    method: str
    job: Any  # TerseDetectionJobConfig | ImitateJobConfig


def split_method(data: dict[str, Any], overrides: Sequence[str], source: str) -> tuple[str, dict[str, Any], list[str]]:
    """``(method, data without it, overrides without it)``; ``method=...`` on the command line wins
    over the file's. Raises :class:`ConfigError` naming ``source`` and ``method`` for an unknown one."""
    data = dict(data)
    method, where = data.pop("method", DEFAULT_METHOD), source
    rest = []
    for item in overrides:
        key, value = parse_override(item)
        if key == ["method"]:
            method, where = value, "the command line"
        else:
            rest.append(item)
    if method not in METHODS:
        raise ConfigError(f"{where}: method: {method!r} is not one of {', '.join(METHODS)}")
    return str(method), data, rest


def load_improve_config(path: str | Path, overrides: Sequence[str] | None = None) -> ImproveConfig:
    """Read ``path``, take ``method`` out and validate the rest as that method's job config
    (errors name the file and the key, as the method's own command does)."""
    method, data, rest = split_method(load_yaml(path), list(overrides or []), str(path))
    if method == "terse":
        from synthloop.jobs.terse_detection_config import load_job_config

        return ImproveConfig(method, load_job_config(path, rest, data=data))
    from synthloop.jobs.imitate_config import load_imitate_config

    return ImproveConfig(method, load_imitate_config(path, rest, data=data))


def default_out_dir(config_file: str | Path) -> Path:
    """``runs/improve/<config file stem>``."""
    return Path("runs") / "improve" / Path(config_file).stem


def run_improve_job(config: ImproveConfig, out_dir: str | Path, *, resume: bool = False, **kwargs: Any) -> Any:
    """Run the method's job into ``out_dir`` (``kwargs``: ``progress``, ``device``, ``config_file``,
    ``argv``); returns that job's result. The run folder is the method's own (its
    ``config.resolved.yaml`` says which method ran; a resume with the other method is refused as a
    changed config)."""
    if config.method == "terse":
        from synthloop.jobs.terse_detection import run_terse_detection_job

        return run_terse_detection_job(config.job, out_dir, resume=resume, **kwargs)
    from synthloop.jobs.imitate import run_imitate_job

    return run_imitate_job(config.job, out_dir, resume=resume, **kwargs)


__all__ = ["DEFAULT_METHOD", "METHODS", "ImproveConfig", "default_out_dir", "load_improve_config", "run_improve_job", "split_method"]
