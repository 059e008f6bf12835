"""Image ingest and validation (tasks/images.py): every bad image quarantined with a reason,
never a traceback; the digest follows the pixels, not the file names."""

import numpy as np
import pytest

from models import images as imgs
from tasks import images
from tasks.errors import ConfigError, InputError, ValidationFailed

DIGITS = tuple(str(d) for d in range(10))


def _cfg(**kw):
    return images.ImageIngestConfig(images_cleared=True, **({"labels": DIGITS} | kw))


def _folder(tmp_path, n=8, labels=True):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["file,label"]
    for i in range(n):
        (tmp_path / f"img-{i}.png").write_bytes(
            imgs.png_bytes(rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)))
        rows.append(f"img-{i}.png,{i % 10}")
    if labels:
        (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _reasons(report):
    return {q["id"]: q["reason"] for q in report.quarantined}


def test_clean_folder_is_kept_whole(tmp_path):
    arr, ids, labels, report = images.validate(images.read_folder(_folder(tmp_path)), _cfg())
    assert arr.shape == (8, 8, 8, 1) and arr.dtype == np.uint8
    assert report.images_in == report.images_kept == 8 and labels[:3] == ["0", "1", "2"]
    assert ids[0] == "img-0.png"


def test_corrupt_png_is_quarantined_with_reason(tmp_path):
    folder = _folder(tmp_path)
    (folder / "img-3.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "img-4.png").write_bytes((folder / "img-4.png").read_bytes()[:30])  # truncated
    arr, _, _, report = images.validate(images.read_folder(folder),
                                        _cfg(max_quarantine_rate=0.5))
    assert _reasons(report) == {"img-3.png": "not a decodable PNG/JPEG",
                                "img-4.png": "not a decodable PNG/JPEG"}
    assert report.images_in == report.images_kept + report.images_quarantined == 8
    assert len(arr) == 6


def test_wrong_size_and_channels_against_declared_size(tmp_path):
    folder = _folder(tmp_path)
    (folder / "img-1.png").write_bytes(imgs.png_bytes(np.zeros((8, 9, 1), np.uint8)))
    (folder / "img-2.png").write_bytes(imgs.png_bytes(np.zeros((8, 8, 3), np.uint8)))
    _, _, _, report = images.validate(images.read_folder(folder),
                                      _cfg(size=(8, 8), channels=1, max_quarantine_rate=0.5))
    assert _reasons(report) == {"img-1.png": "size 9x8, expected 8x8",
                                "img-2.png": "3 channels, expected 1"}
    assert report.size_source.startswith("declared")


def test_undeclared_label_is_quarantined_and_undeclared_set_refused(tmp_path):
    folder = _folder(tmp_path)
    text = (folder / "labels.csv").read_text().replace("img-5.png,5", "img-5.png,x")
    (folder / "labels.csv").write_text(text)
    _, _, _, report = images.validate(images.read_folder(folder), _cfg(max_quarantine_rate=0.5))
    assert _reasons(report) == {"img-5.png": "label 'x' not declared in ingest.labels"}
    with pytest.raises(ConfigError, match=r"ingest\.labels"):
        images.validate(images.read_folder(folder), _cfg(labels=None))


def test_flood_of_bad_images_fails_the_batch(tmp_path):
    folder = _folder(tmp_path)
    for i in range(3):
        (folder / f"img-{i}.png").write_bytes(b"not an image")
    with pytest.raises(ValidationFailed, match="3 of 8 images quarantined"):
        images.validate(images.read_folder(folder), _cfg())


def test_npz_input_scaled_and_checked(tmp_path):
    rng = np.random.default_rng(1)
    floats = rng.random((5, 8, 8))
    floats[2, 0, 0] = 1.5  # out of range
    np.savez(tmp_path / "d.npz", images=floats, labels=np.array(["1", "2", "3", "4", "5"]))
    arr, ids, labels, report = images.validate(images.read_npz(tmp_path / "d.npz"),
                                               _cfg(max_quarantine_rate=0.5))
    assert arr.shape == (4, 8, 8, 1) and arr.dtype == np.uint8
    assert _reasons(report)["row 2"].startswith("float values")
    assert labels == ["1", "2", "4", "5"] and ids[2] == "row 3"
    np.savez(tmp_path / "bad.npz", pixels=floats)
    with pytest.raises(InputError, match="no 'images' array"):
        images.read_npz(tmp_path / "bad.npz")


def test_digest_stable_under_renaming_and_canonical_round_trip(tmp_path):
    a = _folder(tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir()
    for p in sorted(a.glob("*.png")):
        (b / ("renamed-" + p.name)).write_bytes(p.read_bytes())
    (b / "labels.csv").write_text((a / "labels.csv").read_text().replace("img-", "renamed-img-"))
    ra = images.ingest_images(_cfg(path=str(a)), tmp_path / "out-a")
    rb = images.ingest_images(_cfg(path=str(b)), tmp_path / "out-b")
    assert ra["digest"] == rb["digest"]
    df = images.load_canonical(ra["canonical_path"])
    assert list(df.columns) == ["image", "label"] and df["image"][0].shape == (8, 8, 1)
    arr, _, labels, _ = images.validate(images.read_folder(a), _cfg())
    arr[0, 0, 0, 0] ^= 1
    assert images.dataset_digest(arr, labels) != ra["digest"]


def test_images_cleared_is_required():
    with pytest.raises(ValueError, match="images_cleared"):
        images.ImageIngestConfig(path="x")
