"""Promote: gate a registered version for ``champion``, move the aliases under a registry lock,
mirror the legacy stages, and keep the audit trail in the registry itself.

The trail is one registered-model tag per change, ``history.000042`` → compact JSON, written under
the lock with the next sequence number, so it lives and is backed up with the registry.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import os
import random
import re
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from tasks import tracking
from tasks.errors import RegistryError
from tasks.gates import RegisterConfig, gates

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
LOCK_SUFFIX = ".promotion-lock"
_HISTORY_KEY = re.compile(r"^history\.(\d+)$")
MAX_REASON = 1000  # history entries stay small: every registry read returns all of them


class PromotionConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Relative slack on held-out perplexity against the champion: small DP models move a few
    # per cent between seeds, and a challenger within that noise is not a regression.
    perplexity_tolerance: float = Field(default=0.05, ge=0.0)
    # Regulated releases need an ops sign-off before a version becomes champion: the promotion
    # flow (flows/approval.py) then pauses until a person approves or rejects in Prefect.
    require_approval: bool = False
    # A version trained on a person who has since asked to be erased (`privgen erase` tags it
    # erasure.pending): promotion warns; true refuses it like a failed gate (issue 15).
    refuse_erasure_pending: bool = False


# ---- policy: pure functions of tags and history ----------------------------------------------

def _number(tags: dict[str, str], key: str) -> float:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return math.nan


def version_gates(tags: dict[str, str], cfg: RegisterConfig) -> dict[str, str]:
    """The registration gates re-checked from a version's own tags against today's policy, and
    any other gate recorded at registration (an audit, say) as it was recorded."""
    train = {"private": tags.get("privacy.private") == "True",
             "epsilon": _number(tags, "privacy.epsilon"),
             "family": tags.get("train.family", "causal_lm")}
    # Only causal_lm's perplexity is gated (``gates``); a version registered before families
    # is a causal_lm and always has one.
    likelihood = train["family"] == "causal_lm"
    verdicts = gates(train, {"perplexity": _number(tags, "eval.perplexity") if likelihood
                             else None, "usable_rate": _number(tags, "eval.usable_rate")}, cfg)
    for gate, key in (("private", "privacy.private"), ("epsilon", "privacy.epsilon"),
                      ("perplexity", "eval.perplexity"), ("usable_rate", "eval.usable_rate")):
        if key not in tags and (gate != "perplexity" or likelihood):
            verdicts[gate] = f"fail: the version has no {key} tag"
    recorded = {k.removeprefix("gate."): v for k, v in tags.items() if k.startswith("gate.")}
    if cfg.require_audit and tags.get("audit.verdict") != "pass" and not any(
            g.startswith("audit") and v != "pass" for g, v in recorded.items()):
        verdicts["audit"] = "fail: the version has no passed privacy audit (audit.verdict tag)"
    return {**recorded, **verdicts}


def champion_gate(tags: dict[str, str], champion: tuple[str, dict[str, str]] | None,
                  tolerance: float) -> str:
    """"pass" unless the version's perplexity is worse than the champion's beyond ``tolerance``
    (only when both have one: families without a likelihood, or of different families, are
    not compared by it)."""
    if champion is None:
        return "pass"
    version, champion_tags = champion
    mine, theirs = _number(tags, "eval.perplexity"), _number(champion_tags, "eval.perplexity")
    if math.isnan(theirs) or math.isnan(mine) or mine <= theirs * (1 + tolerance) or \
            tags.get("train.family", "causal_lm") != champion_tags.get("train.family",
                                                                         "causal_lm"):
        return "pass"
    return (f"fail: perplexity {mine:.2f} worse than champion version {version}'s {theirs:.2f} "
            f"beyond the {tolerance:.0%} tolerance")


def read_history(tags: dict[str, str]) -> list[dict]:
    """The history entries among a registered model's tags, oldest first."""
    entries = []
    for key, value in tags.items():
        if _HISTORY_KEY.match(key):
            try:
                entries.append(json.loads(value))
            except json.JSONDecodeError:
                raise RegistryError(f"registered-model tag {key} is not a privgen history entry; "
                                    "restore it or delete it in the MLflow UI") from None
    return sorted(entries, key=lambda e: e["seq"])


def _unwind(stack: list[str], version: str) -> None:
    """Drop ``version``'s last reign and everything crowned after it."""
    if version in stack:
        del stack[len(stack) - 1 - stack[::-1].index(version):]


def lineage(entries: list[dict]) -> list[str]:
    """Champions still standing in line, oldest first: each promotion pushes, each rollback pops.

    A promotion's ``from`` is pushed when missing, so a champion crowned outside privgen (by the
    training flow, or in the UI) can still be rolled back to."""
    stack: list[str] = []
    for e in entries:
        if e["action"] == "rollback":
            _unwind(stack, e["from"])
        elif e["from"] and (not stack or stack[-1] != e["from"]):
            stack.append(e["from"])
        if not stack or stack[-1] != e["to"]:
            stack.append(e["to"])
    return stack


def rollback_target(entries: list[dict], current: str | None) -> str | None:
    stack = lineage(entries)
    if current:
        _unwind(stack, current)
    return stack[-1] if stack else None


def desired_stages(stages: dict[str, str], aliases: dict[str, str],
                   entries: list[dict]) -> dict[str, str]:
    """Legacy stage per version from the aliases: champion → Production, challenger → Staging,
    any former champion → Archived, the rest None. ``stages`` maps version → current stage."""
    former = {v for e in entries for v in (e["from"], e["to"]) if v}

    def stage(version: str, now: str) -> str:
        if aliases.get(CHAMPION) == version:
            return "Production"
        if aliases.get(CHALLENGER) == version:
            return "Staging"
        return "Archived" if version in former or now in ("Production", "Archived") else "None"

    return {v: stage(v, now) for v, now in stages.items()}


def actor() -> str:
    """Who acts: ``PRIVGEN_ACTOR`` (set it for CI and service accounts), else the OS user."""
    try:
        return os.environ.get("PRIVGEN_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # a container UID without a passwd entry
        return f"uid-{os.getuid()}"


# ---- registry operations ---------------------------------------------------------------------

@contextmanager
def registry_lock(client: MlflowClient, name: str, lease_s: float = 30.0,
                  wait_s: float = 60.0) -> Iterator[Callable[[], None]]:
    """Hold the promotion lock of registered model ``name``; yields a fence that raises if the
    lock was lost, to call before each write.

    The lock is a registered model ``<name>.promotion-lock`` created with its owner's token and
    lease expiry as tags, and deleted on release. Creating a registered model is the one registry
    write that is atomic on every backend: the name is the table's key, so SQLite (one writer at
    a time, across processes) and PostgreSQL (unique index, behind any number of server workers)
    let exactly one concurrent create win and answer the rest RESOURCE_ALREADY_EXISTS. Tags cannot
    do this: setting one is an upsert with no compare-and-set, so two writers that each write and
    re-read can both see their own value and both go on, unless one assumes timings that a remote
    store never promises. The history sequence number is read and written under this lock.

    A holder that dies leaves the lock until its lease ends; the next contender then deletes it,
    after re-reading that the stale owner still holds it. Leases are long against the second a
    promotion takes, and the fence stops a holder paused past its lease from writing.
    """
    lock, token = name + LOCK_SUFFIX, uuid.uuid4().hex
    holder = f"{actor()}@{socket.gethostname()} pid {os.getpid()}"
    deadline, pause = time.monotonic() + wait_s, 0.05
    while True:
        try:
            client.create_registered_model(
                lock, tags={"owner": token, "holder": holder,
                            "expires": f"{time.time() + lease_s:.3f}"},
                description="privgen promotion lock; delete it only if its holder has died")
            break
        except MlflowException as exc:
            # DOES_NOT_EXIST: the holder released between our failed create and its error reply.
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        held = _lock_tags(client, lock)
        if held.get("owner") == token:
            break  # our create went through, but a lost reply made the client send it again
        if held and float(held.get("expires", "inf")) < time.time():
            _break_stale(client, lock, held)
            continue
        if time.monotonic() > deadline:
            raise RegistryError(
                f"model {name!r}: another promotion holds the registry lock "
                f"({held.get('holder', 'unknown')}); try again, or delete the registered model "
                f"{lock!r} if that process has died")
        time.sleep(pause * (1 + random.random()))
        pause = min(pause * 2, 1.0)

    def fence() -> None:
        if _lock_tags(client, lock).get("owner") != token:
            raise RegistryError(f"model {name!r}: lost the promotion lock after its "
                                f"{lease_s:.0f} s lease; nothing more was written, run the "
                                "command again")

    try:
        yield fence
    finally:
        if _lock_tags(client, lock).get("owner") == token:
            client.delete_registered_model(lock)


def _lock_tags(client: MlflowClient, lock: str) -> dict[str, str]:
    try:
        return client.get_registered_model(lock).tags
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise


def _break_stale(client: MlflowClient, lock: str, held: dict[str, str]) -> None:
    if _lock_tags(client, lock).get("owner") != held["owner"]:
        return
    log.warning("breaking the promotion lock %s: its holder %s let the lease expire", lock,
                held.get("holder", "unknown"))
    try:
        client.delete_registered_model(lock)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _registered(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model named {name!r}; run `privgen models` to see "
                            "what exists") from None


def _version_tags(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    try:
        return client.get_model_version(name, version).tags
    except MlflowException:
        raise RegistryError(f"model {name!r} has no version {version}; see "
                            f"`privgen models {name}`") from None


def _append(client: MlflowClient, name: str, tags: dict[str, str], entry: dict,
            fence: Callable[[], None]) -> dict:
    seq = 1 + max((int(m.group(1)) for m in map(_HISTORY_KEY.match, tags) if m), default=0)
    entry = {"seq": seq, "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **entry}
    fence()
    # Written before the alias moves: a crash in between leaves a claim, never a silent change.
    client.set_registered_model_tag(name, f"history.{seq:06d}", json.dumps(
        entry, separators=(",", ":"), sort_keys=True, ensure_ascii=False))
    return entry


def _crown(client: MlflowClient, name: str, aliases: dict[str, str], version: str,
           entries: list[dict]) -> None:
    """Point ``champion`` at ``version`` (one upsert, so readers never see it missing), retire
    ``challenger`` if it was the same version, and mirror the stages."""
    client.set_registered_model_alias(name, CHAMPION, version)
    if aliases.get(CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    aliases = {k: v for k, v in aliases.items() if k != CHALLENGER or v != version}
    aliases[CHAMPION] = version
    current = {str(mv.version): mv.current_stage
               for mv in client.search_model_versions(f"name='{name}'")}
    wanted = desired_stages(current, aliases, entries)
    with warnings.catch_warnings():
        # Stages are deprecated since MLflow 2.9 in favour of aliases and every call says so;
        # tools that only read stages still exist, so mirroring them here is deliberate.
        warnings.simplefilter("ignore", FutureWarning)
        # Demote before promoting, so a stage reader never sees two Production versions.
        for v, stage in sorted(wanted.items(), key=lambda kv: kv[1] == "Production"):
            if current[v] != stage:
                client.transition_model_version_stage(name, v, stage)


def _aliases(rm) -> dict[str, str]:
    return {alias: str(version) for alias, version in (rm.aliases or {}).items()}


def promotion_verdicts(tags: dict[str, str], champion: tuple[str, dict[str, str]] | None,
                       cfg: RegisterConfig, policy: PromotionConfig
                       ) -> tuple[dict[str, str], dict[str, str]]:
    """(every gate's verdict, the failed ones with their reasons) for making a version with
    ``tags`` champion in place of ``champion`` (version, tags)."""
    verdicts = {**version_gates(tags, cfg),
                "champion": champion_gate(tags, champion, policy.perplexity_tolerance)}
    if policy.refuse_erasure_pending and erasure_pending(tags):
        verdicts["erasure"] = f"fail: {erasure_pending(tags)}"
    return verdicts, {g: v.removeprefix("fail: ") for g, v in verdicts.items() if v != "pass"}


def erasure_pending(tags: dict[str, str]) -> str | None:
    """What a version's ``erasure.pending`` tag means, or None without one."""
    pending = [r for r in tags.get("erasure.pending", "").split(",") if r]
    if not pending:
        return None
    return (f"erasure request(s) {', '.join(pending)} name a person this version was trained "
            "on; retrain (later runs suppress them) and promote that version instead")


def refusal(name: str, version: str, failed: dict[str, str], when: str, override: str) -> str:
    """The one-line refusal naming each failed gate and what to do."""
    return (f"refused to promote {name} version {version}{when}: "
            + "; ".join(f"gate {g} failed ({why})" for g, why in failed.items())
            + f"; fix the model, or {override}")


def promote(name: str, version: str, cfg: RegisterConfig, policy: PromotionConfig, *,
            force: bool = False, reason: str | None = None, who: str | None = None,
            client: MlflowClient | None = None) -> dict | None:
    """Make ``version`` the champion if every gate passes, or despite failures with ``force`` and
    a ``reason``; returns its history entry, or None when it already is the champion."""
    reason = (reason or "").strip() or None
    if force and not reason:
        raise RegistryError("--force needs --reason TEXT: the reason goes into the history for "
                            "whoever audits this promotion")
    if reason and len(reason) > MAX_REASON:
        raise RegistryError(f"--reason is {len(reason)} characters; keep it under {MAX_REASON} "
                            "and link to the ticket for the rest")
    client = client or tracking.client()
    with registry_lock(client, name) as fence:
        rm = _registered(client, name)
        tags = _version_tags(client, name, version)
        aliases = _aliases(rm)
        current = aliases.get(CHAMPION)
        if current == version:
            return None
        champion = (current, _version_tags(client, name, current)) if current else None
        verdicts, failed = promotion_verdicts(tags, champion, cfg, policy)
        if failed and not force:
            raise RegistryError(refusal(name, version, failed, "",
                                        "override with --force --reason TEXT"))
        warning = erasure_pending(tags)
        entry = _append(client, name, rm.tags, {
            "actor": who or actor(), "action": "force-promote" if failed else "promote",
            "from": current, "to": version, "reason": reason, "gates": verdicts,
            **({"warnings": [warning]} if warning and "erasure" not in verdicts else {})}, fence)
        _crown(client, name, aliases, version, [*read_history(rm.tags), entry])
    return entry


def rollback(name: str, *, reason: str | None = None, who: str | None = None,
             client: MlflowClient | None = None) -> dict:
    """Give ``champion`` back to the champion before the current one, as the history has it."""
    client = client or tracking.client()
    with registry_lock(client, name) as fence:
        rm = _registered(client, name)
        aliases, entries = _aliases(rm), read_history(rm.tags)
        current = aliases.get(CHAMPION)
        target = rollback_target(entries, current)
        if target is None:
            raise RegistryError(f"model {name!r} has no earlier champion in its history to roll "
                                f"back to; see `privgen history {name}`")
        _version_tags(client, name, target)
        entry = _append(client, name, rm.tags, {
            "actor": who or actor(), "action": "rollback", "from": current, "to": target,
            "reason": (reason or "").strip() or None, "gates": None}, fence)
        _crown(client, name, aliases, target, [*entries, entry])
    return entry


def history(name: str, client: MlflowClient | None = None) -> list[dict]:
    return read_history(_registered(client or tracking.client(), name).tags)
