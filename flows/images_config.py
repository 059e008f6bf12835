"""The image pipeline's config (issue 14): each image stage's config class composed, selected in
`privgen run` by ``ingest.kind: images`` in the YAML file. Same rules as ``flows.config``:
defaults in code, the file overrides them, ``--set key=value`` overrides that, a bad value
fails before any work naming its field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.config import _merge, _set_dotted
from tasks.audit import AuditConfig
from tasks.errors import ConfigError
from tasks.evaluate_images import ImageEvaluateConfig
from tasks.gates import RegisterConfig
from tasks.images import ImageIngestConfig
from tasks.promotion import PromotionConfig
from tasks.train_images import ImageTrainConfig


class ImagePipelineConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str = "privgen-images"
    workdir: Path = Path("runs")
    seed: int = 1234
    ingest: ImageIngestConfig
    train: ImageTrainConfig = Field(default_factory=ImageTrainConfig)
    evaluate: ImageEvaluateConfig = Field(default_factory=ImageEvaluateConfig)
    # The tables' audit settings (enabled, control, the membership-attack gates); the canary
    # settings do not apply to images (tasks/audit_images.py).
    audit: AuditConfig = Field(default_factory=AuditConfig)
    register_: RegisterConfig = Field(default_factory=lambda: RegisterConfig(
        model_name="privgen-images"), alias="register")
    promote: PromotionConfig = Field(default_factory=PromotionConfig)

    def digest(self) -> str:
        text = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return loaded


def load_image_config(path: Path | None = None,
                      overrides: list[str] | tuple[str, ...] = ()) -> ImagePipelineConfig:
    """The file at ``path`` over the defaults, then ``key=value`` overrides (values as YAML)."""
    tree = _read(Path(path)) if path is not None else {}
    tree = _merge({"ingest": {"kind": "images"}}, tree)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.convvae.epochs=3")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    try:
        return ImagePipelineConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]).replace("register_", "register")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"config field {field}: {err['msg']}{more}") from None
