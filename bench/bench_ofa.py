"""`subnet-export onnx` against Once-for-All's own export route, OFA MobileNetV3 w1.0 at 224.

OFA's route: ``set_active_subnet(**arch)``, ``get_active_subnet(preserve_weight=True)`` and
``torch.onnx.export`` of that model with torch's defaults, same exporter (dynamo, TorchScript).
Ours: the whole ``subnet-export onnx`` job (freeze, materialize, export, validate, bundle). Both
start from one seeded OFA network, ours with its state dict loaded strictly into
``models/ofa.py``, and export the same archs (``sample_active_subnet``, seeds ``ARCH_SEEDS``).
Interleaved pairs (OFA, ours, ours, OFA, ...), medians and the median of per-pair ratios, twice:
in one process per stage (after an untimed warm-up of each route and exporter), and as whole
processes (``subnet-export onnx`` against ``bench/ofa_route.py``: start, imports, loading).
``BENCH_OFA_REPEATS`` (in-process pairs per arch, default 2), ``BENCH_OFA_PROCESS_REPEATS``
(default 1) and ``BENCH_OFA_THREADS`` (torch threads of both routes, default 1) size the run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["markdown", "render", "run"]

NAME = "ofa"
ROOT = Path(__file__).resolve().parents[1]
ARCH_SEEDS = (0, 1, 2)
EXPORTERS = ("dynamo", "torchscript")
REPEATS = int(os.environ.get("BENCH_OFA_REPEATS", "2"))
PROCESS_REPEATS = int(os.environ.get("BENCH_OFA_PROCESS_REPEATS", "1"))
#: torch threads of both routes (one: a neighbour's load on a shared machine disturbs less)
THREADS = int(os.environ.get("BENCH_OFA_THREADS", "1"))
SHAPE = (1, 3, 224, 224)
TARGET = 1.3


def _ofa_network() -> Any:
    """OFA's MobileNetV3 w1.0, seeded, BatchNorm statistics estimated on its own sampled paths
    (mean 0 and variance 1 do not fit a 20-block net's activations)."""
    import random
    import types

    import torch

    sys.modules.setdefault("ofa.utils.my_dataloader", types.ModuleType("ofa.utils.my_dataloader"))
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = OFAMobileNetV3(ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                             depth_list=[2, 3, 4], width_mult=1.0)
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for bn in bns:
            bn.momentum = None  # cumulative average over the paths
        net.train()
        state = random.getstate()
        with torch.no_grad():
            for seed in range(3):
                random.seed(seed)
                net.sample_active_subnet()
                net(torch.randn(8, 3, 64, 64))
        random.setstate(state)
        for bn in bns:
            bn.momentum = 0.1
    return net.eval()


def _archs(net: Any) -> list[dict[str, list[int]]]:
    """OFA's own samples (``sample_active_subnet``), one per seed of ``ARCH_SEEDS``."""
    import random

    state, out = random.getstate(), []
    for seed in ARCH_SEEDS:
        random.seed(seed)
        sampled = net.sample_active_subnet()
        out.append({k: list(sampled[k]) for k in ("ks", "e", "d")})
    random.setstate(state)
    return out


def _ofa_route(net: Any, arch: dict[str, list[int]], exporter: str,
               path: Path) -> dict[str, float]:
    """OFA's route in this process: the subnet, then ``torch.onnx.export`` with its defaults."""
    import contextlib
    import io
    import warnings

    import torch

    start = time.perf_counter()
    net.set_active_subnet(ks=arch["ks"], e=arch["e"], d=arch["d"])
    sub = net.get_active_subnet(preserve_weight=True).eval()
    mid = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(sub, (torch.randn(*SHAPE),), str(path), dynamo=exporter == "dynamo")
    end = time.perf_counter()
    return {"subnet": mid - start, "export": end - mid, "total": end - start}


def _our_route(ours: Any, arch: dict[str, list[int]], exporter: str,
               out: Path) -> dict[str, Any]:
    """``export_subnet`` (what ``subnet-export onnx`` runs), its stage timings and wall time."""
    from subnet_export.pipeline import export_subnet

    start = time.perf_counter()
    result = export_subnet(ours, out, input_shapes=[SHAPE], arch=arch, exporter=exporter,
                           force=True)
    total = time.perf_counter() - start
    return {**result.timings, "total": total, "passed": result.report.passed}


def _pairs(first: Any, second: Any, repeats: int, start: int = 0) -> tuple[list[Any], list[Any]]:
    """Run ``first`` and ``second`` ``repeats`` times each, alternating which goes first
    (``start`` shifts the alternation, so that with one repeat per arch the archs alternate)."""
    a, b = [], []
    for rep in range(repeats):
        if (start + rep) % 2 == 0:
            a.append(first(rep))
            b.append(second(rep))
        else:
            b.append(second(rep))
            a.append(first(rep))
    return a, b


def measure_in_process(repeats: int = REPEATS) -> dict[str, Any]:
    """Both routes in this process, interleaved, per arch and exporter."""
    from models.ofa import mobilenetv3_w10

    net = _ofa_network()
    ours = mobilenetv3_w10()
    ours.load_state_dict(net.state_dict(), strict=True)
    ours.eval()
    archs = _archs(net)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ofa-") as tmp:
        work = Path(tmp)

        def ofa(arch: dict[str, Any], exporter: str) -> Any:
            return lambda rep: _ofa_route(net, arch, exporter, work / f"ofa-{rep}.onnx")

        def mine(arch: dict[str, Any], exporter: str) -> Any:
            return lambda rep: _our_route(ours, arch, exporter, work / f"bundle-{exporter}-{rep}")

        for exporter in EXPORTERS:
            _pairs(ofa(archs[0], exporter), mine(archs[0], exporter), 1)  # warm-up, untimed
            runs = []
            for k, arch in enumerate(archs):
                a, b = _pairs(ofa(arch, exporter), mine(arch, exporter), repeats, k)
                runs += [{"arch": k, "ofa": x, "ours": y} for x, y in zip(a, b)]
            out[exporter] = _summary(runs)
    return {"archs": archs, "repeats": repeats, "exporters": out}


def _run_json(cmd: list[str]) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{"):]), wall


def _process_routes(work: Path, arch_file: str, exporter: str) -> tuple[Any, Any]:
    """(OFA's script, ``subnet-export onnx``) as processes on one arch file, each timed whole."""
    cli = str(Path(sys.executable).with_name("subnet-export"))

    def ofa(rep: int) -> dict[str, Any]:
        stages, wall = _run_json([sys.executable, str(ROOT / "bench" / "ofa_route.py"),
                                  str(work / "ofa.pth"), arch_file,
                                  str(work / f"ofa-{rep}.onnx"), exporter])
        return {**stages, "total": wall}

    def mine(rep: int) -> dict[str, Any]:
        summary, wall = _run_json([
            cli, "onnx", f"{ROOT / 'models' / 'ofa.py'}:mobilenetv3_w10", "--weights",
            str(work / "ofa.pth"), "--arch", arch_file, "--out", str(work / f"bundle-{rep}"),
            "--force", "--input-shape", "x".join(map(str, SHAPE)), "--exporter", exporter,
            "--json"])
        return {**summary["timings_s"], "total": wall, "passed": summary["passed"]}

    return ofa, mine


def measure_processes(repeats: int = PROCESS_REPEATS) -> dict[str, Any]:
    """``subnet-export onnx`` processes against OFA script processes, interleaved."""
    import torch

    net = _ofa_network()
    archs = _archs(net)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ofa-proc-") as tmp:
        work = Path(tmp)
        torch.save({"state_dict": net.state_dict()}, work / "ofa.pth")
        for k, arch in enumerate(archs):
            (work / f"arch{k}.json").write_text(json.dumps(arch), encoding="utf-8")
        for exporter in EXPORTERS:
            runs = []
            for k in range(len(archs)):
                a, b = _pairs(*_process_routes(work, str(work / f"arch{k}.json"), exporter),
                              repeats, k)
                runs += [{"arch": k, "ofa": x, "ours": y} for x, y in zip(a, b)]
            out[exporter] = _summary(runs)
    return {"repeats": repeats, "exporters": out}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per stage, the ratio of medians and the median of the per-pair ratios."""
    def medians(side: str) -> dict[str, float]:
        keys = [k for k in runs[0][side] if k != "passed"]
        return {k: statistics.median(r[side][k] for r in runs) for k in keys}

    pair_ratios = [r["ours"]["total"] / r["ofa"]["total"] for r in runs]
    per_arch = {}
    for k in sorted({r["arch"] for r in runs}):
        mine = [r["ours"]["total"] / r["ofa"]["total"] for r in runs if r["arch"] == k]
        per_arch[str(k)] = statistics.median(mine)
    ofa, ours = medians("ofa"), medians("ours")
    return {"runs": runs, "ofa_median_s": ofa, "ours_median_s": ours,
            "ratio_of_medians": ours["total"] / ofa["total"],
            "median_pair_ratio": statistics.median(pair_ratios),
            "pair_ratio_range": [min(pair_ratios), max(pair_ratios)],
            "per_arch_ratio": per_arch,
            "all_passed": all(r["ours"].get("passed", False) for r in runs)}


def run() -> dict[str, Any]:
    """Measure; the runner writes ``bench/results/ofa.json``."""
    import torch

    from . import machine
    from .export_common import ort_versions

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return {"machine": {**machine(), "export_stack": ort_versions(), "torch_threads": THREADS},
                "in_process": measure_in_process(), "processes": measure_processes()}
    finally:
        torch.set_num_threads(threads)


def _table(title: str, data: dict[str, Any]) -> list[str]:
    lines = [f"**{title}** (medians, seconds)", "",
             "| exporter | OFA route | ours | ours by stage | ratio (median of pairs) | "
             "ratio range | per arch |", "|---|---:|---:|---|---:|---|---|"]
    for exporter, e in data["exporters"].items():
        o, m = e["ofa_median_s"], e["ours_median_s"]
        ofa_cells = ", ".join(f"{k} {v:.2f}" for k, v in o.items() if k != "total")
        stages = ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "total")
        low, high = e["pair_ratio_range"]
        arch = ", ".join(f"x{v:.2f}" for v in e["per_arch_ratio"].values())
        lines.append(f"| {exporter} | {o['total']:.2f} ({ofa_cells}) | {m['total']:.2f} | "
                     f"{stages} | **x{e['median_pair_ratio']:.2f}** | x{low:.2f} to x{high:.2f} "
                     f"| {arch} |")
    return lines + [""]


def render(results: dict[str, Any]) -> str:
    """The markdown section: both measurements, ratios against OFA's route."""
    m = results["machine"]
    inp, proc = results["in_process"], results["processes"]
    lines = [
        "## `subnet-export onnx` against Once-for-All's own route (OFA MobileNetV3 w1.0, 224)",
        "",
        f"Machine: {m['cpu']}, {m['nproc']} cores, shared with other jobs while measuring; "
        f"{m['date']}; torch {m['versions']['torch']} ({m.get('torch_threads', 'default')} "
        f"thread(s) in both routes), onnx {m['export_stack']['onnx']}, "
        f"onnxruntime {m['export_stack']['onnxruntime']}. `BENCH_OFA_REPEATS={inp['repeats']} "
        f"BENCH_OFA_PROCESS_REPEATS={proc['repeats']} python -m bench ofa`. OFA's route: "
        "`set_active_subnet`, `get_active_subnet(preserve_weight=True)`, `torch.onnx.export` "
        "with torch's defaults (static batch; dynamo also runs its ONNX optimiser). Ours: every "
        "stage, validation (supernet path, float64 oracle, plain torch, onnxruntime at batch 1 "
        "and 8) and the bundle included; a symbolic batch. "
        f"{len(inp['archs'])} archs (`sample_active_subnet`, seeds {list(ARCH_SEEDS)}), "
        f"{inp['repeats']} interleaved pairs per arch in-process, {proc['repeats']} per arch "
        f"as processes. Target: x{TARGET} at most.",
        "",
    ]
    lines += _table("In one process", inp)
    lines += _table("Whole processes (`subnet-export onnx` vs an OFA script; imports and "
                    "checkpoint loading included)", proc)
    passed = all(e["all_passed"] for d in (inp, proc) for e in d["exporters"].values())
    lines.append(f"Parity passed on every run of ours: {passed}.")
    return "\n".join(lines) + "\n"


markdown = render  # the name ``python -m bench`` looks for


if __name__ == "__main__":  # same as `python -m bench NAME`
    from .__main__ import main

    raise SystemExit(main([NAME]))
