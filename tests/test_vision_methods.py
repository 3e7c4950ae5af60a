"""The vision methods: smoke runs on STL-10 files and the embedded task, gradient isolation, the iterative
schedule and its cache, CPC's PixelCNN masking, the supervised heads and both InfoNCE scoring paths."""

import pytest
import torch

from bench import record
from bench.execute import execute
from bench.interfaces import Batch
from bench.registry import METHODS
from bench.spec import RunSpec, resolve
from methods import _infonce
from methods._heads import IGNORE, head_loss
from methods._module_cache import ModuleCache
from methods._pixelcnn import PixelCNN
from tests.fixtures_stl10 import write_stl10

VISION_METHODS = [m for m in METHODS.names() if "vision" in METHODS.get(m).modalities]


@pytest.fixture(scope="module")
def stl_root(tmp_path_factory):
    return write_stl10(tmp_path_factory.mktemp("stl"), unlabeled=16, train=20, test=10, exact=False)


def run(tmp_path, method, task, data_root=None, **method_cfg):
    spec = RunSpec(method=method, task=task, preset="smoke", overrides={"method": method_cfg} if method_cfg else {},
                   data_root=str(data_root) if data_root else None)  # fmt: skip
    outcome = execute(spec, tmp_path / "run", quiet=True)
    assert outcome.status == "ok", outcome.error
    return record.read_rows(tmp_path / "run" / record.ROWS_FILE)


@pytest.mark.parametrize("task", ["stl10", "synthetic_textures"])
@pytest.mark.parametrize("method", VISION_METHODS)
def test_every_vision_method_runs_the_smoke_preset(tmp_path, stl_root, method, task):
    rows = run(tmp_path, method, task, stl_root if task == "stl10" else None)
    metrics = {r["metric"] for r in rows}
    assert "class_acc" in metrics
    assert ("peak_mem_bytes" in metrics) == METHODS.get(method).trains  # training memory of every trained method
    if method in ("gim", "cpc"):
        assert [r["value"] for r in rows if r["metric"] == "prediction_skip_rows"] == ["0.0"]


def build(method, task="synthetic_textures", **method_cfg):
    r = resolve(RunSpec(method=method, task=task, preset="smoke", overrides={"method": method_cfg}))
    torch.manual_seed(0)
    task_obj = r.task_cls(r.task, None, 0)
    encoder = task_obj.build_encoder()
    return task_obj, encoder, r.method_cls(r.method, encoder, task_obj, torch.device("cpu"))


def train_batch(task, n=4):
    idx = torch.arange(n)
    batch = task.batch("train", idx, torch.device("cpu"), torch.Generator().manual_seed(0), augment=True)
    batch.index = idx
    return batch


def test_greedy_supervised_has_no_gradient_across_module_boundaries():
    task, encoder, method = build("greedy_supervised")
    batch = train_batch(task)
    outs = encoder.forward_modules(batch.x, detach=True)
    head_loss(method.heads[2], outs[2].rep, batch.labels["class"]).backward()
    assert all(p.grad is None for m in (0, 1) for p in encoder.blocks[m].parameters())
    assert any(p.grad is not None for p in encoder.blocks[2].parameters())


def test_gim_has_no_gradient_across_module_boundaries():
    from methods.gim import infonce_loss

    task, encoder, method = build("gim")
    outs = encoder.forward_modules(task.example_input(4), detach=True)
    infonce_loss(outs[2], method.heads[2], method.config).backward()
    assert all(p.grad is None for m in (0, 1) for p in encoder.blocks[m].parameters())


def snapshot(encoder):
    return [torch.cat([p.detach().flatten() for p in block.parameters()]) for block in encoder.blocks]


def changed(before, after):
    return [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]


def test_iterative_schedule_trains_module_m_only_in_phase_m_and_reads_the_cache(tmp_path, monkeypatch):
    task, encoder, method = build("gim", schedule="iterative")
    method.work_dir = tmp_path
    assert method.num_phases() == 3
    reads: list[int] = []
    original = ModuleCache.inputs
    monkeypatch.setattr(
        ModuleCache, "inputs", lambda self, m, index: reads.append(m) or original(self, m, index)
    )
    for phase in range(3):
        before, reads = snapshot(encoder), []
        losses = method.train_step(train_batch(task), phase)
        assert list(losses) == [phase]
        assert changed(before, snapshot(encoder)) == [m == phase for m in range(3)]
        assert reads[:1] == ([phase] if phase else [])  # module m's input: the cache of module m - 1
    cache = tmp_path / "module_cache"
    assert (cache / "module1.json").is_file() and not (cache / "module0.json").exists()  # module 0's dropped


def test_cache_holds_the_frozen_module_outputs(tmp_path):
    task, encoder, _ = build("gim")
    cache = ModuleCache(tmp_path, encoder, task, torch.device("cpu"), chunk=7)
    direct = cache.outputs(0, 7, 14)  # (7*49, C, h, w): module 0 on the second chunk, augmented as cached
    got = cache.inputs(1, torch.arange(7, 14))
    assert got.shape == direct.shape
    assert torch.allclose(got, direct, rtol=1e-2, atol=1e-3)


def test_iterative_run_records_each_module_in_its_own_phase(tmp_path):
    rows = run(tmp_path, "gim", "synthetic_textures", schedule="iterative")
    losses = {
        (r["metric"], r["module"], r["epoch"]) for r in rows if r["metric"] in ("train_loss", "val_loss")
    }
    assert losses == {(metric, str(m), str(m)) for metric in ("train_loss", "val_loss") for m in range(3)}


def test_pixelcnn_context_sees_only_rows_at_or_above():
    torch.manual_seed(0)
    net = PixelCNN(6, width=8, layers=3)
    x = torch.randn(1, 6, 7, 7, requires_grad=True)
    out = net(x)
    for i, j in [(0, 0), (3, 2), (6, 6)]:
        (grad,) = torch.autograd.grad(out[0, :, i, j].sum(), x, retain_graph=True)
        rows = grad.abs().sum(dim=(0, 1, 3))  # (7,) influence of every input row
        assert torch.all(rows[i + 1 :] == 0) and rows[i] > 0


def test_pixelcnn_default_size_is_documented():
    with torch.device("meta"):
        net = PixelCNN(1024)
    assert sum(p.numel() for p in net.parameters()) == 122_713_088


def test_frame_heads_pool_time_and_ignore_unknown_frames():
    head = torch.nn.Linear(8, 5)
    rep = torch.randn(2, 8, 12)  # (B, C, L): pooled to T = 6 frames
    labels = torch.tensor([[0, 1, 2, 3, 4, IGNORE], [IGNORE] * 6])
    assert torch.isfinite(head_loss(head, rep, labels))
    assert head_loss(head, rep, torch.full((2, 6), IGNORE)).item() == 0.0


@pytest.mark.parametrize("offset", ["paper", "reference"])
def test_both_scoring_paths_give_the_same_loss(monkeypatch, offset):
    z = torch.randn(3, 16, 7, 7)
    pred = _infonce.GridPredictors(16, 16, 5)
    values = []
    for limit in (2048, 0):  # every score then pick, or gather the negatives
        monkeypatch.setattr(_infonce, "MATRIX_MAX", limit)
        torch.manual_seed(1)
        values.append(_infonce.grid_infonce(z, z, pred, 16, offset).item())
    assert values[0] == pytest.approx(values[1], abs=1e-5)


def test_supervised_trains_end_to_end():
    task, encoder, method = build("supervised")
    before = snapshot(encoder)
    losses = method.train_step(train_batch(task), 0)
    assert list(losses) == [2] and all(changed(before, snapshot(encoder)))


def test_cpc_trains_end_to_end():
    task, encoder, method = build("cpc")
    before = snapshot(encoder)
    method.train_step(Batch(task.example_input(4)), 0)
    assert all(changed(before, snapshot(encoder)))
