"""What AIM and MST measure, and how they choose it (McKenna et al. 2022 §4, 2021 §3): noisy
marginals, the exponential mechanism, and the Private-PGM fit between AIM's rounds (``mbi``).

Every noisy marginal of this module is a Gaussian of L2 sensitivity 1 (one record adds or
removes one count), recorded as ``accounting.gaussian(σ)``; every selection is the exponential
mechanism with parameter ε₀ on a score of sensitivity Δ, recorded as ``accounting.zcdp(ε₀²/8)``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections.abc import Callable, Mapping

import numpy as np

from models import accounting
from models.marginal_tree import JunctionTree

Clique = tuple[str, ...]


def _mbi():
    """mbi, imported on first use (it loads JAX), without its float32 advice: that concerns
    tables past 100k records, and float64 would slow every fit here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mbi
    return mbi


def count(codes: Mapping[str, np.ndarray], sizes: Mapping[str, int], clique: Clique
          ) -> np.ndarray:
    """[Π sizes] the exact marginal of ``clique``, cells flattened in clique order."""
    shape = [sizes[v] for v in clique]
    flat = np.ravel_multi_index([codes[v] for v in clique], shape)
    return np.bincount(flat, minlength=int(np.prod(shape))).astype(float)


def measure(codes, sizes, clique: Clique, sigma: float | None, rng: np.random.Generator):
    """mbi's ``LinearMeasurement`` of ``clique``'s marginal plus N(0, σ²) per cell (``sigma``
    None: exact, weighted as σ = 1)."""
    exact = count(codes, sizes, clique)
    noisy = exact + rng.normal(0.0, sigma, exact.shape) if sigma else exact
    return _mbi().LinearMeasurement(noisy, clique, stddev=sigma or 1.0)


def estimate(sizes: Mapping[str, int], measurements: list, iters: int, warm=None):
    """Private-PGM's mirror descent (McKenna et al. 2019) on ``measurements``: an mbi
    ``MarkovRandomField`` (warm-started from ``warm``'s potentials when given)."""
    mbi = _mbi()
    domain = mbi.Domain(list(sizes), list(sizes.values()))
    return _lean_mirror_descent()(smoothness=entropic_smoothness(domain, measurements)).estimate(
        domain, measurements, iters=iters, warm_start=warm)


def entropic_smoothness(domain, measurements: list) -> float:
    """The L2 loss's smoothness in the ℓ1 norm, the one entropic mirror descent's step
    follows (Beck & Teboulle 2003): the largest entry of its Hessian, max over maximal
    cliques C of Σ_{M→C} 1/σ_M² for the marginal queries measured here. mbi starts the step
    from the ℓ2 bound instead, which multiplies each term by |C|/|c_M|: a 1-way marginal
    inside a 3-way clique of 1,111 × 20 × 8 cells weighs 8,888 times over, and 100–500 steps
    then barely leave the start (the non-private control's postcode 1-way TVD was 0.98 on the
    demo). Armijo's backtracking keeps every step a descent from either start."""
    from mbi.marginal_loss import clique_mapping, maximal_subset

    cliques = [m.clique for m in measurements]
    routing = clique_mapping(maximal_subset(cliques), cliques, domain)
    blocks: dict = {}
    for m in measurements:
        home = routing[m.clique]
        blocks[home] = blocks.get(home, 0.0) + 1.0 / max(float(m.stddev), 1e-12) ** 2
    return max(blocks.values(), default=1.0)


@functools.cache
def _lean_mirror_descent():
    """mbi's ``MirrorDescent`` without its two eager marginal computations (the initial one
    and the final one): run op by op, each compiles dozens of small XLA programs per new set
    of cliques, half of an AIM round's time on 2 cores. The first step computes the marginals
    anyway, and the model here is used through its potentials only. Written against mbi
    2.0.0's estimator hooks (``_init``/``_finalize``), pinned in pyproject."""
    import jax.numpy as jnp
    from mbi import estimation
    from mbi.markov_random_field import MarkovRandomField

    @dataclasses.dataclass(frozen=True)
    class LeanMirrorDescent(estimation.MirrorDescent):
        smoothness: float | None = None  # None: mbi's ℓ2 bound (see entropic_smoothness)

        def _init(self, domain, loss_fn, known_total, *, warm_start=None, constraints=()):
            potentials = estimation._extract_potentials(warm_start, domain, loss_fn.cliques)
            alpha = 2.0 / ((self.smoothness or loss_fn.lipschitz) * known_total)
            mu = _mbi().CliqueVector.zeros(domain, loss_fn.cliques)
            return estimation.MirrorDescentState(mu, potentials, alpha,
                                                 jnp.zeros((), jnp.result_type(float)))

        def _finalize(self, state, known_total, constraints=()):
            return MarkovRandomField(potentials=state.potentials, marginals=state.mu,
                                     total=known_total)

    return LeanMirrorDescent


def junction_tree(sizes: Mapping[str, int], model) -> JunctionTree:
    """The numpy junction tree of an mbi model's log-potentials."""
    pots = [(tuple(model.potentials[cl].domain.attributes),
             np.asarray(model.potentials[cl].values, dtype=float))
            for cl in model.potentials.cliques]
    return JunctionTree.from_potentials(sizes, pots)


def choose(scores: np.ndarray, eps: float | None, sensitivity: float,
           rng: np.random.Generator, allowed: Callable[[int], bool] = lambda i: True) -> int:
    """The exponential mechanism (McSherry & Talwar 2007) over the indices ``allowed`` keeps:
    i with probability ∝ exp(ε·score_i / (2Δ)), drawn as the allowed argmax of the scaled
    scores plus Gumbel noise (the same distribution), so ``allowed`` — costly for AIM's model
    size check — runs only until the first hit. ``eps`` None (non-private): the best score."""
    keys = np.asarray(scores, dtype=float)
    if eps is not None:
        keys = eps / (2 * sensitivity) * keys + rng.gumbel(size=keys.shape)
    for i in np.argsort(-keys, kind="stable"):
        if allowed(int(i)):
            return int(i)
    raise ValueError("no candidate is allowed")


def _canonical(names: list[str], clique) -> Clique:
    return tuple(sorted(clique, key=names.index))


def workload(names: list[str], target: str | None) -> dict[Clique, float]:
    """AIM's candidates: the downward closure of the workload (every pair, plus every triple
    holding ``target``), each weighted by Σ_w |c ∩ w| over the workload's marginals w."""
    work = list(itertools.combinations(names, 2))
    if target is not None:
        work += [t for t in itertools.combinations(names, 3) if target in t]
    closure = {_canonical(names, sub) for w in work for r in range(1, len(w) + 1)
               for sub in itertools.combinations(w, r)}
    if len(names) == 1:
        closure = {(names[0],)}
    return {c: float(sum(len(set(c) & set(w)) for w in work)) or 1.0
            for c in sorted(closure, key=lambda c: (len(c), c))}


def aim_rounds(codes, sizes: Mapping[str, int], rho: float, rng: np.random.Generator,
               private: bool, cfg, on_progress: Callable[[dict], None]):
    """AIM's measurements (list of mbi ``LinearMeasurement``), its params, its events and the
    last round's model (a warm start for the final fit).

    ``cfg.one_way_share`` of ``rho`` measures every 1-way marginal; the rest runs in rounds of
    ρ_r/T each (T = ``cfg.rounds``): 90 % to a Gaussian measurement, 10 % to the exponential
    mechanism picking the candidate of largest weighted L1 error minus its expected noise,
    among those keeping the model under ``max_model_size`` × the share of ρ spent so far.
    When a measurement moves the model less than its noise, σ halves and ε₀ doubles; the last
    round takes whatever is left, so the events compose back to ``rho`` exactly."""
    mbi = _mbi()
    names = list(sizes)
    domain = mbi.Domain(names, list(sizes.values()))
    candidates = workload(names, cfg.target)
    order = list(candidates)
    answers = {c: count(codes, sizes, c) for c in candidates}
    rho_1 = cfg.one_way_share * rho if private else 0.0
    sigma_1 = math.sqrt(len(names) / (2 * rho_1)) if private else None
    measurements = [measure(codes, sizes, (v,), sigma_1, rng) for v in names]
    events = [accounting.gaussian(sigma_1) for _ in names] if private else []
    # The model of 1-way marginals alone is their product: no fit needed for the first round.
    probs, total = independent(measurements)
    tree = JunctionTree.from_potentials(
        sizes, [((v,), np.log(np.maximum(probs[v], 1e-12))) for v in names])
    cliques, model = [(v,) for v in names], None
    rho_r, T = rho - rho_1, cfg.rounds
    sigma = math.sqrt(T / (2 * 0.9 * rho_r)) if private else None
    eps = math.sqrt(8 * 0.1 * rho_r / T) if private else None
    used, rounds, chosen = 0.0, 0, []
    while True:
        rounds += 1
        last = rounds >= T
        if private and (last or rho_r - used < 2 * (0.5 / sigma**2 + eps**2 / 8)):
            remaining = rho_r - used
            sigma, eps, last = math.sqrt(1 / (2 * 0.9 * remaining)), \
                math.sqrt(8 * 0.1 * remaining), True
        if private:
            used += 0.5 / sigma**2 + eps**2 / 8
        share = (rho_1 + used) / rho if private else rounds / T
        free = {tuple(s) for c in cliques for r in range(1, len(c) + 1)
                for s in itertools.combinations(c, r)}
        bias = math.sqrt(2 / math.pi) * (sigma or 0.0)
        scores = np.array([w * (np.abs(answers[c] - total * tree.project(c).ravel()).sum()
                                - bias * answers[c].size) for c, w in candidates.items()])
        # Δ: the largest weight of all candidates (a 1-way one, always allowed: the same as
        # the paper's largest weight among the allowed ones).
        limit = cfg.max_model_size * share
        pick = order[choose(scores, eps, max(candidates.values()), rng,
                            lambda i, free=free, cliques=cliques, limit=limit: (
                                order[i] in free or mbi.junction_tree.hypothetical_model_size(
                                    domain, [*cliques, order[i]]) <= limit))]
        before = total * tree.project(pick).ravel()
        measurements.append(measure(codes, sizes, pick, sigma, rng))
        if private:
            events += [accounting.zcdp(eps**2 / 8), accounting.gaussian(sigma)]
        chosen.append({"clique": list(pick), "sigma": sigma, "epsilon0": eps})
        model = estimate(sizes, measurements, cfg.round_iters, model)
        tree, total = junction_tree(sizes, model), float(model.total)
        cliques = [tuple(c) for c in model.cliques]
        on_progress({"round": rounds, "rho_used": rho_1 + used, "cliques": len(chosen)})
        if last:
            break
        after = total * tree.project(pick).ravel()
        if private and np.abs(after - before).sum() <= bias * answers[pick].size:
            sigma, eps = sigma / 2, eps * 2
    params = {"rounds": rounds, "sigma_one_way": sigma_1, "measured": chosen,
              "max_model_size_mb": cfg.max_model_size, "candidates": len(candidates)}
    return measurements, params, events, model


def independent(ones: list) -> tuple[dict[str, np.ndarray], float]:
    """Each attribute's distribution from its noisy 1-way marginal (negatives cut to 0) and
    the record count they estimate: the model that treats attributes as independent."""
    probs = {}
    for m in ones:
        y = np.maximum(np.asarray(m.noisy_measurement, dtype=float), 0.0)
        probs[m.clique[0]] = y / y.sum() if y.sum() > 0 else np.full(y.size, 1.0 / y.size)
    total = max(float(np.mean([np.sum(m.noisy_measurement) for m in ones])), 1.0)
    return probs, total


def mst_tree(codes, sizes: Mapping[str, int], rho: float, rng: np.random.Generator,
             private: bool, on_progress: Callable[[dict], None]):
    """MST's measurements, params, events and None (no model to warm-start from): ρ/3 on the
    1-way marginals, ρ/3 on picking d−1 pairs by Kruskal with the exponential mechanism
    (score: L1 distance between a pair's marginal and the independent model's, sensitivity
    1), ρ/3 on the chosen pairs."""
    names = list(sizes)
    d = len(names)
    third = rho / 3 if private else 0.0
    sigma_1 = math.sqrt(d / (2 * third)) if private else None
    ones = [measure(codes, sizes, (v,), sigma_1, rng) for v in names]
    events = [accounting.gaussian(sigma_1) for _ in names] if private else []
    probs, total = independent(ones)
    eps = math.sqrt(8 * third / max(d - 1, 1)) if private else None
    pairs = list(itertools.combinations(names, 2))
    scores = np.array([np.abs(count(codes, sizes, (a, b)) -
                              total * np.outer(probs[a], probs[b]).ravel()).sum()
                       for a, b in pairs])
    component = {v: i for i, v in enumerate(names)}
    edges: list[Clique] = []
    for _ in range(d - 1):
        a, b = pairs[choose(scores, eps, 1.0, rng,
                            lambda i, c=component: c[pairs[i][0]] != c[pairs[i][1]])]
        if private:
            events.append(accounting.zcdp(eps**2 / 8))
        old, new = component[b], component[a]
        component = {v: new if c == old else c for v, c in component.items()}
        edges.append((a, b))
    sigma_2 = math.sqrt((d - 1) / (2 * third)) if private and d > 1 else None
    twos = [measure(codes, sizes, e, sigma_2, rng) for e in edges]
    events += [accounting.gaussian(sigma_2) for _ in edges] if private else []
    on_progress({"round": 1, "cliques": len(edges)})
    params = {"sigma_one_way": sigma_1, "sigma_two_way": sigma_2, "epsilon0": eps,
              "measured": [list(e) for e in edges]}
    return ones + twos, params, events, None
