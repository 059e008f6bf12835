"""The ``privgen`` command line: one entry point for the flows and the registry."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from flows import cli_erasure, cli_registry
from flows.cli_console import console, out, quiet_prefect_console, run_with_progress, state
from flows.cli_console import stop as _stop
from flows.cli_privacy import budget
from flows.environment import apply_defaults
from flows.shutdown import Stop, Stopped, where

app = typer.Typer(
    help="privgen: differentially private generative models and synthetic data from personal "
         "records, as tracked Prefect flows with an MLflow model registry.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks and "
                                              "Prefect's own console logs.")] = False) -> None:
    state["debug"] = debug


@app.command()
def run(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML file overriding "
                                                "the built-in defaults.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override one field, e.g. "
                                                   "--set train.epochs=2 (repeatable).")] = None,
    preflight: Annotated[bool, typer.Option("--preflight", help="Stop after checking the "
                                            "privacy plan (σ, steps, ε) and a dry run.")] = False,
    resume: Annotated[str | None, typer.Option("--resume", metavar="RUN_ID", help="Continue a "
                                               "killed or failed run in the same MLflow run, "
                                               "with the config it started with.")] = None,
) -> None:
    """Run the whole training flow: ingest → validate → anonymize → preflight → train →
    evaluate → register (a config with ingest.kind: images runs the image flow)."""
    from flows.cli_images import is_image_config
    from flows.config import config_from_tree, load_config
    from tasks.errors import ConfigError

    if resume is None and is_image_config(config, set_ or []):  # ingest.kind: images
        from flows.cli_images import run_images

        return run_images(config, set_ or [], preflight, run_with_progress, out)
    if resume is not None:
        if config is not None or set_:
            raise ConfigError("--resume uses the config the run started with; drop --config "
                              "and --set")
        from tasks import tracking

        tracking.reopen_run(resume)  # a clear error for an unknown or finished run
        cfg = config_from_tree(tracking.download_json(resume, "config.json"))
    else:
        cfg = load_config(config, set_ or [])
    if cfg.ingest.sql is None and not Path(cfg.ingest.path).is_file():
        from tasks.errors import InputError

        raise InputError(f"{cfg.ingest.path}: input file not found; set ingest.path "
                         "(--set ingest.path=FILE or in the config file)")
    _announce_key(cfg)
    from flows.training import training_flow

    started = time.monotonic()
    result = run_with_progress("training flow", training_flow, cfg, preflight, resume)
    if preflight:
        out.print(f"[green]plan ok[/]: {result['preflight']['summary']}")
        return
    m, t, e = result["model"], result["train"], result["eval"]
    out.print(
        f"[green]done[/] in {time.monotonic() - started:.0f} s: {_rows_line(result)}; "
        f"{t.get('family', 'causal_lm')} model, ε={t['epsilon']:.2f} δ={t['delta']:.1e}"
        + (f"; held-out perplexity {e['perplexity']:.2f}" if e.get("perplexity") is not None
           else "") + "\n"
        f"model [bold]{m['name']}[/] version {m['version']}: "
        + ("[green]champion[/]" if m["promoted"] else
           "challenger only (" + "; ".join(v for v in m["verdicts"].values() if v != "pass") + ")")
        + _audit_line(e, result.get("control"), result.get("audit_power"))
        + f"\nMLflow run {result['run_id']}; open the UI with: "
        f"mlflow ui --backend-store-uri {os.environ['MLFLOW_TRACKING_URI']}"
    )


def _rows_line(result: dict) -> str:
    """Where every input row went: kept, quarantined by validation, suppressed by anonymize for
    k-anonymity (its count from the run's metrics, so a resumed run reports it too)."""
    from tasks import tracking

    rows = result["rows"]
    metrics = tracking.client().get_run(result["run_id"]).data.metrics
    suppressed = int(metrics.get("anonymize.rows_suppressed", 0))
    kept = int(metrics.get("anonymize.rows", rows["rows_kept"] - suppressed))
    erased = int(rows.get("rows_erased", 0))  # quarantined too, but not for a fault
    return (f"{rows['rows_in']} rows in: {kept} kept, {rows['rows_quarantined'] - erased} "
            f"quarantined (validation), " + (f"{erased} erased on request, " if erased else "")
            + f"{suppressed} suppressed (k-anonymity)")


def _audit_line(evaluation: dict, control: dict | None, power: dict | None) -> str:
    """Each audited model's gate verdicts, then whether the audit told the two apart."""
    def verdicts(result: dict) -> str:
        gates = result.get("audit", {}).get("verdict", {})
        return ", ".join(f"{g} [green]pass[/]" if v == "pass" else f"{g} [red]fail[/]"
                         for g, v in gates.items()) or "not run"

    line = f"\nprivacy audit: {verdicts(evaluation)}"
    if control:
        line += f"; non-private control: {verdicts(control)}"
    if power:
        line += f"\n{'[green]' if power['has_power'] else '[yellow]'}{power['summary']}[/]"
    return line


def _announce_key(cfg) -> None:
    from tasks.anonymize import KEY_ENV, load_key

    if os.environ.get(KEY_ENV) or cfg.anonymize.key_file is None:
        return
    existed = Path(cfg.anonymize.key_file).exists()
    load_key(cfg.anonymize.key_file)
    if not existed:
        console.print(f"[yellow]created a local pseudonymization key at {cfg.anonymize.key_file} "
                      f"(mode 0600, git-ignored); set {KEY_ENV} from a secret store in "
                      "production[/]")


@app.command()
def validate(
    input_path: Annotated[Path | None, typer.Argument(
        metavar="INPUT", help="CSV/TSV (optionally .gz), Parquet or JSONL file.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config with the "
                                                "contract and ingest settings.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override one field.")] = None,
    infer: Annotated[Path | None, typer.Option("--infer", help="Propose a contract for INPUT "
                                               "and write it to this YAML file to edit.")] = None,
    replay: Annotated[Path | None, typer.Option("--replay", help="Re-check a quarantine "
                                                "file after fixing its rows.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the kept rows, "
                                          "quarantine and reports.")] = Path("runs/validate"),
) -> None:
    """Run the ingest and validate stages on one file: kept rows, quarantine with a reason per
    row, and a JSON + HTML report; or propose a contract (--infer); or re-check a quarantine."""
    from flows.config import load_config
    from tasks import infer as inference
    from tasks.errors import ConfigError
    from tasks.validate import replay as replay_quarantine
    from tasks.validate import validate_file

    cfg = load_config(config, set_ or [])
    if infer is not None:
        if input_path is None:
            raise ConfigError("--infer needs INPUT: the file to propose a contract for")
        proposal = inference.infer(input_path, cfg.ingest.model_copy(update={"path": input_path}))
        infer.parent.mkdir(parents=True, exist_ok=True)
        infer.write_text(proposal.to_yaml())
        out.print(f"[green]wrote[/] a proposed contract for {proposal.rows} rows and "
                  f"{len(proposal.contract.columns)} columns to {infer}; edit it, then "
                  f"`privgen validate {input_path} --config {infer}`")
        return
    if replay is not None:
        outcome = replay_quarantine(replay, cfg.contract, cfg.ingest, cfg.validate_, out_dir)
    elif input_path is not None:
        from tasks.erasure import ingest_suppressor

        outcome = validate_file(input_path, cfg.contract,
                                cfg.ingest.model_copy(update={"path": input_path}),
                                cfg.validate_, out_dir,
                                erased=ingest_suppressor(cfg.contract, cfg.anonymize))
    else:
        raise ConfigError("give INPUT, --infer with INPUT, or --replay QUARANTINE")
    r = outcome.report
    out.print(f"[green]checked[/] {r.rows_in} rows: {r.rows_kept} kept, {r.rows_quarantined} "
              f"quarantined ({outcome.quarantine_path}); report: {outcome.html_path}")


@app.command()
def anonymize(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="CSV/TSV, Parquet or "
                                               "JSONL file.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Output file; .parquet, .csv "
                                           "or .jsonl. A report is written beside it.")],
    text_column: Annotated[list[str] | None, typer.Option(
        "--text-column", "-t", help="A free-text column to scrub (repeatable).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config whose "
                                                "contract gives columns their roles.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override one field.")] = None,
) -> None:
    """Run the anonymize stage alone: scrub the --text-column columns, apply the contract's
    operators to the columns it knows, keep every other column as it is."""
    from flows.config import load_config
    from tasks.anonymize import anonymize as anonymize_frame
    from tasks.anonymize import load_key
    from tasks.contract import ColumnSpec, DataContract, Role
    from tasks.erasure import erased_rows
    from tasks.errors import ConfigError, InputError
    from tasks.generate import output_format, write_records
    from tasks.ingest import INGEST_ERROR, read_source
    from tasks.sources import META
    from tasks.storage import write_json

    cfg = load_config(config, set_ or [])
    fmt = output_format(out_path)
    df = read_source(input_path, cfg.ingest.model_copy(update={"path": input_path}))
    unreadable = int(df[INGEST_ERROR].notna().sum()) if INGEST_ERROR in df else 0
    if unreadable:
        raise InputError(f"{input_path}: {unreadable} lines could not be parsed; run `privgen "
                         "validate` on it first and anonymize its kept rows")
    columns = [c for c in df.columns if c not in META]
    texts = set(text_column or [])
    missing = sorted(texts - set(columns))
    if missing:
        raise ConfigError(f"--text-column {', '.join(missing)}: not a column of {input_path} "
                          f"(columns: {', '.join(columns)})")
    known = {c.name: c for c in cfg.contract.columns} if config else {}
    specs = tuple(known.get(c) or ColumnSpec(
        name=c, nullable=True, role=Role.TEXT if c in texts else Role.CATEGORY) for c in columns)
    anon = cfg.anonymize
    if not config:  # the built-in per-column settings describe the demo data, not this file
        anon = anon.model_copy(update={"operators": {}, "generalize": {}, "entities": {}})
    key = load_key(anon.key_file)
    # Subjects who asked to be erased: dropped, no copy kept (as `privgen run` ingest does).
    erased = erased_rows(df, cfg.contract, cfg.anonymize)
    kept, suppressed, report = anonymize_frame(df.loc[~erased, columns],
                                               DataContract(columns=specs), anon, key)
    write_records(kept.reset_index(drop=True), out_path, fmt)
    write_json({**report.to_dict(), "rows_suppressed": len(suppressed),
                "rows_erased": int(erased.sum())}, out_path.with_suffix(".anonymization.json"))
    if len(suppressed):
        write_records(suppressed.reset_index(drop=True),
                      out_path.with_suffix(f".suppressed{out_path.suffix}"), fmt)
    out.print(f"[green]anonymized[/] {len(df)} rows: {len(kept)} written to {out_path}, "
              f"{len(suppressed)} suppressed for k-anonymity, {int(erased.sum())} dropped as "
              f"erased on request; key id {report.key_id}; report: "
              f"{out_path.with_suffix('.anonymization.json')}")


@app.command()
def generate(
    model: Annotated[str, typer.Option("--model", "-m", help="NAME@alias, NAME/version or NAME "
                                       "(its champion).")] = "privgen-demo@champion",
    n: Annotated[int, typer.Option("--n", help="Number of records.", min=1)] = 1000,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write; a "
                                           "manifest is written beside it (an image model: "
                                           "a folder of PNGs).")] = Path(
        "outputs/synthetic.parquet"),
    seed: Annotated[int, typer.Option(help="Sampling seed; same seed, same records.")] = 7,
    temperature: Annotated[float, typer.Option(min=0.01, help="Text families' sampling "
                                               "temperature (causal_lm per token, dplstm per "
                                               "word, hybrid's text part); below 1: fewer, "
                                               "safer choices. Others ignore it.")] = 0.8,
    shard_size: Annotated[int, typer.Option(min=1, help="Records per shard; a rerun after a "
                                            "crash regenerates only missing shards.")] = 1000,
    workers: Annotated[int, typer.Option(min=1, help="Shards generated at once.")] = 1,
    task_runner: Annotated[str, typer.Option(help="thread (in process) or dask (a local "
                                             "cluster of --workers processes).")] = "thread",
    dask_address: Annotated[str | None, typer.Option(help="Use this running Dask scheduler "
                                                     "instead of a local cluster.")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="Only records with this "
                                                    "value, e.g. --where product=Router "
                                                    "(repeatable).")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment that records the "
                                            "generation run.")] = "privgen-generation",
) -> None:
    """Sample synthetic records from a registered model into a .parquet, .csv or .jsonl file
    with a manifest beside it."""
    from pydantic import ValidationError

    from flows.generation import generation_flow
    from tasks.errors import ConfigError
    from tasks.generate import GenerateConfig

    condition = {}
    for item in where or []:
        column, sep, value = item.partition("=")
        if not sep or not column.strip():
            raise ConfigError(f"--where {item!r}: expected column=value, e.g. product=Router")
        condition[column.strip()] = value
    try:
        cfg = GenerateConfig(model=model, n=n, out=out_path, seed=seed, temperature=temperature,
                             shard_size=shard_size, workers=workers, task_runner=task_runner,
                             dask_address=dask_address, condition=condition)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: "
                          f"{err['msg']}") from None
    manifest = run_with_progress(f"generating {n}", generation_flow, cfg, experiment)
    if manifest.get("kind") == "images":
        from flows.cli_images import generated_line

        return out.print(generated_line(manifest))
    mdl = manifest["model"]
    out.print(f"[green]wrote[/] {manifest['written']} records to {manifest['file']['path']} "
              f"from {mdl['name']} v{mdl['version']} (ε={manifest['privacy']['epsilon']}); "
              f"manifest: {Path(manifest['file']['path']).with_suffix('.manifest.json')}")


for command, name in ((cli_registry.models_, "models"), (cli_registry.promote, None),
                      (cli_registry.approve, None), (cli_registry.rollback, None),
                      (cli_registry.history, None), (budget, None)):
    app.command(name=name)(command)


@app.command()
def serve(
    config: Annotated[str | None, typer.Option("--config", "-c", help="YAML config the "
                                               "scheduled training runs read.")] = None,
    train_cron: Annotated[str, typer.Option(help="Cron schedule of retraining.")] = "0 2 * * 0",
    generate_cron: Annotated[str, typer.Option(help="Cron schedule of generation.")] = "0 4 * * *",
    model: Annotated[str, typer.Option(help="Model to generate from.")] = "privgen-demo@champion",
    n: Annotated[int, typer.Option("--n", help="Records per scheduled generation.", min=1)] = 1000,
    out_path: Annotated[str, typer.Option("--out")] = "outputs/synthetic.parquet",
    work_pool: Annotated[str | None, typer.Option(
        "--work-pool", help="Register the deployments to this Prefect process work pool "
        "(created if missing) on the server PREFECT_API_URL names, and return; `prefect worker "
        "start --pool NAME` runs them. Without it they are served in this process.")] = None,
) -> None:
    """Serve both flows as Prefect deployments on cron schedules until interrupted, or register
    them to a work pool."""
    from prefect import serve as prefect_serve

    from flows.deployments import build, register

    deployments = build(config, train_cron, generate_cron, model, n, out_path, work_pool)
    if work_pool is not None:
        register(deployments, work_pool)
        out.print(f"registered {len(deployments)} deployments to work pool {work_pool} "
                  f"(training: {train_cron}, generation: {generate_cron}); run them with "
                  f"`prefect worker start --pool {work_pool}`")
        return
    console.print(f"serving {len(deployments)} deployments (training: {train_cron}, "
                  f"generation: {generate_cron}); Ctrl-C to stop")
    prefect_serve(*deployments, print_starting_message=False)


app.command(context_settings=cli_erasure.ERASE_CONTEXT)(cli_erasure.erase)
app.add_typer(cli_erasure.keys_app, name="key")


def run_app(debug: bool, stop: Stop | None = None) -> None:
    """The app with privgen's error policy: a user error is its one-line message, anything
    unexpected is one line naming its type and place, never its message (it may quote data
    values), and a traceback only with --debug."""
    from tasks.errors import PrivgenError

    stop = stop or _stop
    try:
        app()
    except PrivgenError as exc:
        if stop.signum is not None:
            stop.exit()
        if debug:
            raise
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except (Stopped, KeyboardInterrupt):
        stop.exit()
    except SystemExit:
        if stop.signum is not None:
            stop.exit()
        raise
    except Exception as exc:
        if stop.signum is not None:  # what the interrupted library made of the interrupt
            stop.exit()
        if debug:
            raise
        console.print(f"[red]error:[/] unexpected {type(exc).__name__} in {where(exc)}; its "
                      "message is not shown, as it may hold data values; rerun with --debug "
                      "for the traceback")
        sys.exit(1)


def main() -> None:
    apply_defaults()
    debug = "--debug" in sys.argv
    quiet_prefect_console(debug)
    _stop.install()
    run_app(debug, _stop)
