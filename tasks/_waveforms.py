"""Waveform storage and the sample-level maths shared by the audio tasks.

- ``Recordings``: every utterance of a dataset in one int16 array (in memory or memory-mapped from a cache
  file) plus an offsets index, so a batch is a handful of array slices and no audio file is decoded twice.
- Crops on the 160-sample grid (one latent frame = 160 samples = 10 ms at 16 kHz), zero-padded where a crop
  leaves its utterance (short clips, the tail of a tiled utterance).
- The reference normalisation of float [-1, 1] waveforms: (x + 6.781e-4) / 0.06300 (GIM_PROTOCOL.md 2.1).
- Frame-label alignment (GIM_PROTOCOL.md 2.6): the CPC phone labels are Kaldi frames (25 ms window,
  10 ms hop, snip-edges: ``(N - 400) // 160 + 1`` labels for N samples), and label j belongs to latent frame
  t = j + offset with offset 2 in the reference (its phone probe keeps the last #labels of the T = N // 160
  latent frames). A crop starting at sample s = 160 m therefore gives latent frame t the label m + t - offset.
  (By receptive-field centres, latent frame t is centred on sample 160 t + 20 and label j on 160 j + 200, so
  offset 1 would centre them best; the reference's 2 is the default, ``task.label_offset`` changes it.)
- Polyphase resampling by a rational factor with a Kaiser-windowed sinc, in torch (no torchaudio).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

HOP = 160
"""Samples per latent frame of the CPC encoder (the product of its strides)."""
LABEL_WINDOW = 400
"""Samples per Kaldi label frame (25 ms)."""
MEAN, STD = -6.781e-4, 0.06300
"""The reference's normalisation constants on the float [-1, 1] scale."""
IGNORE = -100
"""Frame label where no label is known (PyTorch's cross-entropy ignore_index)."""


def kaldi_frames(n_samples: int) -> int:
    """Number of CPC/Kaldi label frames of an utterance of ``n_samples`` samples (snip-edges)."""
    return max(0, (n_samples - LABEL_WINDOW) // HOP + 1)


@dataclass
class Recordings:
    """Utterance i is ``audio[offsets[i]:offsets[i + 1]]`` (int16, 16 kHz)."""

    audio: np.ndarray  # (total,) int16, possibly a np.memmap
    offsets: np.ndarray  # (n + 1,) int64
    names: list[str] = field(default_factory=list)

    @classmethod
    def from_list(cls, waves: list[np.ndarray], names: list[str] | None = None) -> Recordings:
        offsets = np.zeros(len(waves) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(w) for w in waves])
        audio = np.concatenate(waves).astype(np.int16) if waves else np.zeros(0, np.int16)
        return cls(audio, offsets, list(names or []))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def crop(self, i: int, start: int, n: int) -> np.ndarray:
        """``n`` samples of utterance i from ``start`` (may be negative), zero outside the utterance."""
        out = np.zeros(n, dtype=np.int16)
        lo, hi = max(start, 0), min(start + n, self.length(i))
        if hi > lo:
            base = int(self.offsets[i])
            out[lo - start : hi - start] = self.audio[base + lo : base + hi]
        return out


def gather(rec: Recordings, utts: np.ndarray, starts: np.ndarray, n: int) -> torch.Tensor:
    """Normalised float crops (B, 1, n) of utterances ``utts`` from sample ``starts``."""
    raw = np.stack([rec.crop(int(u), int(s), n) for u, s in zip(utts, starts, strict=True)])  # (B, n) int16
    return normalise(torch.from_numpy(raw)).unsqueeze(1)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """int16 samples -> float [-1, 1] -> the reference's normalisation."""
    return (x.float() / 32768.0 - MEAN) / STD


def train_starts(lengths: np.ndarray, clip: int, gen: torch.Generator) -> np.ndarray:
    """Random crop starts on the HOP grid: anywhere inside long utterances; a short utterance is placed at a
    random grid offset inside the clip (negative start = leading zeros)."""
    slots = np.abs(lengths - clip) // HOP + 1  # grid positions available
    u = torch.rand(len(lengths), generator=gen, device=gen.device).cpu().numpy()
    pick = np.minimum((u * slots).astype(np.int64), slots - 1)
    return np.where(lengths >= clip, pick * HOP, -pick * HOP)


def centre_starts(lengths: np.ndarray, clip: int) -> np.ndarray:
    """Deterministic centred crop starts on the HOP grid (negative for short utterances)."""
    return (lengths - clip) // 2 // HOP * HOP


def spaced_starts(length: int, clip: int, count: int) -> np.ndarray:
    """``count`` crop starts on the grid, spread evenly over an utterance (centred if it is short)."""
    if length <= clip or count == 1:
        return centre_starts(np.array([length]), clip).repeat(count)[:count]
    return (np.linspace(0, length - clip, count) // HOP * HOP).astype(np.int64)


def tile_starts(length: int, clip: int) -> np.ndarray:
    """Non-overlapping crops that cover the whole utterance (the last one zero-padded)."""
    return np.arange(0, max(length, 1), clip, dtype=np.int64)


def align_labels(labels: np.ndarray, start: int, frames: int, offset: int) -> np.ndarray:
    """Labels of the ``frames`` latent frames of a crop starting at sample ``start`` (a multiple of HOP).

    Latent frame t of the crop is utterance frame start // HOP + t, which carries Kaldi label
    j = start // HOP + t - offset; IGNORE where j is outside the label list.
    """
    j = start // HOP + np.arange(frames) - offset
    inside = (j >= 0) & (j < len(labels))
    out = np.full(frames, IGNORE, dtype=np.int64)
    out[inside] = labels[j[inside]]
    return out


def resample(x: torch.Tensor, orig: int, new: int, zeros: int = 16, beta: float = 8.0) -> torch.Tensor:
    """Resample the last axis of ``x`` from ``orig`` Hz to ``new`` Hz (Kaiser-windowed sinc, polyphase).

    Output length ceil(len * new / orig); the anti-aliasing cutoff is the lower of the two Nyquist rates.
    Output sample m sits at input position m * orig / new and sums the 2K + 1 input samples around it,
    weighted by the filter's taps for its phase (a gather and a product, no zero-stuffed convolution).
    """
    g = math.gcd(orig, new)
    up, down = new // g, orig // g
    if up == down:
        return x.clone()
    taps, k = polyphase_taps(up, down, zeros, beta)  # (up, 2K+1)
    shape, n = x.shape[:-1], x.shape[-1]
    n_out = math.ceil(n * up / down)
    padded = F.pad(x.float().reshape(-1, 1, n), (k, k))  # (R, 1, n + 2K)
    if down == 1:  # integer upsampling: one output channel per phase, then interleave
        phases = F.conv1d(padded, taps[:, None, :])  # (R, up, n)
        return phases.transpose(1, 2).reshape(*shape, n * up)
    p = torch.arange(n_out) * down  # output positions on the upsampled grid
    windows = padded[:, 0].unfold(-1, 2 * k + 1, 1)  # (R, n, 2K+1): x[i-K .. i+K]
    return (windows[:, p // up, :] * taps[p % up]).sum(-1).reshape(*shape, n_out)  # (..., n_out)


def polyphase_taps(up: int, down: int, zeros: int, beta: float) -> tuple[torch.Tensor, int]:
    """Taps (up, 2K+1) of a Kaiser-windowed sinc lowpass split by phase; tap r of phase f multiplies input
    sample i - K + r for an output at upsampled position i * up + f."""
    cutoff = 0.5 / max(up, down)  # cycles per upsampled sample
    half = zeros * max(up, down)
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    h = (
        2
        * cutoff
        * torch.sinc(2 * cutoff * t)
        * torch.kaiser_window(len(t), False, beta, dtype=torch.float64)
    )
    h = torch.cat([h * up, torch.zeros(1, dtype=h.dtype)])  # gain `up`; index -1 reads the zero
    k = -(-half // up)
    phase, r = torch.arange(up)[:, None], torch.arange(2 * k + 1)[None, :]
    idx = phase + (k - r) * up + half  # index into h of the tap joining input i - K + r to output i * up + f
    idx = torch.where((idx >= 0) & (idx <= 2 * half), idx, torch.full_like(idx, -1))
    return h[idx].float(), k


def resample_many(waves: list[np.ndarray], orig: int, new: int) -> list[np.ndarray]:
    """Resample many int16 recordings at once (one call on their concatenation, zero gaps between them so
    no filter reaches across recordings), back to int16. Upsampling by an integer keeps the cut points exact;
    other ratios resample one recording at a time."""
    if new % orig:
        return [to_int16(resample(torch.from_numpy(w.astype(np.float32)), orig, new)) for w in waves]
    up, gap = new // orig, 64  # gap > the filter's reach (16 zero crossings each side)
    lengths = np.array([len(w) for w in waves])
    starts = np.concatenate([[0], np.cumsum(lengths + gap)[:-1]])
    joined = np.zeros(int(starts[-1] + lengths[-1]) if len(waves) else 0, dtype=np.float32)
    for s, w in zip(starts, waves, strict=True):
        joined[s : s + len(w)] = w
    out = to_int16(resample(torch.from_numpy(joined), orig, new))
    return [out[s * up : (s + n) * up] for s, n in zip(starts, lengths, strict=True)]


def to_int16(x: torch.Tensor) -> np.ndarray:
    return x.round().clamp(-32768, 32767).to(torch.int16).numpy()
