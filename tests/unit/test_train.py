import importlib.util
import math

import pandas as pd
import pytest

from flows.config import demo_contract, load_config
from models import causal_lm
from models.tokenizer import ByteTokenizer
from tasks.errors import ConfigError, PrivacyError
from tasks.evaluate import perplexity
from tasks.preflight import preflight
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
    assert set(gates(ok, {"perplexity": 5, "usable_rate": 0.95},
                     RegisterConfig()).values()) == {"pass"}
    verdicts = gates({"epsilon": math.inf, "private": False}, {"perplexity": 50},
                     RegisterConfig())
    assert all(v.startswith("fail") for v in verdicts.values())


def test_config_refuses_to_bypass_poisson_sampling():
    with pytest.raises(ConfigError, match=r"train\.privacy\.poisson_sampling"):
        load_config(overrides=["train.privacy.poisson_sampling=false"])


def test_secure_mode_says_what_to_install_when_csprng_is_missing():
    if importlib.util.find_spec("torchcsprng") is not None:
        pytest.skip("torchcsprng is installed here")
    with pytest.raises(ConfigError, match=r"secure_mode.*torchcsprng"):
        load_config(overrides=["train.privacy.secure_mode=true"])


def test_ghost_clipping_refuses_tied_embeddings():
    with pytest.raises(ConfigError, match="tie_embeddings"):
        load_config(overrides=["train.privacy.grad_sample_mode=ghost",
                               "train.model.tie_embeddings=true"])


def test_ghost_training_with_split_batches_spends_the_same_budget():
    codec = codec_for(demo_contract(), ["product", "rating", "message"])
    seqs = encode(_frame(), codec, TOK, TINY.block_size)
    cfg = TrainConfig(model=TINY, epochs=1, batch_size=16, physical_batch_size=5,
                      privacy=PrivacyConfig(target_epsilon=4.0, grad_sample_mode="ghost",
                                            accountant="rdp"))
    ended = []
    _, result = train(seqs, cfg, TOK, seed=0, on_end=ended.append)
    assert result.private and 0 < result.epsilon <= 4.0 and math.isfinite(result.final_loss)
    assert result.steps == pytest.approx(1 / result.sample_rate, abs=3)  # logical, not physical
    assert ended == [{"epsilon": result.epsilon, "delta": result.delta, "steps": result.steps}]


def test_preflight_reports_the_plan_training_will_run():
    cfg = TrainConfig(model=TINY, epochs=2, batch_size=16,
                      privacy=PrivacyConfig(target_epsilon=4.0, accountant="rdp"))
    report = preflight(100, cfg, TOK)
    assert report.steps == 2 * 7 and report.sample_rate == pytest.approx(1 / 7)
    assert report.noise_multiplier > 0 and report.epsilon == pytest.approx(4.0, rel=0.02)
    assert report.epsilon <= 4.0 and report.delta == pytest.approx(1e-3)


def test_preflight_refuses_a_plan_above_the_ceiling():
    cfg = TrainConfig(model=TINY, privacy=PrivacyConfig(target_epsilon=12.0))
    with pytest.raises(PrivacyError, match="epsilon_ceiling"):
        preflight(1000, cfg, TOK)


def test_preflight_refuses_an_unreachable_epsilon():
    # Every record in every step for many epochs: no finite noise reaches ε = 0.01.
    cfg = TrainConfig(model=TINY, epochs=50, batch_size=64,
                      privacy=PrivacyConfig(target_epsilon=0.01, accountant="rdp"))
    with pytest.raises(PrivacyError, match="not reachable"):
        preflight(64, cfg, TOK)


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_every_poisson_draw_is_a_counted_step_even_when_empty(mode):
    # 8 records at sample rate 1/8: a third of the draws are empty; each must still be a
    # (noise-only) step the accountant counts, or ε would be understated.
    seqs = [TOK.encode(f"r{i}", 16) for i in range(8)]
    cfg = TrainConfig(model=TINY, epochs=2, batch_size=1,
                      privacy=PrivacyConfig(target_epsilon=8.0, target_delta=1e-2,
                                            accountant="rdp", grad_sample_mode=mode))
    _, result = train(seqs, cfg, TOK, seed=1)
    assert result.steps == 16 and math.isfinite(result.final_loss)
