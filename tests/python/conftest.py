"""Shared by the python tests: pytest loads this file before the test modules of its folder."""

import pytest
from torch import nn


@pytest.fixture
def hook_count():
    """Forward and pre-forward hooks on a model's modules: capture and apply must leave none."""

    def count(model: nn.Module) -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    return count
