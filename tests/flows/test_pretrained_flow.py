"""DP fine-tuning of a pretrained model from a local folder, with LoRA, through the whole
training flow; the registered version samples through its pyfunc like any other."""

import mlflow
import pytest

from flows.config import load_config
from flows.training import training_flow

pytestmark = pytest.mark.slow
MODEL = "privgen-lora"


def test_lora_fine_tuning_of_a_local_pretrained_model_end_to_end(prefect_api, tmp_path,
                                                                 demo_csv, pretrained_dir):
    subset = tmp_path / "tickets.csv"
    subset.write_text("".join(demo_csv.read_text().splitlines(keepends=True)[:301]))
    cfg = load_config(overrides=[
        f"workdir={tmp_path / 'runs'}", f"ingest.path={subset}", f"register.model_name={MODEL}",
        "train.family=causal_lm",  # these flows test the causal LM's own path
        f"train.model.pretrained={pretrained_dir}", "train.model.lora.r=2",
        "train.epochs=1", "train.batch_size=32", "register.max_perplexity=100000",
        "evaluate.samples=2",
    ])
    result = training_flow(cfg)

    assert result["train"]["private"] and 0 < result["train"]["epsilon"] <= 8.0
    params = mlflow.get_run(result["run_id"]).data.params
    assert params["tokenizer"] == "pretrained, not refit"
    assert params["model.embeddings"] == "frozen (only LoRA adapters train)"
    assert params["model.pretrained"] == str(pretrained_dir)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{result['model']['version']}")
    # One epoch of LoRA on 300 rows rarely writes a whole record in the layout, and predict
    # refuses to return fewer than asked for (GenerationError); what serving promises is the
    # schema, read from the registered model's signature.
    out = model.metadata.get_output_schema().input_names()
    assert out == ["birth_date", "postcode", "city", "product", "channel",
                   "rating", "created_at", "message"]
