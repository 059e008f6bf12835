"""The convolutional blocks, label handling and diagnostics the image families share
(``dcgan``, ``convvae``): a strided-convolution encoder and a transposed-convolution decoder
whose depth follows the image shape, as in DCGAN (Radford et al. 2016, §3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from models.base import FieldSpec, Generator, Proposal, TableSpec
from models.images import grid_png, to_array

DIAGNOSTIC_SEED = 12345  # the fixed sample the per-epoch diagnostic and grids are drawn from
# At most this many halvings: 32×32 → 4×4 at the bottom, 64×64 → 8×8 (enough for the sizes
# issue 14 names: 8×8 digits, 28×28, 32×32).
MAX_STAGES = 3


@dataclass(frozen=True)
class Layout:
    """The image shape (H, W, C), the label values in spec order (empty: unconditional), how
    many stride-2 stages the networks use and the bottom feature map (H, W) they reach."""

    shape: tuple[int, int, int]
    labels: tuple[str, ...]
    stages: int
    bottom: tuple[int, int]

    @property
    def classes(self) -> int:
        return len(self.labels)


def layout(spec: TableSpec) -> Layout:
    """The ``Layout`` of ``spec``: its one image field (declared ``shape``) and, when there is
    one, its first categorical field as the label. ValueError naming what is missing. Each
    stage halves both sides while they stay even and ≥ 2 (8×8: 8→4→2; 28×28: 28→14→7)."""
    images = spec.images
    if len(images) != 1 or images[0].shape is None:
        raise ValueError("an image family needs exactly one image field with a declared shape "
                         f"(H, W, C); the spec has {[f.name for f in images]}")
    h, w, c = images[0].shape
    if c not in (1, 3) or min(h, w) < 2:
        raise ValueError(f"field {images[0].name}: shape {(h, w, c)} is not (H ≥ 2, W ≥ 2, "
                         "C 1 or 3)")
    stages, bh, bw = 0, h, w
    while stages < MAX_STAGES and bh % 2 == 0 and bw % 2 == 0 and min(bh, bw) >= 4:
        stages, bh, bw = stages + 1, bh // 2, bw // 2
    label = label_field(spec)
    return Layout((h, w, c), tuple(label.values) if label else (), stages, (bh, bw))


def label_field(spec: TableSpec) -> FieldSpec | None:
    """The label column: the spec's first categorical field (values declared), or None."""
    return next((f for f in spec.structured if f.kind == "categorical"), None)


def encode(table: pd.DataFrame, spec: TableSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images [N, C, H, W] float in [0, 1], label indices [N] or None). ValueError naming the
    row when an image has another shape, or a label is not among the declared values (declare
    every label in the config: the pipeline never releases one it was not told of)."""
    image = spec.images[0]
    array = to_array(table[[image.name]].rename(columns={image.name: "image"}))
    if len(array) and array.shape[1:] != tuple(image.shape):
        raise ValueError(f"field {image.name}: images are {array.shape[1:]}, the spec declares "
                         f"{tuple(image.shape)}")
    x = torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0
    label = label_field(spec)
    if label is None:
        return x, None
    index = {v: i for i, v in enumerate(label.values)}
    values = table[label.name].astype("string")
    bad = [(i, v) for i, v in enumerate(values) if v not in index]
    if bad:
        raise ValueError(f"field {label.name}: row {bad[0][0]} has label {bad[0][1]!r}, not "
                         f"among the declared values {list(label.values)}; declare every label "
                         "in the config")
    return x, torch.tensor([index[v] for v in values], dtype=torch.long)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] intensities in [0, 1] → [N, H, W, C] uint8 (rounded)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def labels_for(lay: Layout, n: int, gen: torch.Generator,
               conditions: Mapping[str, str] | None, label_name: str | None) -> torch.Tensor:
    """[n] label indices: the one ``conditions`` asks for, else uniform over the declared
    labels (public: no budget spent on the data's class shares). ValueError on a condition
    other than the label, or a label not declared."""
    conditions = dict(conditions or {})
    unknown = set(conditions) - {label_name}
    if unknown:
        raise ValueError(f"an image family conditions only on its label column "
                         f"({label_name or 'this model has none'}); cannot condition on "
                         f"{sorted(unknown)}")
    if not lay.classes:
        return torch.zeros(n, dtype=torch.long)
    if label_name in conditions:
        value = str(conditions[label_name])
        if value not in lay.labels:
            raise ValueError(f"label {value!r} is not among the declared values "
                             f"{list(lay.labels)}")
        return torch.full((n,), lay.labels.index(value), dtype=torch.long)
    return torch.randint(lay.classes, (n,), generator=gen)


def proposal(spec: TableSpec, lay: Layout, images: np.ndarray, labels: torch.Tensor) -> Proposal:
    """The draw loop's candidates: one row per image, its label as a declared string."""
    image, label = spec.images[0].name, label_field(spec)
    rows = [{image: img, **({label.name: lay.labels[int(y)]} if label else {})}
            for img, y in zip(images, labels, strict=True)]
    return Proposal(rows, [None] * len(rows), [None] * len(rows))


def planes(y: torch.Tensor | None, classes: int, h: int, w: int) -> torch.Tensor | None:
    """[B, K, H, W]: the one-hot label as constant planes to stack on an image (a conditional
    GAN's usual input, Mirza & Osindero 2014), or None when unconditional."""
    if y is None or not classes:
        return None
    return nn.functional.one_hot(y, classes).float()[:, :, None, None].expand(-1, -1, h, w)


class Downsampler(nn.Module):
    """(image [B, C, H, W], label [B] or None) → features [B, F]: the label's planes stacked
    on the image, then ``stages`` convolutions 4×4 stride 2 (width, 2·width, ...) with
    GroupNorm (after the first, as DCGAN leaves its first layer unnormalized) and LeakyReLU
    0.2. No BatchNorm: DP-SGD needs each record's gradient on its own."""

    def __init__(self, lay: Layout, width: int):
        super().__init__()
        self.classes = lay.classes
        layers: list[nn.Module] = []
        i = lay.shape[2] + lay.classes
        for s in range(max(lay.stages, 1)):
            o = width * 2 ** s
            # with no stage to halve by (odd sides), one 3×3 convolution keeps the size
            conv = nn.Conv2d(i, o, 4, 2, 1) if lay.stages else nn.Conv2d(i, o, 3, 1, 1)
            layers += [conv, *([nn.GroupNorm(min(8, o), o)] if s else []), nn.LeakyReLU(0.2)]
            i = o
        self.body = nn.Sequential(*layers)
        self.features = i * lay.bottom[0] * lay.bottom[1]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        p = planes(y, self.classes, x.shape[2], x.shape[3])
        return self.body(x if p is None else torch.cat([x, p], 1)).flatten(1)


class Upsampler(nn.Module):
    """(code [B, Z], label [B] or None) → logits [B, C, H, W]: the code and one-hot label
    through a linear layer to the bottom feature map, then ``stages`` transposed convolutions
    4×4 stride 2 (each halving the width) with ``norm`` ("batch": DCGAN's generator, which never
    takes per-sample gradients; "group": under DP-SGD) and ReLU, then a 3×3 convolution to C."""

    def __init__(self, lay: Layout, code: int, width: int, norm: str):
        super().__init__()
        self.classes, self.bottom = lay.classes, lay.bottom
        self.top = width * 2 ** max(lay.stages - 1, 0)
        self.fc = nn.Linear(code + lay.classes, self.top * lay.bottom[0] * lay.bottom[1])
        layers: list[nn.Module] = [_norm(norm, self.top), nn.ReLU()]
        i = self.top
        for s in range(lay.stages):
            o = max(self.top // 2 ** (s + 1), width // 2)
            layers += [nn.ConvTranspose2d(i, o, 4, 2, 1), _norm(norm, o), nn.ReLU()]
            i = o
        self.body = nn.Sequential(*layers, nn.Conv2d(i, lay.shape[2], 3, 1, 1))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.classes and y is not None:
            z = torch.cat([z, nn.functional.one_hot(y, self.classes).float()], 1)
        return self.body(self.fc(z).view(len(z), self.top, *self.bottom))


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(min(8, channels),
                                                                         channels)


def diversity(images: np.ndarray, labels: np.ndarray | None, lay: Layout,
              threshold: float) -> dict[str, float]:
    """The mode-collapse diagnostic on generated ``images`` [N, H, W, C] uint8: per label
    ``diversity.<label>``, the mean over pixels of the intensities' standard deviation across
    that label's images (0–0.5; one image repeated gives 0), ``diversity.min``, and
    ``mode_collapse`` 1.0 when the minimum is below ``threshold`` (a class the generator draws
    as one picture), else 0.0. Conditional models emit each label asked for by construction,
    so it is the spread within each label that shows collapse."""
    x = images.astype(np.float32) / 255.0
    groups = {"all": x} if labels is None or not lay.classes else {
        lay.labels[k]: x[labels == k] for k in range(lay.classes)}
    out = {f"diversity.{name}": float(g.std(0).mean()) if len(g) > 1 else 0.0
           for name, g in groups.items()}
    out["diversity.min"] = low = min(out.values())
    out["mode_collapse"] = float(low < threshold)
    return out


def grid_sample(lay: Layout, per_class: int) -> torch.Tensor:
    """[K·per_class] label indices for a grid of ``per_class`` images of each label (or
    ``10·per_class`` unconditional)."""
    return torch.arange(max(lay.classes, 1)).repeat_interleave(
        per_class if lay.classes else 10 * per_class)


class ImageGenerator(Generator):
    """What both image families share: the draw loop's proposals, the per-epoch diagnostic
    and grids, all from the family's ``_images(labels [n], gen) -> [n, H, W, C] uint8``."""

    layout: Layout | None = None

    def _images(self, labels: torch.Tensor, gen: torch.Generator) -> np.ndarray:
        raise NotImplementedError

    def _propose(self, n: int, seed: int, conditions: Mapping[str, str] | None) -> Proposal:
        """``n`` images, their labels uniform over the declared ones or the one asked for."""
        gen = torch.Generator().manual_seed(seed)
        label = label_field(self.spec)
        y = labels_for(self.layout, n, gen, conditions, label.name if label else None)
        return proposal(self.spec, self.layout, self._images(y, gen), y)

    def mode_coverage(self) -> dict[str, float]:
        """``diversity`` of ``config.coverage_rows`` images (labels balanced, fixed seed)."""
        k = max(self.layout.classes, 1)
        y = grid_sample(self.layout, -(-self.config.coverage_rows // k))
        images = self._images(y, torch.Generator().manual_seed(DIAGNOSTIC_SEED))
        return diversity(images, y.numpy(), self.layout, self.config.collapse_threshold)

    def grid(self, per_class: int = 10) -> bytes:
        """A PNG grid of samples, one row per label (fixed seed: epochs compare)."""
        y = grid_sample(self.layout, per_class)
        images = self._images(y, torch.Generator().manual_seed(DIAGNOSTIC_SEED))
        return grid_png(images, [self.layout.labels[i] for i in y] if self.layout.classes
                        else None, per_row=per_class)
