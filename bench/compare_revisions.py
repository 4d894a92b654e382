"""Pipeline cost of this tree against another revision, side by side on one machine.

``python -m bench.compare_revisions [--baseline REV] [--rounds N]`` checks ``REV`` out into a
temporary git worktree, then runs the same script in fresh processes for either tree, alternating
(``baseline, current, baseline, current, ...``), so both see the same machine state. Each process
builds one case and runs ``export_subnet`` ``1 + REPEATS`` times (the first one warms torch's
caches and is dropped); the figure per stage is the median over every kept run of every round.
Writes ``bench/results/revisions.json`` and its section of docs/benchmarks.md. Nothing here is
asserted: it is a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["markdown", "run"]

NAME = "revisions"
ROOT = Path(__file__).resolve().parent.parent
#: the last revision before the package moved to one folder per stage
DEFAULT_BASELINE = "6541a93"
REPEATS = 3
CASES = {
    "demo (MobileNetV3 0.25x, 32x32)": dict(width_mult=0.25, num_classes=10, resolution=32,
                                            arch="demo.json"),
    "MobileNetV3-Large (224x224)": dict(width_mult=1.0, num_classes=1000, resolution=224,
                                        arch="mobilenetv3_large.json"),
}

_WORKER = r"""
import json, sys, tempfile, time, torch
from pathlib import Path
import subnet_export as se
from models import get_space
from subnet_export.pipeline import export_subnet

case = json.loads(sys.argv[1])
torch.set_num_threads(1)
arch_file = case.pop("arch")
res = case["resolution"]
net = get_space("mobilenetv3").build(calib_steps=0, **case)
arch = se.load_arch(Path("models/archs") / arch_file)
runs = []
with tempfile.TemporaryDirectory() as tmp:
    for k in range(1 + int(sys.argv[2])):
        start = time.perf_counter()
        out = export_subnet(net, Path(tmp) / f"b{k}", input_shapes=[(1, 3, res, res)], arch=arch,
                            providers=["CPUExecutionProvider"])
        wall = time.perf_counter() - start
        runs.append({**out.timings, "wall": wall, "passed": out.report.passed})
print(json.dumps({"file": se.__file__, "runs": runs[1:]}))
"""


def _worker(tree: Path, case: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", _WORKER, json.dumps(case), str(REPEATS)],
                          cwd=tree, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"the worker failed in {tree}:\n{proc.stderr[-3000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    if not data["file"].startswith(str(tree)):  # the tree under test, not an installed copy
        raise RuntimeError(f"{tree} ran {data['file']}")
    return data


def run(baseline: str = DEFAULT_BASELINE, rounds: int = 3) -> dict[str, Any]:
    """Measure every case on both trees; return the raw runs and the medians."""
    from bench import machine

    result: dict[str, Any] = {"machine": machine(), "baseline": baseline, "rounds": rounds,
                              "repeats": REPEATS, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="revisions-") as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), baseline],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            for label, case in CASES.items():
                runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
                for _ in range(rounds):
                    for which, tree in (("baseline", worktree), ("current", ROOT)):
                        runs[which] += _worker(tree, dict(case))["runs"]
                        print(f"  {label}: {which} round done", file=sys.stderr, flush=True)
                result["cases"][label] = {"runs": runs, "median_s": {
                    which: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "passed"}
                    for which, rs in runs.items()}}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT,
                           check=False, capture_output=True)
    return result


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "## The stage layout against the revision before it",
        "",
        f"Machine: {m['cpu']}, {m['nproc']} cores; {m['date']}; torch "
        f"{m['versions']['torch']}. Baseline `{result['baseline']}` (before one folder per stage "
        "and the work done once) against this tree, `export_subnet` with the dynamo exporter on "
        f"onnxruntime CPU, one torch thread; {result['rounds']} alternating rounds of a fresh "
        f"process per tree, {result['repeats']} timed runs each after one warm-up; medians in "
        "seconds, ratio = this tree / baseline. `python -m bench.compare_revisions`.",
        "",
        "| case | tree | freeze | materialize | export | validate | bundle | wall |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("freeze", "materialize", "export", "validate", "bundle", "wall")
    for label, case in result["cases"].items():
        base, cur = case["median_s"]["baseline"], case["median_s"]["current"]
        lines.append(f"| {label} | baseline | " + " | ".join(f"{base[k]:.3f}" for k in keys) + " |")
        lines.append("| | this tree | " + " | ".join(
            f"{cur[k]:.3f} (x{cur[k] / base[k]:.2f})" for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare_revisions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    from bench import RESULTS, update_docs

    result = run(args.baseline, args.rounds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n",
                                          encoding="utf-8")
    if not args.no_docs:
        update_docs(NAME, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
