"""Q/K/V tensors built from real photographs, written as a sparge dump (docs/real-data.md).

    python3 -m sparge_realdata -o real.h5 --size full --heads 8 --head-dim 128

Synthetic Gaussian Q/K/V have none of the structure of a real model's activations: smooth,
strongly correlated neighbouring tokens, large correlated values, concentrated attention. This
package builds them from photographs bundled with scikit-image (a slow camera pan over each
photograph, cut into patch tokens behind a Zipf-distributed text prefix, projected by random
per-head weights with correlated Wq/Wk and 3-D rotary embeddings), or from Zipf token streams
with repeated phrases (``--kind text``, causal). Sample s of every layer comes from photograph s.
The file is written through ``sparge_capture.DumpFileWriter`` (docs/dump-format.md).
"""

from ._dit import build_dit
from ._generate import PRESETS, Options, UsageError, generate, model_id
from ._images import PHOTOS

__version__ = "0.1.0"
__all__ = ["build_dit", "Options", "PHOTOS", "PRESETS", "UsageError", "generate", "model_id", "__version__"]
