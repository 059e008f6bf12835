"""`privgen serve --work-pool`: what the deployments carry to a worker, and the refusals a user
can meet before anything is registered."""

import pytest

from flows.deployments import HEARTBEAT_S, SILENT_RUNS, TAG, _crash_silent_runs, build, register
from tasks.errors import ConfigError


def test_work_pool_deployments_run_by_module_path_in_the_callers_folder(tmp_path):
    training, generation = build("prod.yaml", "0 2 * * 0", "0 4 * * *", "m@champion", 10,
                                 "x.parquet", work_pool="pool", workdir=tmp_path)
    for deployment in (training, generation):
        assert deployment.work_pool_name == "pool"
        assert deployment.entrypoint.startswith("flows.deployments.scheduled_")
        assert deployment.job_variables["working_dir"] == str(tmp_path.resolve())
        env = deployment.job_variables["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_S)
        assert env["DO_NOT_TRACK"] == "1"
        assert not [k for k in env if "KEY" in k or "PASSWORD" in k or "TRACKING_URI" in k]
        assert deployment.tags == [TAG]
    assert training.parameters == {"config": "prod.yaml", "overrides": []}


def test_served_deployments_stay_in_process():
    training, _ = build(None, "0 2 * * 0", "0 4 * * *", "m@champion", 10, "x.parquet")
    assert training.work_pool_name is None and not training.job_variables


def test_the_crash_automation_only_touches_privgen_runs():
    automation = _crash_silent_runs()
    assert automation.name == SILENT_RUNS
    assert automation.trigger.match_related.root == {"prefect.resource.role": "tag",
                                                     "prefect.resource.id": f"prefect.tag.{TAG}"}
    assert automation.actions[0].state.value == "CRASHED"


def test_registering_without_a_server_is_refused_by_name(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # The flow tests' session-wide harness sets the setting in context, not in the environment.
    with temporary_settings(restore_defaults={PREFECT_API_URL}), \
            pytest.raises(ConfigError, match="--work-pool pool: set PREFECT_API_URL"):
        register([], "pool")
