"""Fixtures for inference tests: oblique DICOM source series, dciodvfy, a real Orthanc PACS."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medimg.io.volume import Volume

ORTHANC_BINARIES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
DICOMWEB_PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)


def missing(what: str) -> None:
    """Skip locally, fail under CI (CI must run every test)."""
    message = f"{what} is not available"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (required under CI=true)")
    pytest.skip(message)


def oblique_affine() -> np.ndarray:
    """LPS affine: rotated about all three axes, anisotropic (0.8 x 1.1 x 2.5 mm)."""
    from scipy.spatial.transform import Rotation

    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [15, -10, 25], degrees=True).as_matrix() @ np.diag(
        [0.8, 1.1, 2.5]
    )
    affine[:3, 3] = [-20.0, 10.0, 30.0]
    return affine


def phantom_mask(shape: tuple[int, int, int] = (16, 12, 7)) -> np.ndarray:
    """Asymmetric label map: label 1 a box, label 3 a small off-centre block in one slice."""
    mask = np.zeros(shape, np.uint8)
    mask[3:9, 2:5, 1:4] = 1
    mask[10:12, 8:10, shape[2] - 2] = 3
    return mask


@dataclass
class SourceSeries:
    """A written CT series, its headers in random order and the phantom behind it."""

    folder: Path
    files: list[Path]
    datasets: list[pydicom.Dataset]
    volume: Volume  # LPS, voxel (column, row, slice) in slice order along the normal
    mask: np.ndarray


def make_series(folder: Path, *, seed: int = 0) -> SourceSeries:
    """Write an oblique, anisotropic CT series with shuffled file names from a phantom."""
    from medimg.io.dicom.write import write_series

    mask = phantom_mask()
    data = np.where(mask > 0, 60 + 40 * mask.astype(np.int16), -800).astype(np.int16)
    volume = Volume(data, oblique_affine(), "LPS")
    files = write_series(volume, folder, shuffle_names=True, rescale=(1.0, -1024.0))
    rng = np.random.default_rng(seed)
    datasets = [pydicom.dcmread(files[i]) for i in rng.permutation(len(files))]
    return SourceSeries(folder, files, datasets, volume, mask)


@pytest.fixture
def source_series(tmp_path: Path) -> SourceSeries:
    return make_series(tmp_path / "series")


@pytest.fixture
def series_factory(tmp_path: Path) -> Callable[[str], SourceSeries]:
    """Make more source series: ``series_factory("name")`` writes one under ``tmp_path/name``."""
    return lambda name: make_series(tmp_path / name, seed=len(name))


@pytest.fixture(scope="session")
def dciodvfy() -> Callable[[Path], list[str]]:
    """``dciodvfy(path)`` -> the lines of the validator's output that report an error."""
    binary = shutil.which("dciodvfy")
    if binary is None:
        missing("dciodvfy (Debian package dicom3tools)")

    def errors(path: Path) -> list[str]:
        result = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)
        return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]

    return errors


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: DICOMweb root URL and the credentials a client takes from the environment."""

    url: str
    rest_url: str
    user: str
    password: str

    def env(self) -> dict[str, str]:
        return {"MEDIMG_PACS_USER": self.user, "MEDIMG_PACS_PASSWORD": self.password}


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Start a real Orthanc with the DICOMweb plugin on loopback ports; stop it afterwards."""
    binary = next((b for b in ORTHANC_BINARIES if Path(b).exists()), shutil.which("Orthanc"))
    plugin = next((p for p in DICOMWEB_PLUGINS if Path(p).exists()), None)
    if binary is None or plugin is None:
        missing("Orthanc with the DICOMweb plugin (Debian packages orthanc, orthanc-dicomweb)")
    import requests

    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = _free_port(), _free_port()
    password = secrets.token_hex(12)
    config = {
        "Name": "medimg-test",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "MEDIMGTEST",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"medimg": password},
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "HttpThreadsCount": 4,
        "ConcurrentJobs": 1,
        "SaveJobs": False,
        "StableAge": 1,
    }
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log_file = open(root / "orthanc.log", "wb")  # noqa: SIM115 - closed after the process stops
    proc = subprocess.Popen([binary, str(config_path)], stdout=log_file, stderr=subprocess.STDOUT, cwd=root)
    rest_url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with code {proc.returncode}: {(root / 'orthanc.log').read_text()[-2000:]}"
                )
            try:
                r = requests.get(f"{rest_url}/dicom-web/studies", auth=("medimg", password), timeout=2)
                if r.status_code in (200, 204):
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Orthanc did not answer within 60 s: {(root / 'orthanc.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield Orthanc(f"{rest_url}/dicom-web", rest_url, "medimg", password)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
