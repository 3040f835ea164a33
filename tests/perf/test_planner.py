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
