"""LibriSpeech train-clean-100 with the CPC split and phone labels: the paper's audio protocol (Tables 3-4, Fig. 4).

Data (layout, downloads and the decoded-audio cache in ``tasks/_librispeech_files.py``): the utterances of
``train_split.txt`` (pretraining, probe training) and ``test_split.txt`` (probe test). Utterances listed but
missing on disk are skipped and reported (a warning with their count). Speakers are indexed by their first
appearance in train_split.txt, then test_split.txt (251 in the full lists); phone labels are the CPC file's
41 classes, one per Kaldi frame, aligned to latent frame j + ``label_offset`` (see ``tasks/_waveforms.py``).

Probes (``tasks/_audio.py``): ``speaker_acc``, mean over time then linear (the reference code pools; the
paper's appendix says otherwise); ``phone_acc``, every frame of the labelled utterances, linear. The speaker
probe data come from the split lists (``speaker_split=lists``, the paper) or, for small excerpts where most
speakers have a single utterance (such as ../shared/data/librispeech), from inside the utterances
(``speaker_split=within``: every listed utterance is tiled into non-overlapping clips and every 4th clip goes
to the test set, so train and test share speakers but not audio). The smoke and small presets use ``within``.

Presets: ``paper`` is the published protocol on one device (batch 32 = the paper's 4 GPUs x 8 clips, so the
negatives come from 32 clips rather than 8; 300 epochs; probes 50 epochs, lr chosen among 1e-3 and 1e-4 on a
25 % validation split, 5 evenly spaced clips per utterance for the speaker probe); ``memory`` is the paper-size
model at batch 8 for 6 steps (throughput and memory); ``smoke`` and ``small`` are narrow encoders for tests
and CPU runs on the excerpt in ../shared/data/librispeech.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bench.data import DataError, data_root
from bench.registry import TASKS
from tasks import _librispeech_files as files
from tasks._audio import AudioConfig, AudioData, AudioSplit, AudioTask, ProbeSet
from tasks._waveforms import kaldi_frames, tile_starts

log = logging.getLogger(__name__)
PHONES = 41


@dataclass(frozen=True)
class Config(AudioConfig):
    speaker_split: Literal["lists", "within"] = "lists"
    """Speaker probe data: the split lists (paper) or clips from inside every utterance (small excerpts)."""
    within_test_every: int = 4
    """speaker_split=within: every n-th clip of an utterance is a test clip (4: a 25 % test share)."""
    within_clips: int = 0
    """speaker_split=within: at most this many clips per utterance (0 = all; the smoke preset uses 4)."""
    download: bool = True
    """Fetch the corpus (openslr) and the CPC label files (public mirror) when they are missing."""


@TASKS.register("librispeech")
class LibriSpeech(AudioTask):
    description = "LibriSpeech train-clean-100, CPC split: phone (41, per frame) and speaker (251) probes"
    Config = Config
    clip_label_sets = ("speaker",)
    frame_label_sets = ("phone",)
    label_sets = ("speaker", "phone")
    presets = {
        "smoke": {
            "task": {
                "channels": 16,
                "gru_hidden": 16,
                "speaker_split": "within",
                "within_clips": 4,
                "feature_batch": 64,
            },
            "train": {
                "epochs": 1,
                "batch_size": 4,
                "steps_per_epoch": 2,
                "warmup_steps": 1,
                "val_batches": 1,
            },
            "eval": {"epochs": 3, "val_fraction": 0.25},
        },
        "small": {
            "task": {"channels": 64, "gru_hidden": 64, "speaker_split": "within", "feature_batch": 64},
            "train": {"epochs": 20, "batch_size": 8, "threads": 1},
            "eval": {"epochs": 100, "lrs": [3e-2, 1e-2, 3e-3], "val_fraction": 0.25},
        },
        "paper": {
            "task": {"probe_clips": 5},
            "train": {"epochs": 300, "batch_size": 32},
            "eval": {"epochs": 50, "lrs": [1e-3, 1e-4], "val_fraction": 0.25, "batch_size": 64},
        },
        "memory": {
            "train": {"epochs": 1, "steps_per_epoch": 6, "batch_size": 8, "warmup_steps": 2},
            "eval": {"epochs": 1, "val_fraction": 0.25},
        },
    }

    @property
    def root(self):
        return files.find_root(data_root(self.data_root))

    def check_data(self) -> None:
        root = self.root
        corpus = root / "LibriSpeech" / files.SUBSET
        missing_labels = [n for n in files.LABEL_FILES if not (root / files.LABELS / n).is_file()]
        if corpus.is_dir() and not missing_labels:
            return
        what = ([str(corpus)] if not corpus.is_dir() else []) + [
            str(root / files.LABELS / n) for n in missing_labels
        ]
        if not self.config.download:
            raise DataError(
                f"LibriSpeech data missing: {', '.join(what)}; set task.download=true or put them there"
            )
        try:
            if missing_labels:
                files.fetch_labels(root)
            if not corpus.is_dir():
                files.fetch_corpus(root)
        except DataError as err:
            raise DataError(
                f"LibriSpeech data missing ({', '.join(what)}) and the download failed: {err}"
            ) from None

    def load(self) -> AudioData:
        root = self.root
        lists = {s: files.read_list(root / files.LABELS / f"{s}_split.txt") for s in ("train", "test")}
        present = {s: self.present(root, s, ids) for s, ids in lists.items()}
        if not present["train"]:
            raise DataError(
                f"none of the utterances of train_split.txt is under {root / 'LibriSpeech' / files.SUBSET}"
            )
        ids = present["train"] + present["test"]
        rec, phones = files.load_cached(root, ids, root / files.LABELS / "converted_aligned_phones.txt")
        order = speaker_order(lists["train"] + lists["test"])
        speaker = np.array([order[u.split("-")[0]] for u in ids], dtype=np.int64)
        n_train = len(present["train"])
        splits = {
            "train": AudioSplit(np.arange(n_train), {"speaker": speaker[:n_train]}),
            "test": AudioSplit(np.arange(n_train, len(ids)), {"speaker": speaker[n_train:]}),
        }
        labels = {i: phones[u] for i, u in enumerate(ids) if u in phones}
        check_label_lengths(rec, labels)
        log.info("LibriSpeech: %d train and %d test utterances (%.2f h), %d speakers, %d with phone labels",
                 n_train, len(ids) - n_train, len(rec.audio) / 16000 / 3600, len(order), len(labels))  # fmt: skip
        return AudioData(rec, splits, {"phone": labels}, {"speaker": len(order), "phone": PHONES})

    def present(self, root, split: str, ids: list[str]) -> list[str]:
        """The listed utterances that exist on disk; the missing ones are reported, not fatal."""
        here = [u for u in ids if files.flac_path(root, u).is_file()]
        if len(here) < len(ids):
            found = set(here)
            gone = [u for u in ids if u not in found]
            log.warning("%d of the %d utterances of %s_split.txt are missing under %s and are skipped (e.g. %s)",
                        len(gone), len(ids), split, root / "LibriSpeech" / files.SUBSET, ", ".join(gone[:3]))  # fmt: skip
        return here

    def probe_sets(self, name: str) -> tuple[ProbeSet, ProbeSet]:
        if name != "speaker" or self.config.speaker_split == "lists":
            return super().probe_sets(name)
        return self.within_utterance_sets()

    def within_utterance_sets(self) -> tuple[ProbeSet, ProbeSet]:
        """Every utterance of both lists tiled into clips; clip i goes to the test set when i % n == n - 1."""
        clip, every = self.config.clip_samples, self.config.within_test_every
        lengths = self.data.recordings.lengths()
        rows: dict[bool, list] = {False: [], True: []}
        for part in self.data.splits.values():
            for u, spk in zip(part.utterances, part.clip_labels["speaker"], strict=True):
                starts = tile_starts(int(lengths[u]), clip)
                full = starts[starts + clip <= lengths[u]][: self.config.within_clips or None]
                for i, s in enumerate(full if len(full) else starts[:1]):
                    rows[i % every == every - 1].append((u, s, spk))
        if not rows[True]:
            raise DataError(
                f"speaker_split=within: no utterance is {every} clips long; lower task.within_test_every"
            )
        train, test = (ProbeSet(*map(np.array, zip(*rows[k], strict=True))) for k in (False, True))
        return train, test


def speaker_order(ids: list[str]) -> dict[str, int]:
    """Speaker id -> class index, by first appearance in ``ids``."""
    order: dict[str, int] = {}
    for u in ids:
        order.setdefault(u.split("-")[0], len(order))
    return order


def check_label_lengths(rec, labels: dict[int, np.ndarray]) -> None:
    """Warn when a label list's length is not (N - 400) // 160 + 1 (the CPC/Kaldi frame count)."""
    bad = [i for i, lab in labels.items() if len(lab) != kaldi_frames(rec.length(i))]
    if bad:
        log.warning("%d utterances have a phone-label count different from (N - 400) // 160 + 1, e.g. %s",
                    len(bad), rec.names[bad[0]])  # fmt: skip
