from collections import Counter

import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from synthloop.errors import InputError
from synthloop.loops.mixing import MixedBatchSampler, parse_ratio


def split(batch, n_real):
    return [i for i in batch if i < n_real], [i for i in batch if i >= n_real]


def test_every_batch_has_the_exact_counts():
    s = MixedBatchSampler(100, 1000, 64, "1:7", seed=0)
    assert (s.real_per_batch, s.synthetic_per_batch) == (8, 56)
    batches = list(s)
    assert len(batches) == len(s) == 13  # ceil(100 / 8): the real set defines the epoch
    for b in batches:
        real, syn = split(b, 100)
        assert len(b) == 64 and len(real) == 8 and len(syn) == 56
        assert b[:8] == real  # real first
        assert all(100 <= i < 1100 for i in syn)
    s2 = MixedBatchSampler(10, 10, 6, (1, 2), seed=0)
    assert all(len(split(b, 10)[0]) == 2 for b in s2)


def test_synthetic_share_cap():
    s = MixedBatchSampler(100, 1000, 64, "1:7", max_synthetic_share=0.5, seed=0)
    assert (s.real_per_batch, s.synthetic_per_batch) == (32, 32) and s.synthetic_share <= 0.5
    for b in s:
        real, syn = split(b, 100)
        assert len(real) == 32 and len(syn) == 32
    s = MixedBatchSampler(100, 1000, 64, "1:7", max_synthetic_share=0.3, seed=0)
    assert s.synthetic_per_batch == 19 and s.synthetic_share <= 0.3
    assert MixedBatchSampler(100, 1000, 64, "1:1", max_synthetic_share=0.9).synthetic_per_batch == 32  # cap not binding


def test_every_real_sample_once_per_epoch():
    s = MixedBatchSampler(96, 50, 16, "1:3", seed=1)  # 96 real, 4 per batch: 24 full batches
    real = [i for b in s for i in split(b, 96)[0]]
    assert sorted(real) == list(range(96))
    # synthetic draws go through the whole pool before repeating
    syn = [i for b in s for i in split(b, 96)[1]]
    assert sorted(syn[:50]) == list(range(96, 146))


def test_last_batch_is_topped_up_or_dropped():
    s = MixedBatchSampler(10, 40, 8, "1:1", seed=0)  # 4 real per batch: 2.5 batches
    batches = list(s)
    assert len(batches) == 3 and all(len(split(b, 10)[0]) == 4 for b in batches)
    counts = Counter(i for b in batches for i in split(b, 10)[0])
    assert set(counts) == set(range(10)) and sum(counts.values()) == 12 and max(counts.values()) == 2
    d = MixedBatchSampler(10, 40, 8, "1:1", seed=0, drop_last=True)
    real = [i for b in d for i in split(b, 10)[0]]
    assert len(d) == 2 and len(real) == 8 == len(set(real))
    tiny = MixedBatchSampler(3, 40, 16, "1:1", seed=0)  # fewer real samples than one batch needs
    (only,) = list(tiny)
    assert len(split(only, 3)[0]) == 8 and set(split(only, 3)[0]) == {0, 1, 2}


def test_deterministic_by_seed_and_reshuffled_each_epoch():
    a = MixedBatchSampler(50, 200, 10, "1:4", seed=7)
    b = MixedBatchSampler(50, 200, 10, "1:4", seed=7)
    e0, e1 = list(a), list(a)
    assert e0 == list(b) and e1 == list(b)
    assert e0 != e1  # a new order every epoch
    a.set_epoch(0)
    assert list(a) == e0
    assert a.batches(1) == e1 and a.epoch == 1
    assert list(MixedBatchSampler(50, 200, 10, "1:4", seed=8)) != e0
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert list(MixedBatchSampler(50, 200, 10, "1:4", generator=g1)) == list(MixedBatchSampler(50, 200, 10, "1:4", generator=g2))


def test_explicit_indices_and_from_datasets():
    s = MixedBatchSampler([5, 6, 7, 8], [100, 101, 102], 4, "1:1", seed=0)
    for b in s:
        assert set(b[:2]) <= {5, 6, 7, 8} and set(b[2:]) <= {100, 101, 102}
    real, syn = TensorDataset(torch.zeros(12)), TensorDataset(torch.ones(30))
    s = MixedBatchSampler.from_datasets(real, syn, 8, "1:3", seed=0)
    assert len(s) == 6 and all(max(b[:2]) < 12 <= min(b[2:]) for b in s)


def test_works_with_dataloader_workers():
    real = TensorDataset(torch.arange(16), torch.zeros(16, dtype=torch.long))
    syn = TensorDataset(torch.arange(100, 164), torch.ones(64, dtype=torch.long))
    sampler = MixedBatchSampler.from_datasets(real, syn, 8, "1:3", seed=0)
    loader = DataLoader(ConcatDataset([real, syn]), batch_sampler=sampler, num_workers=2)
    seen = []
    for values, is_syn in loader:
        assert is_syn.tolist() == [0, 0] + [1] * 6
        seen += values[:2].tolist()
    assert sorted(seen) == list(range(16))
    sampler.set_epoch(0)
    first = next(iter(loader))[0].tolist()
    assert first == [i if i < 16 else i + 84 for i in sampler.batches(0)[0]]


@pytest.mark.parametrize(
    "ratio, message",
    [("1:0", "must be positive"), ("0:3", "must be positive"), ("a:b", "whole numbers"), ("-1:3", "whole numbers"), ("1.5:2", "whole numbers"),
     ((1, -2), "must be positive"), ((1, 2.5), "whole numbers"), ("1:2:3", "whole numbers"), (7, "pair")],
)  # fmt: skip
def test_bad_ratios_are_clear_errors(ratio, message):
    with pytest.raises(InputError, match=message):
        parse_ratio(ratio)
    with pytest.raises(InputError, match="ratio"):
        MixedBatchSampler(10, 10, 8, ratio)


def test_bad_sizes_are_clear_errors():
    with pytest.raises(InputError, match=r"batch_size 100 cannot be split exactly 1:7; use a multiple of 8 \(e.g. 96 or 104\)"):
        MixedBatchSampler(10, 10, 100, "1:7")
    with pytest.raises(InputError, match="batch_size"):
        MixedBatchSampler(10, 10, 0, "1:1")
    with pytest.raises(InputError, match="max_synthetic_share"):
        MixedBatchSampler(10, 10, 8, "1:1", max_synthetic_share=1.5)
    with pytest.raises(InputError, match="leaves no synthetic"):
        MixedBatchSampler(10, 10, 8, "1:1", max_synthetic_share=0.1)
    with pytest.raises(InputError, match="real"):
        MixedBatchSampler(0, 10, 8, "1:1")
    with pytest.raises(InputError, match="synthetic"):
        MixedBatchSampler(10, [], 8, "1:1")
