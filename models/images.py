"""Images as the families and stages exchange them (issue 14, /work/notes/images_contract.md).

In memory an image dataset is a frame with column ``image`` (object: one uint8 array
[H, W, C] per row, C = 1 grey or 3 RGB) and optionally ``label`` (string); the families train
on the stacked array [N, H, W, C]. PNG encoding and decoding by Pillow, lossless.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd

IMAGE, LABEL = "image", "label"
# Cells of a grid are scaled up (nearest neighbour, whole factors) to at least this many pixels
# a side: an 8×8 digit shown at 8 px is unreadable in the MLflow UI.
MIN_CELL = 32
_PAD = 2  # pixels between cells, and the width of the label margin's padding


def to_array(df: pd.DataFrame) -> np.ndarray:
    """[N, H, W, C] uint8 from ``df[IMAGE]`` (each [H, W, C] uint8). ValueError naming the row
    when the column is missing, an image is not a uint8 array of rank 3 or the shapes differ;
    an empty frame gives [0, 0, 0, 1]."""
    if IMAGE not in df.columns:
        raise ValueError(f"no {IMAGE!r} column in the frame (columns: {', '.join(map(str, df))})")
    images = list(df[IMAGE])
    if not images:
        return np.zeros((0, 0, 0, 1), dtype=np.uint8)
    first = np.asarray(images[0])
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3:
            raise ValueError(f"row {i}: an image is a uint8 array [H, W, C], got "
                             f"{getattr(img, 'dtype', type(img).__name__)} "
                             f"{getattr(img, 'shape', '')}")
        if img.shape != first.shape:
            raise ValueError(f"row {i}: image shape {img.shape} differs from row 0's "
                             f"{first.shape}; resize the dataset to one shape")
    return np.stack(images)


def to_frame(array: np.ndarray, labels: Sequence | None = None) -> pd.DataFrame:
    """The frame of ``array`` [N, H, W, C] uint8 (and ``labels`` [N], as strings).
    ValueError on another dtype or rank, or labels of another length."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 4:
        raise ValueError(f"images are a uint8 array [N, H, W, C], got {array.dtype} "
                         f"{array.shape}")
    column = pd.Series([img for img in array], dtype=object)  # one [H, W, C] array per row
    df = pd.DataFrame({IMAGE: column})
    if labels is not None:
        labels = [str(x) for x in labels]
        if len(labels) != len(array):
            raise ValueError(f"{len(labels)} labels for {len(array)} images")
        df[LABEL] = pd.Series(labels, dtype="string")
    return df


def png_bytes(image: np.ndarray) -> bytes:
    """A PNG of ``image`` [H, W, C] uint8 (C 1: 8-bit grey, 3: RGB). ValueError otherwise."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"an image is a uint8 array [H, W, 1 or 3], got {image.dtype} "
                         f"{image.shape}")
    pil = Image.fromarray(np.ascontiguousarray(image[:, :, 0] if image.shape[2] == 1
                                               else image))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """[H, W, C] uint8 decoded from PNG (or any format Pillow reads: JPEG...): grey and
    grey+alpha → C 1, palette, RGB and RGBA → C 3 (alpha dropped: the families model no
    transparency). ValueError saying why when the bytes are no image Pillow can decode or the
    image has more than 8 bits a channel (convert it to 8 bits first)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.load()
            mode = pil.mode
            if mode in ("1", "L", "LA"):
                arr = np.asarray(pil.convert("L"))[:, :, None]
            elif mode in ("P", "PA", "RGB", "RGBA", "CMYK", "YCbCr"):
                arr = np.asarray(pil.convert("RGB"))
            else:
                raise ValueError(f"image mode {mode!r} (more than 8 bits a channel or an "
                                 "unusual colour space): convert it to 8-bit grey or RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        # Pillow reports truncated or corrupt files as OSError (or SyntaxError for some
        # broken headers); the stage above quarantines the file with this reason.
        raise ValueError(f"not a decodable image: {exc}") from exc
    return np.ascontiguousarray(arr, dtype=np.uint8)


def grid_png(images: np.ndarray, labels: Sequence | None = None, per_row: int = 10) -> bytes:
    """A PNG of ``images`` [N, H, W, C] uint8 in a grid of ``per_row`` columns. With ``labels``
    [N]: one row per class (sorted), its first ``per_row`` images, the label written in a
    left margin, so mode collapse shows as empty rows. Cells are scaled up to ``MIN_CELL`` px.
    ValueError on a bad array or labels of another length."""
    from PIL import Image, ImageDraw

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise ValueError(f"images are a uint8 array [N, H, W, 1 or 3], got {images.dtype} "
                         f"{images.shape}")
    n, h, w, c = images.shape
    if labels is None:
        rows = [list(range(i, min(i + per_row, n))) for i in range(0, n, per_row)] or [[]]
        names: list[str] = []
    else:
        labels = [str(x) for x in labels]
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} images")
        names = sorted(set(labels), key=_label_order)
        rows = [[i for i, x in enumerate(labels) if x == name][:per_row] for name in names]
    scale = max(1, -(-MIN_CELL // max(h, w, 1)))
    ch, cw = h * scale + _PAD, w * scale + _PAD
    margin = (8 * max(map(len, names)) + 2 * _PAD) if names else 0
    canvas = Image.new("RGB", (margin + per_row * cw + _PAD, len(rows) * ch + _PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for r, members in enumerate(rows):
        if names:
            draw.text((_PAD, r * ch + ch // 2 - 5), names[r], fill="black")
        for col, i in enumerate(members):
            img = images[i][:, :, 0] if c == 1 else images[i]
            cell = Image.fromarray(np.ascontiguousarray(img)).convert("RGB")
            cell = cell.resize((w * scale, h * scale), Image.Resampling.NEAREST)
            canvas.paste(cell, (margin + _PAD + col * cw, _PAD + r * ch))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def image_reason(fields: Sequence, row: dict) -> str | None:
    """None when each of the image ``fields`` (``FieldSpec``s) of ``row`` holds a uint8 array
    [H, W, C] of its declared ``shape``, else the reason the draw loop counts the row under:
    "image:type", "image:dtype" or "image:shape"."""
    for f in fields:
        img = row.get(f.name)
        if not isinstance(img, np.ndarray):
            return "image:type"
        if img.dtype != np.uint8:
            return "image:dtype"
        if img.ndim != 3 or (f.shape is not None and img.shape != tuple(f.shape)):
            return "image:shape"
    return None


def _label_order(label: str) -> tuple:
    """Numeric labels in numeric order ("2" before "10"), then the others alphabetically."""
    return (0, float(label), "") if _is_number(label) else (1, 0.0, label)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
