"""Shared machinery of the audio tasks: waveform splits, training crops, batches and the probes.

A subclass implements ``load()`` (recordings, splits, frame labels, class counts). Everything else is here:

- Training batches: one random ``clip_samples`` crop per utterance on the 160-sample grid, drawn with the
  trainer's generator (a fresh crop every epoch), normalised as in the reference. Batch label conventions,
  which every audio method relies on: clip-level labels are LongTensor (B,) (``labels["speaker"]``,
  ``labels["digit"]``); frame-level labels are LongTensor (B, T) aligned with the last module's T frames
  (T = clip_samples // 160), IGNORE (-100) where unknown (``labels["phone"]``).
- Probes (``evaluate``), on frozen features through the shared ``tasks._probe.linear_probe`` (learning rate
  chosen on a deterministic ``eval.val_fraction`` validation split of the probe's training data):
  clip-level label sets (speaker, digit): the module's representation averaged over time, then linear, one
  sample per probe clip (``probe_clips`` evenly spaced crops per utterance); frame-level label sets (phone):
  every labelled frame of the module is a sample, from non-overlapping crops tiling the labelled utterances
  (only modules whose frame rate is the labels', i.e. the conv5 and GRU modules). Metrics ``<set>_acc``
  (fractions in [0, 1]) and ``<set>_probe_lr`` per probed module; ``modules`` picks the modules (Figure 4's
  per-module speaker probes with ``eval.all_modules=true``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from bench import progress
from bench.data import DataError
from bench.interfaces import Batch, EvalConfig, FeatureFn, Metric, Task
from tasks._cpc_audio import CPCAudioEncoder
from tasks._probe import linear_probe
from tasks._waveforms import (
    HOP,
    IGNORE,
    Recordings,
    align_labels,
    centre_starts,
    gather,
    normalise,
    spaced_starts,
    tile_starts,
)
from tasks._waveforms import train_starts as random_starts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioConfig:
    """Encoder and clip settings shared by the audio tasks."""

    channels: int = 512
    """Conv channels of every conv layer (512 in the reference)."""
    gru_hidden: int = 256
    """Hidden size of the autoregressive GRU (256 in the reference)."""
    autoregressive: bool = True
    """Include the GRU module (false: 5 conv modules only; gim_no_ar sets it)."""
    bptt: bool = True
    """Back-propagate through time in the GRU (false: detached GRUCell loop; gim_no_bptt sets it)."""
    clip_samples: int = 20480
    """Training and probe crop length in samples (a multiple of 160; 20480 = 1.28 s = 128 frames)."""
    label_offset: int = 2
    """Frame labels: Kaldi label j belongs to latent frame j + label_offset (the reference's 2)."""
    probe_clips: int = 1
    """Clip-level probes: evenly spaced crops per utterance (each one probe sample)."""
    feature_batch: int = 32
    """Crops per forward pass when extracting probe features."""


@dataclass
class AudioSplit:
    """The utterances of one split (indices into the task's Recordings) and their clip-level labels."""

    utterances: np.ndarray  # (n,) int64
    clip_labels: dict[str, np.ndarray] = field(default_factory=dict)  # set -> (n,) int64


@dataclass
class AudioData:
    recordings: Recordings
    splits: dict[str, AudioSplit]
    frame_labels: dict[str, dict[int, np.ndarray]]
    """Frame-level label set -> recording index -> Kaldi-frame labels (only labelled recordings)."""
    classes: dict[str, int]
    """Label set -> number of classes."""


@dataclass
class ProbeSet:
    """Crops to probe: utterance, start sample and label(s) per crop ((n,) clip-level or (n, T) per frame)."""

    utterances: np.ndarray
    starts: np.ndarray
    labels: np.ndarray


class AudioTask(Task):
    """Base of the audio tasks; subclasses implement ``load`` and may override ``probe_sets``."""

    modality = "audio"
    clip_label_sets: tuple[str, ...] = ()
    frame_label_sets: tuple[str, ...] = ()
    probe_splits = ("train", "test")
    """(probe training split, probe test split)."""

    def __init__(self, config, data_root, seed) -> None:
        super().__init__(config, data_root, seed)
        if config.clip_samples % HOP:
            raise ValueError(f"task.clip_samples={config.clip_samples} must be a multiple of {HOP}")
        self._data: AudioData | None = None

    def load(self) -> AudioData:
        raise NotImplementedError

    @property
    def data(self) -> AudioData:
        if self._data is None:
            self._data = self.load()
        return self._data

    @property
    def label_classes(self) -> dict[str, int]:
        """Label set -> number of classes (e.g. {"speaker": 251, "phone": 41})."""
        return self.data.classes

    def num_classes_of(self, label_set: str) -> int:
        return self.data.classes[label_set]

    @property
    def frames(self) -> int:
        """Latent frames of the last module per training clip (T of the frame labels)."""
        return self.config.clip_samples // HOP

    def build_encoder(self) -> CPCAudioEncoder:
        c = self.config
        return CPCAudioEncoder(c.channels, c.gru_hidden, c.autoregressive, c.bptt)

    def example_input(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, 1, self.config.clip_samples)

    def split_size(self, split: str) -> int:
        return len(self.data.splits[split].utterances)

    def prepare(self, raw: torch.Tensor) -> torch.Tensor:
        """16 kHz mono waveforms, int16 (B, N) or (N,) (``soundfile.read(f, dtype="int16")``): the reference's
        normalisation, as the test batches; (B, 1, N) float. The last module gives N // 160 frames."""
        raw = torch.as_tensor(raw)
        raw = raw[None] if raw.ndim == 1 else raw
        if raw.dtype != torch.int16 or raw.ndim != 2 or raw.shape[1] < HOP:
            raise ValueError(f"{self.name}: waveforms must be 16 kHz mono int16 (B, N) or (N,) with N >= {HOP}, got "
                             f"{raw.dtype} {tuple(raw.shape)}; read them with soundfile.read(f, dtype='int16') "
                             "(resample other rates to 16 kHz first)")  # fmt: skip
        return normalise(raw).unsqueeze(1)

    def validation_split(self) -> str:
        return self.probe_splits[1]

    def batch(self, split, indices, device, generator, augment) -> Batch:
        data, part = self.data, self.data.splits[split]
        idx = indices.cpu().numpy()
        utts = part.utterances[idx]
        lengths = data.recordings.lengths()[utts]
        clip = self.config.clip_samples
        starts = random_starts(lengths, clip, generator) if augment else centre_starts(lengths, clip)
        x = gather(data.recordings, utts, starts, clip).to(device)  # (B, 1, clip)
        labels = {name: torch.from_numpy(part.clip_labels[name][idx]).to(device) for name in part.clip_labels}
        for name in self.frame_label_sets:
            labels[name] = torch.from_numpy(self.frame_targets(name, utts, starts)).to(device)  # (B, T)
        return Batch(x, labels)

    def frame_targets(self, name: str, utts: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """(B, T) frame labels of crops (IGNORE for unlabelled utterances)."""
        table, empty = self.data.frame_labels[name], np.zeros(0, dtype=np.int64)
        rows = [align_labels(table.get(int(u), empty), int(s), self.frames, self.config.label_offset)
                for u, s in zip(utts, starts, strict=True)]  # fmt: skip
        return np.stack(rows)

    def probe_sets(self, name: str) -> tuple[ProbeSet, ProbeSet]:
        """(train, test) crops of label set ``name``; subclasses may override (e.g. a within-utterance split)."""
        return tuple(self.split_probe_set(split, name) for split in self.probe_splits)  # type: ignore[return-value]

    def split_probe_set(self, split: str, name: str) -> ProbeSet:
        part, clip = self.data.splits[split], self.config.clip_samples
        lengths = self.data.recordings.lengths()
        utts, starts, labels = [], [], []
        for i, u in enumerate(part.utterances):
            if name in self.frame_label_sets:
                if int(u) not in self.data.frame_labels[name]:
                    continue
                s = tile_starts(int(lengths[u]), clip)
                labels.extend(self.frame_targets(name, np.full(len(s), u), s))
            else:
                s = spaced_starts(int(lengths[u]), clip, self.config.probe_clips)
                labels.extend([part.clip_labels[name][i]] * len(s))
            utts.extend([u] * len(s))
            starts.extend(s.tolist())
        return ProbeSet(np.array(utts, dtype=np.int64), np.array(starts, dtype=np.int64), np.array(labels))

    def check_evaluation(self, cfg: EvalConfig) -> None:
        """Every probe needs training and test samples: a frame-label probe needs labelled utterances in both
        of its splits (counted, cheap), a clip-label probe a non-empty set of clips (built)."""
        for name in self.label_sets:
            if name in self.frame_label_sets:
                table = self.data.frame_labels[name]
                counts = {s: sum(int(u) in table for u in self.data.splits[s].utterances) for s in self.probe_splits}
            else:
                counts = dict(zip(self.probe_splits, (len(p.labels) for p in self.probe_sets(name)), strict=True))
            empty = [s for s, n in counts.items() if n == 0]
            if empty:
                raise DataError(
                    f"{self.name}: the {name} probe would have no {' or '.join(empty)} samples (no utterance "
                    f"{'with ' + name + ' labels ' if name in self.frame_label_sets else ''}in that split), so "
                    "the evaluation would fail after training; check that the split's files are there"
                )

    def evaluate(self, features: FeatureFn, cfg: EvalConfig, modules, device, seed) -> list[Metric]:
        metrics, cache = [], {}
        for name in self.label_sets:
            train, test = self.probe_sets(name)
            frame = name in self.frame_label_sets
            train_f, train_y = self.extract(features, train, modules, device, frame, cache)
            test_f, test_y = self.extract(features, test, modules, device, frame, cache)
            log.info("%s probe: %d training and %d test samples", name, len(train_y), len(test_y))
            for m in sorted(train_f):
                result = linear_probe(train_f[m], train_y, test_f[m], test_y, self.data.classes[name], cfg, seed,
                                      f"{name} probe m{m}")  # fmt: skip
                metrics.append(Metric(f"{name}_acc", result.test_acc, module=m))
                metrics.append(Metric(f"{name}_probe_lr", result.lr, module=m))
        return metrics

    @torch.no_grad()
    def extract(self, features: FeatureFn, probe: ProbeSet, modules, device, frame: bool,
                cache: dict | None = None) -> tuple[dict, torch.Tensor]:  # fmt: skip
        """Probe samples of every module in ``modules``: (n, C) time-averaged clips or (M, C) labelled frames.

        Frame-level probes skip modules whose frame count differs from the labels' (modules 0-3). Clip-level
        features are reused (``cache``) by label sets that probe the same crops (e.g. speaker and digit).
        """
        key = (probe.utterances.tobytes(), probe.starts.tobytes())
        if not frame and cache is not None and key in cache:
            return cache[key], torch.from_numpy(probe.labels).long()
        out, labels = self.compute_features(features, probe, modules, device, frame)
        if not frame and cache is not None:
            cache[key] = out
        return out, labels

    def compute_features(
        self, features: FeatureFn, probe: ProbeSet, modules, device, frame: bool
    ) -> tuple[dict, torch.Tensor]:
        clip, n = self.config.clip_samples, len(probe.utterances)
        chunks: dict[int, list[torch.Tensor]] = {m: [] for m in modules}
        labels = torch.from_numpy(probe.labels).long()
        batches = torch.arange(n).split(self.config.feature_batch)
        for idx in progress.bar(iterable=batches, desc="probe features", leave=False):
            b = idx.numpy()
            reps = features(
                gather(self.data.recordings, probe.utterances[b], probe.starts[b], clip).to(device)
            )
            for m in modules:
                rep = reps[m].float()  # (B, C, L)
                if not frame:
                    chunks[m].append(rep.mean(dim=2).cpu())  # (B, C, L) -> (B, C)
                elif rep.shape[2] == self.frames:
                    keep = labels[idx] != IGNORE  # (B, T)
                    chunks[m].append(rep.transpose(1, 2)[keep.to(rep.device)].cpu())  # (B, T, C) -> (M, C)
        out = {m: torch.cat(c) for m, c in chunks.items() if c}
        return out, (labels[labels != IGNORE] if frame else labels)
