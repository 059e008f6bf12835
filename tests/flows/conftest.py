"""One Prefect test harness (a temporary local API and database) for every flow test, and one
trained demo model that the pipeline, stop and families tests share."""

import contextlib
import logging
from pathlib import Path

import pytest

# The shared demo run's registered model.
DEMO_MODEL = "privgen-e2e"


@pytest.fixture(scope="session")
def prefect_api():
    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    # Generous: on a loaded machine the server takes minutes to answer; a quiet one, seconds.
    with prefect_test_harness(server_startup_timeout=300):
        url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
        yield url.split(":///", 1)[1]  # the harness' SQLite file


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture(scope="session")
def capture_logs():
    """A context manager collecting every formatted log line (root logger) while it is open,
    for the leak scans of the flow tests."""
    @contextlib.contextmanager
    def capture():
        handler = _Capture()
        logging.getLogger().addHandler(handler)
        try:
            yield handler.lines
        finally:
            logging.getLogger().removeHandler(handler)
    return capture


@pytest.fixture(scope="session")
def demo_flow(prefect_api, tmp_path_factory, demo_csv, capture_logs):
    """The training flow (causal LM, its non-private control, the audit, the registry) on the
    first 500 demo rows at the tiniest settings, then 25 records from its champion; every log
    line of both captured for the leak scans. Trained once for the session: the pipeline,
    stop and families tests each trained the same model before (three runs of one path).
    Keys: root, cfg, trained, manifest, out, subset, logs, prefect_db, name. Tests that
    generate from it write under their own folders, not ``root``."""
    from flows.config import load_config
    from flows.generation import generation_flow
    from flows.training import training_flow
    from tasks.generate import GenerateConfig

    root = tmp_path_factory.mktemp("e2e")
    subset = root / "tickets.csv"
    lines = demo_csv.read_text().splitlines(keepends=True)
    subset.write_text("".join(lines[:501]))  # header + 500 rows, a few of them bad
    cfg = load_config(overrides=[
        f"workdir={root / 'runs'}", f"ingest.path={subset}", f"register.model_name={DEMO_MODEL}",
        "train.family=causal_lm",  # these flows test the causal LM's own path
        "train.epochs=1", "train.batch_size=32", "train.model.n_embd=32",
        "train.model.n_layer=1", "register.max_perplexity=1000", "evaluate.samples=4",
    ])
    with capture_logs() as logs:
        trained = training_flow(cfg)
        out = root / "out" / "synthetic.parquet"
        manifest = generation_flow(GenerateConfig(model=f"{DEMO_MODEL}@champion", n=25,
                                                  out=out))
    return {"root": root, "cfg": cfg, "trained": trained, "manifest": manifest, "out": out,
            "subset": subset, "logs": logs, "prefect_db": Path(prefect_api), "name": DEMO_MODEL}
