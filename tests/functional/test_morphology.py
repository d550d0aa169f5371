import torch

from synthloop.functional.morphology import stroke_width


def test_stroke_width_thickens_and_thins():
    tiles = torch.zeros(4, 1, 32, 32)
    tiles[:, :, 8:24, 14:18] = 1.0
    out = stroke_width(tiles, torch.tensor([0.0, 1.0, 2.5, -1.0]))
    area = out.sum(dim=(1, 2, 3))
    assert torch.equal(out[0], tiles[0])
    assert float(area[0]) < float(area[1]) < float(area[2]) and float(area[3]) < float(area[0])
    assert float(out[3].max()) == 1.0 and float(out[3, 0, 16, 13]) == 0.0  # eroded from 4 to 2 px wide
    assert float(out[1, 0, 16, 13]) == 1.0 and float(out[1, 0, 16, 12]) == 0.0  # grown by one px per side
