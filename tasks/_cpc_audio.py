"""The CPC audio encoder (Oord et al. 2018; GIM_PROTOCOL.md 2.2) as a ``ModularEncoder``.

Five strided Conv1d + ReLU layers (no normalisation) turn a 16 kHz waveform (B, 1, N) into one 512-d frame
every 160 samples (10 ms), then a 1-layer GRU of 256 summarises the past. For GIM each conv layer is its own
gradient-isolated module and the GRU is a sixth module on its own, whose predictive target is its input
(the conv5 output), as in the reference's autoregressive module.

Ablations (set through the task config by the ablation methods):

- ``autoregressive=False`` drops the GRU module (5 modules; gim_no_ar probes conv5).
- ``bptt=False`` runs the GRU as a GRUCell loop whose hidden state is detached at every step, so the gradient
  reaches only the current step's input and weights (gim_no_bptt, the reference's ``--remove_BPTT``).

Frame geometry: for an input of N = 160 n samples the five convs give 32n-1, 8n-1, 4n, 2n+1 and n frames
(4095, 1023, 512, 257, 128 for N = 20480). Latent frame t of conv5 is centred on sample 160 t + 20.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.interfaces import ModularEncoder, ModuleOutput

KERNELS = (10, 8, 4, 4, 4)
STRIDES = (5, 4, 2, 2, 2)
PADDINGS = (2, 2, 2, 2, 1)
HOP = 160
"""Samples per conv5 frame (the product of the strides): 10 ms at 16 kHz."""


def conv_lengths(n_samples: int) -> list[int]:
    """Output length of every conv layer for an input of ``n_samples`` samples."""
    lengths, n = [], n_samples
    for k, s, p in zip(KERNELS, STRIDES, PADDINGS, strict=True):
        n = (n + 2 * p - k) // s + 1
        lengths.append(n)
    return lengths


class ConvBlock(nn.Module):
    """Conv1d (with bias) + ReLU: (B, C_in, L_in) -> (B, C_out, L_out)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class GRUBlock(nn.Module):
    """1-layer GRU over time, zero initial state: (B, C, L) -> (B, H, L).

    With ``bptt=False`` it is a GRUCell loop whose hidden state is detached before every step.
    """

    def __init__(self, c_in: int, hidden: int, bptt: bool = True) -> None:
        super().__init__()
        self.bptt = bptt
        if bptt:
            self.gru = nn.GRU(c_in, hidden, num_layers=1, batch_first=True)
        else:
            self.cell = nn.GRUCell(c_in, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.transpose(1, 2)  # (B, C, L) -> (B, L, C)
        if self.bptt:
            out, _ = self.gru(seq)  # (B, L, H)
        else:
            out = self.cell_loop(seq)
        return out.transpose(1, 2)  # (B, L, H) -> (B, H, L)

    def cell_loop(self, seq: torch.Tensor) -> torch.Tensor:
        h = seq.new_zeros(seq.shape[0], self.cell.hidden_size)
        outs = []
        for t in range(seq.shape[1]):
            h = self.cell(seq[:, t], h.detach())  # (B, H); no gradient through time
            outs.append(h)
        return torch.stack(outs, dim=1)  # (B, L, H)


class CPCAudioEncoder(ModularEncoder):
    """Conv modules 0-4 (one conv layer each) and, when autoregressive, GRU module 5.

    Input (B, 1, N) normalised waveform. Conv module m: rep = target = z = (B, C, L_m). GRU module:
    rep = z = context (B, H, L_4), target = its input, the conv5 output (B, C, L_4).
    """

    def __init__(self, channels: int = 512, gru_hidden: int = 256, autoregressive: bool = True,
                 bptt: bool = True) -> None:  # fmt: skip
        super().__init__()
        ins = (1,) + (channels,) * (len(KERNELS) - 1)
        blocks: list[nn.Module] = [
            ConvBlock(c, channels, k, s, p)
            for c, k, s, p in zip(ins, KERNELS, STRIDES, PADDINGS, strict=True)
        ]
        if autoregressive:
            blocks.append(GRUBlock(channels, gru_hidden, bptt=bptt))
        self.blocks = nn.ModuleList(blocks)
        self.channels, self.gru_hidden = channels, gru_hidden
        self.autoregressive, self.bptt = autoregressive, bptt

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.dim() == 3 else x.unsqueeze(1)  # (B, N) -> (B, 1, N)

    def module_output(
        self, m: int, z_in: torch.Tensor, rep_in: torch.Tensor | None, z: torch.Tensor
    ) -> ModuleOutput:
        if isinstance(self.blocks[m], GRUBlock):
            return ModuleOutput(z=z, rep=z, target=z_in)  # predicts the module below's future outputs
        return ModuleOutput(z=z, rep=z, target=z)

    def describe_layers(self, m: int) -> str:
        block = self.blocks[m]
        if isinstance(block, GRUBlock):
            kind = "GRU" if block.bptt else "GRUCell loop, hidden state detached every step (no BPTT)"
            return f"{kind} {self.channels} -> {self.gru_hidden}"
        conv = block.conv
        return (f"Conv1d {conv.in_channels} -> {conv.out_channels}, kernel {conv.kernel_size[0]}, "
                f"stride {conv.stride[0]}, padding {conv.padding[0]}; ReLU")  # fmt: skip
