import cv2
import numpy as np
import pytest

from synthloop.data.images import encode_png


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Two small photos, so photo backgrounds do not decode the large bundled ones in every test."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(2):
        img = cv2.GaussianBlur(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), (0, 0), 2.0)
        (root / f"p{i}.png").write_bytes(encode_png(img))
    return str(root)
