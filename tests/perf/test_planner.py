"""The RAM/VRAM planner: each choice follows the memory it is given, and says why."""

from __future__ import annotations

from medimg.data.planner import (
    GIB,
    Machine,
    activation_bytes_per_voxel,
    choose_cache_mode,
    plan_inference,
    plan_training,
)


def test_cache_mode_follows_ram_then_disk() -> None:
    m = Machine(ram_available=4 * GIB, disk_free=50 * GIB, cpu_count=2)
    case = 100**3  # 16 bytes per voxel cached: 16 MB a case
    assert choose_cache_mode(10, case, m)[0] == "memory"
    mode, why = choose_cache_mode(1000, case, m)
    assert mode == "disk" and "RAM budget" in why
    assert choose_cache_mode(10_000, case, m)[0] == "none"


def test_activation_measure_scales_with_width(tiny_unet) -> None:
    from monai.networks.nets import UNet

    wide = UNet(3, 1, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    small = activation_bytes_per_voxel(tiny_unet, probe=16)
    assert small > 0
    assert 1.2 < activation_bytes_per_voxel(wide, probe=16) / small < 2.5


def test_training_batch_lowered_to_fit(tiny_unet) -> None:
    roomy = plan_training(
        8,
        (60, 60, 50),
        (32, 32, 32),
        tiny_unet,
        Machine(ram_available=16 * GIB, disk_free=100 * GIB, cpu_count=2),
        wanted_batch=4,
    )
    assert (roomy.cache_mode, roomy.patch_batch) == ("memory", 4)
    tight = plan_training(
        8,
        (60, 60, 50),
        (32, 32, 32),
        tiny_unet,
        Machine(ram_available=30 * 2**20, disk_free=100 * GIB, cpu_count=2),
        wanted_batch=4,
    )
    assert tight.patch_batch < 4 and "lowered to fit" in tight.explain()
    assert tight.cache_mode == "disk"


def test_sliding_window_batch_from_free_memory(tiny_unet) -> None:
    cpu = plan_inference(
        (120, 120, 90),
        (32, 32, 32),
        tiny_unet,
        3,
        source_shape=(300, 300, 200),
        machine=Machine(16 * GIB, 100 * GIB, 2),
    )
    assert cpu.sw_batch_size == 4 and "cap 4 on CPU" in cpu.explain()
    gpu = plan_inference(
        (120, 120, 90),
        (32, 32, 32),
        tiny_unet,
        3,
        machine=Machine(16 * GIB, 100 * GIB, 2, device="cuda", vram_free=80 * GIB),
    )
    assert gpu.sw_batch_size == 32
    starved = plan_inference(
        (120, 120, 90),
        (32, 32, 32),
        tiny_unet,
        3,
        machine=Machine(16 * GIB, 100 * GIB, 2, device="cuda", vram_free=2**20),
    )
    assert starved.sw_batch_size == 1 and "not even one window" in starved.explain()


def test_machine_detect_reads_this_machine(tmp_path) -> None:
    m = Machine.detect(tmp_path / "not" / "yet", device="cpu")
    assert (
        m.ram_available > 0 and m.disk_free > 0 and m.vram_free is None and m.model_memory == m.ram_available
    )


def _tiny_wf(tmp_path, **preprocessing):
    import json

    from _tiny import TINY

    from medimg.config.load import parse_workflow
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study

    manifest = write_synthetic_study(
        tmp_path / "synth", cases=4, seed=0, grid=SyntheticGrid(shape=(40, 36, 20))
    )
    data = json.loads(json.dumps(TINY))
    data["data"]["manifest"] = str(manifest)
    data["outputs"]["dir"] = str(tmp_path / "out")
    data["preprocessing"].update(preprocessing)
    wf = parse_workflow(data, source="test")
    items = [{"image": str(manifest.parent / f"cases/case_{i:04d}/image.nii.gz")} for i in range(4)]
    return wf, items


def test_preprocessed_voxels_from_the_header(tmp_path) -> None:
    from medimg.data.planner import preprocessed_voxels
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study

    manifest = write_synthetic_study(
        tmp_path, cases=1, seed=0, grid=SyntheticGrid(shape=(40, 36, 20), spacing=(1.5, 1.0, 2.5))
    )
    img = manifest.parent / "cases/case_0000/image.nii.gz"
    assert preprocessed_voxels(img, None) == 40 * 36 * 20
    # 60 x 36 x 50 mm at 3 mm: 20 x 12 x 17 (rounded)
    assert preprocessed_voxels(img, (3.0, 3.0, 3.0)) == 20 * 12 * 17
    assert preprocessed_voxels(img, (3.0, 3.0, 3.0), spatial_size=(8, 8, 8)) == 512


def test_plan_run_cache_auto_follows_ram_and_keeps_explicit_modes(tmp_path, tiny_unet) -> None:
    from medimg.data.planner import plan_run, resolve_cache_mode

    wf, items = _tiny_wf(tmp_path, cache={"mode": "auto"})
    roomy = Machine(ram_available=8 * GIB, disk_free=100 * GIB, cpu_count=2)
    plan = plan_run(wf, items, tiny_unet, roomy)
    assert plan.cache_mode == "memory" and "free RAM -> memory" in plan.explain()
    assert plan.patch_batch == wf.optim.batch_size * wf.augmentation.samples_per_volume
    # 4 cases of 24 x 15 x 20 voxels at 2.5 mm, 16 bytes each: 0.46 MB; 0.5 MB of RAM is too little
    tiny_ram = Machine(ram_available=2**19, disk_free=100 * GIB, cpu_count=2)
    assert resolve_cache_mode(wf, items, tiny_ram)[0] == "disk"
    wf_disk, _ = _tiny_wf(tmp_path / "b", cache={"mode": "none"})
    kept = plan_run(wf_disk, items, tiny_unet, roomy)
    assert kept.cache_mode == "none" and "set in the workflow" in kept.explain()


def test_plan_run_lowers_the_batch_in_whole_cases(tmp_path, tiny_unet) -> None:
    from medimg.data.planner import plan_run

    wf, items = _tiny_wf(tmp_path)
    wf.optim.batch_size, wf.augmentation.samples_per_volume = 4, 2
    per_patch = activation_bytes_per_voxel(tiny_unet) * 16**3 * 3
    # room for 5 patches (half the RAM is the budget): 2 whole cases of 2 patches
    m = Machine(ram_available=int(2 * 5.5 * per_patch), disk_free=100 * GIB, cpu_count=2)
    wf.preprocessing.cache.mode = "disk"  # the RAM cache would take its share of the budget
    plan = plan_run(wf, items, tiny_unet, m)
    assert plan.patch_batch == 4 and "optim.batch_size 4 -> 2" in plan.explain()


def test_probe_does_not_touch_batch_norm_statistics() -> None:
    import torch

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2)).train()
    before = net[1].running_mean.clone()
    activation_bytes_per_voxel(net, probe=8)
    assert torch.equal(net[1].running_mean, before) and net.training


def test_predictor_sizes_the_sliding_window_batch(tiny_unet, caplog) -> None:
    import logging

    import numpy as np
    import torch
    from _tiny import TINY

    from medimg.config.load import parse_workflow
    from medimg.inference.predictor import Predictor

    wf = parse_workflow(TINY, source="test")
    assert wf.inference.sw_batch_size == "auto"
    pred = Predictor(tiny_unet, wf, device="cpu")
    x = torch.rand(1, 1, 40, 36, 30)
    with caplog.at_level(logging.INFO, logger="medimg.inference.predictor"):
        auto = pred.probabilities(x)
    assert (
        "sw_batch_size 4 (cap 4 on CPU)" in pred.plan
        and "planner: sw_batch_size=4; sliding window" in caplog.text
    )
    wf.inference.sw_batch_size = 1
    fixed = Predictor(tiny_unet, wf, device="cpu")
    one = fixed.probabilities(x)
    assert fixed.plan == "sw_batch_size=1 (set in the workflow)"
    np.testing.assert_allclose(auto.numpy(), one.numpy(), atol=1e-5)  # the batch does not change the answer
