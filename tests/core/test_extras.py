"""The core install works without the optional extras; a missing extra is a one-line error naming it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from medimg.errors import ConfigError
from medimg.extras import EXTRAS, require

#: Packages that are not part of the core install (extras and development tools).
NOT_CORE = (*sorted({m.split(".")[0] for m in EXTRAS}), "SimpleITK", "skimage", "dcm2niix", "dicomanonymizer")

_BLOCK = textwrap.dedent(
    """
    import sys
    # A None entry makes `import name` fail and importlib.util.find_spec(name) return None,
    # exactly as for a package that is not installed.
    BLOCKED = set(sys.argv[1].split(","))
    for _name in BLOCKED:
        sys.modules[_name] = None
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK + textwrap.dedent(code), ",".join(NOT_CORE)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_every_module_imports_without_the_extras() -> None:
    res = _run(
        """
        import importlib, pkgutil, medimg
        names = [m.name for m in pkgutil.walk_packages(medimg.__path__, "medimg.") if m.name != "medimg.__main__"]
        for name in names:
            importlib.import_module(name)
        for blocked in BLOCKED:
            assert sys.modules[blocked] is None, f"{blocked} was imported by the core"
        print(len(names))
        """
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert int(res.stdout.split()[-1]) > 100  # every module was walked, not an empty package


def test_missing_extra_names_the_pip_command() -> None:
    res = _run(
        """
        from medimg.errors import ConfigError
        from medimg.inference.onnx_export import OnnxNetwork
        try:
            OnnxNetwork("model.onnx")
        except ConfigError as exc:
            print(exc)
        """
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "pip install 'medimg[onnx]'" in res.stdout and "onnxruntime" in res.stdout


def test_require_returns_the_module_or_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require("json", "reading JSON").dumps([1]) == "[1]"
    monkeypatch.setitem(EXTRAS, "medimg_absent_module", ("pacs", "absent-dist"))
    with pytest.raises(ConfigError, match=r"querying a PACS needs .*'absent-dist'.*medimg\[pacs\]"):
        require("medimg_absent_module.api", "querying a PACS")
