"""Promote, rollback, history, mirrored stages and concurrent promotions on a local MLflow store.

Versions are real registry entries on a logged placeholder artifact, so no model is trained.
"""

import json
import threading
import time

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from flows.registry import list_versions
from tasks import promotion
from tasks.errors import RegistryError
from tasks.register import RegisterConfig

CFG, POLICY = RegisterConfig(), promotion.PromotionConfig()


def tags(ppl: float = 6.0, eps: float = 3.0, private: bool = True, **gates: str) -> dict:
    return {"privacy.epsilon": str(eps), "privacy.delta": "1e-05", "privacy.private": str(private),
            "eval.perplexity": str(ppl), "eval.usable_rate": "0.97", "audit.verdict": "pass",
            **{f"gate.{k}": v for k, v in gates.items()}}



def stages(client: MlflowClient, name: str) -> dict[str, str]:
    return {str(mv.version): mv.current_stage
            for mv in client.search_model_versions(f"name='{name}'")}


def champion(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


@pytest.fixture
def client(monkeypatch) -> MlflowClient:
    monkeypatch.setenv("PRIVGEN_ACTOR", "ops-alice")
    return MlflowClient()


# ---- policy ----------------------------------------------------------------------------------

def test_gates_are_rechecked_from_tags_against_todays_budget():
    assert set(promotion.version_gates(tags(eps=3.0), CFG).values()) == {"pass"}
    tight = RegisterConfig(max_epsilon=2.0)
    assert promotion.version_gates(tags(eps=3.0), tight)["epsilon"].startswith("fail: ε 3.000")


def test_gates_fail_on_missing_tags_and_keep_other_recorded_failures():
    verdicts = promotion.version_gates({"gate.audit": "fail: canary exposure 9.1"}, CFG)
    assert verdicts["epsilon"] == "fail: the version has no privacy.epsilon tag"
    assert verdicts["private"].startswith("fail") and verdicts["audit"].startswith("fail")


def test_champion_gate_allows_noise_within_tolerance_only():
    current = ("3", tags(ppl=6.0))
    assert promotion.champion_gate(tags(ppl=6.2), current, 0.05) == "pass"
    assert "worse than champion version 3" in promotion.champion_gate(tags(ppl=6.4), current, 0.05)
    assert promotion.champion_gate(tags(ppl=99.0), None, 0.05) == "pass"


def entry(seq, action, frm, to):
    return {"seq": seq, "action": action, "from": frm, "to": to}


def test_rollback_target_walks_back_the_lineage():
    h = [entry(1, "promote", None, "1"), entry(2, "promote", "1", "2"),
         entry(3, "promote", "2", "3"), entry(4, "rollback", "3", "2")]
    assert promotion.rollback_target(h, "2") == "1"
    assert promotion.rollback_target([*h, entry(5, "rollback", "2", "1")], "1") is None
    # re-promoting an old champion makes the one it replaced the rollback target
    assert promotion.rollback_target([*h, entry(5, "promote", "2", "1")], "1") == "2"


def test_rollback_reaches_a_champion_crowned_outside_privgen():
    # the training flow made version 4 champion without a history entry
    assert promotion.rollback_target([entry(1, "promote", "4", "5")], "5") == "4"


def test_desired_stages_follow_the_aliases():
    now = {"1": "Production", "2": "None", "3": "Staging", "4": "None", "5": "Staging"}
    wanted = promotion.desired_stages(now, {"champion": "2", "challenger": "4"},
                                      [entry(1, "promote", "1", "2")])
    assert wanted == {"1": "Archived", "2": "Production", "3": "None", "4": "Staging",
                      "5": "None"}


def test_a_tampered_history_entry_is_named():
    with pytest.raises(RegistryError, match=r"history\.000007"):
        promotion.read_history({"history.000007": "{not json"})


# ---- registry operations ---------------------------------------------------------------------

def test_promote_moves_champion_mirrors_stages_and_records_who_and_why(client, make_model):
    name = make_model(client, tags(6.0), tags(5.8), tags(5.7))
    client.set_registered_model_alias(name, "challenger", "2")
    promotion.promote(name, "1", CFG, POLICY)
    got = promotion.promote(name, "2", CFG, POLICY)
    assert champion(client, name) == "2"
    assert "challenger" not in client.get_registered_model(name).aliases  # 2 no longer waits
    client.set_registered_model_alias(name, "challenger", "3")
    promotion.promote(name, "2", CFG, POLICY, reason="no-op")  # already champion: no entry
    assert got["actor"] == "ops-alice" and got["action"] == "promote"
    assert (got["from"], got["to"]) == ("1", "2") and got["at"].endswith("Z")
    assert got["gates"] == {"private": "pass", "epsilon": "pass", "perplexity": "pass",
                            "usable_rate": "pass", "champion": "pass"}
    assert [e["seq"] for e in promotion.history(name)] == [1, 2]
    assert stages(client, name) == {"1": "Archived", "2": "Production", "3": "None"}
    promotion.rollback(name)  # mirrors again, now with 3 as challenger
    assert stages(client, name) == {"1": "Production", "2": "Archived", "3": "Staging"}


@pytest.mark.parametrize(("candidate", "gate"), [
    (tags(private=False), "private"),
    (tags(eps=12.0), "epsilon"),
    (tags(ppl=30.0), "perplexity"),
    (tags(ppl=7.0), "champion"),  # 6.0 × 1.05 is the most the champion allows
    (tags(audit="fail: canary exposure 9.1"), "audit"),
    ({**tags(audit_canary="fail: max canary exposure 9.97 bits"), "audit.verdict": "fail"},
     "audit_canary"),
    ({k: v for k, v in tags().items() if k != "audit.verdict"}, "audit"),  # never audited
])
def test_promote_refuses_naming_the_failed_gate(client, candidate, gate, make_model):
    name = make_model(client, tags(ppl=6.0), candidate)
    promotion.promote(name, "1", CFG, POLICY)
    with pytest.raises(RegistryError, match=rf"gate {gate} failed") as err:
        promotion.promote(name, "2", CFG, POLICY)
    assert "--force --reason" in str(err.value)
    assert champion(client, name) == "1" and len(promotion.history(name)) == 1


def test_force_needs_a_reason_and_is_recorded(client, make_model):
    name = make_model(client, tags(private=False))
    with pytest.raises(RegistryError, match="--reason"):
        promotion.promote(name, "1", CFG, POLICY, force=True)
    assert "champion" not in client.get_registered_model(name).aliases
    got = promotion.promote(name, "1", CFG, POLICY, force=True, reason="INC-42 baseline")
    assert got["action"] == "force-promote" and got["reason"] == "INC-42 baseline"
    assert got["gates"]["private"].startswith("fail")
    assert promotion.history(name)[-1] == got and champion(client, name) == "1"


def test_rollback_walks_back_and_stops_at_the_first_champion(client, make_model):
    name = make_model(client, tags(6.0), tags(5.9), tags(5.8))
    for v in "123":
        promotion.promote(name, v, CFG, POLICY)
    assert promotion.rollback(name, reason="bad batch")["to"] == "2"
    assert promotion.rollback(name)["to"] == "1" and champion(client, name) == "1"
    with pytest.raises(RegistryError, match="no earlier champion"):
        promotion.rollback(name)
    h = promotion.history(name)
    assert [(e["seq"], e["action"], e["from"], e["to"]) for e in h] == [
        (1, "promote", None, "1"), (2, "promote", "1", "2"), (3, "promote", "2", "3"),
        (4, "rollback", "3", "2"), (5, "rollback", "2", "1")]
    assert h[3]["reason"] == "bad batch" and h[3]["gates"] is None
    assert stages(client, name) == {"1": "Production", "2": "Archived", "3": "Archived"}


def test_unknown_model_or_version_says_what_to_do(client, make_model):
    name = make_model(client, tags())
    with pytest.raises(RegistryError, match="has no version 9"):
        promotion.promote(name, "9", CFG, POLICY)
    with pytest.raises(RegistryError, match="privgen models"):
        promotion.rollback("no-such-model")


def test_models_lists_stage_and_verdicts(client, make_model):
    name = make_model(client, tags(), tags(audit="fail: canary exposure 9.1"))
    promotion.promote(name, "1", CFG, POLICY)
    rows = {r["version"]: r for r in list_versions(name)}
    assert rows["1"]["stage"] == "Production" and rows["1"]["aliases"] == ["champion"]
    assert rows["1"]["epsilon"] == "3.0" and rows["2"]["stage"] == "None"
    assert rows["2"]["gates"] == {"audit": "fail: canary exposure 9.1"}


# ---- concurrency -----------------------------------------------------------------------------

def test_two_simultaneous_promotions_leave_one_champion_and_two_entries(client, make_model):
    name = make_model(client, tags(6.0), tags(6.0), tags(6.0))
    promotion.promote(name, "1", CFG, POLICY)
    start, done, seen, errors = threading.Barrier(3), threading.Event(), set(), []

    def promote(version):
        start.wait()
        try:
            promotion.promote(name, version, CFG, POLICY)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    def read():
        start.wait()
        while not done.is_set():
            seen.add(champion(MlflowClient(), name))

    threads = [threading.Thread(target=promote, args=(v,)) for v in "23"]
    reader = threading.Thread(target=read)
    for t in [*threads, reader]:
        t.start()
    for t in threads:
        t.join(60)
    done.set()
    reader.join(10)
    assert errors == []
    h = promotion.history(name)
    assert [e["seq"] for e in h] == [1, 2, 3]
    assert h[2]["from"] == h[1]["to"] and {h[1]["to"], h[2]["to"]} == {"2", "3"}
    assert champion(client, name) == h[2]["to"]
    assert list(stages(client, name).values()).count("Production") == 1
    assert seen and seen <= {"1", "2", "3"}
    assert not any(rm.name.endswith(promotion.LOCK_SUFFIX)
                   for rm in client.search_registered_models())


def test_lock_serializes_read_modify_write_across_threads(client, make_model):
    name = make_model(client)
    client.set_registered_model_tag(name, "n", "0")

    def bump():
        for _ in range(3):
            with promotion.registry_lock(MlflowClient(), name) as fence:
                n = int(MlflowClient().get_registered_model(name).tags["n"])
                time.sleep(0.01)  # widen the window a lost update needs
                fence()
                MlflowClient().set_registered_model_tag(name, "n", str(n + 1))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert client.get_registered_model(name).tags["n"] == "12"


def test_a_live_lock_blocks_and_a_stale_one_is_broken(client, make_model):
    name = make_model(client, tags())
    lock = name + promotion.LOCK_SUFFIX
    client.create_registered_model(lock, tags={"owner": "x", "holder": "bob@host pid 7",
                                               "expires": f"{time.time() + 60:.3f}"})
    with pytest.raises(RegistryError, match="bob@host pid 7"), \
            promotion.registry_lock(client, name, wait_s=0.2):
        pass
    client.set_registered_model_tag(lock, "expires", f"{time.time() - 1:.3f}")  # bob died
    promotion.promote(name, "1", CFG, POLICY)
    assert champion(client, name) == "1"
    with pytest.raises(Exception, match="not found"):
        client.get_registered_model(lock)


# ---- the CLI ---------------------------------------------------------------------------------

def test_cli_promote_history_rollback(client, make_model):
    from flows.cli import app

    name = make_model(client, tags(6.0), tags(private=False))
    runner = CliRunner()
    assert runner.invoke(app, ["promote", name, "1"]).exit_code == 0
    refused = runner.invoke(app, ["promote", name, "2"])
    assert refused.exit_code != 0 and "gate private failed" in str(refused.exception)
    forced = runner.invoke(app, ["promote", name, "2", "--force", "--reason", "INC-7"])
    assert forced.exit_code == 0 and "overrode private" in forced.stdout
    assert runner.invoke(app, ["rollback", name]).exit_code == 0
    shown = runner.invoke(app, ["history", name, "--json"])
    assert [(e["action"], e["to"], e["actor"]) for e in json.loads(shown.stdout)] == [
        ("promote", "1", "ops-alice"), ("force-promote", "2", "ops-alice"),
        ("rollback", "1", "ops-alice")]
    rows = json.loads(runner.invoke(app, ["models", name, "--json"]).stdout)
    assert [(r["version"], r["stage"], r["aliases"]) for r in rows] == [
        ("2", "Archived", []), ("1", "Production", ["champion"])]
    assert "stage" in runner.invoke(app, ["models", name]).stdout
    for cmd in ("promote", "rollback", "history"):
        assert "Usage" in runner.invoke(app, [cmd, "--help"]).stdout
