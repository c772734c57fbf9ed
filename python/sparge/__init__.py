"""sparge: run a model with its tuned SpargeAttn config (docs/python-api.md).

    import sparge
    with sparge.apply(model, "tuned.yaml"):
        out = model(x)          # every F.scaled_dot_product_attention call runs sparse
    print(sparge.stats())       # realised sparsity per layer

The operator itself is ``torch.ops.sparge.attention`` (libsparge_ops.so, built by
scripts/setup.sh; :func:`load_library` finds it).
"""

from ._apply import SPARSER_THAN_TUNED, Applied, apply, attention, stats
from ._config import Config, ConfigError, LayerConfig, load_config
from ._ops import load_library

__all__ = ["apply", "stats", "attention", "Applied", "load_config", "Config", "LayerConfig",
           "ConfigError", "load_library", "SPARSER_THAN_TUNED"]
