"""Accuracy-versus-eps pictures."""

from __future__ import annotations

from pathlib import Path

from robustcompress.fileio import atomic_path


def plot_accuracy_curves(
    curves: dict[str, list[tuple[float, float]]], path: str | Path, title: str = "", norm: str = "linf"
) -> Path:
    """Write an accuracy-versus-eps plot (PNG/SVG/PDF by suffix) of one or more curves; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, points in curves.items():
        xs, ys = zip(*points)
        ax.plot(
            xs, [100 * v for v in ys], marker="o", label=label, linestyle="--" if label == "worst" else "-"
        )
    ax.set_xlabel(f"eps ({'L-inf' if norm == 'linf' else 'L2'}, pixel scale [0, 1])")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path
