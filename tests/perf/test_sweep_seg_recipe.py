"""The segmentation sweeps' variants change only the keys they name in a real plan, and refuse a plan without them."""

from __future__ import annotations

import pytest
import yaml

from benchmarks.sweep_seg_capacity import VARIANTS as CAPACITY
from benchmarks.sweep_seg_recipe import VARIANTS
from benchmarks.sweep_seg_width import VARIANTS as WIDTH
from medimg.data.planner import GIB, Machine
from medimg.data.recipe import plan_dataset
from medimg.data.synthetic import SyntheticGrid, write_synthetic_study

CPU = Machine(ram_available=16 * GIB, disk_free=100 * GIB, cpu_count=2)
SETS = {
    "batch_2": {"optim.batch_size": 2},
    "patch_40x56x40": {"augmentation.patch_size": [40, 56, 40], "optim.batch_size": 2},
    "batch_4": {"optim.batch_size": 4},
    "lr_1e-3": {"optim.lr": 0.001},
    "spatial_0.2": {"augmentation.spatial.prob": 0.2},
}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("sweep")
    manifest = write_synthetic_study(
        root, cases=6, seed=0, grid=SyntheticGrid(shape=(40, 48, 36), spacing=(1.0, 1.0, 1.0))
    )
    return plan_dataset(
        manifest, "segmentation", root / "plan.yaml", "10m", machine=CPU
    ).workflow_path.read_text()


def test_every_variant_is_described() -> None:
    assert set(VARIANTS) == {"planned", *SETS} and VARIANTS["planned"] is None


@pytest.mark.parametrize("name", sorted(SETS))
def test_each_variant_sets_its_keys_only(planned: str, name: str) -> None:
    edit = VARIANTS[name]
    assert edit is not None
    before, after = _flat(yaml.safe_load(planned)), _flat(yaml.safe_load(edit(planned)))
    assert before.keys() == after.keys()
    assert {k: after[k] for k in SETS[name]} == SETS[name]
    assert {k for k in before if before[k] != after[k]} <= set(SETS[name])


def test_double_width_doubles_every_level(planned: str) -> None:
    edit = WIDTH["double_width"]
    assert edit is not None
    before, after = _flat(yaml.safe_load(planned)), _flat(yaml.safe_load(edit(planned)))
    assert after["model.params.filters"] == [2 * f for f in before["model.params.filters"]]
    assert {k for k in before if before[k] != after[k]} == {"model.params.filters"}


def test_a_plan_without_the_key_is_refused() -> None:
    edit = VARIANTS["spatial_0.2"]
    assert edit is not None
    with pytest.raises(SystemExit, match="augmentation.spatial.prob"):
        edit("task: classification\noptim:\n  lr: 0.001\n")


def test_capacity_variants_widen_halve_the_batch_and_add_residual_blocks(planned: str) -> None:
    before = _flat(yaml.safe_load(planned))
    assert set(CAPACITY) == {"planned", "width_16_batch_2", "width_16_batch_2_res"}
    wide_edit, res_edit = CAPACITY["width_16_batch_2"], CAPACITY["width_16_batch_2_res"]
    assert wide_edit is not None and res_edit is not None
    wide, res = _flat(yaml.safe_load(wide_edit(planned))), _flat(yaml.safe_load(res_edit(planned)))
    changed = {"model.params.filters": [2 * f for f in before["model.params.filters"]], "optim.batch_size": 2}
    assert {k: wide[k] for k in changed} == changed
    assert {k for k in before if before[k] != wide[k]} <= set(changed) and wide.keys() == before.keys()
    assert set(res) - set(before) == {"model.params.res_block"} and res["model.params.res_block"] is True
    assert {k: res[k] for k in before} == wide
