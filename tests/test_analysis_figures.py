"""Analysis figures keep their title inside the picture, however narrow (one model) the figure is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustcompress.analysis.boundary import cross_sections, pca_plane
from robustcompress.analysis.tsne import ModelEmbedding, _figure


def _inside(fig) -> None:
    """The title's and every legend's drawn box lie within the figure's canvas."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    boxes = {"title": fig._suptitle.get_window_extent(renderer)}
    boxes |= {f"legend {i}": ax.get_legend().get_window_extent(renderer)
              for i, ax in enumerate(fig.axes) if ax.get_legend()}  # fmt: skip
    for what, box in boxes.items():
        assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1, (what, box.bounds, canvas.bounds)
        assert canvas.y0 <= box.y0 and box.y1 <= canvas.y1, (what, box.bounds, canvas.bounds)


@pytest.fixture()
def one_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    gen = torch.Generator().manual_seed(0)
    return {"model": net}, torch.rand(30, 1, 8, 8, generator=gen), torch.randint(0, 3, (30,), generator=gen)


def test_single_model_pca_figure_keeps_its_title_inside(one_model):
    models, x, y = one_model
    fig, _ = pca_plane(models, x, y, resolution=8)
    title = fig._suptitle.get_text()
    assert "\n" in title and title.replace("\n", " ").startswith("Predicted class on the plane")
    _inside(fig)
    assert fig.get_size_inches().tolist() == [4.0 + 1.5, 4.0 + 0.8]  # the canvas is unchanged


def test_single_model_cross_sections_keep_their_title_inside(one_model):
    models, x, _ = one_model
    fig = cross_sections(models, x[:2], resolution=5, steps=2, num_classes=3)
    _inside(fig)


def test_single_model_tsne_figure_keeps_its_title_inside():
    rng = np.random.default_rng(0)
    emb = ModelEmbedding(
        ["features.0"], {"features.0": rng.normal(size=(12, 2))}, 8, np.array([1, 0, 1, 0], bool)
    )
    fig = _figure({"model": emb}, 0, ["T-shirt/top"], 0.1, "linf")
    _inside(fig)


def test_a_wide_figure_keeps_its_title_on_one_line(one_model):
    models, x, y = one_model
    fig, _ = pca_plane({**models, "twin": models["model"], "third": models["model"]}, x, y, resolution=8)
    assert fig._suptitle.get_text().count("\n") == 1  # the title's own line break only
    _inside(fig)
