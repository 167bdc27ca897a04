"""Reading user images for `predict`: PNG, JPEG and DICOM (rescale, window, MONOCHROME1), and a clear
reason for every file that cannot be read."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_files import write_dicom
from PIL import Image

from worker.inference.images import collect_paths, dicom_to_uint8, read_image

SIZE = 32


def _gradient() -> np.ndarray:
    """uint8 [32, 32] with a bright square: distinct values to compare pixel by pixel."""
    image = np.tile(np.arange(0, 128, 4, dtype=np.uint8), (SIZE, 1))
    image[8:16, 8:16] = 250
    return image


def test_sixteen_bit_monochrome1_decodes_like_the_8_bit_picture_it_encodes(tmp_path):
    picture = _gradient()
    # MONOCHROME1 stores white as the lowest value; 16-bit values span the picture's 0-255 times 257.
    stored = ((255 - picture.astype(np.uint32)) * 257).astype(np.uint16)
    path = write_dicom(tmp_path / "mono1.dcm", stored, photometric="MONOCHROME1")
    decoded = dicom_to_uint8(path)
    assert decoded.dtype == np.uint8
    # Without a window the image's own range is used: the picture's range, 0..250, stretched to 0..255.
    expected = np.round((picture.astype(float) - picture.min()) / (picture.max() - picture.min()) * 255)
    assert np.abs(decoded.astype(int) - expected).max() <= 1
    assert decoded[10, 10] == 255  # the square (lowest stored value) is white


def test_rescale_then_window_maps_hounsfield_units(tmp_path):
    # Stored values become HU = 2 * stored - 1024; a window of centre 0 and width 400 shows -200..200 HU.
    hounsfield = np.array([[-1000, -200, 0], [100, 200, 1000]], dtype=np.float64)
    stored = ((hounsfield + 1024) / 2).astype(np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, slope=2.0, intercept=-1024.0, window=(0.0, 400.0))
    decoded = dicom_to_uint8(path)
    assert decoded.tolist() == [[0, 0, 128], [191, 255, 255]]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "empty file"),
        ("notes.txt", b"not an image at all", "not a PNG, JPEG or DICOM"),
        ("cut.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "PNG data does not decode"),
        ("header.dcm", b"\x00" * 128 + b"DICM" + b"\x02\x00", "DICOM"),
    ],
)
def test_an_unreadable_file_gets_its_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    item = read_image(path, SIZE)
    assert item.pixels is None and reason in item.error


def test_missing_file_and_formats_by_content(tmp_path):
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    Image.fromarray(_gradient()).convert("RGB").save(tmp_path / "b.jpeg")
    assert read_image(tmp_path / "nope.png", SIZE).error == "no such file"
    assert read_image(tmp_path / "a.png", SIZE).format == "png"
    jpeg = read_image(tmp_path / "b.jpeg", SIZE)
    assert jpeg.format == "jpeg" and jpeg.pixels.shape == (SIZE, SIZE)


def test_folders_expand_to_their_image_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "sub/c.dcm", "sub/IM0001", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in collect_paths([str(tmp_path), str(tmp_path / "notes.txt")])]
    assert found == ["a.JPG", "b.png", "sub/IM0001", "sub/c.dcm", "notes.txt"]


@pytest.mark.parametrize("budget", [1, 11, 10**9])
def test_the_similar_reports_of_a_chunked_search_are_those_of_the_whole_matrix_ties_included(budget):
    """predict's top-k over the training texts, a few images at a time: the same texts in the same order as
    topk over the whole matrix, on small-integer embeddings (exact cosines) with tied texts."""
    import torch

    from worker.inference.stage import most_similar

    rng = np.random.default_rng(5)
    texts_emb = torch.from_numpy(rng.integers(-1, 2, size=(24, 3))).float()
    texts_emb[12:] = texts_emb[:12].clone()  # every text has a tie
    images = torch.from_numpy(rng.integers(-1, 2, size=(9, 3))).float()
    texts = [f"report {i}" for i in range(24)]
    values, indices = (images @ texts_emb.T).topk(4, dim=-1)
    expected = [
        [{"rank": r + 1, "report": texts[i], "cosine": float(v)} for r, (v, i) in enumerate(zip(vs, ix, strict=True))]
        for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)
    ]
    assert most_similar(images, texts_emb, texts, 4, budget=budget) == expected
