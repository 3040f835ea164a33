"""Postprocessing chosen on validation: per label, only where it raises the mean validation Dice;
saved in the model folder, checked at load, applied by predict and by the run's own scoring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _models import built_model

from medimg.cli.main import main
from medimg.errors import WeightsError
from medimg.inference.model_io import load_trained
from medimg.inference.postprocess import (
    POSTPROCESS_FILE,
    Postprocessing,
    choose_postprocessing,
    keep_largest,
    save_postprocessing,
    smallest_components_mm3,
    voxel_volume,
)
from medimg.inference.predictor import Predictor
from medimg.io.nifti import load_nifti


def _case() -> tuple[np.ndarray, np.ndarray]:
    """Label 1: one true blob, predicted with a spurious far blob. Label 2: two true blobs, both found."""
    ref = np.zeros((30, 30, 30), np.uint8)
    ref[2:8, 2:8, 2:8] = 1  # 216 voxels
    ref[20:24, 2:6, 2:6] = 2  # 64
    ref[20:24, 20:24, 20:24] = 2  # 64
    pred = ref.copy()
    pred[14:17, 20:23, 2:5] = 1  # a spurious 27-voxel blob of label 1
    return pred, ref


def test_keep_largest_is_chosen_for_the_label_it_helps_and_not_for_the_one_it_hurts() -> None:
    pred, ref = _case()
    # thresholds from "training": label 1's smallest object 40 mm³ (a 27 mm³ blob survives half of
    # it at 20 mm³), label 2's smallest 64 mm³ (nothing below 32 mm³ to remove)
    pp = choose_postprocessing([(pred, ref, 1.0)], [1, 2], {1: 20.0, 2: 32.0})
    assert pp.steps == {1: "keep_largest"}
    ev = pp.validation
    assert ev["n_cases"] == 1
    assert ev["1"]["none"] == pytest.approx(2 * 216 / (243 + 216))
    assert ev["1"]["remove_small"] == pytest.approx(ev["1"]["none"])  # 27 mm³ is above 20 mm³
    assert ev["1"]["keep_largest"] == 1.0
    assert ev["2"] == {"none": 1.0, "remove_small": 1.0, "keep_largest": pytest.approx(2 * 64 / 192)}
    out = pp.apply(pred, 1.0)
    np.testing.assert_array_equal(out, ref)

    # with a threshold above the spurious blob, the milder step ties and wins
    pp2 = choose_postprocessing([(pred, ref, 1.0)], [1, 2], {1: 30.0, 2: 32.0})
    assert pp2.steps == {1: "remove_small"}
    # the threshold is in mm³: at 8 mm³ voxels the 27-voxel blob is 216 mm³ and stays
    assert choose_postprocessing([(pred, ref, 8.0)], [1], {1: 30.0}).steps == {1: "keep_largest"}
    assert choose_postprocessing([(pred, ref, 8.0)], [1], {1: 30.0}).validation["1"]["remove_small"] < 1


def test_a_step_that_only_ties_is_not_applied_and_absent_labels_count_as_agreement() -> None:
    pred, ref = _case()
    pp = choose_postprocessing([(ref.copy(), ref, 1.0)], [1, 2], {1: 20.0})
    assert pp.steps == {} and "remove_small" not in pp.validation["2"]
    # a label absent from the reference: removing a stray prediction is a gain (0 -> 1)
    empty = np.zeros_like(ref)
    stray = empty.copy()
    stray[1:3, 1:3, 1:3] = 1
    stray[10:20, 10:20, 10:20] = 1
    pp = choose_postprocessing([(stray, empty, 1.0), (pred, ref, 1.0)], [1], {1: 20.0})
    assert pp.validation["1"]["remove_small"] == pytest.approx((0 + 2 * 216 / 459) / 2)
    assert pp.validation["1"]["keep_largest"] == pytest.approx((0 + 1) / 2)
    assert pp.steps == {1: "keep_largest"}


def test_thresholds_come_from_the_smallest_training_component_in_mm3() -> None:
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[1:5, 1:5, 1:5] = 1  # 64 voxels
    lab[10:12, 10:12, 10:12] = 1  # 8 voxels
    lab[15:18, 15:18, 15:18] = 2  # 27 voxels
    other = np.zeros_like(lab)
    other[0:3, 0:3, 0:2] = 2  # 18 voxels
    sizes = smallest_components_mm3([(lab, 2.0), (other, 0.5)], [1, 2, 3])
    assert sizes == {1: 0.5 * 8 * 2.0, 2: 0.5 * 18 * 0.5}  # label 3 never occurs: no threshold


def _data(tmp_path: Path) -> list[str]:
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study

    manifest = write_synthetic_study(
        tmp_path / "data", cases=4, seed=3, grid=SyntheticGrid(shape=(32, 30, 20), spacing=(1.6, 1.7, 2.5))
    )
    df = pd.read_csv(manifest)
    return [str(manifest.parent / p) for p in df["image"]]


def test_the_choice_is_saved_in_the_model_folder_checked_at_load_and_applied_by_predict(
    tmp_path: Path,
) -> None:
    images = _data(tmp_path)
    raw_model = built_model(tmp_path / "raw", seed=2)
    raw = load_trained(raw_model)
    assert raw.postprocessing is None
    predictor = Predictor(raw.model, raw.workflow, device="cpu")
    raw_masks = [predictor.predict_path(p, f"c{i}") for i, p in enumerate(images)]
    from scipy import ndimage

    # the untrained network scatters label 1 into several components: the step has work to do
    assert ndimage.label(raw_masks[0].mask == 1, np.ones((3, 3, 3)))[1] > 1

    model = tmp_path / "model"
    shutil.copytree(raw_model, model)
    pp = Postprocessing({1: "keep_largest", 2: "remove_small"}, {1: 5.0, 2: 400.0}, {"n_cases": 0})
    save_postprocessing(model, pp)
    record = json.loads((model / "model.json").read_text())["files"]
    assert set(record) == {"model.safetensors", "workflow.yaml", POSTPROCESS_FILE}
    loaded = load_trained(model)
    assert loaded.postprocessing == pp

    out = tmp_path / "out"
    argv = ["predict", str(model), *images[:2], "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    for i, raw_pred in enumerate(raw_masks[:2]):
        case = Path(images[i]).parent.name + "_image"  # the case id of cases/<case>/image.nii.gz
        written = load_nifti(out / "cases" / case / "mask.nii.gz")
        vox = voxel_volume(raw_pred.source_affine)
        expected = keep_largest(raw_pred.mask, 1)
        lab2, n2 = ndimage.label(expected == 2, np.ones((3, 3, 3)))
        sizes = np.bincount(lab2.ravel())
        expected[np.isin(lab2, np.flatnonzero(sizes * vox < 400.0)) & (lab2 > 0)] = 0
        np.testing.assert_array_equal(np.asarray(written.data), expected, err_msg=case)
        assert ndimage.label(np.asarray(written.data) == 1, np.ones((3, 3, 3)))[1] <= 1
        assert not np.array_equal(expected, raw_pred.mask)

    # an edited choice is refused at load, naming the file
    (model / POSTPROCESS_FILE).write_text(pp.to_json().replace("keep_largest", "remove_small"))
    with pytest.raises(WeightsError, match=POSTPROCESS_FILE):
        load_trained(model)
    # a new export of weights drops a choice made for the old ones
    from medimg.inference.model_io import save_trained

    save_trained(raw.model, raw.workflow, model)
    assert not (model / POSTPROCESS_FILE).exists() and load_trained(model).postprocessing is None


def test_the_training_stage_chooses_on_the_validation_split_and_saves_what_it_chose(tmp_path: Path) -> None:
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study
    from medimg.training.stages.postprocess import postprocess
    from medimg.training.stages.records import ExportedModel, PreparedData, TrackedRun

    manifest = write_synthetic_study(
        tmp_path / "data", cases=4, seed=3, grid=SyntheticGrid(shape=(32, 30, 20), spacing=(1.6, 1.7, 2.5))
    )
    df = pd.read_csv(manifest)
    df["image"] = [str(manifest.parent / p) for p in df["image"]]
    df["target"] = [str(manifest.parent / p) for p in df["label"]]
    df["split"] = ["train", "train", "val", "val"]
    model = built_model(tmp_path / "model", seed=4)
    tm = load_trained(model)
    wf = tm.workflow
    exported = ExportedModel(net=tm.model, model_dir=model, weights_sha256=tm.weights_sha256)
    run = TrackedRun(uri="", logger=None, client=None, run_id=None)
    chosen = postprocess(wf, PreparedData(tmp_path, df, 0), run, exported).postprocessing
    assert chosen is not None and chosen.validation["n_cases"] == 2
    assert load_trained(model).postprocessing == chosen  # saved and recorded
    # the thresholds are half the smallest training component, in mm³
    train_labels = [load_nifti(p) for p in df.target[:2]]
    expected_sizes = smallest_components_mm3(
        [(np.asarray(v.data).astype(int), voxel_volume(v.affine)) for v in train_labels], [1, 2]
    )
    assert chosen.min_size_mm3 == pytest.approx(expected_sizes)
    # "none" is the raw masks' Dice, computed here independently; a step is kept iff it beats it
    pred = Predictor(tm.model, wf, device="cpu")
    for k in (1, 2):
        dices = []
        for img, tgt in zip(df.image[2:], df.target[2:], strict=True):
            m = pred.predict_path(img).mask == k
            r = np.asarray(load_nifti(tgt).data) == k
            dices.append(1.0 if m.sum() + r.sum() == 0 else 2 * (m & r).sum() / (m.sum() + r.sum()))
        scores = chosen.validation[str(k)]
        assert scores["none"] == pytest.approx(np.mean(dices))
        best = max(s for s in scores.values())
        assert (k in chosen.steps) == (best > scores["none"])
        if k in chosen.steps:
            assert scores[chosen.steps[k]] == best
    # without validation cases nothing is chosen
    no_val = df.assign(split=["train", "train", "test", "test"])
    assert postprocess(wf, PreparedData(tmp_path, no_val, 0), run, exported).postprocessing is None
