"""What each number was measured on, and whether it can be trusted.

`basis` reads the evaluation config stored with each experiment (and the counts the evaluation
stored beside its numbers) to say, for one metric of one model, on how many test images and
under which attack budget it was measured. `flagged_metrics` names the figures that still carry a
gradient-masking flag of the evaluation that measured them: a robust accuracy under such a flag
is likely overestimated, so the report marks it and keeps it out of fronts and "best" summaries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from robustcompress.evaluation.registry import metric_info, producer
from robustcompress.report.results import ModelRow

DAGGER = "\u2020"


def flag_summary(flags: Iterable[str]) -> str:
    """What raised flags are about, counted: gradient masking (robust accuracies likely
    overestimated) or a latency too close to its baseline's to rank (flag.latency.*)."""
    flags = list(flags)
    latency = sum(f.startswith("flag.latency.") for f in flags)
    parts = [f"{len(flags) - latency} gradient-masking flag(s)"] if len(flags) > latency else []
    if latency:
        parts.append(f"{latency} latency flag(s) (not rankable against the baseline)")
    return " and ".join(parts)


def flagged_metrics(row: ModelRow) -> set[str]:
    """Metrics of `row` measured by an evaluation that raised a `flag.*` on it (directional ones:
    the figures a reader would rank by), e.g. every robust accuracy of a flagged adversarial run.
    A flag named after a metric (`flag.latency.cpu_ms.b64`) marks only it and its derived figures
    (`latency.cpu_ms.b64.ratio`), not the rest of its evaluation's."""
    families = {f.removeprefix("flag.") for f in row.flags}
    families = {f for f in families if f in row.metrics}
    sources = {producer(flag) for flag in row.flags if flag.removeprefix("flag.") not in families} - {None}
    out = set()
    for name in row.metrics:
        spec = metric_info(name)
        if name.startswith("flag.") or spec is None or spec.better == "none":
            continue
        if producer(name) in sources or any(name == f or name.startswith(f + ".") for f in families):
            out.add(name)
    return out


def trusted(row: ModelRow, include_flagged: bool = False) -> dict[str, Any]:
    """The row's metrics without its flagged figures (all of them with include_flagged)."""
    if include_flagged:
        return dict(row.metrics)
    drop = flagged_metrics(row)
    return {k: v for k, v in row.metrics.items() if k not in drop}


def basis(metric: str, row: ModelRow, config: dict[str, Any] | None) -> str | None:
    """'100 test images; L-inf eps 0.1; pgd (10 steps), square (50 queries), transfer' or None."""
    evaluation = producer(metric)
    if evaluation is None or config is None:
        return None
    data = config.get("data")
    limit = (data or {}).get("limit_test")
    images = None if data is None else f"{limit} test images" if limit else "the full test set"
    evals = [e for e in config.get("evaluations") or [] if e.get("type") == evaluation]
    if not evals:
        return None  # measured outside this config: nothing stored says on what
    if evaluation == "adversarial":
        n = row.metrics.get("adv.n_examples")
        images = f"{int(n)} test images" if isinstance(n, int | float) else images or "test images"
        budgets = [_attack_budget(e, metric, row) for e in evals]
        return f"{images}; " + " | ".join(dict.fromkeys(budgets))
    if evaluation in ("size", "efficiency"):
        return None  # a property of the model, not of test images
    sizes = {e.get("n_examples") or e.get("n_images") for e in evals} - {None}
    if sizes and images:
        images = f"{min(sizes)} test images" if not limit else f"{min(min(sizes), limit)} test images"
    return images


def _attack_budget(cfg: dict[str, Any], metric: str, row: ModelRow) -> str:
    """The norm, eps and attacks that ran (read from the row's metric names) with their budgets."""
    norm = cfg.get("norm", "linf")
    eps = ", ".join(f"{e:.4g}" for e in cfg.get("eps") or [8 / 255])
    params = cfg.get("attack_params") or {}
    steps, restarts = cfg.get("steps"), cfg.get("restarts", 1)
    ran = [
        m.removeprefix("acc.").split(f"_{norm}_")[0]
        for m in row.metrics
        if m.startswith("acc.") and f"_{norm}_" in m and not m.startswith("acc.worst_")
    ]
    parts = []
    for attack in dict.fromkeys(ran or cfg.get("attacks") or ["standard"]):
        own = params.get(attack, {})
        if attack == "square":
            detail = f"{own.get('queries', 5000)} queries"
        elif attack == "transfer":
            detail = (
                "from the float parent" if not cfg.get("transfer_from") else f"from {cfg['transfer_from']}"
            )
        elif attack in ("standard", "fgsm"):
            detail = ""
        else:
            s = own.get("steps", steps)
            detail = f"{s} steps" if s else "default steps"
        parts.append(f"{attack} ({detail})" if detail else attack)
    if "adv.white_box_via" in row.metrics:
        parts.append("white-box attacks through the fake-quant twin")
    if restarts and restarts > 1:
        parts.append(f"{restarts} restarts")
    return f"{'L-inf' if norm == 'linf' else 'L2'} eps {eps}; " + ", ".join(parts)
