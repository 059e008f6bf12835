"""Reading the MLflow model registry for people: versions, aliases, stages, privacy tags."""

from __future__ import annotations

from datetime import UTC, datetime

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.errors import RegistryError
from tasks.promotion import LOCK_SUFFIX


def list_versions(name: str | None = None) -> list[dict]:
    client = MlflowClient()
    if name:
        try:
            models = [client.get_registered_model(name)]
        except MlflowException:
            raise RegistryError(f"no registered model named {name!r}; run `privgen models` "
                                "to see what exists") from None
    else:
        models = [rm for rm in client.search_registered_models()
                  if not rm.name.endswith(LOCK_SUFFIX)]
    rows = []
    for rm in models:
        aliases: dict[str, list[str]] = {}
        for alias, version in (rm.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for mv in client.search_model_versions(f"name='{rm.name}'"):
            rows.append({
                "name": rm.name, "version": str(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "stage": mv.current_stage,
                # Versions registered before the families are all causal LMs.
                "family": mv.tags.get("train.family", "causal_lm"),
                "mechanism": mv.tags.get("train.mechanism"),
                "epsilon": mv.tags.get("privacy.epsilon"), "delta": mv.tags.get("privacy.delta"),
                "accountant": mv.tags.get("privacy.accountant"),
                "private": mv.tags.get("privacy.private"),
                "perplexity": mv.tags.get("eval.perplexity"),
                "verdict": mv.tags.get("policy.verdict"),
                "gates": {k.removeprefix("gate."): v for k, v in sorted(mv.tags.items())
                          if k.startswith("gate.")},
                "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)
                .strftime("%Y-%m-%d %H:%M:%S"),
                "run_id": mv.run_id,
            })
    return sorted(rows, key=lambda r: (r["name"], -int(r["version"])))
