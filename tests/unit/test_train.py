import math

import pandas as pd
import pytest

from flows.config import demo_contract
from models import causal_lm
from models.tokenizer import ByteTokenizer
from tasks.errors import PrivacyError
from tasks.evaluate import perplexity
from tasks.register import RegisterConfig, gates
from tasks.train import (
    PrivacyConfig,
    TrainConfig,
    codec_for,
    encode,
    resolve_delta,
    split_holdout,
    train,
)

TOK = ByteTokenizer()
TINY = causal_lm.LMConfig(n_layer=1, n_head=2, n_embd=16, block_size=96)


def _frame(n=120):
    return pd.DataFrame({"product": ["Nimbus Phone", "Echo Speaker"] * (n // 2),
                         "rating": [1, 5] * (n // 2), "message": ["fine", "broken"] * (n // 2)})


def test_codec_never_serializes_ids_or_identifiers():
    codec = codec_for(demo_contract(), demo_contract().names)
    assert codec.fields[-1] == "message"
    assert not {"ticket_id", "customer_id", "full_name", "email", "phone"} & set(codec.fields)
    assert dict(zip(codec.integer_fields, codec.integer_widths, strict=True)) == {"rating": 1}


def test_delta_defaults_below_one_over_n_and_is_checked():
    assert resolve_delta(PrivacyConfig(), 1000) == pytest.approx(1e-4)
    with pytest.raises(PrivacyError, match="target_delta"):
        resolve_delta(PrivacyConfig(target_delta=0.01), 1000)


def test_holdout_is_disjoint_and_deterministic():
    df = _frame(200).reset_index()
    a, b = split_holdout(df, 0.2, 1)
    assert set(a["index"]).isdisjoint(b["index"]) and len(a) + len(b) == 200
    assert split_holdout(df, 0.2, 1)[1].equals(b)


def test_dp_training_spends_at_most_the_target_epsilon():
    codec = codec_for(demo_contract(), ["product", "rating", "message"])
    seqs = encode(_frame(), codec, TOK, TINY.block_size)
    seen = []
    cfg = TrainConfig(model=TINY, epochs=2, batch_size=16,
                      privacy=PrivacyConfig(target_epsilon=4.0))
    model, result = train(seqs, cfg, TOK, seed=0, on_epoch_end=seen.append)
    assert result.private and 0 < result.epsilon <= 4.0 and result.noise_multiplier > 0
    assert [m["epoch"] for m in seen] == [1, 2] and seen[0]["epsilon"] < seen[1]["epsilon"]
    assert result.steps > 0 and math.isfinite(result.final_loss)
    assert 1 < perplexity(model, seqs, TOK.pad_id) < TOK.vocab_size * 2


def test_non_private_baseline_runs_the_same_loop():
    codec = codec_for(demo_contract(), ["product", "rating", "message"])
    seqs = encode(_frame(), codec, TOK, TINY.block_size)
    cfg = TrainConfig(model=TINY, epochs=1, batch_size=16, privacy=PrivacyConfig(enabled=False))
    _, result = train(seqs, cfg, TOK, seed=0)
    assert not result.private and math.isinf(result.epsilon) and result.accountant == "none"


def test_gates_refuse_non_private_or_over_budget_models():
    ok = {"epsilon": 7.9, "private": True}
    assert set(gates(ok, {"perplexity": 5}, RegisterConfig()).values()) == {"pass"}
    verdicts = gates({"epsilon": math.inf, "private": False}, {"perplexity": 50},
                     RegisterConfig())
    assert all(v.startswith("fail") for v in verdicts.values())
