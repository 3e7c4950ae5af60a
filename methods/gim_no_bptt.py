"""GIM without back-propagation through time (Table 4): the GRU module's hidden state is detached at every
step, so its gradient reaches only the current step's input and weights (the reference's ``--remove_BPTT``).

The method is GIM unchanged; it sets the audio task's ``bptt=false`` so the task builds a GRUCell loop.
"""

from __future__ import annotations

from bench.config import merge
from bench.registry import METHODS
from methods.gim import GIM


@METHODS.register("gim_no_bptt")
class GIMNoBPTT(GIM):
    description = "GIM ablation (audio): GRU hidden state detached at every step, no backprop through time"
    modalities = ("audio",)
    presets = {
        **GIM.presets,
        "always": merge(GIM.presets.get("always", {}), {"audio": {"task": {"bptt": False}}}),
    }
