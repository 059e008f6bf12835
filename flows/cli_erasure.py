"""`privgen erase` and `privgen key`: erasure requests answered from lineage, and the
pseudonymization key's rotation (crypto-shredding). Registered on the app in flows/cli.py."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli_console import out

keys_app = typer.Typer(help="The pseudonymization keys: list them, rotate the current one, "
                            "destroy a retired one (crypto-shredding).", no_args_is_help=True)
# `privgen erase --subject C-123` must reach the command, to be refused with advice.
ERASE_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
_INLINE = ("the subject id was given on the command line, where the shell keeps it in its "
           "history: pipe it in (`privgen erase --subject < id.txt`), type it at the prompt "
           "(`privgen erase --subject`), or use --subject-file PATH; then remove that line "
           "from your shell history (e.g. `history -d N`)")


def erase(
    ctx: typer.Context,
    subject: Annotated[bool, typer.Option("--subject", help="Read the subject's raw id from "
                                          "standard input (a hidden prompt on a terminal); "
                                          "never give it on the command line.")] = False,
    subject_file: Annotated[Path | None, typer.Option("--subject-file", help="Read the "
                                                      "subject's raw id from this file.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config with the "
                                                "contract and anonymize settings.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override one field.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Answer an erasure request: list the model versions and synthetic batches trained on the
    subject's records, tag those versions erasure.pending, and suppress the subject at the
    ingest of every later run. Only the subject's keyed pseudonym is stored."""
    from flows.config import load_config
    from tasks import erasure, keys
    from tasks.anonymize import subject_column
    from tasks.errors import ConfigError

    if ctx.args:
        raise ConfigError(_INLINE)
    if subject == (subject_file is not None):
        raise ConfigError("give --subject (the id read from standard input) or --subject-file "
                          "PATH, one of the two")
    cfg = load_config(config, set_ or [])
    column = subject_column(cfg.contract, cfg.anonymize)
    spec = next(c for c in cfg.contract.columns if c.name == column)
    raw = _read_subject(subject_file, spec)
    held = keys.held(cfg.anonymize.key_file)
    request, affected = erasure.erase(raw, spec, held)
    del raw
    _prefect_report(erasure.report_markdown(request, column, list(held), affected))
    if as_json:
        out.print_json(json.dumps({"request": request, "column": column,
                                   "key_ids": list(held), **affected.to_dict()}))
        return
    _print_affected(request, column, affected)


def _read_subject(path: Path | None, spec) -> str:
    """One raw id from the file or standard input, checked against the column's pattern; the
    messages never repeat it."""
    from tasks.errors import InputError

    if path is not None:
        if not path.is_file():
            raise InputError(f"--subject-file {path}: file not found")
        text, where = path.read_text(), f"--subject-file {path}"
    elif sys.stdin is not None and sys.stdin.isatty():
        import getpass

        text, where = getpass.getpass(f"{spec.name} of the subject (not shown): "), "the prompt"
    else:
        text, where = sys.stdin.read(), "standard input"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise InputError(f"{where}: holds {len(lines)} non-empty lines; give exactly one "
                         f"{spec.name} per erasure request")
    if spec.regex and not re.search(spec.regex, lines[0]):
        raise InputError(f"{where}: the id does not match {spec.name}'s pattern {spec.regex} in "
                         "the data contract (it is not shown); check it against the request")
    return lines[0]


def _prefect_report(markdown: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key="erasure-request",
                             description="privgen erase: lineage of one erasure request")


def _print_affected(request: str, column: str, affected) -> None:
    from tasks.erasure import PENDING

    table = Table("model version", "synthetic batches drawn from it")
    for version in affected.versions:
        files = [b["file"] or f"(run {b['run_id']}, no manifest)" for b in affected.batches
                 if b["version"] == version]
        table.add_row(version, "\n".join(files) or "none")
    out.print(f"[green]erasure request {request}[/] recorded ({column}, keyed pseudonym only): "
              f"{len(affected.runs)} training run(s) hold the subject")
    if affected.versions:
        out.print(table)
        out.print(f"tagged {PENDING}: {', '.join(affected.versions)}")
    else:
        out.print("no registered model version was trained on the subject")
    for caveat in affected.caveats():
        out.print(f"[yellow]{caveat}[/]")
    out.print("next: every later `privgen run` quarantines the subject's rows (reason erased); "
              "retrain, promote the new version, then retire the versions and delete the "
              "batches listed")


@keys_app.command(name="list")
def list_keys(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config holding "
                                                "anonymize.key_file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The keys held here and every key id the MLflow store knows, with the runs, versions
    and batches made under each: what destroying a key makes unlinkable."""
    from flows.config import load_config
    from tasks import erasure, keys

    cfg = load_config(config)
    held = keys.held(cfg.anonymize.key_file)
    current = next(iter(held))
    outputs = erasure.outputs_by_key()
    rows = []
    for key_id in dict.fromkeys([*held, *outputs]):
        o = outputs.get(key_id, {"runs": [], "versions": [], "batches": []})
        state = "current" if key_id == current else "retired, held" if key_id in held else \
            "not held here (destroyed, or kept elsewhere)"
        rows.append({"key_id": key_id, "state": state, "runs": len(o["runs"]),
                     "versions": o["versions"], "batches": [b["file"] or b["run_id"]
                                                            for b in o["batches"]]})
    if as_json:
        out.print_json(json.dumps({"keys": rows, "events": keys.events()}))
        return
    table = Table("key id", "state", "training runs", "model versions", "batches")
    for r in rows:
        table.add_row(r["key_id"], r["state"], str(r["runs"]), ", ".join(r["versions"]) or "-",
                      str(len(r["batches"])))
    out.print(table)


@keys_app.command()
def rotate(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config holding "
                                                "anonymize.key_file.")] = None,
) -> None:
    """Retire the current local key (kept until `privgen key destroy`) and create a new one;
    later runs pseudonymize under the new key."""
    from flows.config import load_config
    from tasks import erasure, keys

    cfg = load_config(config)
    rotation = keys.rotate(cfg.anonymize.key_file)
    old = erasure.outputs_by_key().get(rotation.old, {"runs": [], "versions": [],
                                                       "batches": []})
    out.print(f"[green]new key {rotation.new}[/] (recorded in MLflow experiment "
              f"{keys.EXPERIMENT}); key {rotation.old} retired to {rotation.retired_file}")
    out.print(f"no longer linkable once key {rotation.old} is destroyed: "
              f"{len(old['runs'])} training run(s), versions "
              f"{', '.join(old['versions']) or 'none'}, {len(old['batches'])} batch(es)"
              + "".join(f"\n  {b['file'] or b['run_id']}" for b in old["batches"]))
    out.print(f"erasure requests made under key {rotation.old} stay enforced while it is held; "
              f"destroy it with `privgen key destroy {rotation.old}`")
    out.print(f"privacy ledger: run each scheduled training once before destroying key "
              f"{rotation.old}: that run links its population to the same people's under the "
              "old key (privgen budget keeps counting their releases); destroyed first, the "
              "same dataset's earlier releases count as if every subject had been in them")


@keys_app.command()
def destroy(
    key_id: Annotated[str, typer.Argument(help="The retired key's id (privgen key list).")],
    force: Annotated[bool, typer.Option("--force", help="Destroy even though erasure requests "
                                        "are enforced only through this key.")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config holding "
                                                "anonymize.key_file.")] = None,
) -> None:
    """Overwrite and delete a retired key: its pseudonyms then link to no one."""
    from flows.config import load_config
    from tasks import erasure, keys
    from tasks.errors import PrivacyError

    cfg = load_config(config)
    others = set(keys.held(cfg.anonymize.key_file)) - {key_id}
    orphaned = [r["request"] for r in erasure.requests()
                if key_id in r["pseudonyms"] and not others & set(r["pseudonyms"])]
    if orphaned and not force:
        raise PrivacyError(
            f"{len(orphaned)} erasure request(s) are enforced at ingest only through key "
            f"{key_id} ({', '.join(orphaned[:5])}): destroyed, their subjects' rows would no "
            "longer be recognized; submit them again under the current key, or pass --force "
            "if no data under that key will be ingested again")
    path = keys.destroy(cfg.anonymize.key_file, key_id)
    out.print(f"[green]destroyed key {key_id}[/] ({path}); outputs made under it no longer link "
              "to any person")
