"""GIM without the autoregressive module (Table 4): five conv modules only, probed on the last conv module.

The method is GIM unchanged; it sets the audio task's ``autoregressive=false`` so the task builds no GRU.
"""

from __future__ import annotations

from bench.config import merge
from bench.registry import METHODS
from methods.gim import GIM


@METHODS.register("gim_no_ar")
class GIMNoAR(GIM):
    description = "GIM ablation (audio): no autoregressive GRU module, probes on the last conv module"
    modalities = ("audio",)
    presets = {
        **GIM.presets,
        "always": merge(GIM.presets.get("always", {}), {"audio": {"task": {"autoregressive": False}}}),
    }
