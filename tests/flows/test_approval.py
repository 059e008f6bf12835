"""The promotion flow under the Prefect test harness: it pauses for an ops decision, promotes on
approval with the approver in the history, changes nothing on rejection or timeout, and never
asks about a version whose gates fail.

The flow runs in a thread, as the CLI would run it in-process; the test plays ops through the
Prefect API. Versions are placeholder registry entries, so no model is trained.
"""

import contextvars
import threading
import time

import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import StateType

from flows import approval
from tasks import promotion
from tasks.errors import RegistryError
from tasks.register import RegisterConfig

pytestmark = pytest.mark.slow

CFG = RegisterConfig()
GATED = promotion.PromotionConfig(require_approval=True)
WAIT_S = 120  # a generous bound on each step, so a regression fails instead of hanging CI


def tags(ppl: float = 6.0, eps: float = 3.0) -> dict:
    return {"privacy.epsilon": str(eps), "privacy.delta": "1e-05", "privacy.private": "True",
            "eval.perplexity": str(ppl), "eval.usable_rate": "0.97", "audit.verdict": "pass"}


@pytest.fixture
def client(prefect_api, monkeypatch) -> MlflowClient:
    monkeypatch.setattr(approval, "POLL_S", 1)
    return MlflowClient()


def champion(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def in_background(**params) -> tuple[threading.Thread, dict]:
    """Start the flow in a thread; the dict gets its "result" or "error" when it ends."""
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = approval.promotion_flow(register=CFG, **params)
        except Exception as exc:  # handed to the test thread to assert on
            out["error"] = exc

    # The harness points Prefect at its API through context variables, which a new thread
    # does not inherit unless handed a copy.
    ctx = contextvars.copy_context()
    thread = threading.Thread(target=ctx.run, args=(run,), daemon=True)
    thread.start()
    return thread, out


def flow_runs(name: str, version: str) -> list:
    with get_client(sync_client=True) as api:
        return api.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[f"promote-{name}-v{version}"])))


def decide(name: str, version: str, **run_input) -> None:
    """Once the run is paused, decide as `privgen approve` does (which also retries while the
    API cannot validate input yet: the flow saves its form's schema just after pausing)."""
    deadline = time.monotonic() + WAIT_S
    while not any(r.state.type == StateType.PAUSED for r in flow_runs(name, version)):
        assert time.monotonic() < deadline, f"the flow never paused: {flow_runs(name, version)}"
        time.sleep(0.2)
    approval.decide(name, version, **run_input)


def finish(thread: threading.Thread, out: dict) -> dict:
    thread.join(timeout=WAIT_S)
    assert not thread.is_alive(), "the flow did not finish after it was resumed"
    if "error" in out:
        raise out["error"]
    return out["result"]


def test_an_approved_version_becomes_champion_with_the_approver_in_the_history(client,
                                                                               make_model):
    name = make_model(client, tags(6.0), tags(5.8))
    promotion.promote(name, "1", CFG, GATED)
    thread, out = in_background(name=name, version="2", reason="quarterly release",
                                policy=GATED)
    decide(name, "2", approved=True, approver="ops-alice", reason="signed off")
    result = finish(thread, out)
    assert result["promoted"] and champion(client, name) == "2"
    last = promotion.history(name)[-1]
    assert (last["actor"], last["reason"], last["action"]) == ("ops-alice", "signed off",
                                                               "promote")
    assert (last["from"], last["to"]) == ("1", "2")


def test_a_rejection_leaves_the_champion_and_the_history_unchanged(client, make_model):
    name = make_model(client, tags(6.0), tags(5.8))
    promotion.promote(name, "1", CFG, GATED)
    before = promotion.history(name)
    thread, out = in_background(name=name, version="2", policy=GATED)
    decide(name, "2", approved=False, approver="ops-bob", reason="wait for the audit")
    result = finish(thread, out)
    assert not result["promoted"] and result["rejected_by"] == "ops-bob"
    assert champion(client, name) == "1" and promotion.history(name) == before


def test_the_input_form_refuses_a_decision_without_an_approver(client, make_model):
    name = make_model(client, tags(6.0))
    thread, out = in_background(name=name, version="1", policy=GATED)
    with pytest.raises(RegistryError, match="approver"):
        decide(name, "1", approved=True, approver="", reason="")
    decide(name, "1", approved=True, approver="ops-alice", reason="")
    assert finish(thread, out)["promoted"] and champion(client, name) == "1"


def test_a_version_whose_gates_fail_is_refused_before_any_pause(client, make_model):
    name = make_model(client, tags(6.0), tags(5.8, eps=12.0))
    promotion.promote(name, "1", CFG, GATED)
    # Called in this thread: were the gates skipped, it would pause until the short timeout.
    with pytest.raises(RegistryError, match=r"gate epsilon failed.*--force"):
        approval.promotion_flow(name=name, version="2", register=CFG, policy=GATED,
                                approval_timeout_s=5)
    (run,) = flow_runs(name, "2")
    with get_client(sync_client=True) as api:
        states = {s.type for s in api.read_flow_run_states(run.id)}
    assert StateType.PAUSED not in states and StateType.FAILED in states
    assert champion(client, name) == "1"


def test_an_unanswered_request_fails_after_its_timeout_and_changes_nothing(client, make_model):
    name = make_model(client, tags(6.0), tags(5.8))
    promotion.promote(name, "1", CFG, GATED)
    with pytest.raises(RegistryError, match="nobody approved or rejected"):
        approval.promotion_flow(name=name, version="2", register=CFG, policy=GATED,
                                approval_timeout_s=2)
    assert champion(client, name) == "1" and len(promotion.history(name)) == 1


def test_without_require_approval_the_flow_promotes_at_once(client, make_model):
    name = make_model(client, tags(6.0))
    result = approval.promotion_flow(name=name, version="1", register=CFG)
    assert result["entry"]["actor"] == "promotion-flow" and champion(client, name) == "1"


def test_configs_given_as_plain_parameters_are_validated(client, make_model):
    # as a deployment run started from the Prefect UI passes them
    name = make_model(client, tags(6.0, eps=5.0))
    with pytest.raises(RegistryError, match="gate epsilon failed"):
        approval.promotion_flow(name=name, version="1", register={"max_epsilon": 4.0})
