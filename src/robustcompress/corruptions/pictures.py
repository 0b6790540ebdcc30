"""Pictures: one image under every corruption and severity, and a model's error heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustcompress.corruptions._ops import quantize_uint8
from robustcompress.corruptions.suites import SUITES, chunk_generator
from robustcompress.fileio import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=fig.dpi, bbox_inches="tight")
    return path


def corruption_grid(
    image: torch.Tensor,
    path: str | Path,
    *,
    suite: str = "cifar-c",
    corruptions: list[str] | None = None,
    severities: list[int] | None = None,
    seed: int = 0,
    cell_inches: float = 0.9,
) -> Path:
    """PNG grid: one row per corruption, the clean image then each severity (uint8, as evaluated)."""
    plt = _pyplot()
    s = SUITES.get(suite)
    names, sevs = s.select(corruptions, severities)
    x = image[None] if image.dim() == 3 else image[:1]
    fig, axes = plt.subplots(
        len(names),
        len(sevs) + 1,
        squeeze=False,
        figsize=(cell_inches * (len(sevs) + 1) + 1.4, cell_inches * len(names)),
        dpi=100,
    )

    def show(ax, img: torch.Tensor, title: str | None = None):
        arr = img.permute(1, 2, 0).cpu().numpy()
        ax.imshow(
            arr[..., 0] if arr.shape[-1] == 1 else arr, cmap="gray", vmin=0, vmax=255, interpolation="nearest"
        )
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_title(title, fontsize=8)

    clean = torch.round(x[0].clamp(0, 1) * 255).to(torch.uint8)
    for r, name in enumerate(names):
        show(axes[r, 0], clean, "clean" if r == 0 else None)
        extra = "" if name in s.corruptions else " (extra)"
        axes[r, 0].set_ylabel(name + extra, rotation=0, ha="right", va="center", fontsize=8)
        for c, sev in enumerate(sevs):
            g = chunk_generator(seed, suite, name, sev, 0, x.device)
            out = quantize_uint8(s.get(name)(x, sev, generator=g))[0]
            show(axes[r, c + 1], out, f"severity {sev}" if r == 0 else None)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def error_heatmap(metrics: dict, path: str | Path, title: str = "top-1 error (%)") -> Path:
    """Heatmap of `err.<corruption>.<severity>` metrics (rows: corruptions, columns: severities)."""
    plt = _pyplot()
    cells = {}
    for key, value in metrics.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "err" and parts[2].isdigit():
            cells[(parts[1], int(parts[2]))] = float(value)
    if not cells:
        from robustcompress.errors import ConfigError

        raise ConfigError(
            "no err.<corruption>.<severity> metrics to draw; run the corruption evaluation first"
        )
    names = list(dict.fromkeys(n for n, _ in cells))
    sevs = sorted({s for _, s in cells})
    grid = np.full((len(names), len(sevs)), np.nan)
    for (n, s), v in cells.items():
        grid[names.index(n), sevs.index(s)] = 100 * v
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(sevs), 0.8 + 0.32 * len(names)), dpi=110)
    im = ax.imshow(grid, cmap="magma_r", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(sevs)), [str(s) for s in sevs])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("severity")
    for i in range(len(names)):
        for j in range(len(sevs)):
            if not np.isnan(grid[i, j]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if grid[i, j] > 55 else "black",
                )
    title_bits = [title]
    if "mce" in metrics:
        title_bits.append(f"mCE {float(metrics['mce']):.1f}")
    ax.set_title(", ".join(title_bits), fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)
