"""What every analysis figure shares: off-screen matplotlib, class colours, atomic PNG files."""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # off-screen: no display on servers, and no window from a library call

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def class_colors(num_classes: int) -> np.ndarray:
    """(num_classes, 3) RGB: the same colour for a class in every panel and every figure."""
    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    if num_classes <= 20:
        return np.array([cmap(i % cmap.N)[:3] for i in range(num_classes)])
    return np.array([plt.get_cmap("hsv")(i / num_classes)[:3] for i in range(num_classes)])


def shaded(pred: np.ndarray, conf: np.ndarray, num_classes: int) -> np.ndarray:
    """RGB image of predicted classes, darker where the model is more confident (paper 002's Figure 7).

    Confidence 1/num_classes (a coin toss) is drawn almost white, confidence 1 in the class colour.
    """
    colors = class_colors(num_classes)[pred]
    floor = 1.0 / num_classes
    strength = np.clip((conf - floor) / max(1.0 - floor, 1e-12), 0.0, 1.0)[..., None]
    strength = 0.15 + 0.85 * strength  # keep the class readable even where the model is unsure
    return 1.0 - strength * (1.0 - colors)


def class_legend(ax, classes: list[int], class_names: list[str] | None, num_classes: int, **kwargs) -> None:
    """A legend with one coloured patch per class that appears in the figure."""
    from matplotlib.patches import Patch

    colors = class_colors(num_classes)
    handles = [
        Patch(color=colors[c], label=class_names[c] if class_names and c < len(class_names) else str(c))
        for c in sorted(set(classes))
    ]
    ax.legend(handles=handles, title="predicted class", fontsize="small", **kwargs)


def new_figure(rows: int, cols: int, panel: float = 3.2) -> tuple[Figure, np.ndarray]:
    """A figure of rows x cols panels; axes always a 2-D array."""
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols + 1.5, panel * rows + 0.8), squeeze=False)
    return fig, axes


def fit_suptitle(fig: Figure, text: str, fontsize: str = "medium", margin: float = 0.02) -> None:
    """The figure's title, each line wrapped to the figure's width, then the layout tightened.

    A one-model figure is narrow (a panel and a legend): a title written for a row of models ran
    past both edges and was cut off in the PNG. Wrapping measures the rendered text, so it holds
    for any font and figure size.
    """
    title = fig.suptitle(text, fontsize=fontsize)
    renderer = fig.canvas.get_renderer()
    room = fig.bbox.width * (1 - 2 * margin)
    paragraphs = text.split("\n")
    chars = max(len(line) for line in paragraphs)
    while chars > 10 and title.get_window_extent(renderer).width > room:
        chars = max(10, int(chars * room / title.get_window_extent(renderer).width) - 1)
        title.set_text("\n".join(textwrap.fill(line, chars) for line in paragraphs))
    fig.tight_layout()


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure as PNG under a temporary name, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path
