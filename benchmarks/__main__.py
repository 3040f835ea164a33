"""``python -m benchmarks [--quick] [--only NAME] [--markdown]``: run every benchmark, print one table.

Every ``benchmarks/bench_*.py`` module with a ``run(quick: bool) -> list[dict]``
function is run (its ``NAME``, or the file name without ``bench_``, selects it with
``--only``). Each row is a medimg figure, a named baseline measured in the same run on
the same data and model, and the ratio (> 1: medimg is better), with the peak memory of
both. The table is printed and written as JSON to ``benchmarks/results/`` (the run's
timestamped file and ``latest.json``). A benchmark that fails is reported and the
others go on; the exit code is the number of failed benchmarks. Each benchmark runs in
its own Python process, so its peak memory is not inflated by the one before.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORDER = ("train", "infer", "cohort", "onnx")  # ours first, then the others' in file order


def discover() -> dict[str, Any]:
    """``{name: module}`` for every ``bench_*.py`` next to this file."""
    found = {}
    for path in sorted(HERE.glob("bench_*.py")):
        module = importlib.import_module(f"benchmarks.{path.stem}")
        found[getattr(module, "NAME", path.stem[len("bench_") :])] = module
    return dict(
        sorted(found.items(), key=lambda kv: (ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER), kv[0]))
    )


def _is_file_module(mod: Any) -> bool:
    return bool(getattr(mod, "__file__", None)) and Path(mod.__file__).resolve().parent == HERE


def _run_isolated(module: str, quick: bool) -> list[dict[str, Any]]:
    """``module.run(quick)`` in a fresh interpreter, so each benchmark's peak memory is its own."""
    with tempfile.TemporaryDirectory(prefix="bench_rows_") as tmp:
        out = Path(tmp) / "rows.json"
        code = (
            "import json, sys; from importlib import import_module; "
            f"rows = import_module({module!r}).run(quick={quick!r}); "
            "open(sys.argv[1], 'w').write(json.dumps(rows, default=str))"
        )
        proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=HERE.parent)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"{module}.run exited with code {proc.returncode} (its traceback is above)")
        return json.loads(out.read_text())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)


def _check(r: dict[str, Any]) -> str:
    parts = []
    for key in ("max_abs_diff_probs", "max_abs_diff_logits", "mask_voxels_differing", "masks_identical"):
        if key in r:
            parts.append(f"{key}={_fmt(r[key])}")
    return ", ".join(parts)


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The rows as a plain-text (or markdown) table.

    Example:
        >>> print(table([{"benchmark": "x", "task": "t", "unit": "s", "medimg": 1.0, "baseline_name": "b",
        ...               "baseline": 2.0, "ratio": 2.0, "goal": None}], markdown=True).splitlines()[2])
        | x | t | 1 s | b | 2 s | 2.00x |  |  |  |
    """
    head = [
        "benchmark",
        "task",
        "medimg",
        "baseline",
        "baseline figure",
        "ratio",
        "goal",
        "peak MiB medimg / baseline",
        "check",
    ]
    body = []
    for r in rows:
        verdict = {True: "met", False: "NOT met", None: "(not judged: --quick)"}[r.get("goal_met")]
        goal = "" if r.get("goal") is None else f">= {r['goal']:g}x {verdict}"
        peak = ""
        if "peak_rss_mib_medimg" in r:
            base = r.get("peak_rss_mib_baseline")
            peak = f"{r['peak_rss_mib_medimg']:.0f} / " + ("-" if base is None else f"{base:.0f}")
        unit = r.get("unit", "")
        body.append(
            [
                r.get("benchmark", ""),
                r.get("task", ""),
                f"{_fmt(r.get('medimg'))} {unit}",
                r.get("baseline_name", ""),
                f"{_fmt(r.get('baseline'))} {unit}",
                f"{r['ratio']:.2f}x" if isinstance(r.get("ratio"), float) else _fmt(r.get("ratio")),
                goal,
                peak,
                _check(r),
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(map(str, b)) + " |" for b in body])
    widths = [min(60, max(len(str(x)) for x in col)) for col in zip(head, *body, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*[str(x)[:60] for x in line]) for line in [head, *body])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print the table; write JSON; return the number of failed benchmarks."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one repeat (a smoke run)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this benchmark (repeatable), e.g. train, infer, cohort, onnx, io",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    from benchmarks.common import machine

    modules = discover()
    if args.list:
        for name, mod in modules.items():
            runnable = callable(getattr(mod, "run", None))
            print(f"{name}: {mod.__name__}{'' if runnable else ' (no run(quick) function: not run)'}")
        return 0
    unknown = [n for n in args.only if n not in modules]
    if unknown:
        parser.error(f"--only {', '.join(unknown)}: unknown; benchmarks are {', '.join(modules)}")
    rows: list[dict[str, Any]] = []
    skipped, failed = [], []
    for name, mod in modules.items():
        if args.only and name not in args.only:
            continue
        fn = getattr(mod, "run", None)
        if not callable(fn):
            skipped.append(f"{name}: {mod.__name__} has no run(quick) function")
            continue
        print(f"running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            got = _run_isolated(mod.__name__, args.quick) if _is_file_module(mod) else fn(quick=args.quick)
        except Exception as exc:  # one broken benchmark does not take the table down
            traceback.print_exc()
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        for r in got:
            r.setdefault("benchmark", name)
            r["bench_wall_s"] = round(time.perf_counter() - t0, 1)
            if args.quick:  # smoke sizes: a ratio, but not the one a goal is about
                r["goal_met"] = None
        rows += got
    info = machine()
    print(
        f"machine: {info.get('cpu')}, {info.get('nproc')} CPUs, {info.get('mem_gib')} GiB, torch "
        f"{info.get('torch')}, MONAI {info.get('monai')}, load average {info.get('load_avg')}; {info['date']}"
    )
    print(table(rows, args.markdown))
    for s in skipped:
        print(f"skipped {s}")
    for f in failed:
        print(f"FAILED {f}")
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": info, "quick": args.quick, "rows": rows, "skipped": skipped, "failed": failed}
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    text = json.dumps(doc, indent=2, default=str)
    for target in (args.out / f"{stamp}{'-quick' if args.quick else ''}.json", args.out / "latest.json"):
        tmp = target.with_suffix(".json.part")
        tmp.write_text(text)
        tmp.replace(target)
    print(f"results: {args.out / 'latest.json'}")
    return len(failed)


if __name__ == "__main__":
    raise SystemExit(main())
