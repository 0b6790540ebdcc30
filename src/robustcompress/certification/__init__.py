"""Certified robustness: randomized smoothing (L2 certificates) and probabilistic certification
under semantic transformations (PCA), plus the transformation families both draw from."""

from robustcompress.certification.transforms import (
    TRANSFORMS,
    TransformFamily,
    make_family,
    register_transform,
)

__all__ = ["TRANSFORMS", "TransformFamily", "make_family", "register_transform"]
