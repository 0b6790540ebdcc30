"""The model zoo: cnn8, resnet18/34/50, vgg11/16/19, mobilenetv2, and user models by import path.

Every model takes images in [0, 1]; its first layer (`normalize`) applies the dataset's mean and std.
`import_model` brings a network trained elsewhere in, with its weights and its own normalisation.
"""

from robustcompress.models.importing import import_model
from robustcompress.models.normalize import Normalize, NormalizedModel
from robustcompress.models.weights import read_state_dict
from robustcompress.models.zoo import MODELS, ModelSpec, build_model, list_models

__all__ = [
    "MODELS",
    "ModelSpec",
    "Normalize",
    "NormalizedModel",
    "build_model",
    "import_model",
    "list_models",
    "read_state_dict",
]
