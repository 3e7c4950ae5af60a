"""MFCC features as the representation (Table 3's hand-made baseline); nothing is trained.

Computed with torch ops in the usual Kaldi/HTK way: frames of 25 ms (400 samples) every 10 ms (160), DC
removal, pre-emphasis 0.97, Hamming window, 512-point power spectrum, 40 triangular mel filters (HTK mel
scale, 20 Hz to Nyquist), log, orthonormal DCT-II keeping ``n_mfcc`` coefficients, and optionally delta and
delta-delta coefficients (regression over +-2 frames): 13 x 3 = 39 features per frame by default.

Frame alignment: an input of N samples gives T = N // 160 frames, the frame count of the CPC encoder's last
module, and frame t is the Kaldi frame [160 (t - offset), 160 (t - offset) + 400) (zero-padded before the
start), i.e. exactly the window of the phone label that the audio tasks align with latent frame t
(label j <-> frame j + offset, offset 2 as in the reference). Every module gets the same (B, n_mfcc', T)
features, so probes of any module (and per-module evaluation) see the MFCCs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.interfaces import Method
from bench.registry import METHODS

SR, HOP, WIN, N_FFT = 16000, 160, 400, 512


@dataclass(frozen=True)
class Config:
    n_mfcc: int = 13
    """Cepstral coefficients kept (including c0)."""
    n_mels: int = 40
    """Triangular mel filters."""
    deltas: bool = True
    """Append delta and delta-delta coefficients (3 x n_mfcc features)."""
    offset: int = 2
    """Frame t is the Kaldi frame t - offset: the audio tasks' label alignment (``task.label_offset``)."""
    f_min: float = 20.0


def mel(f: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(f / 700.0)


def mel_filterbank(n_mels: int, f_min: float, f_max: float = SR / 2) -> torch.Tensor:
    """(n_mels, N_FFT // 2 + 1) triangular filters equally spaced on the HTK mel scale."""
    edges_mel = torch.linspace(float(mel(torch.tensor(f_min))), float(mel(torch.tensor(f_max))), n_mels + 2)
    bins_mel = mel(torch.linspace(0, SR / 2, N_FFT // 2 + 1))
    lo, centre, hi = edges_mel[:-2, None], edges_mel[1:-1, None], edges_mel[2:, None]
    rising = (bins_mel - lo) / (centre - lo)
    falling = (hi - bins_mel) / (hi - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) orthonormal DCT-II."""
    k, n = torch.arange(n_out)[:, None].float(), torch.arange(n_in)[None, :].float()
    basis = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    basis[0] /= math.sqrt(2.0)
    return basis


def deltas(feat: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression deltas over +-width frames, edges replicated: (B, C, T) -> (B, C, T)."""
    padded = F.pad(feat, (width, width), mode="replicate")
    t = feat.shape[-1]
    num = sum(n * (padded[..., width + n : width + n + t] - padded[..., width - n : width - n + t])
              for n in range(1, width + 1))  # fmt: skip
    return num / (2 * sum(n * n for n in range(1, width + 1)))


def mfcc(x: torch.Tensor, cfg: Config) -> torch.Tensor:
    """(B, 1, N) or (B, N) waveforms -> (B, n_mfcc [x3], N // 160) MFCCs, frame t = Kaldi frame t - offset."""
    wave = x.reshape(x.shape[0], -1).float()
    frames_out = wave.shape[1] // HOP
    right = max(0, WIN - HOP * (1 + cfg.offset))
    padded = F.pad(wave, (HOP * cfg.offset, right))
    frames = padded.unfold(1, WIN, HOP)[:, :frames_out]  # (B, T, 400)
    frames = frames - frames.mean(dim=2, keepdim=True)
    frames = torch.cat([frames[..., :1], frames[..., 1:] - 0.97 * frames[..., :-1]], dim=2)  # pre-emphasis
    frames = frames * torch.hamming_window(WIN, periodic=False, device=x.device)
    power = torch.fft.rfft(frames, n=N_FFT).abs() ** 2  # (B, T, 257)
    fbank = mel_filterbank(cfg.n_mels, cfg.f_min).to(x.device)
    log_mel = torch.log((power @ fbank.T).clamp_min(1e-10))  # (B, T, n_mels)
    ceps = (log_mel @ dct_matrix(cfg.n_mels, cfg.n_mfcc).to(x.device).T).transpose(1, 2)  # (B, n_mfcc, T)
    if not cfg.deltas:
        return ceps
    d1 = deltas(ceps)
    return torch.cat([ceps, d1, deltas(d1)], dim=1)  # (B, 3 * n_mfcc, T)


@METHODS.register("mfcc")
class MFCC(Method):
    description = "MFCC features (13 + deltas, 10 ms hop aligned with the frame labels) as the representation"
    Config = Config
    trains = False
    modalities = ("audio",)

    def __init__(self, config: Config, encoder, task, device: torch.device) -> None:
        super().__init__(config, encoder, task, device)
        if task.modality != "audio":
            raise ValueError(f"mfcc needs an audio task; {task.name} is a {task.modality} task")

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feat = mfcc(x, self.config)
        return [feat] * len(self.encoder.blocks)
