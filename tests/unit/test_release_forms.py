"""Release rules (issue 12): what each field of a model may write is exactly what the anonymize
stage can release, and the sampling grammar admits exactly those forms at any temperature."""

import json
import re
from collections import Counter

import pandas as pd
import pytest
import torch

from models import causal_lm
from models.forms import integer_range_regex
from models.records import RecordGrammar
from models.tokenizer import ByteTokenizer
from tasks import release
from tasks.anonymize import AnonymizeConfig, Key, anonymize, operators_for
from tasks.contract import ColumnSpec, DataContract, DType, Role
from tasks.errors import ConfigError
from tasks.generalize import Hierarchy, generalize
from tasks.generate import advice, violation
from tasks.train import codec_for

TOK = ByteTokenizer()
KEY = Key(b"k" * 32, "test-key")
CENSUS = DataContract(columns=(
    ColumnSpec(name="age", dtype=DType.INTEGER, role=Role.QUASI_IDENTIFIER, min=17, max=90),
    ColumnSpec(name="postcode", role=Role.QUASI_IDENTIFIER, regex=r"^\d{5}$"),
    ColumnSpec(name="hours", dtype=DType.INTEGER, role=Role.NUMERIC, min=1, max=99_999),
    ColumnSpec(name="income", role=Role.CATEGORY, allowed=("<=50K", ">50K")),
))
CFG = AnonymizeConfig(generalize={"postcode": "prefix:3"}, key_file=None)


def _released() -> list[ColumnSpec]:
    return list(release.released_contract(CENSUS, CFG).columns)


def _spec(name: str) -> ColumnSpec:
    return next(s for s in _released() if s.name == name)


def test_a_prefix_of_a_five_digit_postcode_is_three_digits_and_two_stars():
    regex = _spec("postcode").regex
    for ok in ("941**", "94***", "9****", "*"):  # the rule, k-anonymity's coarser steps, withheld
        assert re.fullmatch(regex, ok)
    # The forms a small model wrote at temperature 0.8 (issue 12), and an empty value.
    for bad in ("T", "/", "$x", "U **", "", "941*", "94110", "9a1**"):
        assert not re.fullmatch(regex, bad)


def test_a_generalized_integer_quasi_identifier_is_released_as_bands_not_integers():
    age = _spec("age")
    assert age.dtype is DType.STRING
    # bin:10 within the contract's 17..90, then bin:20, bin:40, then withheld.
    assert age.allowed[:8] == ("10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79",
                               "80-89")
    assert {"90-99", "0-19", "80-99", "0-39", "80-119", "*"} <= set(age.allowed)
    assert violation({"age": "30-39"}, [age]) is None
    assert violation({"age": "37"}, [age]) == "contract:age"
    codec = codec_for(release.released_contract(CENSUS, CFG), [c.name for c in CENSUS.columns])
    assert "age" not in codec.integer_fields and "hours" in codec.integer_fields
    row, reason = codec.parse("30-39 | 941** | 40 | >50K")
    assert reason is None and row["age"] == "30-39"


def test_float_and_date_quasi_identifiers_are_released_in_their_generalized_forms():
    contract = DataContract(columns=(
        ColumnSpec(name="bmi", dtype=DType.FLOAT, role=Role.QUASI_IDENTIFIER, min=12.5, max=41),
        ColumnSpec(name="born", dtype=DType.DATE, role=Role.QUASI_IDENTIFIER),
    ))
    bmi, born = release.released_contract(contract, AnonymizeConfig()).columns
    assert generalize(pd.Series([37.5]), contract.columns[0], None).tolist() == ["30-39"]
    assert "30-39" in bmi.allowed and "40-49" in bmi.allowed and "50-59" not in bmi.allowed
    assert born.dtype is DType.STRING
    assert re.fullmatch(born.regex, "1985") and re.fullmatch(born.regex, "1980s")
    assert not re.fullmatch(born.regex, "1985-04-02")


def test_integer_ranges_of_any_width_are_digit_automata():
    for lo, hi in [(17, 90), (0, 100_000), (-40, 125), (1, 1), (-7, -3), (995, 1004)]:
        pattern = re.compile(f"^{integer_range_regex(lo, hi)}$")
        for v in range(lo - 50, hi + 51, max(1, (hi - lo) // 4000)):
            assert bool(pattern.match(str(v))) == (lo <= v <= hi), (lo, hi, v)
        assert not pattern.match("0" + str(abs(hi))) and not pattern.match("+" + str(hi))
    hours = release.field_forms([_spec("hours")])["hours"]
    assert hours == f"^(?:{integer_range_regex(1, 99_999)})$"


def _sample(forms: dict, fields: tuple, ints: tuple, temperature: float, n: int = 48):
    codec = codec_for(DataContract(columns=tuple(
        s for s in _released() if s.name in fields)), list(fields))
    assert codec.fields == fields and codec.integer_fields == ints
    torch.manual_seed(0)
    model = causal_lm.build(causal_lm.LMConfig(n_layer=1, n_head=2, n_embd=16, block_size=64),
                            TOK)
    grammar = RecordGrammar(codec, TOK.eos_id, TOK.vocab_size, 1, forms=forms)
    texts = causal_lm.generate(model, TOK, n, seed=5, max_new_tokens=63,
                               temperature=temperature, grammar=grammar)
    return [codec.parse(t) for t in texts]


@pytest.mark.parametrize("temperature", [0.05, 0.8, 1.5])
def test_every_draw_parses_and_holds_a_released_form_at_any_temperature(temperature):
    specs = _released()
    fields = ("age", "postcode", "hours", "income")  # no free text: income is the last field
    parsed = _sample(release.field_forms(specs), fields, ("hours",), temperature)
    reasons = Counter(reason for _, reason in parsed)
    assert reasons == Counter({None: len(parsed)}), reasons  # no parse:empty:postcode
    rows = [row for row, _ in parsed]
    assert all(violation(row, specs) is None for row in rows)
    assert all(re.fullmatch(r"\d{3}\*\*|\d{2}\*{3}|\d\*{4}|\*", r["postcode"]) for r in rows)
    assert all(1 <= r["hours"] <= 99_999 for r in rows)
    assert {r["income"] for r in rows} <= {"<=50K", ">50K"}  # the last field's allowed values


def test_released_rules_travel_in_the_model_folder(tmp_path):
    released = release.released_contract(CENSUS, CFG)
    path = release.write(released, ("age", "hours"), tmp_path)
    meta = json.loads(path.read_text())
    assert [s.name for s in release.read(meta)] == ["age", "hours"]
    assert set(meta["forms"]) == {"age", "hours"}
    assert release.read(None) is None


def test_keep_on_an_integer_quasi_identifier_releases_text_and_never_crashes():
    ages = [23, 24, 25, 26, 27] * 4 + [71, 88]
    df = pd.DataFrame({"age": pd.array(ages, dtype="Int64"),
                       "income": ["<=50K"] * len(ages)})
    contract = DataContract(columns=(CENSUS.columns[0], CENSUS.columns[3]))
    cfg = AnonymizeConfig(operators={"age": "keep"}, k=5, key_file=None)
    out, suppressed, _ = anonymize(df, contract, cfg, KEY)
    assert len(out) + len(suppressed) == len(df)
    assert out["age"].dtype == "string"
    released = release.released_contract(contract, cfg).columns[0]
    assert all(violation({"age": v}, [released]) is None for v in out["age"])
    assert violation({"age": "37"}, [released]) is None  # kept values are released as they are
    assert violation({"age": "91"}, [released]) == "contract:age"


def test_text_quasi_identifiers_are_generalized_by_a_hierarchy_or_withheld_never_padded():
    country = ColumnSpec(name="native_country", role=Role.QUASI_IDENTIFIER)
    values = pd.Series(["Asian-Pacific-Islander", "China", "india", "Peru", None])
    # The example: a 3-letter prefix padded to the value's length leaked the length.
    assert generalize(values, country, None).tolist()[:4] == ["*"] * 4
    tree = Hierarchy(hierarchy={"Asia": ("China", "India"), "South America": ("Peru",)})
    assert generalize(values, country, tree).tolist()[:4] == ["*", "Asia", "Asia",
                                                              "South America"]
    cfg = AnonymizeConfig.model_validate(
        {"generalize": {"native_country": {"hierarchy": {"Asia": ["China", "India"]}}}})
    spec = release.released_contract(DataContract(columns=(country,)), cfg).columns[0]
    assert spec.allowed == ("Asia", "*")
    with pytest.raises(ValueError, match="under both"):
        Hierarchy(hierarchy={"Asia": ("China",), "East": ("china",)})


def test_a_rule_that_does_not_fit_the_column_is_refused_naming_it():
    for rule, column in (("prefix:3", "age"), ("decade", "age"), ("bin:10", "postcode")):
        with pytest.raises(ConfigError, match=rf"anonymize\.generalize\.{column}: rule"):
            operators_for(CENSUS, AnonymizeConfig(generalize={column: rule}))


def test_a_refusal_names_the_cause_not_always_train_longer():
    assert "empty" in advice(Counter({"parse:empty:postcode": 9}))
    said = advice(Counter({"contract:age": 9, "parse:empty:age": 1}))
    assert "age" in said and "train longer" not in said
    assert "layout" in advice(Counter({"parse:integer:age": 1000}))
