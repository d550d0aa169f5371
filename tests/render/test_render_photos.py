import pickle

import torch

from synthloop.render import PhotoSource


def test_photo_crops_follow_their_params_and_pickle_without_the_cache(photo_dir):
    src = PhotoSource([photo_dir], (0.2, 0.5))
    params = src.sample(3, (16, 24), torch.Generator().manual_seed(0))
    assert params == src.sample(3, (16, 24), torch.Generator().manual_seed(0))
    xs = torch.linspace(-1, 1, 24).view(1, 1, 24).expand(3, 16, 24)
    ys = torch.linspace(-1, 1, 16).view(1, 16, 1).expand(3, 16, 24)
    out = src.render(params, xs, ys)
    assert out.shape == (3, 3, 16, 24) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    chain = src.levels(params[0]["photo"])
    assert [tuple(c.shape[-2:]) for c in chain[:2]] == [(48, 64), (24, 32)]
    copy = pickle.loads(pickle.dumps(src))
    assert len(src._cache) > 0 and len(copy._cache) == 0
    assert torch.equal(copy.render(params, xs, ys), out)
