"""The embedded audio task: procedurally generated "speech", no download needed.

Source-filter synthesis at 16 kHz. Every recording has a speaker and a sequence of phone-like segments:

- A speaker is a base pitch (90-250 Hz, log-uniform), a vocal-tract scale that shifts every formant
  (0.85-1.2), a spectral tilt and a smooth random timbre curve over frequency. These stay fixed for the whole
  recording (pitch drifts slowly by a few per cent): a slow feature, predictable across time, which is
  what a contrastive predictive method picks up.
- A phone is three formants (centre, bandwidth, amplitude) and voiced (sawtooth source at the pitch) or
  unvoiced (noise source); label 0 is silence. Segments last 60-160 ms and follow a sparse random Markov
  chain, so the next phone is partly predictable from the current one.
- The waveform is the source's STFT (512-point, 10 ms hop) multiplied frame by frame by the spectral
  envelope (formants x speaker timbre x tilt, smoothed across neighbouring frames), then inverted.

Labels follow the LibriSpeech conventions: ``speaker`` per recording (clip-level) and ``phone`` per Kaldi
frame (25 ms window, 10 ms hop, snip-edges: label j is the phone at the frame's centre sample 160 j + 200),
aligned to latent frames with ``task.label_offset`` exactly as for LibriSpeech. The data depend on
``task.data_seed`` only (not on the run's seed), so every method and seed sees the same recordings. The first
``train_per_speaker`` recordings of every speaker form the train split, the rest the test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bench.registry import TASKS
from tasks._audio import AudioConfig, AudioData, AudioSplit, AudioTask
from tasks._waveforms import HOP, Recordings, kaldi_frames

SR, N_FFT = 16000, 512
CHUNK = 32
"""Recordings synthesised at once (bounds the memory of the envelopes and STFTs)."""


@dataclass(frozen=True)
class Config(AudioConfig):
    speakers: int = 16
    train_per_speaker: int = 8
    """Recordings per speaker in the train split (pretraining and probe training)."""
    test_per_speaker: int = 3
    """Recordings per speaker in the test split (probe test and validation loss)."""
    seconds: float = 2.56
    """Duration of every recording."""
    phones: int = 12
    """Phone classes including silence (label 0)."""
    noise_db: float = -45.0
    """Background white noise level relative to the recording's peak."""
    data_seed: int = 0
    channels: int = 64
    gru_hidden: int = 64
    clip_samples: int = 10240
    probe_clips: int = 3


@TASKS.register("synthetic_speech")
class SyntheticSpeech(AudioTask):
    description = (
        "embedded audio: procedurally generated speech-like recordings, speaker + phone labels (no download)"
    )
    Config = Config
    needs_data = False
    clip_label_sets = ("speaker",)
    frame_label_sets = ("phone",)
    label_sets = ("speaker", "phone")
    presets = {
        "smoke": {
            "task": {
                "speakers": 3,
                "train_per_speaker": 2,
                "test_per_speaker": 1,
                "seconds": 0.4,
                "channels": 8,
                "gru_hidden": 8,
                "clip_samples": 2560,
                "probe_clips": 2,
                "phones": 5,
            },
            "train": {
                "epochs": 1,
                "batch_size": 4,
                "steps_per_epoch": 2,
                "warmup_steps": 1,
                "val_batches": 1,
            },
            "eval": {"epochs": 2, "val_fraction": 0.25},
        },
        "small": {
            "train": {"epochs": 20, "batch_size": 16, "threads": 1},
            "eval": {"epochs": 100, "lrs": [3e-2, 1e-2, 3e-3], "val_fraction": 0.25, "batch_size": 1024},
        },
        "paper": {
            "task": {
                "speakers": 40,
                "train_per_speaker": 20,
                "test_per_speaker": 5,
                "seconds": 4.0,
                "channels": 512,
                "gru_hidden": 256,
                "clip_samples": 20480,
                "probe_clips": 2,
            },
            "train": {"epochs": 50, "batch_size": 8},
            "eval": {"epochs": 50, "lrs": [1e-3, 1e-4], "val_fraction": 0.25},
        },
        "memory": {
            "task": {
                "speakers": 4,
                "train_per_speaker": 4,
                "test_per_speaker": 1,
                "seconds": 1.6,
                "channels": 512,
                "gru_hidden": 256,
                "clip_samples": 20480,
            },
            "train": {"epochs": 1, "steps_per_epoch": 6, "batch_size": 8, "warmup_steps": 2},
            "eval": {"epochs": 1, "val_fraction": 0.25},
        },
    }

    def load(self) -> AudioData:
        c = self.config
        gen = torch.Generator().manual_seed(c.data_seed)
        per = c.train_per_speaker + c.test_per_speaker
        speaker = np.repeat(np.arange(c.speakers), per)  # recording -> speaker
        waves, phones = synthesise(c, speaker, gen)
        rec = Recordings.from_list(list(waves), [f"spk{s}-{i % per}" for i, s in enumerate(speaker)])
        is_train = np.arange(len(speaker)) % per < c.train_per_speaker
        splits = {
            name: AudioSplit(np.flatnonzero(mask), {"speaker": speaker[mask]})
            for name, mask in (("train", is_train), ("test", ~is_train))
        }
        labels = {i: kaldi_labels(p, rec.length(i)) for i, p in enumerate(phones)}
        return AudioData(rec, splits, {"phone": labels}, {"speaker": c.speakers, "phone": c.phones})


def kaldi_labels(hop_phones: np.ndarray, n_samples: int) -> np.ndarray:
    """Label of Kaldi frame j = the phone of the hop holding its centre sample 160 j + 200."""
    j = np.arange(kaldi_frames(n_samples))
    return hop_phones[(HOP * j + 200) // HOP]


def synthesise(c: Config, speaker: np.ndarray, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """int16 waveforms (R, N) and per-hop phone labels (R, N // 160) for recordings of ``speaker``."""
    r, n = len(speaker), int(round(c.seconds * SR)) // HOP * HOP
    voices = speaker_voices(c.speakers, gen)
    inventory = phone_inventory(c.phones, gen)
    hop_phones = phone_sequences(r, n // HOP, c.phones, gen)  # (R, hops)
    spk = torch.from_numpy(speaker)
    f0 = pitch_contours(voices["f0"][spk], n // HOP, gen)  # (R, hops) Hz
    chunks = [render(hop_phones[i : i + CHUNK], f0[i : i + CHUNK], spk[i : i + CHUNK], inventory, voices, n, gen)
              for i in range(0, r, CHUNK)]  # fmt: skip
    wave = torch.cat(chunks)
    wave = wave + 0.5 * 10 ** (c.noise_db / 20) * torch.randn(r, n, generator=gen)
    return (wave.clamp(-1, 1) * 32767).round().to(torch.int16).numpy(), hop_phones.numpy()


def render(hop_phones: torch.Tensor, f0: torch.Tensor, spk: torch.Tensor, inventory: dict, voices: dict, n: int,
           gen: torch.Generator) -> torch.Tensor:  # fmt: skip
    """(R, N) float waveforms peaking at 0.5: the source filtered frame by frame by the envelopes."""
    source = excitation(f0, inventory["voiced"][hop_phones], n, gen)  # (R, N)
    env = envelopes(hop_phones, inventory, voices, spk)  # (R, hops + 1, F)
    window = torch.hann_window(N_FFT)
    spec = torch.stft(source, N_FFT, HOP, window=window, return_complex=True)  # (R, F, hops + 1)
    wave = torch.istft(spec * env.transpose(1, 2), N_FFT, HOP, window=window, length=n)  # (R, N)
    return wave / wave.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) * 0.5


def speaker_voices(speakers: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Per speaker: base pitch, formant scale, spectral tilt and a timbre gain per frequency bin."""
    f0 = torch.exp(math.log(90) + torch.rand(speakers, generator=gen) * math.log(250 / 90))
    scale = 0.85 + 0.35 * torch.rand(speakers, generator=gen)
    tilt = -0.5 - torch.rand(speakers, generator=gen)  # amplitude ~ (f / 500)^tilt above 500 Hz
    freqs = torch.linspace(0, SR / 2, N_FFT // 2 + 1)
    log_f = torch.log2(freqs.clamp_min(50.0))
    centres = math.log2(100) + torch.rand(speakers, 5, generator=gen) * math.log2(70)  # 100 Hz .. 7 kHz
    gains_db = 8 * (torch.rand(speakers, 5, generator=gen) * 2 - 1)
    bumps = gains_db[:, :, None] * torch.exp(
        -((log_f - centres[:, :, None]) ** 2) / (2 * 0.35**2)
    )  # (S, 5, F)
    timbre = 10 ** (bumps.sum(1) / 20) * (freqs.clamp_min(500.0) / 500) ** tilt[:, None]  # (S, F)
    return {"f0": f0, "scale": scale, "timbre": timbre}


def phone_inventory(phones: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Three formants per phone (Hz, bandwidth, amplitude); phone 0 is silence; a third are unvoiced."""
    lows = torch.tensor([250.0, 800.0, 2000.0])
    spans = torch.tensor([650.0, 1700.0, 1500.0])
    centre = lows + torch.rand(phones, 3, generator=gen) * spans  # (P, 3)
    bandwidth = 60 + 120 * torch.rand(phones, 3, generator=gen)
    amp = torch.tensor([1.0, 0.6, 0.3]) * (0.6 + 0.8 * torch.rand(phones, 3, generator=gen))
    voiced = torch.rand(phones, generator=gen) > 1 / 3
    unvoiced = ~voiced
    centre[unvoiced] = 2500 + 5000 * torch.rand(int(unvoiced.sum()), 3, generator=gen)  # fricative-like bands
    bandwidth[unvoiced] = 400 + 800 * torch.rand(int(unvoiced.sum()), 3, generator=gen)
    voiced[0] = True
    amp[0] = 0.0  # silence
    return {"centre": centre, "bandwidth": bandwidth, "amp": amp, "voiced": voiced}


def phone_sequences(r: int, hops: int, phones: int, gen: torch.Generator) -> torch.Tensor:
    """(R, hops) phone per 10 ms hop: 6-16-hop segments following a sparse random Markov chain."""
    succ = torch.stack([torch.randperm(phones - 1, generator=gen)[:3] + 1 for _ in range(phones)])  # (P, 3)
    rows = []
    for _ in range(r):
        seq, phone = [], 0
        while len(seq) < hops:
            seq += [phone] * int(torch.randint(6, 17, (1,), generator=gen))
            u = float(torch.rand(1, generator=gen))
            phone = 0 if u < 0.1 else int(succ[phone, int(torch.randint(0, 3, (1,), generator=gen))])
        rows.append(seq[:hops])
    return torch.tensor(rows)


def pitch_contours(base: torch.Tensor, hops: int, gen: torch.Generator) -> torch.Tensor:
    """(R, hops) pitch: the speaker's base x a recording offset (+-6 %) x a slow +-4 % drift."""
    r = len(base)
    offset = 1 + 0.06 * (torch.rand(r, 1, generator=gen) * 2 - 1)
    t = torch.arange(hops) / 100.0  # seconds
    rate = 0.5 + torch.rand(r, 1, generator=gen)
    phase = 2 * math.pi * torch.rand(r, 1, generator=gen)
    return base[:, None] * offset * (1 + 0.04 * torch.sin(2 * math.pi * rate * t + phase))


def excitation(f0: torch.Tensor, voiced: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """(R, N) source: a sawtooth at the pitch where voiced, white noise where not."""
    per_sample = torch.repeat_interleave(f0, HOP, dim=1)[:, :n]  # (R, N) Hz
    phase = torch.cumsum(per_sample / SR, dim=1)
    saw = 2 * (phase - torch.floor(phase)) - 1
    noise = torch.randn(f0.shape[0], n, generator=gen) * 0.6
    is_voiced = torch.repeat_interleave(voiced.float(), HOP, dim=1)[:, :n]
    return is_voiced * saw + (1 - is_voiced) * noise


def envelopes(hop_phones: torch.Tensor, inv: dict, voices: dict, spk: torch.Tensor) -> torch.Tensor:
    """(R, hops + 1, F) spectral envelope per STFT frame: formants x speaker timbre, smoothed over 3 frames."""
    freqs = torch.linspace(0, SR / 2, N_FFT // 2 + 1)
    frame_phones = torch.cat([hop_phones, hop_phones[:, -1:]], dim=1)  # STFT frame i ~ hop i
    centre = inv["centre"][frame_phones] * voices["scale"][spk][:, None, None]  # (R, T, 3)
    bw, amp = inv["bandwidth"][frame_phones], inv["amp"][frame_phones]
    peaks = amp[..., None] / (1 + ((freqs - centre[..., None]) / bw[..., None]) ** 2)  # (R, T, 3, F)
    env = peaks.sum(2) * voices["timbre"][spk][:, None, :]  # (R, T, F)
    kernel = torch.tensor([0.25, 0.5, 0.25]).view(1, 1, 3, 1)
    return torch.nn.functional.conv2d(env[:, None], kernel, padding=(1, 0))[:, 0]  # coarticulation
