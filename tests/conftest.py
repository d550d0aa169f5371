import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    # tests run under xdist with 2 workers on 2 cores; keep torch from oversubscribing
    torch.set_num_threads(1)
    yield


@pytest.fixture
def gen():
    g = torch.Generator()
    g.manual_seed(0)
    return g
