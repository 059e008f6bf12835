"""Tables too small for a later stage are refused before any budget is spent, metrics that small
data cannot support are reported as not computed, and unusable models are not promoted
(issue 12)."""

import math

import numpy as np
import pandas as pd
import pytest

from tasks import promotion
from tasks.errors import ConfigError
from tasks.evaluate import EvaluateConfig, _utility, audit_table
from tasks.preflight import MIN_HELD_OUT, check_table_size
from tasks.register import RegisterConfig, gates
from tasks.train import split_holdout


def test_a_thirty_row_table_is_refused_before_training_naming_rows_and_setting():
    rows = pd.DataFrame({"x": range(30)})
    train, held = split_holdout(rows, 0.1, seed=1234)
    assert len(held) < MIN_HELD_OUT
    with pytest.raises(ConfigError) as err:
        check_table_size(len(rows), len(train), len(held), 0.1)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"preflight: 30 anonymized rows leave {len(held)} held-out records")
    assert "needs at least 5" in message and "supply at least 100 rows" in message
    assert "train.holdout_fraction=0.4" in message and "no privacy budget was spent" in message


def test_a_table_large_enough_passes_and_too_few_training_records_are_refused():
    check_table_size(200, 180, 20, 0.1)
    with pytest.raises(ConfigError, match="leave 8 training records; training and evaluation "
                                          "need at least 10"):
        check_table_size(16, 8, 8, 0.45)


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"city": rng.choice(["Austin", "Boston"], n),
                         "age": rng.choice(["20-29", "30-39"], n),
                         "rating": rng.integers(1, 6, n)})


def test_metrics_small_data_cannot_support_are_null_with_a_reason_not_a_crash():
    kinds = {"categorical": ["city", "age"], "numeric": ["rating"], "text": []}
    out = _utility(_frame(40, 0), _frame(3, 1), _frame(200, 2), kinds,
                   EvaluateConfig(utility_label="city"), seed=0)
    assert out["detection"] is None
    assert out["not_computed"]["detection"] == ("detection needs at least 5 real and "
                                                "synthetic records, got 3 and 200")
    assert out["fidelity"]["tvd.city"] >= 0 and out["tstr"] is not None
    table = audit_table({"DP model": {"utility": out}})
    assert "| not computed: detection | detection needs at least 5 real" in table
    empty = _utility(_frame(40, 0), _frame(10, 1), _frame(0, 2), kinds, EvaluateConfig(), 0)
    assert empty["detection"] is None and "no usable synthetic record" in \
        empty["not_computed"]["detection"]


def test_a_model_with_few_usable_samples_is_not_promoted():
    train = {"epsilon": 3.0, "private": True}
    # The model: 9 of 200 evaluation samples usable.
    verdicts = gates(train, {"perplexity": 5.0, "usable_rate": 9 / 200}, RegisterConfig())
    assert verdicts["usable_rate"] == ("fail: 4.5% of drawn records usable, below "
                                       "register.min_usable_rate=0.9")
    assert gates(train, {"perplexity": 5.0, "usable_rate": 0.97},
                 RegisterConfig())["usable_rate"] == "pass"
    tags = {"privacy.epsilon": "3", "privacy.private": "True", "eval.perplexity": "5",
            "eval.usable_rate": "0.045", "audit.verdict": "pass"}
    checked = promotion.version_gates(tags, RegisterConfig())
    assert checked["usable_rate"].startswith("fail: 4.5% of drawn records usable")
    older = promotion.version_gates({k: v for k, v in tags.items() if k != "eval.usable_rate"},
                                    RegisterConfig())
    assert older["usable_rate"] == "fail: the version has no eval.usable_rate tag"
    nan = gates(train, {"perplexity": 5.0, "usable_rate": math.nan}, RegisterConfig())
    assert nan["usable_rate"].startswith("fail")
