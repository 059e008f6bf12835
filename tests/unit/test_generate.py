import hashlib
import json
from datetime import date
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from models import causal_lm
from models.causal_lm_family import CausalLM, spec_of
from models.records import RecordCodec
from models.replay import ReplayIndex
from models.tokenizer import ByteTokenizer
from tasks import generate, release
from tasks.contract import ColumnSpec, DType, Role
from tasks.errors import GenerationError
from tasks.generate import (
    GenerateConfig,
    Shard,
    check_condition,
    draw,
    generate_shard,
    manifest_of,
    shard_plan,
    violation,
)
from tasks.storage import neutralize_formulas, output_format

CODEC = RecordCodec(("product", "rating", "message"), ("rating",), (1,))
SPECS = [ColumnSpec(name="rating", dtype=DType.INTEGER, min=1, max=5)]
MODEL = {"name": "m", "version": "1", "alias": "champion", "run_id": "r", "epsilon": "3",
         "delta": "1e-5", "accountant": "prv",
         "contract": [s.model_dump(mode="json") for s in SPECS]}


def _stub(texts=(), model=None):
    """A loaded causal LM whose sampler returns ``texts`` in turn (or samples ``model``)."""
    gen = CausalLM(causal_lm.LMConfig(n_layer=1, n_head=2, n_embd=16, block_size=64))
    gen.model, gen.tokenizer, gen.codec = model, ByteTokenizer(), CODEC
    gen.replay = ReplayIndex.build(
        ["the parcel never arrived and nobody answered my three calls"], n=8)
    gen.meta = {"model_config": {"block_size": 64}, "replay": {"columns": ["message"]}}
    gen.spec = spec_of(CODEC, None, gen.meta)
    pool = list(texts)
    gen.script = lambda n: [pool[i % len(pool)] for i in range(n)]
    return gen


def _loaded(gen):
    """The pyfunc wrapper ``generate._load`` returns: the generator and its release rules."""
    return SimpleNamespace(generator=gen, specs=SPECS)


def test_shard_plan_is_deterministic_and_covers_the_request():
    plan = shard_plan(2500, 1000, seed=7)
    assert [s.n for s in plan] == [1000, 1000, 500]
    assert plan == shard_plan(2500, 1000, seed=7)
    assert len({s.seed for s in plan}) == 3
    assert {s.seed for s in plan}.isdisjoint({s.seed for s in shard_plan(2500, 1000, seed=8)})


def test_output_format_from_suffix():
    assert output_format("a/b.csv") == "csv" and output_format("x.JSONL") == "jsonl"
    with pytest.raises(GenerationError, match=r"\.parquet, \.csv or \.jsonl"):
        output_format("x.xlsx")


def test_formula_like_cells_are_neutralized():
    df = pd.DataFrame({"m": ["=cmd|' /C calc'!A0", "+1", "fine", None], "n": [1, 2, 3, 4]})
    df["m"] = df["m"].astype("string")
    out = neutralize_formulas(df)
    assert out["m"].tolist()[:3] == ["'=cmd|' /C calc'!A0", "'+1", "fine"]
    assert df["m"].iloc[0].startswith("=")  # the input is not modified


@pytest.fixture
def scripted(monkeypatch):
    """Sampling replaced by a script of lines: one good record, then one of each failure."""
    lines = ["Nimbus | 4 | works fine",
             "a line without separators",                        # parse failure, kept
             "write to jane.doe@example.com",                    # parse failure with PII
             "Nimbus | 9 | rated out of range",                  # contract
             "Nimbus | 3 | mail me at a.b@example.com",          # PII
             "Nimbus | 2 | the parcel never arrived and nobody answered my three calls"]  # replay
    stub = _stub(lines)
    monkeypatch.setattr(causal_lm, "generate", lambda model, tok, n, **kw: stub.script(n))
    monkeypatch.setattr(generate, "_load", lambda name, version: _loaded(stub))
    return stub


def test_every_failure_is_counted_by_reason_and_only_clean_parse_failures_quarantined(
        scripted, tmp_path):
    cfg = GenerateConfig(n=3, shard_size=3)
    done = generate_shard(MODEL, Shard(0, 3, 11), cfg, tmp_path)
    assert done["records"] == 3 and not done["reused"]
    # Round one draws 3 (1 passes); round two the shortfall over that rate, 2 × 3 × 1.1 → 7.
    assert done["rejected"] == {"contract:rating": 1, "parse:fields": 4, "pii": 1, "replay": 1}
    assert done["generated"] == 3 + sum(done["rejected"].values()) + done["surplus"]
    lines = (tmp_path / done["quarantine"]["file"]).read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"reason": "parse:fields", "text": "a line without separators"}] * 2
    assert "jane.doe" not in "".join(p.read_text(errors="ignore") for p in tmp_path.iterdir())
    assert pd.read_parquet(tmp_path / done["file"])["rating"].tolist() == [4, 4, 4]
    # The quarantine is part of the shard: a torn quarantine file means the shard is redone.
    assert generate_shard(MODEL, Shard(0, 3, 11), cfg, tmp_path)["reused"]
    (tmp_path / done["quarantine"]["file"]).write_text("torn")
    assert not generate_shard(MODEL, Shard(0, 3, 11), cfg, tmp_path)["reused"]


def test_records_rejected_for_replay_stay_in_memory_for_the_audit(scripted):
    drawn = draw(scripted, 3, seed=11, cfg=GenerateConfig(n=3), specs=[])
    assert drawn.rejected["replay"] == len(drawn.replayed) >= 1
    assert {r["message"] for r in drawn.replayed} == {
        "the parcel never arrived and nobody answered my three calls"}
    assert all(r not in drawn.records for r in drawn.replayed)


def test_a_shard_made_under_another_sampling_config_is_not_reused(scripted, tmp_path):
    generate_shard(MODEL, Shard(0, 2, 11), GenerateConfig(n=2), tmp_path)
    again = generate_shard(MODEL, Shard(0, 2, 11), GenerateConfig(n=2, temperature=0.5),
                           tmp_path)
    assert not again["reused"]


def test_too_few_usable_records_fail_naming_the_reasons(monkeypatch, tmp_path):
    stub = _stub(["Nimbus | 0 | zero stars"])
    monkeypatch.setattr(causal_lm, "generate", lambda model, tok, n, **kw: stub.script(n))
    monkeypatch.setattr(generate, "_load", lambda name, version: _loaded(stub))
    with pytest.raises(GenerationError, match=r"only 0 usable records .*contract:rating"):
        generate_shard(MODEL, Shard(0, 2, 1), GenerateConfig(n=2), tmp_path)


def test_manifest_records_the_config_hash_and_accounts_for_every_draw():
    cfg = GenerateConfig(n=3, condition={"product": "Nimbus"})
    shard = {"index": 0, "seed": 1, "records": 3, "sha256": "x", "generated": 9, "surplus": 1,
             "rejected": {"parse:fields": 2, "pii": 1, "contract:rating": 2},
             "quarantine": {"records": 2}}
    manifest = manifest_of(MODEL, [shard], cfg, 3, ["product", "rating", "message"])
    text = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    assert manifest["config_hash"] == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert manifest["config_hash"] != GenerateConfig(n=3).digest()
    assert manifest["generated"] == manifest["written"] + sum(manifest["rejected"].values()) \
        + manifest["surplus"]
    assert manifest["parse_failures"] == 2 and manifest["quarantined"] == 2
    assert manifest["condition"] == {"product": "Nimbus"}
    assert manifest["contract"]["columns"] == ["rating"]


def test_generated_records_meet_the_released_form_of_the_training_contract():
    from flows.config import PipelineConfig

    config = PipelineConfig().model_dump(mode="json", by_alias=True)  # as training logs it
    fields = ("birth_date", "postcode", "city", "product", "channel", "rating", "created_at",
              "message")
    specs = release.from_run_config(config, fields)
    good = {"birth_date": "1980s", "postcode": "921**", "city": "Denver",
            "product": "Pulse Earbuds", "channel": "chat", "rating": 4, "created_at": "2025-03",
            "message": "hi"}
    assert violation(good, specs) is None
    # k-anonymity may coarsen a quasi-identifier further or withhold it.
    assert violation(good | {"postcode": "9****", "birth_date": "*"}, specs) is None
    for column, bad in [("rating", 7), ("channel", "fax"), ("created_at", "2025-13"),
                        ("birth_date", "1985-04-01"), ("postcode", "92127"),
                        ("product", "Pulse"),
                        # Well-formed, but outside the contract's earliest/latest.
                        ("created_at", "2502-02"), ("created_at", "2024-12"),
                        ("birth_date", "2020s")]:
        assert violation(good | {column: bad}, specs) == f"contract:{column}"


def test_the_contract_becomes_forms_the_grammar_samples_within():
    specs = [ColumnSpec(name="channel", allowed=("email", "web.form")),
             ColumnSpec(name="rating", dtype=DType.INTEGER, min=1, max=3),
             ColumnSpec(name="code", regex=r"^\d{5}$"), ColumnSpec(name="city")]
    assert release.field_forms(specs) == {"channel": r"^(?:email|web\.form)$",
                                          "rating": "^(?:[1-3])$", "code": r"^(?:\d{5})$"}


def test_a_condition_is_honoured_in_every_record(monkeypatch):
    torch.manual_seed(0)
    tiny = causal_lm.build(causal_lm.LMConfig(n_layer=1, n_head=2, n_embd=16, block_size=48),
                           ByteTokenizer())
    stub = _stub(model=tiny)
    stub.meta["model_config"]["block_size"] = 48
    stub.release = {"forms": {}}
    cfg = GenerateConfig(n=8, batch_size=4, condition={"product": "Nimbus Phone"})
    drawn = draw(stub, 8, seed=3, cfg=cfg, specs=[])
    assert len(drawn.records) == 8
    assert {r["product"] for r in drawn.records} == {"Nimbus Phone"}
    assert draw(stub, 8, seed=3, cfg=cfg, specs=[]).records == drawn.records


@pytest.mark.parametrize("condition, message", [
    ({"colour": "red"}, "not a structured column of this model; use one of product, rating"),
    ({"message": "hello"}, "not a structured column"),
    ({"rating": "9"}, "not allowed by the training data's contract"),
    ({"rating": "high"}, "holds whole numbers"),
    ({"product": "a | b"}, "without '|'"),
    ({"product": "jane.doe@example.com"}, "looks like personal data"),
])
def test_a_condition_the_model_cannot_honour_is_refused(condition, message):
    with pytest.raises(GenerationError, match=message):
        check_condition(condition, _stub(), SPECS)


def test_a_disallowed_category_is_refused_naming_the_allowed_ones():
    specs = [ColumnSpec(name="product", allowed=("Nimbus", "Pulse"))]
    with pytest.raises(GenerationError, match="allowed: Nimbus, Pulse"):
        check_condition({"product": "Orbit"}, _stub(), specs)
    check_condition({"product": "Pulse"}, _stub(), specs)


def test_replay_index_flags_long_copies_only(tmp_path):
    training = ["The Nimbus Phone from my last order stopped charging after two weeks of use"]
    index = ReplayIndex.build(training, n=8)
    copied = "Hello. my last order stopped charging after two weeks of use, sadly"
    assert index.copies(copied)
    assert not index.copies("my last order stopped charging yesterday")  # only 5 words shared
    index.save(tmp_path)
    again = ReplayIndex.load(tmp_path)
    assert again.copies(copied) and len(again) == len(index)
    assert "Nimbus" not in (tmp_path / "replay_ngrams.npz").read_bytes().decode("latin-1")


def test_a_different_salt_gives_different_digests():
    a = ReplayIndex.build(["one two three four five six seven eight nine"], n=8)
    b = ReplayIndex.build(["one two three four five six seven eight nine"], n=8)
    assert set(a.digests.tolist()).isdisjoint(b.digests.tolist())


def test_date_bounds_hold_for_dates_released_as_they_are():
    spec = ColumnSpec(name="d", dtype=DType.DATETIME, role=Role.DATETIME,
                      earliest=date(2025, 1, 1), latest=date(2025, 12, 31))
    assert violation({"d": "2025-12-31T23:59:59"}, [spec]) is None
    assert violation({"d": "2025-12-31T23:30:00-01:00"}, [spec]) == "contract:d"  # 2026 in UTC
    assert violation({"d": "2024-12-31T23:59:59"}, [spec]) == "contract:d"
    assert violation({"d": "2025-06-01"}, [spec.model_copy(update={"latest": None})]) is None
