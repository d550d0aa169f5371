import pytest
from pydantic import Field

from synthloop.config import Config, apply_overrides, load_config
from synthloop.errors import ConfigError
from synthloop.utils.atomic import atomic_open, atomic_write_json
from synthloop.utils.seeding import derive_seed, make_generator


class Inner(Config):
    lr: float = 1e-3
    steps: int = Field(10, ge=1)


class Outer(Config):
    name: str = "x"
    inner: Inner = Field(default_factory=Inner)
    sizes: list[int] = Field(default_factory=lambda: [1, 2])


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: run\ninner:\n  lr: 0.1\n")
    cfg = load_config(Outer, p, ["inner.steps=5", "sizes=[3, 4]"])
    assert cfg.name == "run" and cfg.inner.lr == 0.1 and cfg.inner.steps == 5 and cfg.sizes == [3, 4]


def test_unknown_key_lists_valid_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("inner:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p)
    msg = str(e.value)
    assert str(p) in msg and "inner.lrr" in msg and "lr, steps" in msg


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ConfigError, match="inner.steps"):
        load_config(Outer, None, ["inner.steps=0"])
    with pytest.raises(ConfigError, match="file not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Outer, bad)
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    atomic_write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{")


def test_seeds_are_stable_and_distinct():
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert len({derive_seed(0, i) for i in range(1000)}) == 1000
    a = make_generator(3, "w").initial_seed()
    assert a == make_generator(3, "w").initial_seed() != make_generator(3, "v").initial_seed()


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os

    target = tmp_path / "p.txt"
    atomic_write_json(target, {})
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_an_override_that_fails_validation_names_the_command_line(tmp_path):
    from synthloop.jobs.paste_config import load_paste_config

    f = tmp_path / "job.yaml"
    f.write_text("num_images: 3\n")
    with pytest.raises(ConfigError) as e:
        load_paste_config(f, ["num_images=-2"])
    assert str(e.value).startswith("<command line>: field num_images") and "job.yaml" not in str(e.value)
    f.write_text("num_images: -2\n")
    with pytest.raises(ConfigError, match=r"job\.yaml: field num_images"):
        load_paste_config(f)
    with pytest.raises(ConfigError, match=r"<command line>: field scene\.canvass: unknown key"):
        load_paste_config(f, ["num_images=2", "scene.canvass=[4,4]"])
