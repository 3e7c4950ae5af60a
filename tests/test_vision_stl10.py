"""STL-10: the official binary layout read through memory maps, clear data errors, splits, geometry, encoder."""

import numpy as np
import pytest
import torch

from bench.data import DataError
from bench.describe import describe_task
from bench.spec import RunSpec, resolve
from tests.fixtures_stl10 import pattern, write_stl10

SIZES = {"unlabeled": 12, "train": 20, "test": 10}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_stl10(tmp_path_factory.mktemp("stl"), SIZES["unlabeled"], SIZES["train"], SIZES["test"])


def make_task(root, **task):
    r = resolve(RunSpec(task="stl10", preset="smoke", overrides={"task": {"download": False, **task}}))
    return r.task_cls(r.task, root, 0)


def test_column_major_decoding_matches_the_known_pattern(root):
    task = make_task(root)
    offset = 0
    for split in ("unlabeled", "train", "test"):
        images = task.splits[split].images
        assert len(images) == SIZES[split]
        got = images[torch.tensor([0, SIZES[split] - 1])]  # (2, 96, 96, 3)
        assert got.shape == (2, 96, 96, 3) and got.dtype == torch.uint8
        assert np.array_equal(got[0].numpy(), pattern(offset))
        assert np.array_equal(got[1].numpy(), pattern(offset + SIZES[split] - 1))
        offset += SIZES[split]
    # red grows down the rows, green along the columns: a transposed reader would swap them
    first = task.splits["unlabeled"].images[torch.tensor([0])][0]
    assert first[10, 0, 0] == 20 and first[0, 10, 1] == 20


def test_labels_are_shifted_to_zero_based(root):
    task = make_task(root)
    assert task.splits["train"].labels.tolist() == [i % 10 for i in range(SIZES["train"])]
    assert task.splits["test"].labels.dtype == torch.int64


def test_splits_follow_the_protocol(root):
    task = make_task(root)
    assert task.pretrain_split(supervised=False) == "unlabeled"
    assert task.pretrain_split(supervised=True) == "train"
    assert task.probe_splits == ("probe_train", "test")
    val = task.splits["val"]
    assert len(val.images) == round(0.2 * SIZES["train"])
    again = make_task(root).splits["val"]
    assert torch.equal(val.labels, again.labels)  # deterministic, the same for every run


def test_batches_have_the_paper_geometry(root):
    task = make_task(root)
    gen = torch.Generator().manual_seed(0)
    train = task.batch("unlabeled", torch.tensor([3, 1, 2]), torch.device("cpu"), gen, augment=True)
    assert train.x.shape == (3, 1, 64, 64) and not train.labels
    test = task.batch("test", torch.tensor([0, 1]), torch.device("cpu"), None, augment=False)
    assert test.labels["class"].tolist() == [0, 1]
    centre = torch.from_numpy(pattern(SIZES["unlabeled"] + SIZES["train"])[16:80, 16:80]).float() / 255
    gray = (centre * torch.tensor([0.299, 0.587, 0.114])).sum(-1)
    assert torch.allclose(test.x[0, 0], (gray - 0.4120) / 0.2570, atol=1e-5)


def test_memmap_reader_does_not_load_the_file(root):
    images = make_task(root).splits["unlabeled"].images
    assert isinstance(images.raw, np.memmap)


def test_missing_files_are_a_clear_error(tmp_path):
    task = make_task(tmp_path)
    with pytest.raises(DataError, match="unlabeled_X.bin is missing.*--data-root"):
        task.check_data()


def test_truncated_files_are_a_clear_error(tmp_path):
    write_stl10(tmp_path, 4, 4, 4)
    images = tmp_path / "stl10_binary" / "train_X.bin"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        make_task(tmp_path).check_data()
    write_stl10(tmp_path, 4, 4, 4)
    labels = tmp_path / "stl10_binary" / "test_y.bin"
    labels.write_bytes(labels.read_bytes()[:-1])
    with pytest.raises(DataError, match="3 labels for the 4 images"):
        make_task(tmp_path).check_data()


def test_official_sizes_are_required_by_default(root):
    with pytest.raises(DataError, match="official file 100000"):
        make_task(root, verify_sizes=True).check_data()


def test_describe_shows_the_reference_encoder():
    """Paper size: 3 modules, 256/512/1024 channels on the 7x7 grid, the reference's parameter counts."""
    text = describe_task(RunSpec(task="stl10"))
    rows = [line.split() for line in text.splitlines() if line[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    shapes = [" ".join(r[1:5]) for r in rows]
    assert shapes == ["(1, 256, 7, 7)", "(1, 512, 7, 7)", "(1, 1024, 7, 7)"]
    params = [int(r[9]) for r in rows]
    for got, reference in zip(params, (0.216e6, 1.216e6, 7.088e6), strict=True):
        assert abs(got - reference) / reference < 0.01
