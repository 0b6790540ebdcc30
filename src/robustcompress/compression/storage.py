"""How a compressed layer's weight is stored, as declared by its parametrizations.

Each compression parametrization describes its own effect with a `storage()` method returning
a partial `WeightStorage` (clustering: indices into a codebook; fake quantization: the bits of
each value); `weight_storage` merges them. Size estimates read this instead of knowing each type.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import nn

from robustcompress.compression.layers import parametrizations_of


@dataclass(frozen=True)
class WeightStorage:
    """value_bits: bits of each stored value (None: float32); index_bits: with a codebook, each
    weight is an index of this width into `table_size` shared values (codebooks of `groups`)."""

    value_bits: int | None = None
    index_bits: int | None = None
    table_size: int = 0
    groups: int = 1

    def merge(self, other: WeightStorage) -> WeightStorage:
        """This description with every field `other` sets (differs from the default) taken from it."""
        default = WeightStorage()
        changed = {f.name: getattr(other, f.name) for f in fields(self)}
        changed = {k: v for k, v in changed.items() if v != getattr(default, k)}
        return WeightStorage(**{**self.__dict__, **changed})

    @property
    def compressed(self) -> bool:
        return self != WeightStorage()

    def bits(self, nonzero: int) -> int:
        """Bits for `nonzero` stored weights plus the codebook (zeros are not stored)."""
        precision = self.value_bits or 32
        if self.index_bits is None:
            return nonzero * precision
        return nonzero * self.index_bits + self.table_size * precision


def weight_storage(module: nn.Module) -> WeightStorage:
    """The merged storage declarations of every parametrization of `module.weight`."""
    storage = WeightStorage()
    for p in parametrizations_of(module):
        declare = getattr(type(p), "storage", None)
        if callable(declare):
            storage = storage.merge(p.storage())
    return storage
