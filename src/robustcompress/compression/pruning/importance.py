"""Channel importance: one score per channel class (higher = keep).

- l1: sum of |w| over the class's filters (Li et al. 2017, paper 003 section 3.1; paper 002 Alg. 3)
- l2: Euclidean norm of the class's filters
- bn_scale: sum of |gamma| of the batch norms holding the class (Network Slimming); classes
  without a batch norm fall back to l1
- random: uniform scores from a seeded generator (a baseline)

Scores use the effective (masked) weights, so channels that are already zero go first.
"""

from __future__ import annotations

import torch

from robustcompress.compression.pruning.graph import ChannelClass, DependencyGraph

IMPORTANCES = ("l1", "l2", "bn_scale", "random")


@torch.no_grad()
def channel_importance(
    graph: DependencyGraph, classes: list[ChannelClass], kind: str = "l1", seed: int = 0
) -> torch.Tensor:
    """Scores of `classes` (float64 tensor, same order)."""
    if kind not in IMPORTANCES:
        raise ValueError(f"unknown importance {kind!r}; choose one of {', '.join(IMPORTANCES)}")
    if kind == "random":
        return torch.rand(len(classes), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    filter_scores = _filter_scores(graph, squared=(kind == "l2"))
    scores = []
    bn = _bn_scores(graph) if kind == "bn_scale" else {}
    for c in classes:
        if kind == "bn_scale" and c.root in bn:
            scores.append(bn[c.root])
            continue
        total = sum(filter_scores[name][pos] for name, positions in c.producers.items() for pos in positions)
        scores.append(total**0.5 if kind == "l2" else total)
    return torch.tensor(scores, dtype=torch.float64)


def _filter_scores(graph: DependencyGraph, squared: bool) -> dict[str, list[float]]:
    out = {}
    for use in graph.layers.values():
        if use.kind in ("conv", "linear"):
            w = use.module.weight.detach().double().flatten(1)
            out[use.name] = (w.pow(2) if squared else w.abs()).sum(1).tolist()
    return out


def _bn_scores(graph: DependencyGraph) -> dict[int, float]:
    out: dict[int, float] = {}
    for use in graph.layers.values():
        if use.kind == "norm" and use.module.weight is not None:
            gamma = use.module.weight.detach().abs().double().tolist()
            for pos, e in enumerate(use.out_ids):
                root = graph.find(e)
                out[root] = out.get(root, 0.0) + gamma[pos]
    return out
