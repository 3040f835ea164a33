"""The thread plan: CPU training on few cores prepares batches between steps, on more in a thread; the batches are the same."""

from __future__ import annotations

import json

import pytest


def _wf(tmp_path, **trainer):
    from _tiny import TINY

    from medimg.config.load import parse_workflow

    data = json.loads(json.dumps(TINY))
    data["outputs"]["dir"] = str(tmp_path / "out")
    data["trainer"] = {**data.get("trainer", {}), **trainer}
    return parse_workflow(data, source="test")


def test_cpu_training_prefetches_in_a_thread_only_with_cores_to_spare(tmp_path) -> None:
    from medimg.data.threads import PREFETCH_MIN_CORES, plan_threads

    wf = _wf(tmp_path)
    two = plan_threads(wf, "cpu", cores=2)
    assert not two.prefetch and two.torch_threads is None
    assert "prefetch off, torch torch's default of 2 cores" in two.explain() and "measured" in two.reason
    assert not plan_threads(wf, "cpu", cores=PREFETCH_MIN_CORES - 1).prefetch
    many = plan_threads(wf, "cpu", cores=PREFETCH_MIN_CORES + 4)
    assert many.prefetch and many.torch_threads is None
    gpu = plan_threads(wf, "cuda", cores=2)
    assert gpu.prefetch and gpu.torch_threads is None
    workers = plan_threads(_wf(tmp_path, num_workers=2), "cpu", cores=2)
    assert workers.prefetch and workers.torch_threads is None and "num_workers=2" in workers.reason


def test_plan_run_logs_the_thread_plan(tmp_path, tiny_unet) -> None:
    from medimg.data.planner import GIB, Machine, plan_run
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study

    manifest = write_synthetic_study(
        tmp_path / "synth", cases=2, seed=0, grid=SyntheticGrid(shape=(40, 36, 20))
    )
    wf = _wf(tmp_path)
    items = [{"image": str(manifest.parent / f"cases/case_{i:04d}/image.nii.gz")} for i in range(2)]
    plan = plan_run(wf, items, tiny_unet, Machine(8 * GIB, 100 * GIB, cpu_count=2))
    assert plan.threads is not None and not plan.threads.prefetch
    assert "threads: prefetch off" in plan.explain()


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_are_the_same_with_and_without_prefetch(shuffle) -> None:
    import torch
    from monai import transforms as T
    from monai.data import CacheDataset

    from medimg.data.datasets import make_loader

    items = [{"image": torch.full((1, 4, 4, 4), float(i))} for i in range(6)]

    def batches(prefetch: bool) -> list[torch.Tensor]:
        ds = CacheDataset(items, T.Compose([T.RandFlipd(keys="image", prob=0.5, spatial_axis=0),
                                            T.RandGaussianNoised(keys="image", prob=1.0)]), progress=False)  # fmt: skip
        ds.transform.set_random_state(seed=3)
        dl = make_loader(ds, 2, shuffle, 0, seed=7, prefetch=prefetch)
        return [b["image"].as_tensor() for _ in range(2) for b in dl]  # two epochs

    with_thread, without = batches(True), batches(False)
    assert len(with_thread) == 6
    for a, b in zip(with_thread, without, strict=True):
        assert torch.equal(a, b)
