"""``privgen models``, ``promote``, ``approve``, ``rollback`` and ``history``: what ops do with
the MLflow model registry (registered as commands of the app in ``flows.cli``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli_console import console, out, run_with_progress
from flows.cli_privacy import promotion_line


def models_(
    name: Annotated[str | None, typer.Argument(help="One model; all if omitted.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered model versions with their aliases, ε/δ and key metrics."""
    from flows.registry import list_versions

    rows = list_versions(name)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("model", "version", "aliases", "stage", "family", "ε", "δ", "perplexity",
                  "verdict", "created")
    for r in rows:
        failed = [g for g, v in r["gates"].items() if v != "pass"]
        verdict = f"{r['verdict']} ({', '.join(failed)})" if failed else r["verdict"] or "-"
        table.add_row(r["name"], r["version"], ", ".join(r["aliases"]), r["stage"],
                      r["family"], r["epsilon"] or "-", r["delta"] or "-",
                      r["perplexity"] or "-", verdict, r["created"])
    out.print(table if rows else "no registered models yet; run `privgen run`")


def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    force: Annotated[bool, typer.Option("--force", help="Promote even though gates fail; "
                                        "needs --reason.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the history; "
                                               "required with --force.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config holding "
                                                "the gates (the register section).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override one field, e.g. "
                                                   "--set register.max_epsilon=4.")] = None,
) -> None:
    """Make VERSION the champion of NAME if it passes the gates: a private model, ε within the
    budget, perplexity under the threshold and not worse than the champion's beyond the
    tolerance. The change, who made it and why go into the registry's history."""
    from flows.config import load_config
    from tasks.promotion import promote as promote_version

    cfg = load_config(config, set_ or [])
    if cfg.promote.require_approval and not force:
        from flows.approval import promotion_flow

        out.print(f"waiting for an ops decision: resume flow run promote-{name}-v{version} in "
                  f"the Prefect UI, or run `privgen approve {name} {version} --approver NAME`")
        result = run_with_progress("promotion flow", promotion_flow, name, version,
                                   reason or "", cfg.register_, cfg.promote)
        if not result["promoted"]:
            from tasks.errors import RegistryError

            raise RegistryError(f"{result.get('rejected_by', 'ops')} rejected {name} version "
                                f"{version}: {result.get('reason') or 'no reason given'}")
        entry = result["entry"]
    else:
        entry = promote_version(name, version, cfg.register_, cfg.promote, force=force,
                                reason=reason)
    if entry is None:
        out.print(f"{name} version {version} already is the champion; nothing changed")
        return
    out.print(f"[green]{name} version {version} is champion[/] (was "
              f"{entry['from'] or 'none'}; {_why(entry)}); history #{entry['seq']}")
    for warning in entry.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    out.print(promotion_line(name, version) or "no ledger entry for its training run")


def approve(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="The version waiting for approval.")],
    approver: Annotated[str, typer.Option("--approver", help="Who decides, for the "
                                          "history.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the history.")] = "",
    reject: Annotated[bool, typer.Option("--reject", help="Refuse the promotion "
                                         "instead.")] = False,
) -> None:
    """Approve (or --reject) a promotion waiting in Prefect for an ops decision, as started by
    `privgen promote` when the policy sets promote.require_approval."""
    from flows.approval import decide

    run = decide(name, version, approved=not reject, approver=approver, reason=reason)
    out.print(f"[green]{'rejected' if reject else 'approved'}[/]: flow run {run} resumes")


def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the "
                                               "history.")] = None,
) -> None:
    """Give the champion alias of NAME back to the champion before the current one, as the
    registry's history has it, without re-checking gates."""
    from tasks.promotion import rollback as rollback_model

    entry = rollback_model(name, reason=reason)
    out.print(f"[green]{name} version {entry['to']} is champion again[/] (was "
              f"{entry['from'] or 'none'}); history #{entry['seq']}")


def history(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show who changed the champion of NAME, when (UTC), from which version to which, and
    why, oldest first, from the registry itself."""
    from tasks.promotion import history as read_history

    entries = read_history(name)
    if as_json:
        out.print_json(json.dumps(entries))
        return
    table = Table("#", "when (UTC)", "who", "action", "change", "why")
    for e in entries:
        table.add_row(str(e["seq"]), e["at"].replace("T", " ").rstrip("Z"), e["actor"],
                      e["action"], f"{e['from'] or '-'} → {e['to']}", _why(e))
    out.print(table if entries else f"no promotions of {name} recorded yet")



def _why(entry: dict) -> str:
    verdicts = entry.get("gates") or {}
    failed = [g for g, v in verdicts.items() if v != "pass"]
    parts = [f"overrode {', '.join(failed)}"] if failed else (
        ["all gates passed"] if verdicts else [])
    return "; ".join([*parts, *filter(None, [entry.get("reason")])]) or "-"
