"""The one place stage shells talk to MLflow tracking: runs, params, metrics, artifacts, datasets.

Every call names its run explicitly, so stages running in Prefect worker threads never race on
MLflow's thread-local "active run".
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from tasks.errors import ConfigError


def client() -> MlflowClient:
    return MlflowClient()


def start_run(experiment: str, run_name: str, tags: dict[str, str],
              setting: str = "--set experiment=NAME") -> str:
    """Create a run in ``experiment`` (created if missing) and return its id; the run stays open.

    Raises ConfigError when the experiment was deleted (in the MLflow UI, say): MLflow keeps
    the name taken until the experiment is restored or purged; ``setting`` is the option that
    names another experiment, for the message."""
    c = client()
    exp = c.get_experiment_by_name(experiment)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise ConfigError(
            f"MLflow experiment {experiment!r} (id {exp.experiment_id}) is deleted; restore it "
            f"with `MLFLOW_TRACKING_URI={mlflow.get_tracking_uri()} mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}` (or in the MLflow UI), or log to another "
            f"experiment with {setting}")
    exp_id = exp.experiment_id if exp else c.create_experiment(experiment)
    return c.create_run(exp_id, run_name=run_name, tags=tags).info.run_id


def reopen_run(run_id: str) -> dict[str, Any]:
    """Mark a killed or failed run running again; returns its name and tags.

    A finished run is refused: its model is registered, and resuming would log it twice."""
    c = client()
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"--resume {run_id}: no such MLflow run in "
                          f"{mlflow.get_tracking_uri()}") from None
    if run.info.status == "FINISHED":
        raise ConfigError(f"--resume {run_id}: the run finished; start a new one with "
                          "privgen run") from None
    c.update_run(run_id, status="RUNNING")
    return {"run_name": run.info.run_name, "tags": dict(run.data.tags)}


def metric_steps(run_id: str, key: str) -> set[int]:
    """The steps at which ``key`` has been logged in this run."""
    return {m.step for m in client().get_metric_history(run_id, key)}


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)


def log_params(run_id: str, params: dict[str, Any]) -> None:
    # MLflow caps a param value at 6000 characters; ours are scalars from the config.
    batch = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(batch), 100):
        client().log_batch(run_id, params=batch[i : i + 100])


def log_metrics(run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    now = get_current_time_millis()
    batch = [Metric(k, float(v), now, step or 0) for k, v in sorted(metrics.items())]
    client().log_batch(run_id, metrics=batch)


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in sorted(tags.items())])


def log_dict(run_id: str, obj: Any, artifact_file: str) -> None:
    client().log_text(run_id, json.dumps(obj, indent=2, sort_keys=True, default=str),
                      artifact_file)


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    client().log_text(run_id, text, artifact_file)


def log_artifact(run_id: str, path: Path, artifact_path: str | None = None) -> None:
    client().log_artifact(run_id, str(path), artifact_path)


def log_figure(run_id: str, figure: Any, artifact_file: str) -> None:
    client().log_figure(run_id, figure, artifact_file)


def log_dataset(
    run_id: str,
    schema_frame: pd.DataFrame,
    *,
    name: str,
    source: str,
    digest: str,
    context: str,
    rows: int,
    tags: dict[str, Any] | None = None,
) -> None:
    """Record a dataset input: name, source, digest, schema and counts, never cell values.

    ``schema_frame`` only lends its column names and dtypes: MLflow gets an empty frame of the
    right shape, so no cell value can travel, and the row count is set from ``rows``.
    """
    dataset = mlflow.data.from_pandas(schema_frame.head(0), source=source, name=name,
                                      digest=digest[:36])
    entity = dataset._to_mlflow_entity()
    cols = len(schema_frame.columns)
    entity = Dataset(name=entity.name, digest=entity.digest, source_type=entity.source_type,
                     source=entity.source, schema=entity.schema,
                     profile=json.dumps({"num_rows": rows, "num_elements": rows * cols}))
    input_tags = [InputTag("mlflow.data.context", context)]
    input_tags += [InputTag(k, str(v)) for k, v in sorted((tags or {}).items())]
    client().log_inputs(run_id, datasets=[DatasetInput(entity, input_tags)])


def download_json(run_id: str, artifact_file: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_file,
                                                    dst_path=tmp)
        return json.loads(Path(local).read_text())
