"""torchvision's state-dict names -> the zoo's, so its published ImageNet weights load key for key.

The zoo keeps its own names (existing checkpoints stay valid); only these few differ. Shapes agree
already for `stem="imagenet"` models (checked against torchvision's definitions in
tests/data/torchvision_keys.json).
"""

from __future__ import annotations

import re

# zoo family -> [(pattern on a torchvision key, replacement)]
RULES: dict[str, list[tuple[str, str]]] = {
    "resnet": [(r"^conv1\.", "stem.0."), (r"^bn1\.", "stem.1."), (r"\.downsample\.", ".shortcut.")],
    # the zoo's classifier starts with its pool and flatten, two places ahead of torchvision's
    "vgg": [(r"^classifier\.(\d+)\.", lambda m: f"classifier.{int(m[1]) + 2}.")],
    "mobilenetv2": [(r"^classifier\.1\.", "classifier.3.")],
}


def family(model_name: str) -> str | None:
    """'resnet50' -> 'resnet'; None for user models and for what torchvision does not publish."""
    if ":" in model_name:
        return None
    for name in RULES:
        if model_name.startswith(name):
            return name
    return None


def to_zoo_names(model_name: str, keys):
    """{torchvision key: zoo key} for the keys of a torchvision state dict of `model_name`'s family."""
    rules = RULES.get(family(model_name) or "", [])
    mapping = {}
    for key in keys:
        new = key
        for pattern, repl in rules:
            new = re.sub(pattern, repl, new)
        mapping[key] = new
    return mapping
