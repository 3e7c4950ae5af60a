"""Small deterministic audio fixtures in the real file formats (WAV and FLAC written with soundfile).

- ``write_fsdd``: ``recordings/{digit}_{speaker}_{index}.wav`` at 8 kHz, PCM_16, one tone per (digit, speaker).
- ``write_librispeech``: the LibriSpeech tarball layout (``LibriSpeech/train-clean-100/<spk>/<chapter>/
  <spk>-<chapter>-<utt>.flac``, 16 kHz PCM_16) plus ``LibriSpeech100_labels_split/`` with the CPC split lists and
  a phone-label file for some utterances ((N - 400) // 160 + 1 integer labels in 0..40 per line).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

# (speaker, chapter, utterances, seconds): the train list names speaker 26 first, so first-appearance order
# (26 -> 0, 19 -> 1, 32 -> 2) differs from sorted order.
LIBRI_UTTERANCES = [("26", "495", 3, 1.9), ("19", "198", 3, 2.2), ("32", "21625", 2, 1.6)]


def tone(freq: float, n: int, sr: int, seed: int, amp: float = 0.3) -> np.ndarray:
    """A decaying tone with a little noise, as int16."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    wave = amp * np.sin(2 * np.pi * freq * t) * np.exp(-t * 2) + 0.01 * rng.standard_normal(n)
    return (np.clip(wave, -1, 1) * 32767).astype(np.int16)


def write_fsdd(
    root: Path, speakers=("bob", "alice"), digits=(0, 1, 2), indices=range(7), sr: int = 8000
) -> Path:
    """WAV recordings under ``root/recordings``; returns ``root``."""
    folder = root / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    for s, speaker in enumerate(speakers):
        for digit in digits:
            for index in indices:
                n = int(sr * (0.2 + 0.03 * index + 0.02 * digit))
                wave = tone(300 + 150 * digit + 40 * s, n, sr, seed=100 * s + 10 * digit + index)
                sf.write(folder / f"{digit}_{speaker}_{index}.wav", wave, sr, subtype="PCM_16")
    return root


def utterance_ids() -> list[str]:
    return [f"{spk}-{ch}-{u:04d}" for spk, ch, n, _ in LIBRI_UTTERANCES for u in range(n)]


def fixture_labels(n_samples: int, utt_index: int) -> np.ndarray:
    frames = (n_samples - 400) // 160 + 1
    return (np.arange(frames) // 7 + utt_index) % 41


def write_librispeech(root: Path, missing: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The corpus layout and CPC label folder under ``root``; ids in ``missing`` are listed but not written.

    The train list holds utterances 0-1 of every speaker (speaker 26 first), the test list the rest; the
    first two utterances of each list have phone labels. Returns {"train": ids, "test": ids}.
    """
    lengths = {}
    for i, (spk, ch, n, seconds) in enumerate(LIBRI_UTTERANCES):
        folder = root / "LibriSpeech" / "train-clean-100" / spk / ch
        folder.mkdir(parents=True, exist_ok=True)
        for u in range(n):
            utt = f"{spk}-{ch}-{u:04d}"
            samples = int(16000 * seconds) + 37 * u
            lengths[utt] = samples
            if utt not in missing:
                wave = tone(150 + 60 * i + 5 * u, samples, 16000, seed=10 * i + u)
                sf.write(folder / f"{utt}.flac", wave, 16000, subtype="PCM_16")
    ids = utterance_ids()
    lists = {"train": [u for u in ids if int(u[-1]) < 2], "test": [u for u in ids if int(u[-1]) >= 2]}
    labels_dir = root / "LibriSpeech100_labels_split"
    labels_dir.mkdir(parents=True, exist_ok=True)
    for name, utts in lists.items():
        (labels_dir / f"{name}_split.txt").write_text("\n".join(utts))
    labelled = lists["train"][:2] + lists["test"][:2]
    lines = [" ".join([u, *map(str, fixture_labels(lengths[u], i))]) for i, u in enumerate(labelled)]
    (labels_dir / "converted_aligned_phones.txt").write_text("\n".join(lines) + "\n")
    return lists
