"""The MLflow pyfunc wrapper for every generator family: a registered model that draws
synthetic records on request, exactly as `privgen generate` does.

Input: a frame with one row per request: ``n`` records, ``seed``, and optionally a value per
structured column to condition on. Params: the sampling settings (``temperature``, ``top_k``,
``top_p``, ``batch_size``) and ``shard_size``. Output: the records, in the model's columns;
an image family's images as base64 PNG strings in column ``image_png`` (beside ``label``).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

ARTIFACT = "model"  # name of the model folder among the pyfunc's artifacts

# What the served model imports, so `mlflow models serve` can build a fresh environment for any
# family: models/ (mbi, jax and jaxlib for the marginal families, Opacus' DPLSTM layer, PEFT for
# LoRA models, Pillow for the image families' PNGs) and tasks/ as the draw uses it (the PII
# gate's patterns, the release rules).
# tests/unit/test_pyfunc_requirements.py keeps it complete and pinned as requirements.lock is.
SERVING_PACKAGES = (
    "mlflow", "torch", "transformers", "peft", "safetensors", "opacus", "dp-accounting", "numpy",
    "pandas", "pydantic", "mbi", "jax", "jaxlib", "networkx", "matplotlib", "presidio-analyzer",
    "spacy", "phonenumbers", "wordfreq", "pillow",
)


def pip_requirements() -> list[str]:
    """``SERVING_PACKAGES`` pinned at the installed versions (requirements.lock's), less any
    local build label: ``torch==2.13.0``, not ``2.13.0+cpu``, which PyPI does not serve."""
    from importlib import metadata

    return [f"{p}=={metadata.version(p).split('+')[0]}" for p in SERVING_PACKAGES]


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """``generator``: ``models.base.load`` of the model folder; ``specs``: its release rules
    (``release.json``), None for a model saved before them."""

    def load_context(self, context) -> None:
        # The draw, its PII gate and release rules are the generation stage's (tasks.draw):
        # the served model ships tasks/ among its code paths to draw exactly as it does.
        from tasks import draw

        self.generator, self.specs = draw.load(context.artifacts[ARTIFACT])

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> tuple[GeneratorModel, object]:
        """The wrapper loaded from a saved model folder, as MLflow would load it, and the
        context it was loaded with (``predict`` takes it too)."""
        context = type("Context", (), {"artifacts": {ARTIFACT: str(model_dir)}})()
        wrapper = cls()
        wrapper.load_context(context)
        return wrapper, context

    def __getattr__(self, name: str):
        # Transitional: callers that read the causal LM's parts (model, codec, tokenizer,
        # meta, release) off the wrapper; new code reads ``generator``.
        if name == "generator":
            raise AttributeError(name)
        return getattr(self.generator, name)

    @property
    def columns(self) -> list[str]:
        return list(self.output_frame([]).columns)

    def output_frame(self, records: list[dict]) -> pd.DataFrame:
        """What ``predict`` returns for ``records``: the generator's frame, each image field
        replaced by ``<name>_png``, the PNG as base64 text (JSON carries no arrays)."""
        frame = self.generator.frame(records)
        for f in self.generator.spec.images:
            import base64

            from models.images import png_bytes

            at = frame.columns.get_loc(f.name)
            encoded = [base64.b64encode(png_bytes(img)).decode("ascii") for img in frame[f.name]]
            frame = frame.drop(columns=f.name)
            frame.insert(at, f"{f.name}_png", pd.Series(encoded, dtype="string"))
        return frame

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        """The records of each request, in order: request ``(n, seed)`` gives what
        ``privgen generate --n n --seed seed`` writes with the same sampling settings."""
        from tasks import draw

        params = dict(params or {})
        shard_size = int(params.pop("shard_size", None) or draw.SHARD_SIZE)
        draw.set_sampling(self.generator, params)
        structured = {f.name for f in self.generator.spec.structured}
        frames = []
        for i, request in enumerate(model_input.to_dict("records")):
            if int(request["n"]) < 0:
                raise ValueError(f"request {i}: n={int(request['n'])}; ask for 0 or more "
                                 "records")
            condition = {k: str(v) for k, v in request.items()
                         if k in structured and v is not None and not pd.isna(v)}
            if condition:
                draw.check_condition(condition, self.generator, self.specs)
            records = draw.draw_plan(self.generator, int(request["n"]),
                                     int(request.get("seed", 0)), self.specs, condition,
                                     shard_size)
            frames.append(self.output_frame(records))
        return pd.concat(frames, ignore_index=True) if frames else self.output_frame([])


# The name models registered before the one wrapper were logged with.
SyntheticRecordsModel = GeneratorModel
