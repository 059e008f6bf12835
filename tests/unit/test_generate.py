import pandas as pd
import pytest

from models.replay import ReplayIndex
from tasks.errors import GenerationError
from tasks.generate import neutralize_formulas, output_format, shard_plan


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
