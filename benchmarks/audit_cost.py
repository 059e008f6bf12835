"""Cost of evaluation + privacy audit relative to training, on the demo data at three sizes.

Runs the real training flow (embedded MLflow and Prefect in a temporary folder) on the first
750, 1,500 and 3,000 demo rows and reads each task's run time from Prefect. "Audit" is the
evaluate task of the DP model (utility metrics, membership inference, canary exposure, replay)
plus the side-by-side report; the non-private control's training and evaluation are reported
separately, as the price of showing the audit has power. Target: audit ≤ 25 % of training.
Prints JSON.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = (750, 1500, 3000)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES),
                        help="demo rows per point (default: %(default)s)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="privgen-audit-cost-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["PREFECT_HOME"] = str(root / "prefect")
    os.environ.setdefault("PRIVGEN_PSEUDONYM_KEY", "b" * 64)
    sys.path.insert(0, str(REPO))
    from flows.environment import apply_defaults

    apply_defaults(root)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.config import load_config
    from flows.training import training_flow

    lines = (REPO / "data/demo/tickets.csv").read_text().splitlines(keepends=True)
    points = []
    for size in args.sizes:
        subset = root / f"tickets-{size}.csv"
        subset.write_text("".join(lines[: size + 1]))
        cfg = load_config(overrides=[f"workdir={root / 'runs'}", f"ingest.path={subset}",
                                     f"register.model_name=audit-cost-{size}"])
        state = training_flow(cfg, return_state=True)
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        seconds = {r.name.rsplit("-", 1)[0]: r.total_run_time.total_seconds() for r in runs}
        audit = seconds["evaluate"] + seconds.get("audit-report", 0.0)
        points.append({"rows": size, "seconds": seconds,
                       "audit_fraction_of_training": audit / seconds["train"],
                       "control_seconds": seconds.get("control-train", 0.0)
                       + seconds.get("control-evaluate", 0.0)})
    print(json.dumps({"points": points, "target_fraction": 0.25,
                      "meets_target_at_demo_size": points[-1]["audit_fraction_of_training"]
                      <= 0.25}, indent=2))


if __name__ == "__main__":
    main()
