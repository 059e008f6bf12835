"""The fitted graphical model of the marginal families as a calibrated junction tree in numpy.

Private-PGM (McKenna et al. 2019) estimates log-potentials on the measured cliques; this module
turns them into a junction tree (mbi's triangulation) and does exact inference on it in numpy:
calibration (Shafer-Shenoy, so evidence of probability 0 stays -inf, never NaN), marginals of any
attribute set, seeded forward sampling and log-likelihood. numpy because the AIM loop asks for
hundreds of candidate marginals per round, and JAX would compile a program for each of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

Factor = tuple[tuple[str, ...], np.ndarray]  # (variables, log-table with one axis per variable)


def _align(f: Factor, target: Sequence[str]) -> np.ndarray:
    """``f``'s table broadcastable against a table over ``target`` (⊇ f's variables)."""
    names, table = f
    order = [names.index(v) for v in target if v in names]
    shape = [table.shape[names.index(v)] if v in names else 1 for v in target]
    return np.transpose(table, order).reshape(shape)


def _product(factors: Sequence[Factor]) -> Factor:
    names: list[str] = []
    for f in factors:
        names += [v for v in f[0] if v not in names]
    total = sum((_align(f, names) for f in factors), start=np.zeros([1] * len(names)))
    return tuple(names), total


def _lse(f: Factor, keep: Sequence[str]) -> Factor:
    """Log-sum-exp of ``f`` over every variable not in ``keep`` (order of ``f`` kept)."""
    names, table = f
    axes = tuple(i for i, v in enumerate(names) if v not in keep)
    if not axes:
        return f
    top = np.max(table, axis=axes, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(table - top), axis=axes, keepdims=True)) + top
    return tuple(v for v in names if v in keep), np.squeeze(out, axis=axes)


@dataclass
class JunctionTree:
    """Cliques ``nodes`` joined by ``parent`` (-1: a root; the forest's order is ``order``,
    parents first), with log-potentials ``log_pot`` and attribute sizes ``sizes``."""

    nodes: list[tuple[str, ...]]
    parent: list[int]
    order: list[int]
    log_pot: list[np.ndarray]
    sizes: dict[str, int]
    beliefs: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def from_potentials(cls, sizes: Mapping[str, int], potentials: Sequence[Factor]
                        ) -> JunctionTree:
        """The junction tree of mbi's triangulation (``mbi.junction_tree``) over the cliques of
        ``potentials``, each potential added into the first tree clique that holds it."""
        import networkx as nx
        from mbi import Domain, junction_tree

        domain = Domain(list(sizes), list(sizes.values()))
        graph, _ = junction_tree.make_junction_tree(domain, [f[0] for f in potentials])
        nodes = sorted(graph.nodes)
        index = {cl: i for i, cl in enumerate(nodes)}
        parent, order = [-1] * len(nodes), []
        for component in sorted(nx.connected_components(graph), key=min):
            root = min(component)
            order.append(index[root])
            for a, b in nx.bfs_edges(graph, root):
                parent[index[b]] = index[a]
                order.append(index[b])
        log_pot = [np.zeros([sizes[v] for v in cl]) for cl in nodes]
        for names, table in potentials:
            i = next(i for i, cl in enumerate(nodes) if set(names) <= set(cl))
            log_pot[i] = log_pot[i] + _align((tuple(names), np.asarray(table, float)), nodes[i])
        tree = cls(nodes, parent, order, log_pot, dict(sizes))
        tree.beliefs = tree.calibrate()
        return tree

    def _sep(self, i: int) -> tuple[str, ...]:
        return tuple(v for v in self.nodes[i] if v in self.nodes[self.parent[i]])

    def calibrate(self, evidence: Mapping[str, int] | None = None) -> list[np.ndarray]:
        """Normalized log-marginal of every clique given ``evidence`` (attribute → code).
        ValueError if the evidence has probability 0 under the model."""
        pot = [p.copy() for p in self.log_pot]
        for var, code in (evidence or {}).items():
            i = next(i for i, cl in enumerate(self.nodes) if var in cl)
            mask = np.full(self.sizes[var], -np.inf)
            mask[code] = 0.0
            pot[i] = pot[i] + _align(((var,), mask), self.nodes[i])
        children: dict[int, list[int]] = {i: [] for i in range(len(self.nodes))}
        for i in self.order:
            if self.parent[i] >= 0:
                children[self.parent[i]].append(i)
        up: dict[int, Factor] = {}
        for i in reversed(self.order):
            if self.parent[i] >= 0:
                f = _product([(self.nodes[i], pot[i])] + [up[c] for c in children[i]])
                up[i] = _lse(f, self._sep(i))
        down: dict[int, Factor] = {}
        beliefs: list[np.ndarray] = [np.empty(0)] * len(self.nodes)
        for i in self.order:
            incoming = [up[c] for c in children[i]] + ([down[i]] if i in down else [])
            for c in children[i]:
                rest = [m for m in incoming if m is not up[c]]
                down[c] = _lse(_product([(self.nodes[i], pot[i]), *rest]), self._sep(c))
            names, table = _product([(self.nodes[i], pot[i]), *incoming])
            table = _align((names, table), self.nodes[i])
            norm = _lse((self.nodes[i], table), ())[1]
            if not np.isfinite(norm):
                raise ValueError(f"the conditions {dict(evidence or {})} have probability 0 "
                                 "under the model; condition on values it generates")
            beliefs[i] = table - norm
        return beliefs

    def _conditionals(self, beliefs: list[np.ndarray]) -> list[np.ndarray]:
        """log p(clique | separator) per clique (log p(clique) at a root)."""
        out = []
        for i, b in enumerate(beliefs):
            if self.parent[i] < 0:
                out.append(b)
                continue
            sep = _align(_lse((self.nodes[i], b), self._sep(i)), self.nodes[i])
            out.append(np.where(np.isneginf(b), -np.inf, b - np.where(np.isneginf(sep), 0, sep)))
        return out

    def project(self, targets: Sequence[str], beliefs: list[np.ndarray] | None = None
                ) -> np.ndarray:
        """Probability table over ``targets`` (axes in that order), summing to 1."""
        beliefs = beliefs or self.beliefs
        for i, cl in enumerate(self.nodes):
            if set(targets) <= set(cl):
                return np.exp(_align(_lse((cl, beliefs[i]), targets), targets))
        cond = self._conditionals(beliefs)
        carries = {i: set(cl) & set(targets) for i, cl in enumerate(self.nodes)}
        for i in reversed(self.order):  # which subtrees hold a target
            if self.parent[i] >= 0:
                carries[self.parent[i]] |= carries[i]
        msgs: dict[int, Factor] = {}
        roots: list[Factor] = []
        for i in reversed(self.order):
            if not carries[i]:
                continue
            kids = [msgs.pop(c) for c in list(msgs) if self.parent[c] == i]
            f = _product([(self.nodes[i], cond[i]), *kids])
            if self.parent[i] >= 0:
                msgs[i] = _lse(f, set(targets) | set(self._sep(i)))
            else:
                roots.append(_lse(f, targets))
        return np.exp(_align(_product(roots), targets))

    def sample(self, n: int, rng: np.random.Generator, beliefs: list[np.ndarray] | None = None
               ) -> dict[str, np.ndarray]:
        """``n`` records as attribute → codes, by forward sampling from the roots."""
        cond = self._conditionals(beliefs or self.beliefs)
        codes: dict[str, np.ndarray] = {}
        for i in self.order:
            cl = self.nodes[i]
            known = [v for v in cl if v in codes]
            new = [v for v in cl if v not in codes]
            table = np.exp(_align((cl, cond[i]), known + new))
            rows = table.reshape(int(np.prod([self.sizes[v] for v in known])), -1)
            parents = (np.ravel_multi_index([codes[v] for v in known],
                                            [self.sizes[v] for v in known])
                       if known else np.zeros(n, dtype=int))
            cdf = np.cumsum(rows, axis=1)
            cdf = cdf / np.maximum(cdf[:, -1:], 1e-300)
            u = rng.random(n)
            flat = np.minimum((cdf[parents] < u[:, None]).sum(axis=1), rows.shape[1] - 1)
            for v, c in zip(new, np.unravel_index(flat, [self.sizes[v] for v in new]),
                            strict=True):
                codes[v] = c.astype(np.int64)
        return codes

    def log_prob(self, codes: Mapping[str, np.ndarray]) -> np.ndarray:
        """[n] log-probability of each coded record (Σ cliques − Σ separators)."""
        cond = self._conditionals(self.beliefs)
        n = len(next(iter(codes.values())))
        out = np.zeros(n)
        for i, cl in enumerate(self.nodes):
            out += cond[i][tuple(codes[v] for v in cl)]
        return out
