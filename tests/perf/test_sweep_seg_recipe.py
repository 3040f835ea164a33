"""The recipe sweep's variants each change exactly one key of a real plan, and refuse a plan without it."""

from __future__ import annotations

import pytest
import yaml

from benchmarks.sweep_seg_recipe import VARIANTS
from medimg.data.planner import GIB, Machine
from medimg.data.recipe import plan_dataset
from medimg.data.synthetic import write_synthetic_study

CPU = Machine(ram_available=16 * GIB, disk_free=100 * GIB, cpu_count=2)
CHANGED = {"batch_4": ("optim", "batch_size", 4), "lr_1e-3": ("optim", "lr", 0.001),
           "spatial_0.2": ("augmentation", "spatial", 0.2)}  # fmt: skip


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("sweep")
    manifest = write_synthetic_study(root, cases=6, seed=0, shape=(40, 48, 36), spacing=(1.0, 1.0, 1.0))
    return plan_dataset(
        manifest, "segmentation", root / "plan.yaml", "10m", machine=CPU
    ).workflow_path.read_text()


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_each_variant_changes_one_key(planned: str, name: str) -> None:
    edit = VARIANTS[name]
    assert edit is not None
    before, after = _flat(yaml.safe_load(planned)), _flat(yaml.safe_load(edit(planned)))
    changed = {k for k in before if before[k] != after[k]}
    section, key, value = CHANGED[name]
    expected = f"{section}.{key}.prob" if key == "spatial" else f"{section}.{key}"
    assert changed == {expected} and after[expected] == value and before[expected] != value


def test_a_plan_without_the_key_is_refused() -> None:
    edit = VARIANTS["spatial_0.2"]
    assert edit is not None
    with pytest.raises(SystemExit, match="augmentation.spatial.prob"):
        edit("task: classification\noptim:\n  lr: 0.001\n")
