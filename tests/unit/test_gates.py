"""The registration gates re-read from a version's tags: a family without a likelihood is not
failed for having no perplexity, and is not compared with a champion by one."""

from tasks.gates import RegisterConfig, gates
from tasks.promotion import champion_gate, version_gates

CFG = RegisterConfig(require_audit=False)
BASE = {"privacy.private": "True", "privacy.epsilon": "3", "eval.usable_rate": "0.99"}


def test_a_table_family_has_no_perplexity_gate():
    verdicts = version_gates({**BASE, "train.family": "aim"}, CFG)
    assert "perplexity" not in verdicts and set(verdicts.values()) == {"pass"}
    assert "perplexity" not in gates({"private": True, "epsilon": 3.0},
                                     {"usable_rate": 0.99}, CFG)


def test_a_version_with_a_likelihood_must_carry_its_perplexity():
    assert version_gates(BASE, CFG)["perplexity"].startswith("fail: the version has no")
    tagged = {**BASE, "train.family": "causal_lm", "gate.perplexity": "pass"}
    assert version_gates(tagged, CFG)["perplexity"].startswith("fail: the version has no")
    assert version_gates({**tagged, "eval.perplexity": "7"}, CFG)["perplexity"] == "pass"


def test_perplexities_are_compared_within_a_family_only():
    champion = ("1", {"eval.perplexity": "5", "train.family": "causal_lm"})
    assert champion_gate({"eval.perplexity": "9", "train.family": "causal_lm"}, champion,
                         0.1).startswith("fail")
    assert champion_gate({"train.family": "aim"}, champion, 0.1) == "pass"
    assert champion_gate({"eval.perplexity": "9", "train.family": "dplstm"}, champion,
                         0.1) == "pass"


def test_only_the_causal_lms_perplexity_is_held_to_the_byte_level_maximum():
    """dplstm's perplexity is per word (a 5,000-word vocabulary): 150 is a fair model there,
    and must not keep the version from champion; the causal LM's 150 per byte fails."""
    train = {"private": True, "epsilon": 3.0}
    evaluation = {"usable_rate": 0.99, "perplexity": 150.0}
    assert "perplexity" not in gates({**train, "family": "dplstm"}, evaluation, CFG)
    assert gates({**train, "family": "causal_lm"}, evaluation, CFG)["perplexity"] \
        .startswith("fail: perplexity 150.00 above 20")
    tagged = {**BASE, "train.family": "dplstm", "eval.perplexity": "150"}
    assert set(version_gates(tagged, CFG).values()) == {"pass"}
