"""I/O speed: medimg vs SimpleITK / a naive pydicom loop (DICOM) and nibabel (NIfTI), same run.

Writes a synthetic uncompressed CT series (default 500 slices of 512x512, int16 with
rescale) and the same volume as .nii.gz into a temp folder, then times, best of
``--repeat`` runs with a warm page cache:

* DICOM series -> float32 volume: ``medimg.io.load.load_image(folder)`` (discovery,
  header reads, sort by position, rescale) vs ``SimpleITK.ImageSeriesReader`` (GDCM
  file names + Execute + float32 array) vs a naive pydicom loop (dcmread every file,
  sort, stack ``pixel_array``, rescale).
* ``.nii.gz`` -> float32 array: ``medimg.io.load.load_image`` vs
  ``nibabel.load(path).get_fdata(dtype=np.float32)`` (the same output type, so the
  ratio measures reading, not a float64 conversion).

Prints each time and the ratios (baseline time / medimg time). Run:
``python benchmarks/bench_io.py [--slices 500] [--size 512] [--repeat 3] [--markdown]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def make_data(root: Path, slices: int, size: int) -> tuple[Path, Path]:
    import nibabel as nib

    from medimg.io.dicom.write import write_series
    from medimg.io.volume import Volume

    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    base = (np.hypot(i - size / 2, j - size / 2) < size * 0.4) * 1000 - 1000
    data = np.empty((size, size, slices), np.int16)
    for k in range(slices):
        data[:, :, k] = base + rng.integers(-20, 20, size=(size, size)) + k % 50
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])
    vol = Volume(data, affine, "RAS")
    write_series(vol, root / "ct", rescale=(1.0, -1024.0), shuffle_names=True)
    nii = root / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), nii)
    return root / "ct", nii


def sitk_series(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute()).astype(np.float32)


def naive_pydicom(folder: Path) -> np.ndarray:
    import pydicom

    datasets = [pydicom.dcmread(p) for p in folder.iterdir()]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    stack = np.stack([ds.pixel_array for ds in datasets]).astype(np.float32)
    return stack * float(datasets[0].RescaleSlope) + float(datasets[0].RescaleIntercept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=500)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--markdown", action="store_true", help="print a markdown table for docs/benchmarks.md"
    )
    args = parser.parse_args(argv)

    import nibabel as nib

    from medimg.io.load import load_image

    with tempfile.TemporaryDirectory(prefix="bench_io_") as tmp:
        folder, nii = make_data(Path(tmp), args.slices, args.size)
        ours_t, ours = best_of(lambda: load_image(folder).data, args.repeat)
        sitk_t, ref = best_of(lambda: sitk_series(folder), args.repeat)
        naive_t, naive = best_of(lambda: naive_pydicom(folder), args.repeat)
        assert np.array_equal(ours, ref.transpose(2, 1, 0)) and np.array_equal(ours, naive.transpose(2, 1, 0))
        nii_t, vol = best_of(lambda: load_image(nii).data, args.repeat)
        nib_t, ref_nii = best_of(lambda: nib.load(str(nii)).get_fdata(dtype=np.float32), args.repeat)
        assert np.array_equal(vol, ref_nii)

    shape = f"{args.size}x{args.size}x{args.slices}"
    rows = [
        (f"DICOM series {shape} int16 -> float32", "SimpleITK ImageSeriesReader", sitk_t, ours_t),
        (f"DICOM series {shape} int16 -> float32", "naive pydicom loop", naive_t, ours_t),
        (f".nii.gz {shape} int16 -> float32", "nibabel load().get_fdata(dtype=float32)", nib_t, nii_t),
    ]
    machine = f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}"
    if args.markdown:
        print(f"Machine: {machine}; best of {args.repeat}, warm page cache.\n")
        print("| task | baseline | baseline s | medimg s | ratio |")
        print("|---|---|---|---|---|")
        for task, name, base, ours_s in rows:
            print(f"| {task} | {name} | {base:.3f} | {ours_s:.3f} | {base / ours_s:.2f}x |")
    else:
        print(machine)
        for task, name, base, ours_s in rows:
            print(f"{task}: medimg {ours_s:.3f}s vs {name} {base:.3f}s -> {base / ours_s:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
