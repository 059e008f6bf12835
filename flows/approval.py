"""The promotion flow: gate a version, wait for an ops sign-off in Prefect when the policy asks
for one (issue 6), then promote it with the approver and their reason in the registry history."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import Field

from tasks import tracking
from tasks.errors import RegistryError
from tasks.promotion import (
    CHAMPION,
    MAX_REASON,
    PromotionConfig,
    erasure_pending,
    promote,
    promotion_verdicts,
    refusal,
)
from tasks.register import RegisterConfig

DAY_S = 24 * 3600  # long enough for an ops rota to answer, short enough not to sign off stale gates
POLL_S = 10  # how often the paused run asks the Prefect API whether it was resumed


class Approval(RunInput):
    """The decision the paused run waits for; the Prefect UI renders it as the resume form."""

    approved: bool
    # Self-declared: Prefect OSS has no users, so who may resume is whoever may reach its API.
    approver: str = Field(min_length=1, max_length=200, pattern=r"\S")
    reason: str = Field(default="", max_length=MAX_REASON)


def check_gates(name: str, version: str, cfg: RegisterConfig,
                policy: PromotionConfig) -> str | None:
    """Refuse a failed gate as promote would, before anyone is asked to approve; returns the
    current champion. Read without promote's lock: promote checks again under it."""
    client = tracking.client()
    try:
        rm = client.get_registered_model(name)
        tags = client.get_model_version(name, version).tags
        current = str(rm.aliases[CHAMPION]) if CHAMPION in (rm.aliases or {}) else None
        champion = (current, client.get_model_version(name, current).tags) if current else None
    except MlflowException:
        raise RegistryError(f"no registered model {name!r} with a version {version}; see "
                            "`privgen models`") from None
    if current == version:
        return current
    _, failed = promotion_verdicts(tags, champion, cfg, policy)
    if erasure_pending(tags) and not failed:
        get_run_logger().warning("%s version %s: %s", name, version, erasure_pending(tags))
    if failed:
        # No approval overrides a failed gate; an audited override is `privgen promote --force`.
        raise RegistryError(refusal(name, version, failed, " before asking for approval",
                                    "override with `privgen promote --force --reason TEXT`"))
    return current


def _ask(name: str, version: str, current: str | None, reason: str,
         timeout_s: int) -> Approval:
    logger = get_run_logger()
    logger.info("waiting up to %.1f h for an ops decision on %s version %s: approve or reject "
                "by resuming flow run %s in the Prefect UI", timeout_s / 3600, name, version,
                flow_run.id)
    form = Approval.with_initial_data(description=(
        f"Make **{name}** version **{version}** the `{CHAMPION}`"
        + (f" in place of version {current}" if current else "") + "? Every gate passes."
        + (f"\n\nRequested because: {reason}" if reason else "")))
    try:
        # A blocking pause: the run keeps its process and polls the API, so it works both when
        # the CLI calls the flow in-process and under a worker. suspend_flow_run would free a
        # worker's infrastructure while waiting, but needs a deployment and persisted results.
        return pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=POLL_S,
                              key=f"approve-{name}-{version}")
    except FlowPauseTimeout:
        raise RegistryError(f"nobody approved or rejected {name} version {version} within "
                            f"{timeout_s} s; nothing changed, run the promotion flow again"
                            ) from None


# Parameters are validated here, not by Prefect: its validator is a pydantic model, on which a
# field named ``register`` shadows an attribute and warns on every call.
@flow(name="privgen-promotion", flow_run_name="promote-{name}-v{version}", log_prints=False,
      validate_parameters=False)
def promotion_flow(name: str, version: str, reason: str = "",
                   register: RegisterConfig | None = None, policy: PromotionConfig | None = None,
                   approval_timeout_s: int = DAY_S) -> dict:
    """Make ``version`` of ``name`` the champion if its gates pass and, when
    ``policy.require_approval``, once ops approve it; ``reason`` is shown to the approver."""
    # A deployment run from the UI passes the configs as plain dicts.
    register = RegisterConfig.model_validate(register or {})
    policy = PromotionConfig.model_validate(policy or {})
    logger = get_run_logger()
    result = {"name": name, "version": version, "promoted": False, "entry": None}
    current = check_gates(name, version, register, policy)
    if current == version:
        logger.info("%s version %s already is the champion; nothing to do", name, version)
        return result
    who, why = "promotion-flow", reason
    if policy.require_approval:
        decision = _ask(name, version, current, reason, approval_timeout_s)
        who = decision.approver.strip()
        if not decision.approved:
            # Not written to the registry history: every entry there is read as a change of
            # champion (rollback's lineage, the mirrored stages). This run's logs and its stored
            # input keep the rejection.
            logger.warning("%s rejected %s version %s: %s", who, name, version,
                           decision.reason or "no reason given")
            return {**result, "rejected_by": who, "reason": decision.reason.strip()}
        why = decision.reason.strip() or reason
    entry = promote(name, version, register, policy, who=who, reason=why)
    if entry is None:  # crowned by someone else while we waited
        logger.info("%s version %s became champion meanwhile; nothing changed", name, version)
        return result
    logger.info("%s version %s is champion (was %s), by %s; history #%d", name, version,
                entry["from"] or "none", who, entry["seq"])
    return {**result, "promoted": True, "entry": entry}


def decide(name: str, version: str, *, approved: bool, approver: str, reason: str = "",
           wait_s: float = 30.0) -> str:
    """Resume the paused promotion run of ``name`` ``version`` with a decision; returns the run's
    name. Retries briefly: the API refuses input until the pause has registered its form."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    run_name = f"promote-{name}-v{version}"
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[run_name]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
    if not runs:
        raise RegistryError(f"no promotion of {name} version {version} is waiting for approval; "
                            f"start one with `privgen promote {name} {version}`")
    decision = {"approved": approved, "approver": approver, "reason": reason}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            resume_flow_run(runs[0].id, run_input=decision)
            return run_name
        except RuntimeError as exc:
            # "Run input schema not found": the pause has not saved its form yet. Anything
            # else is the form refusing the decision (an empty approver, say).
            if "schema not found" not in str(exc) or time.monotonic() > deadline:
                raise RegistryError(f"could not resume {run_name}: {exc}") from None
            time.sleep(1.0)
