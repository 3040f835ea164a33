"""The workflow schema refuses what it does not know, naming the key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medimg.config.load import apply_overrides, config_hash, load_workflow, parse_workflow
from medimg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = {"task": "segmentation", "data": {"manifest": "m.csv", "labels": {0: "background", 1: "organ"}}}


def test_quickstart_workflows_validate():
    for name in ("quickstart_seg", "quickstart_cls"):
        wf = load_workflow(ROOT / "workflows" / f"{name}.yaml")
        assert wf.name == name


def test_misspelled_key_names_path_and_allowed_keys():
    raw = apply_overrides(BASE, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError) as exc:
        parse_workflow(raw, "study.yaml")
    msg = str(exc.value)
    assert "study.yaml: optim.lrr: unknown key" in msg
    assert "lr" in msg.split("allowed keys here:")[1] and "batch_size" in msg


def test_wrong_type_and_impossible_values():
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs"):
        parse_workflow(apply_overrides(BASE, ["trainer.max_epochs=zero"]))
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        parse_workflow(apply_overrides(BASE, ["optim.lr=-1"]))
    with pytest.raises(ConfigError, match="'memory', 'disk' or 'none'"):
        parse_workflow(apply_overrides(BASE, ["preprocessing.cache.mode=ram"]))
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        parse_workflow(apply_overrides(BASE, ["data.split.val_fraction=0.6", "data.split.test_fraction=0.5"]))


def test_segmentation_needs_background_label():
    with pytest.raises(ConfigError, match="data.labels must include 0"):
        parse_workflow(apply_overrides(BASE, ["data.labels={1: organ}"]))


def test_overrides_parse_yaml_values_and_hash_changes(tmp_path):
    p = tmp_path / "wf.yaml"
    p.write_text(yaml.safe_dump(BASE))
    a = load_workflow(p)
    b = load_workflow(p, ["augmentation.patch_size=[32, 32, 16]", "optim.lr=0.01"])
    assert b.augmentation.patch_size == (32, 32, 16) and b.optim.lr == 0.01
    assert config_hash(a) != config_hash(b)
    assert config_hash(a) == config_hash(load_workflow(p))
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        load_workflow(p, ["optim.lr"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml: workflow file not found"):
        load_workflow(tmp_path / "nothere.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_workflow(bad)


def test_no_code_execution_from_yaml(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("task: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_workflow(p)
