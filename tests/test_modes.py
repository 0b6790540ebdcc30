"""eval_mode: eval inside, each submodule's own mode back afterwards, even after an error."""

from __future__ import annotations

import pytest
from torch import nn

from robustcompress.attacks import eval_mode as reexported
from robustcompress.modes import eval_mode


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_eval_inside_and_mixed_modes_restored():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a deliberately frozen batch norm
    before = _modes(model)
    assert before == [True, True, False, True]
    with eval_mode(model) as m:
        assert m is model
        assert _modes(model) == [False] * 4
    assert _modes(model) == before


def test_restored_after_an_exception():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert _modes(model) == [True, True, True]
    model.eval()
    with eval_mode(model):
        pass
    assert _modes(model) == [False, False, False]


def test_attacks_reexports_the_same_manager():
    assert reexported is eval_mode
