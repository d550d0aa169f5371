"""Comparing run folders (synthloop.utils.run_compare), what the kill -9 benchmark
(``make bench-reliability``) checks a resumed run with."""

from __future__ import annotations

import json

import torch

from synthloop.utils import run_compare as rel


def test_differences_leftovers_and_duplicates(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, seconds in ((a, 1.0), (b, 2.0)):
        (root / "images").mkdir(parents=True)
        (root / "images" / "0.png").write_bytes(b"png")
        (root / "history.json").write_text(json.dumps([{"cycle": 1, "t_seconds": seconds, "loss": 0.5}]))
        torch.save({"version": 1, "w": torch.ones(2), "history": json.dumps([{"s_seconds": seconds}])}, root / "checkpoint.pt")
        (root / "run.json").write_text(json.dumps({"started": str(seconds)}))
    assert rel.differences(a, b) == []  # timings and run records are left out
    (b / "images" / "0.png").write_bytes(b"PNG")
    torch.save({"version": 1, "w": torch.zeros(2), "history": "[]"}, b / "checkpoint.pt")
    (b / "images" / "1.png").write_bytes(b"x")
    assert rel.differences(a, b) == ["images/1.png", "checkpoint.pt", "images/0.png"]
    assert rel.leftovers(a) == []
    (a / "images" / ".0.png.abc.tmp").write_bytes(b"")
    (tmp_path / ".a.1234.render").mkdir()
    assert len(rel.leftovers(a)) == 2
    (a / "annotations.json").write_text(json.dumps({"images": [{"id": 1}, {"id": 1}], "annotations": [{"id": 3}]}))
    assert rel.duplicate_ids(a) == 1
