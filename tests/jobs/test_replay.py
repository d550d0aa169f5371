"""What ``synthloop replay`` says: what is compared, and why a JPEG differs from the raw render."""

from synthloop.jobs.replay import ReplayResult


def test_lines_say_what_is_compared():
    jpeg = ReplayResult(3, "images/000003.jpg", True, True, True, 224, 1.234, "jpg")
    lines = jpeg.lines()
    assert lines[0] == "images/000003.jpg: replays bit-identically from its params (params.jsonl)"
    assert lines[1] == "  re-render encoded as the job did (JPEG) vs stored file: bytes identical, decoded pixels identical"
    assert lines[2] == "  labels rebuilt from the params vs annotations.json: identical"
    assert lines[3].startswith("  stored JPEG vs raw render before encoding: max |difference| 224, mean 1.23 (of 255); this is JPEG's compression loss")

    png = ReplayResult(1, "images/000001.png", False, False, None, 1, 0.001, "png")
    lines = png.lines()
    assert lines[0] == "images/000001.png: does NOT replay identically from its params (params.jsonl)"
    assert "(PNG) vs stored file: bytes DIFFERENT, decoded pixels DIFFERENT" in lines[1] and lines[2].endswith("not checked")
    assert lines[3] == "  stored PNG vs raw render (lossless): max |difference| 1, mean 0.00 (of 255)"
