"""Capture the Q/K/V of a PyTorch model's attention calls into a sparge dump (HDF5).

    import sparge_capture
    with sparge_capture.capture("dump.h5", model_id="my/model", model=model) as cap:
        for step in range(4):
            cap.next_sample(step=step)      # optional: label the next forward
            model(x)

Every call of ``torch.nn.functional.scaled_dot_product_attention`` made inside the block is
recorded: the layer index is the call's position within the forward, the sample index counts
forwards. The file follows docs/dump-format.md (schema "sparge.qkv-dump" v1) and is what
``sparge tune`` / ``sparge inspect`` read.
"""

from ._capture import Capture, SdpaPatch, capture, track_modules
from ._h5 import DumpFileWriter, fnv1a64

__version__ = "0.1.0"
__all__ = ["Capture", "SdpaPatch", "capture", "track_modules", "DumpFileWriter", "fnv1a64",
           "__version__"]
