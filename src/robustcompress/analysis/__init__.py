"""Analysis: decision boundaries and t-SNE of features, as figures plus the numbers behind them.

`analyze(models, test, AnalysisConfig(...), out_dir)` draws the figures of one or more models on
shared axes and returns their `analysis.*` metrics; the `analysis` evaluation does the same inside a
run (the model beside its parent). See docs/analysis.md.
"""

from robustcompress.analysis.boundary import (
    BoundaryDistances,
    boundary_distances,
    cross_sections,
    distance_along,
    has_input_gradients,
    pca_plane,
)
from robustcompress.analysis.evaluation import METRIC_SPECS, AnalysisConfig, AnalysisResult, analyze
from robustcompress.analysis.tsne import default_layers, layer_features, main_blocks, tsne_analysis

__all__ = [
    "METRIC_SPECS",
    "AnalysisConfig",
    "AnalysisResult",
    "BoundaryDistances",
    "analyze",
    "boundary_distances",
    "cross_sections",
    "default_layers",
    "distance_along",
    "has_input_gradients",
    "layer_features",
    "main_blocks",
    "pca_plane",
    "tsne_analysis",
]
