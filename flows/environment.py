"""Process-wide defaults that keep privgen embedded, offline and quiet unless told otherwise.

Applied by the CLI and the test harness before Prefect or MLflow are imported, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR = Path(".privgen")

# Every library here phones home or reaches for a hub by default; privgen runs offline and
# must never leak run metadata, so all of it is switched off unless the user set it.
_OFFLINE = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # GX and HF draw tqdm bars into the CLI's own progress display otherwise.
    "TQDM_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    # Prefect would otherwise print a link to a UI that does not exist in ephemeral mode.
    "PREFECT_UI_ENABLED": "false",
    # MLflow writes "View run … at: URL" to stdout when a run against a server ends, which
    # breaks the CLI's --json output.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def apply_defaults(root: Path | None = None) -> dict[str, str]:
    """Set embedded-mode defaults for unset variables; returns what it set.

    MLflow falls back to a SQLite store in the working directory and Prefect to its ephemeral API
    with its database under ``.privgen/prefect``; setting ``MLFLOW_TRACKING_URI`` or
    ``PREFECT_API_URL`` points privgen at real servers instead, with no code change.
    """
    root = Path.cwd() if root is None else root
    wanted = dict(_OFFLINE)
    wanted["MLFLOW_TRACKING_URI"] = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    if "PREFECT_API_URL" not in os.environ:
        wanted["PREFECT_HOME"] = str(root / STATE_DIR / "prefect")
        wanted["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
    applied = {}
    for name, value in wanted.items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    if "PREFECT_HOME" in applied:
        # Prefect creates its home without parents and warns when it cannot.
        Path(applied["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    return applied
