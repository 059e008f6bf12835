"""Privacy audit: its settings, canary exposure (Carlini et al. 2019) and the verdict of every
gate. The attacks live beside it: membership inference and its DP bound in ``tasks.audit_mia``,
black-box attacks on samples in ``tasks.audit_blackbox``, replay in ``tasks.audit_replay``.

Pure functions over scores, losses and texts; the model enters only as a scoring callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import stats

SECRET = "{secret}"
DEFAULT_TEMPLATE = "Please quote my reference number {secret} in your reply."


class AuditConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    # Also train a non-private control the same way, on the same data and canaries, and audit
    # it side by side: an audit that cannot flag the control has no power. Doubles training.
    control: bool = True
    # Canaries planted in the training text. With one shared candidate sample, an unmemorized
    # canary outscores every candidate by luck with probability 1/(n_candidates + 1): ten
    # canaries against 1000 candidates fail the default gate by chance about 1 % of the time.
    n_canaries: int = Field(default=10, ge=1, le=1000)
    # Copies of each canary in the training data. One copy is what (ε, δ) speaks about; r copies
    # are protected only as a group, at about rε (group privacy), so more copies test
    # memorization harder than the guarantee alone promises. 4: on the full demo, one copy
    # leaves even the non-private control at chance (mean 1.3 bits, p = 0.58: an audit without
    # power), while with 4 the control's canaries average 4.3 bits (p = 1e-5) and the ε = 8
    # model's 1.8 (p = 0.22).
    canary_repeats: int = Field(default=4, ge=1, le=100)
    # Sentence a secret is written into; holds "{secret}" once.
    canary_template: str = DEFAULT_TEMPLATE
    # Decimal digits of a secret: 10^9 secrets, about 29.9 bits, too many to enumerate.
    canary_digits: int = Field(default=9, ge=4, le=18)
    # Random alternative secrets scored against the canaries; the distribution-free exposure
    # estimate resolves up to log2(n_candidates + 1) bits (about 10 for 1000).
    n_candidates: int = Field(default=1000, ge=10, le=1_000_000)
    # Gate: every canary's sample exposure stays below this many bits. None: the sample's
    # resolution, i.e. fail only when a canary outscores every sampled alternative.
    exposure_max: float | None = Field(default=None, gt=0.0)
    # Gate: the canaries together may not be more likely than chance at this significance
    # (see canary_exposures); 1 % keeps false alarms on a model that learnt nothing rare.
    canary_alpha: float = Field(default=0.01, gt=0.0, lt=0.5)
    # Training members and held-out non-members the membership tests compare at most (the
    # black-box attacks use half the held-out records, the other half their reference).
    mia_records: int = Field(default=1000, ge=10)
    # Reference of the log-prob membership attack on models of text: "none" attacks −log_prob;
    # "unigram" takes off each record's text log-likelihood under public word frequencies
    # (tasks.audit_mia.unigram_log_prob; Carlini et al. 2021's reference-model calibration).
    # Measured on the demo (hybrid, make run's settings, 1,000 members, 294 held out): AUC
    # 0.533 control vs 0.479 DP without a reference (paired difference, 95 % lower bound
    # +0.037), 0.557 vs 0.526 with it (+0.017): the plain attack shows more power there. The
    # calibrated one finds members the plain one cannot when length, not membership, ranks
    # the records (tests/unit/test_audit_reference.py).
    mia_reference: Literal["unigram", "none"] = "none"
    # False-positive rates at which the attack's TPR is reported and held against the DP bound
    # (low FPRs are where an attack on a few records shows: Carlini et al. 2022, "LiRA").
    mia_fprs: tuple[float, ...] = (0.001, 0.01)
    # Confidence of the sampling slack in the DP-bound check, shared over all its comparisons.
    mia_confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    # Gate: the attack's AUC, taken at that same lower confidence bound, may not exceed this.
    # Once ε is large the (ε, δ) ceiling allows almost anything (AUC 0.9997 at ε = 8): this is
    # the empirical limit a model is held to. None: the DP ceiling only.
    mia_auc_max: float | None = Field(default=0.55, gt=0.5, le=1.0)
    # Level of the paired tests that show the audit's power against the non-private control
    # (tasks/audit_power.py): its exposure and MIA must be higher at this significance.
    power_alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    # Replay: n-gram length in words, as the generation-time filter (models/replay.py) uses.
    replay_ngram: int = Field(default=8, ge=2, le=64)
    # Synthetic records allowed to equal a training text that no other training or held-out
    # record has (common short texts recur in real data; copying them reveals nobody).
    replay_exact_max: int = Field(default=0, ge=0)
    # Allowed excess of the synthetic records' n-gram copy rate over the held-out records' rate:
    # templated text shares n-grams with training text without any replay (99 % in the demo).
    replay_ngram_excess_max: float = Field(default=0.05, ge=0.0, le=1.0)

    @field_validator("canary_template")
    @classmethod
    def _one_secret(cls, v: str) -> str:
        if v.count(SECRET) != 1:
            raise ValueError(f"canary_template must hold {SECRET} exactly once")
        return v

    @field_validator("mia_fprs")
    @classmethod
    def _fprs(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0.0 < x <= 0.5 for x in v):
            raise ValueError("mia_fprs must be one or more rates in (0, 0.5]")
        return v

    @model_validator(mode="after")
    def _resolvable(self) -> AuditConfig:
        if self.exposure_max is not None and self.exposure_max > math.log2(self.n_candidates + 1):
            raise ValueError(f"exposure_max {self.exposure_max} bits cannot be reached with "
                             f"n_candidates={self.n_candidates} (at most "
                             f"{math.log2(self.n_candidates + 1):.2f}); raise n_candidates")
        return self


# --- Canaries: Carlini, Liu, Erlingsson, Kos, Song, "The Secret Sharer", USENIX Security 2019.

@dataclass(frozen=True)
class Canaries:
    """Random ``digits``-digit secrets, each written into ``template`` at ``{secret}``.

    Every secret has the same width, so a canary and its alternatives are byte sequences of the
    same length and a summed or a per-token log-perplexity ranks them alike."""

    secrets: tuple[str, ...]
    template: str = DEFAULT_TEMPLATE
    digits: int = 9

    @property
    def texts(self) -> list[str]:
        return [self.render(s) for s in self.secrets]

    @property
    def space_size(self) -> float:
        return 10.0**self.digits

    def render(self, secret: str) -> str:
        return self.template.replace(SECRET, secret)

    def candidates(self, n: int, rng: np.random.Generator) -> list[str]:
        """``n`` texts of the same format, secrets drawn uniformly (with replacement) from the
        space less the planted ones: a uniform sample is what makes rank estimates unbiased."""
        taken, out = set(self.secrets), []
        while len(out) < n:
            out += [self.render(s) for s in _draw(n - len(out), self.digits, rng)
                    if s not in taken]
        return out


def _draw(k: int, digits: int, rng: np.random.Generator) -> list[str]:
    return [f"{v:0{digits}d}" for v in rng.integers(0, 10**digits, size=k)]


def make_canaries(k: int, rng: np.random.Generator, template: str = DEFAULT_TEMPLATE,
                  digits: int = 9) -> Canaries:
    secrets: dict[str, None] = {}
    while len(secrets) < k:
        secrets |= dict.fromkeys(_draw(k - len(secrets), digits, rng))
    return Canaries(tuple(secrets), template, digits)


Method = Literal["sample", "skewnorm", "normal"]


def _exposures(canary_scores: np.ndarray, candidate_scores: np.ndarray, space_size: float,
               method: Method) -> np.ndarray:
    """exposure = log2|R| − log2 rank, rank = 1 + #secrets in R scoring better (§4.1).

    ``sample``: rank ≈ |R|·(c + 1)/(n + 1), c = sampled candidates scoring ≤ the canary (ties
    count against it), so exposure = log2((n + 1)/(c + 1)): distribution-free, but it saturates
    at log2(n + 1). ``skewnorm``/``normal``: the paper's extrapolation (§4.3), fit the
    candidates' log-perplexities and take exposure = −log2 CDF(canary score), which reaches
    past the sample into the tail, as far as the fitted shape is right. Both clipped to
    [0, log2|R|]."""
    canary = np.asarray(canary_scores, dtype=float)
    cand = np.asarray(candidate_scores, dtype=float)
    cand = cand[np.isfinite(cand)]
    if not cand.size:
        raise ValueError("no finite candidate score to rank the canaries against")
    if method == "sample" or np.ptp(cand) == 0.0:  # a fit needs spread
        counts = np.searchsorted(np.sort(cand), canary, side="right")
        bits = np.log2(cand.size + 1) - np.log2(counts + 1)
    else:
        family = stats.skewnorm if method == "skewnorm" else stats.norm
        dist = family(*family.fit(cand))
        with np.errstate(divide="ignore"):
            bits = -dist.logcdf(canary) / math.log(2)
    bits = np.clip(np.nan_to_num(bits, nan=math.log2(space_size)), 0.0, math.log2(space_size))
    return np.where(np.isnan(canary), np.nan, bits)


def exposure(canary_score: float, candidate_scores: np.ndarray, space_size: float,
             method: Method = "sample") -> float:
    """Exposure in bits of one canary from its log-perplexity (lower = more likely) and those of
    randomly sampled alternatives of the same format; see ``_exposures`` for the methods."""
    return float(_exposures(np.array([canary_score]), candidate_scores, space_size, method)[0])


def canary_exposures(score_fn: Callable[[list[str]], np.ndarray], canaries: Canaries,
                     n_candidates: int, rng: np.random.Generator) -> dict[str, Any]:
    """Score the canaries and one shared sample of alternatives in a single ``score_fn`` call.

    ``score_fn(texts)`` returns one log-perplexity per text (lower = more likely). Keys:
    ``exposure`` (per canary, the sample estimate the gate uses because it assumes nothing about
    the score distribution), ``exposure_fit`` (per canary, skew-normal extrapolation, for how
    far past the resolution a memorized canary sits), ``exposure_min|median|max``,
    ``exposure_fit_median|max``, ``resolution_bits`` = log2(n_candidates + 1), ``space_bits``,
    ``n_candidates``."""
    texts = canaries.texts
    scores = np.asarray(score_fn(texts + canaries.candidates(n_candidates, rng)), dtype=float)
    if scores.shape != (len(texts) + n_candidates,):
        raise ValueError(f"score_fn returned shape {scores.shape} for "
                         f"{len(texts) + n_candidates} texts; it must return one score per text")
    own, cand = scores[: len(texts)], scores[len(texts) :]
    sample = _exposures(own, cand, canaries.space_size, "sample")
    fit = _exposures(own, cand, canaries.space_size, "skewnorm")
    # With no memorization a canary's rank among the candidates is uniform, so 2^-exposure is
    # (nearly) uniform on (0, 1] and the sum of exposure·ln 2 over k canaries is Gamma(k, 1):
    # a test of the canary set as a whole, which sees a model that favours every canary a
    # little, not only one it learnt outright. Ranks are discrete and ties count against the
    # canary, which makes the test conservative.
    p_value = float(stats.gamma.sf(float(np.nansum(sample)) * math.log(2), len(texts)))
    return {"exposure": sample.tolist(), "exposure_fit": fit.tolist(),
            "exposure_min": float(np.min(sample)), "exposure_median": float(np.median(sample)),
            "exposure_max": float(np.max(sample)), "exposure_mean": float(np.mean(sample)),
            "memorization_p_value": p_value, "exposure_fit_median": float(np.median(fit)),
            "exposure_fit_max": float(np.max(fit)),
            "resolution_bits": math.log2(n_candidates + 1),
            "space_bits": math.log2(canaries.space_size), "n_candidates": n_candidates}


# --- Verdict.

# Membership attacks held against the (ε, δ) bound: gate → what the verdict calls it. "mia":
# the loss attack on −log_prob; "dcr" and "domias": the black-box ones (tasks/audit_blackbox).
ATTACKS = {"mia": "membership inference", "dcr": "distance-to-closest-record attack",
           "domias": "DOMIAS density-ratio attack"}


def audit_verdict(results: dict[str, dict[str, Any]], thresholds: AuditConfig) -> dict[str, str]:
    """``"pass"`` or ``"fail: <reason>"`` per gate whose result is present: ``canary`` (from
    ``canary_exposures``), each of ``ATTACKS`` (from ``mia_within_bound``, the same rule for
    every membership attack), ``replay`` (from ``replay_stats``). A missing result gives no
    entry, never a pass."""
    verdict: dict[str, str] = {}
    if (canary := results.get("canary")) is not None:
        limit = thresholds.exposure_max
        limit = canary["resolution_bits"] if limit is None else limit
        top, p_value = canary["exposure_max"], canary.get("memorization_p_value", 1.0)
        reasons = []
        if top >= limit - 1e-9:
            reasons.append(f"max canary exposure {top:.2f} bits ≥ {limit:.2f} (extrapolated "
                           f"{canary['exposure_fit_max']:.1f} of {canary['space_bits']:.1f} "
                           "bits)")
        if p_value < thresholds.canary_alpha:
            reasons.append(f"canaries more likely than chance: mean exposure "
                           f"{canary.get('exposure_mean', math.nan):.2f} bits (chance 1.44), "
                           f"p = {p_value:.2g} < {thresholds.canary_alpha:g}")
        verdict["canary"] = "fail: " + "; ".join(reasons) if reasons else "pass"
    for gate, attack in ATTACKS.items():
        if (mia := results.get(gate)) is None:
            continue
        reasons = list(mia["violations"])
        if thresholds.mia_auc_max is not None and mia["auc_lower"] > thresholds.mia_auc_max:
            reasons.append(f"{attack} AUC, at its lower bound {mia['auc_lower']:.3f}, exceeds "
                           f"{thresholds.mia_auc_max:g}")
        verdict[gate] = "fail: " + "; ".join(reasons) if reasons else "pass"
    if (replay := results.get("replay")) is not None:
        reasons = []
        if not replay["n_synthetic"]:
            reasons.append("no synthetic text to audit")
        if replay["unique_copies"] > thresholds.replay_exact_max:
            reasons.append(f"{replay['unique_copies']:.0f} synthetic records copy a training "
                           f"record found nowhere else (allowed {thresholds.replay_exact_max})")
        excess = replay["ngram_copy_rate"] - replay["holdout_ngram_rate"]
        if excess > thresholds.replay_ngram_excess_max:
            reasons.append(f"n-gram copy rate {replay['ngram_copy_rate']:.3f} exceeds the "
                           f"held-out rate {replay['holdout_ngram_rate']:.3f} by more than "
                           f"{thresholds.replay_ngram_excess_max:g}")
        verdict["replay"] = "fail: " + "; ".join(reasons) if reasons else "pass"
    return verdict
