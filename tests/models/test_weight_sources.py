"""Every weight source loads offline: URL (local server, cache), bundle, HF cache, package, MLflow run, preset."""

from __future__ import annotations

import functools
import http.server
import sys
import threading

import pytest
import torch
from safetensors.torch import save_file

from medimg.config.weights import PretrainedSpec
from medimg.errors import ConfigError, WeightsError
from medimg.models.download import cache_dir, sha256_of
from medimg.models.loading import build_pretrained_network, load_pretrained
from medimg.models.networks import build_network, encoder_prefixes
from medimg.models.presets import WEIGHT_PRESETS, WeightPreset, expand_preset, register_preset
from medimg.models.sources import resolve_weights


def _unet(seed: int = 0):
    torch.manual_seed(seed)
    return build_network(
        "unet", spatial_dims=3, in_channels=1, out_channels=2, channels=[4, 8], strides=[2], num_res_units=0
    )


@pytest.fixture
def source_net():
    return _unet(seed=42)


def _assert_loaded(target, source):
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)


def _load(spec):
    target = _unet()
    report = load_pretrained(target, spec, encoder_prefixes=encoder_prefixes("unet", target))
    return target, report


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server over tmp_path/www on 127.0.0.1 (stopped after the test)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_download_is_verified_cached_and_works_offline(http_server, source_net):
    root, base = http_server
    save_file(dict(source_net.state_dict()), str(root / "unet.safetensors"))
    digest = sha256_of(root / "unet.safetensors")
    spec = PretrainedSpec(source=f"url:{base}/unet.safetensors", sha256=digest)
    target, report = _load(spec)
    _assert_loaded(target, source_net)
    cached = cache_dir() / "weights" / digest / "unet.safetensors"
    assert cached.is_file() and report.path == str(cached)

    (root / "unet.safetensors").unlink()  # the server no longer has it: the cache serves
    target, _ = _load(spec)
    _assert_loaded(target, source_net)

    with pytest.raises(WeightsError) as err:  # not cached and not reachable
        resolve_weights(PretrainedSpec(source=f"url:{base}/other.safetensors", sha256="1" * 64))
    assert "not in the cache" in str(err.value) and str(cache_dir() / "weights" / ("1" * 64)) in str(
        err.value
    )
    with pytest.raises(WeightsError, match="not in the cache"):
        resolve_weights(PretrainedSpec(source="url:http://127.0.0.1:9/none.pt", sha256="2" * 64))


def test_url_with_wrong_sha256_caches_nothing(http_server, source_net):
    root, base = http_server
    torch.save(source_net.state_dict(), root / "unet.pt")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        resolve_weights(PretrainedSpec(source=f"url:{base}/unet.pt", sha256="3" * 64))
    assert not (cache_dir() / "weights" / ("3" * 64)).exists()


def test_tampered_cache_file_is_refused(http_server, source_net):
    root, base = http_server
    torch.save(source_net.state_dict(), root / "unet.pt")
    spec = PretrainedSpec(source=f"url:{base}/unet.pt", sha256=sha256_of(root / "unet.pt"))
    cached = resolve_weights(spec).path
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        resolve_weights(spec)


def test_url_needs_sha256():
    with pytest.raises(ValueError, match="needs its sha256"):
        PretrainedSpec(source="url:https://example.org/w.pt")


def _write_bundle(folder, net):
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "metadata.json").write_text('{"name": "tiny_unet", "version": "0.1.0"}')
    torch.save(net.state_dict(), folder / "models" / "model.pt")


def test_monai_bundle_folder_and_cached_bundle_name(tmp_path, source_net):
    _write_bundle(tmp_path / "tiny_unet", source_net)
    target, report = _load(PretrainedSpec(source=f"bundle:{tmp_path / 'tiny_unet'}"))
    _assert_loaded(target, source_net)
    assert report.path.endswith("models/model.pt")

    _write_bundle(cache_dir() / "bundles" / "cached_unet", source_net)
    target, _ = _load(PretrainedSpec(source="bundle:cached_unet"))
    _assert_loaded(target, source_net)
    with pytest.raises(WeightsError, match="python -m monai.bundle download absent_bundle"):
        resolve_weights(PretrainedSpec(source="bundle:absent_bundle"))


def test_hugging_face_cache(tmp_path, source_net):
    repo = tmp_path / "hf-cache" / "models--acme--tiny-unet"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file(dict(source_net.state_dict()), str(snapshot / "model.safetensors"))
    target, report = _load(PretrainedSpec(source="hf:acme/tiny-unet/model.safetensors"))
    _assert_loaded(target, source_net)
    assert report.file_format == "safetensors"
    _load(PretrainedSpec(source="hf:acme/tiny-unet/model.safetensors@0123abcd"))
    with pytest.raises(WeightsError, match="huggingface-cli download acme/tiny-unet other.bin"):
        resolve_weights(PretrainedSpec(source="hf:acme/tiny-unet/other.bin"))


def test_installed_package_with_weights(tmp_path, monkeypatch, source_net):
    site = tmp_path / "site"
    pkg = site / "tiny_weights_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    save_file(dict(source_net.state_dict()), str(pkg / "encoder.safetensors"))
    info = site / "tiny_weights_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-weights-pkg\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("tiny_weights_pkg\n")
    (info / "RECORD").write_text(
        "tiny_weights_pkg/__init__.py,,\ntiny_weights_pkg/encoder.safetensors,,\ntiny_weights_pkg-1.0.dist-info/METADATA,,\n"
    )
    monkeypatch.syspath_prepend(str(site))
    target, _ = _load(PretrainedSpec(source="package:tiny-weights-pkg/encoder"))
    _assert_loaded(target, source_net)
    with pytest.raises(WeightsError, match="ships no weights named 'decoder'"):
        resolve_weights(PretrainedSpec(source="package:tiny-weights-pkg/decoder"))
    with pytest.raises(WeightsError, match="pip install 'no-such-weights-dist\\[x\\]'"):
        resolve_weights(PretrainedSpec(source="package:no-such-weights-dist/x"))
    sys.modules.pop("tiny_weights_pkg", None)


def test_mlflow_run_artifact(tmp_path, monkeypatch, source_net):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("weights", artifact_location=(tmp_path / "artifacts").as_uri())
    weights = tmp_path / "model.safetensors"
    save_file(dict(source_net.state_dict()), str(weights))
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifact(str(weights), artifact_path="checkpoints")
    target, report = _load(PretrainedSpec(source=f"runs:/{run.info.run_id}/checkpoints/model.safetensors"))
    _assert_loaded(target, source_net)
    target, _ = _load(PretrainedSpec(source=f"runs:/{run.info.run_id}/checkpoints"))  # a folder with one file
    _assert_loaded(target, source_net)
    with pytest.raises(WeightsError, match="cannot fetch the artifact"):
        resolve_weights(PretrainedSpec(source=f"runs:/{run.info.run_id}/absent.pt"))

    # the load report of a new run goes to MLflow
    with mlflow.start_run(experiment_id=experiment) as fine_tune_run:
        pass
    net, report = build_pretrained_network(
        "unet",
        in_channels=1,
        out_channels=2,
        params={"channels": [4, 8], "strides": [2], "num_res_units": 0},
        pretrained={"source": f"runs:/{run.info.run_id}/checkpoints/model.safetensors"},
    )
    _assert_loaded(net, source_net)
    report.log_to_mlflow(fine_tune_run.info.run_id, mlflow.get_tracking_uri())
    client = mlflow.MlflowClient()
    logged = client.get_run(fine_tune_run.info.run_id).data
    assert logged.metrics["pretrained/encoder_fraction"] == 1.0
    assert logged.tags["pretrained.source"].startswith("runs:/")
    files = {f.path for f in client.list_artifacts(fine_tune_run.info.run_id, "pretrained")}
    assert files == {"pretrained/load_report.json", "pretrained/load_report.txt"}
    mlflow.set_tracking_uri("")


def test_presets_expand_with_user_overrides(tmp_path, source_net):
    path = tmp_path / "w.safetensors"
    save_file({f"module.{k}": v for k, v in source_net.state_dict().items()}, str(path))
    register_preset(
        WeightPreset(
            "test-tiny-unet",
            str(path),
            "unet",
            sha256=sha256_of(path),
            mapping={"strip_prefix": ["module."], "min_encoder_fraction": 1.0},
        )
    )
    try:
        target, report = _load(PretrainedSpec(source="preset:test-tiny-unet"))
        _assert_loaded(target, source_net)
        assert report.source == "preset:test-tiny-unet"
        spec = expand_preset(PretrainedSpec(source="preset:test-tiny-unet", min_encoder_fraction=0.5))
        assert spec.min_encoder_fraction == 0.5 and spec.strip_prefix == ["module."]
        with pytest.raises(ConfigError, match="already registered"):
            register_preset(WeightPreset("test-tiny-unet", str(path), "unet"))
    finally:
        WEIGHT_PRESETS.unregister("test-tiny-unet")
    with pytest.raises(WeightsError, match="no verified sha256"):
        expand_preset(PretrainedSpec(source="preset:swinunetr-ssl"))
    assert (
        expand_preset(PretrainedSpec(source="preset:swinunetr-ssl", sha256="a" * 64)).rename[0].replace
        == "swinViT."
    )
    with pytest.raises(ConfigError, match="unknown weight preset"):
        resolve_weights(PretrainedSpec(source="preset:nope"))
