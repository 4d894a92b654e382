"""The verdict study: false failures and fault detection of the old and the new parity rule.

``python -m bench.verdict_study [--quick]`` from the repository root writes
``bench/results/verdict_study.json`` and its section of ``docs/parity.md``.

- **False failures.** Every zoo space x (smallest, largest, 20 seeded random archs) x candidate
  backends that stand in for other hardware: the plain model in torch, and onnxruntime CPU at
  graph optimisation levels disabled / basic / all, with 1 and 2 intra-op threads, on the dynamo
  and the TorchScript export. All of it is run three times, in fresh processes under
  ``ATEN_CPU_CAPABILITY`` unset (this CPU's best kernels), ``avx2`` and ``default`` (torch's
  switch of CPU kernels), so the reference, the oracle and the torch candidate change kernels.
  Every one of these models is correct: any failure is a false failure.
- **Detection.** Faults injected into the plain model (judged on torch) and into the ONNX
  initializers (judged on onnxruntime): one weight element changed by 1e-2 / 1e-3 / 1e-4 of that
  tensor's scale (its largest magnitude), one output channel or a whole tensor scaled by
  1 + 1e-2 / 1e-3 / 1e-4, two output channels swapped, one BatchNorm running_var channel scaled,
  a BatchNorm eps x10, a kernel transposed, and a wrong slice (the supernet's next k channels
  instead of the first k). Each fault's *effect* is how far it moves the output, in units of the
  float32 noise floor: ``||faulty - clean|| / max(||ref - oracle||, u ||oracle||)``.

Both rules are judged on the same arrays. Old: elementwise ``|c - r| <= 1e-5 + 1e-4 |r| +
2 |r - plain64|`` (the slack only once torch passed the plain rule; its oracle is the plain
model in float64). New: ``rule.noise_check`` with the default factor (the supernet path in
float64 is the oracle, norms pooled over the input sets).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["markdown", "run"]

NAME = "verdict_study"
CAPABILITIES = ("native", "avx2", "default")
N_RANDOM = 20
BATCHES = (1, 8)
OPT_LEVELS = ("disabled", "basic", "all")
THREADS = (1, 2)
EXPORTERS = ("dynamo", "torchscript")
SIZES = (1e-2, 1e-3, 1e-4)
DETECT_ARCHS = ("smallest", "largest", "random0", "random1")
TENSORS_PER_CLASS = 3
OLD = {"atol": 1e-5, "rtol": 1e-4, "slack": 2.0}
ROOT = Path(__file__).resolve().parent.parent
PARITY_DOC = ROOT / "docs" / "parity.md"


# -- the two rules ---------------------------------------------------------------------------------
def old_rule(cands: list[np.ndarray], refs: list[np.ndarray], plain64: list[np.ndarray],
             slack: float) -> tuple[bool, float]:
    """The previous verdict on one output over the input sets; (passed, worst excess over atol)."""
    worst = 0.0
    for c, r, o in zip(cands, refs, plain64):
        c, r, o = (np.asarray(a, np.float64) for a in (c, r, o))
        if not (np.isfinite(c).all() and np.isfinite(r).all()):
            return False, float("inf")
        excess = np.abs(c - r) - OLD["rtol"] * np.abs(r) - slack * np.abs(r - o)
        worst = max(worst, float(excess.max(initial=0.0)))
    return worst <= OLD["atol"], worst


def new_rule(cands: list[np.ndarray], refs: list[np.ndarray],
             oracle: list[np.ndarray]) -> tuple[bool, float, float]:
    """The noise rule on one output; (passed, ratio, floor)."""
    from subnet_export.parity.rule import DEFAULT_NOISE_FACTOR, noise_check

    check = noise_check("y", cands, refs, oracle, DEFAULT_NOISE_FACTOR)
    return check.passed, check.ratio, check.floor


def pooled_distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)
                             for x, y in zip(a, b))))


# -- one arch: reference, oracles, candidates ------------------------------------------------------
def _first(out: Any) -> Any:
    return out if not isinstance(out, (tuple, list)) else out[0]


def _run(model: Any, inputs: list[Any], double: bool = False) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [_first(model(x.double() if double else x)).numpy() for x in inputs]


class Arch:
    """One arch of one space: its plain model, inputs, reference and both oracles."""

    def __init__(self, space: str, case: str, net: Any) -> None:
        import torch

        import subnet_export as se
        from models import extreme_arch, get_space

        self.space, self.case, self.net = space, case, net
        if case in ("smallest", "largest"):
            self.arch = se.freeze(net, extreme_arch(net, "min" if case == "smallest" else "max"))
        else:
            self.arch = se.sample_arch(net, int(case.removeprefix("random")))
        self.plain = se.materialize(net, self.arch).eval()
        shape = get_space(space).input_shape
        gen = torch.Generator().manual_seed(0)
        self.inputs = [torch.randn(b, *shape[1:], generator=gen) for b in BATCHES]
        self.example = self.inputs[0]
        with se.fixed_arch(net, self.arch):
            self.ref = _run(net, self.inputs)
        net64 = copy.deepcopy(net).double()
        with se.fixed_arch(net64, self.arch):
            self.oracle = _run(net64, self.inputs, double=True)
        self.plain64 = _run(copy.deepcopy(self.plain).double(), self.inputs, double=True)
        self.floor = new_rule(self.ref, self.ref, self.oracle)[2]

    def judge(self, cands: list[np.ndarray], where: str, plain64: list[np.ndarray] | None = None,
              ) -> dict[str, Any]:
        """Both verdicts for one candidate; ``where`` is ``torch`` (strict old rule) or ``ort``."""
        new_pass, ratio, _ = new_rule(cands, self.ref, self.oracle)
        old_pass, excess = old_rule(cands, self.ref, plain64 or self.plain64,
                                    0.0 if where == "torch" else OLD["slack"])
        return {"new": new_pass, "ratio": ratio, "old": old_pass, "old_excess": excess}

    def onnx_path(self, cache: Path, exporter: str) -> Path:
        import subnet_export as se

        path = cache / f"{self.space}-{self.case}-{exporter}.onnx"
        if not path.is_file():
            se.export_onnx(self.plain, self.example, path, exporter=exporter, arch=self.arch)
        return path


def _session(model: Any, level: str, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _ort(session: Any, inputs: list[Any]) -> list[np.ndarray]:
    name = session.get_inputs()[0].name
    return [session.run(None, {name: x.numpy()})[0] for x in inputs]


# -- false failures --------------------------------------------------------------------------------
def false_failures(a: Arch, cache: Path, capability: str) -> list[dict[str, Any]]:
    base = {"space": a.space, "arch": a.case, "capability": capability}
    rows = [{**base, "backend": "torch", **a.judge(_run(a.plain, a.inputs), "torch")}]
    for exporter in EXPORTERS:
        path = str(a.onnx_path(cache, exporter))
        for level in OPT_LEVELS:
            for threads in THREADS:
                cands = _ort(_session(path, level, threads), a.inputs)
                rows.append({**base, "backend": f"ort-{exporter}-{level}-t{threads}",
                             **a.judge(cands, "ort")})
    return rows


# -- detection -------------------------------------------------------------------------------------
def _pick(keys: list[str], rng: np.random.Generator) -> list[str]:
    return [keys[i] for i in rng.permutation(len(keys))[:TENSORS_PER_CLASS]]


def _scale_channel(ch: int, size: float) -> Any:
    def fn(w: np.ndarray) -> np.ndarray:
        w = w.copy()
        w[ch] *= 1 + size
        return w
    return fn


def _faults(a: Arch, rng: np.random.Generator) -> list[tuple[str, float | None, str, Any]]:
    """``(class, size, tensor, fn(array) -> array)``; an eps fault names the module instead."""
    state = {k: v.detach().numpy() for k, v in a.plain.state_dict().items()}
    full = a.net.state_dict()
    weights = [k for k, v in state.items() if k.endswith("weight") and v.size > 1]
    out: list[tuple[str, float | None, str, Any]] = []
    for key in _pick(weights, rng):
        idx = int(rng.integers(state[key].size))
        for size in SIZES:
            def element(w, idx=idx, size=size):
                w = w.copy()
                w.reshape(-1)[idx] += size * np.abs(w).max()
                return w
            out.append(("one element", size, key, element))
            out.append(("whole tensor scaled", size, key,
                        lambda w, size=size: (w * (1 + size)).astype(w.dtype)))
    for key in _pick([k for k in weights if state[k].ndim >= 2 and state[k].shape[0] > 1], rng):
        ch = int(rng.integers(state[key].shape[0]))
        for size in SIZES:
            out.append(("one channel scaled", size, key, _scale_channel(ch, size)))
        perm = np.arange(state[key].shape[0])
        i, j = rng.choice(perm.size, 2, replace=False)
        perm[[i, j]] = perm[[j, i]]
        out.append(("two channels swapped", None, key, lambda w, perm=perm: w[perm]))
    for key in _pick([k for k in state if k.endswith("running_var")], rng):
        ch = int(rng.integers(state[key].shape[0]))
        for size in SIZES:
            out.append(("BN running_var channel scaled", size, key, _scale_channel(ch, size)))
        out.append(("BN eps x10", None, key.removesuffix(".running_var"), None))
    kernels = [k for k in weights if state[k].ndim == 4 and state[k].shape[-1] > 1
               and state[k].shape[-1] == state[k].shape[-2]]
    for key in _pick(kernels, rng):
        out.append(("kernel transposed", None, key,
                    lambda w: np.ascontiguousarray(np.swapaxes(w, -1, -2))))
    sliced = [k for k in weights if k in full and full[k].shape[0] >= 2 * state[k].shape[0]
              and tuple(full[k].shape[1:]) == state[k].shape[1:]]
    for key in _pick(sliced, rng):
        k = state[key].shape[0]
        nxt = full[key][k:2 * k].detach().numpy().copy()
        out.append(("wrong slice (next k channels)", None, key, lambda w, nxt=nxt: nxt))
    return out


def _plain_fault(a: Arch, key: str, fn: Any) -> Any:
    import torch

    model = copy.deepcopy(a.plain)
    if fn is None:  # eps
        module = model.get_submodule(key)
        module.eps *= 10
        return model
    state = model.state_dict()
    with torch.no_grad():
        state[key].copy_(torch.from_numpy(fn(state[key].numpy())))
    return model


def _onnx_fault(base: Any, key: str, fn: Any) -> bytes | None:
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(base)
    if fn is None:
        nodes = [n for n in model.graph.node if n.op_type == "BatchNormalization"
                 and len(n.input) > 4 and n.input[4] == f"{key}.running_var"]
        if not nodes:
            return None
        for attr in nodes[0].attribute:
            if attr.name == "epsilon":
                attr.f *= 10
                break
        else:
            nodes[0].attribute.append(onnx.helper.make_attribute("epsilon", 1e-4))
        return model.SerializeToString()
    inits = [t for t in model.graph.initializer if t.name == key]
    if not inits:
        return None
    array = fn(numpy_helper.to_array(inits[0]))
    inits[0].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), key))
    return model.SerializeToString()


def detection(a: Arch, cache: Path) -> list[dict[str, Any]]:
    import onnx

    rng = np.random.default_rng(zlib.crc32(f"{a.space}/{a.case}".encode()))
    base = onnx.load(str(a.onnx_path(cache, "dynamo")))
    clean_torch = _run(a.plain, a.inputs)
    clean_ort = _ort(_session(base.SerializeToString(), "all", 1), a.inputs)
    rows = []
    for cls, size, key, fn in _faults(a, rng):
        record = {"space": a.space, "arch": a.case, "class": cls, "size": size, "tensor": key}
        faulty = _plain_fault(a, key, fn)
        cands = _run(faulty, a.inputs)
        plain64 = _run(copy.deepcopy(faulty).double(), a.inputs, double=True)
        rows.append({**record, "where": "plain model (torch)",
                     "effect": pooled_distance(cands, clean_torch) / a.floor,
                     **a.judge(cands, "torch", plain64)})
        blob = _onnx_fault(base, key, fn)
        if blob is not None:
            cands = _ort(_session(blob, "all", 1), a.inputs)
            rows.append({**record, "where": "ONNX initializers (onnxruntime)",
                         "effect": pooled_distance(cands, clean_ort) / a.floor,
                         **a.judge(cands, "ort")})
    return rows


# -- processes -------------------------------------------------------------------------------------
def worker(capability: str, cache: Path, detect: bool, n_random: int,
           spaces: list[str] | None = None) -> dict[str, Any]:
    import torch

    from models import get_space, list_spaces

    torch.set_num_threads(1)
    cases = ["smallest", "largest", *(f"random{s}" for s in range(n_random))]
    out: dict[str, Any] = {"capability": capability, "false_failures": [], "detection": [],
                           "kernels": torch.backends.cpu.get_cpu_capability()}
    for space in spaces or list_spaces():
        net = get_space(space).build()
        for case in cases:
            a = Arch(space, case, net)
            out["false_failures"] += false_failures(a, cache, capability)
            if detect and case in DETECT_ARCHS:
                out["detection"] += detection(a, cache)
            print(f"  [{capability}] {space} {case}", file=sys.stderr, flush=True)
    return out


def _spawn(capability: str, cache: Path, detect: bool, n_random: int, out: Path,
           spaces: list[str]) -> Any:
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    cmd = [sys.executable, "-m", "bench.verdict_study", "--worker", capability,
           "--cache", str(cache), "--random", str(n_random), "--part", str(out)]
    if detect:
        cmd.append("--detect")
    cmd += [f"--space={name}" for name in spaces]
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


def run(n_random: int = N_RANDOM, spaces: list[str] | None = None) -> dict[str, Any]:
    """Run the study (the native pass first: it exports; then the other two side by side)."""
    from bench import machine

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="verdict-study-") as tmp:
        cache, parts = Path(tmp), []
        first = Path(tmp) / "native.json"
        spaces = spaces or []
        if _spawn("native", cache, True, n_random, first, spaces).wait():
            raise RuntimeError("the native pass failed")
        parts.append(json.loads(first.read_text()))
        procs = [(cap, Path(tmp) / f"{cap}.json") for cap in CAPABILITIES[1:]]
        running = [(_spawn(cap, cache, False, n_random, path, spaces), path)
                   for cap, path in procs]
        for proc, path in running:
            if proc.wait():
                raise RuntimeError(f"a pass failed: {path.stem}")
            parts.append(json.loads(path.read_text()))
    return {"machine": machine(), "seconds": time.perf_counter() - start, "old_rule": OLD,
            "n_random": n_random, "kernels": {p["capability"]: p["kernels"] for p in parts},
            "false_failures": [r for p in parts for r in p["false_failures"]],
            "detection": [r for p in parts for r in p["detection"]]}


# -- the report ------------------------------------------------------------------------------------
def _count(rows: list[dict[str, Any]], by: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        if not r["old"]:
            out[r[by]] = out.get(r[by], 0) + 1
    return out


def _rate(rows: list[dict[str, Any]], key: str) -> str:
    caught = sum(not r[key] for r in rows)
    return f"{caught}/{len(rows)}" if rows else "-"


def markdown(result: dict[str, Any]) -> str:
    from subnet_export.parity.rule import DEFAULT_NOISE_FACTOR

    ff, det = result["false_failures"], result["detection"]
    m = result["machine"]
    live = [r for r in det if r["effect"] > 0]
    big = [r for r in live if r["effect"] > 10]
    small = [r for r in live if r["effect"] <= 1]
    torch_rows = [r for r in ff if r["backend"] == "torch"]
    ort_rows = [r for r in ff if r["backend"] != "torch"]
    worst = max(r["ratio"] for r in ff)
    lines = [
        "## The study behind the verdict",
        "",
        f"Machine: {m['cpu']}, {m['nproc']} cores; {m['date']}; torch kernels per pass: "
        + ", ".join(f"`{k}` -> {v}" for k, v in result["kernels"].items())
        + f". {len(ff)} correct candidates ({len({r['space'] for r in ff})} spaces x "
        f"{2 + result['n_random']} archs x 13 backends x 3 kernel sets) and {len(det)} "
        "injected faults, "
        f"{result['seconds'] / 60:.0f} min. `python -m bench.verdict_study` "
        "(raw: `bench/results/verdict_study.json`).",
        "",
        "| | old rule (atol 1e-5, rtol 1e-4, slack 2) | "
        f"new rule (noise x{DEFAULT_NOISE_FACTOR:g}) |",
        "| --- | --- | --- |",
        f"| false failures, all correct candidates | {_rate(ff, 'old')} | {_rate(ff, 'new')} |",
        f"| false failures, torch (plain model) | {_rate(torch_rows, 'old')} | "
        f"{_rate(torch_rows, 'new')} |",
        f"| false failures, onnxruntime | {_rate(ort_rows, 'old')} | {_rate(ort_rows, 'new')} |",
        f"| faults caught, effect > 10x the noise floor | {_rate(big, 'old')} | "
        f"{_rate(big, 'new')} |",
        f"| faults caught, effect 1x-10x | "
        f"{_rate([r for r in live if 1 < r['effect'] <= 10], 'old')} | "
        f"{_rate([r for r in live if 1 < r['effect'] <= 10], 'new')} |",
        f"| faults caught, effect <= 1x (within float32 noise) | {_rate(small, 'old')} | "
        f"{_rate(small, 'new')} |",
        f"| no-op faults (effect exactly 0), not counted | {len(det) - len(live)} | "
        f"{len(det) - len(live)} |",
        "",
        f"Correct candidates' error/noise ratio: largest {worst:.2f}, 99th percentile "
        f"{np.percentile([r['ratio'] for r in ff], 99):.2f}, median "
        f"{np.median([r['ratio'] for r in ff]):.2f} (the factor is {DEFAULT_NOISE_FACTOR:g}).",
        "",
        "Old rule's false failures by space: " + (", ".join(
            f"{space} {n}" for space, n in sorted(_count(ff, "space").items())) or "none") + ".",
        "",
        "Detection by fault class and size: faults caught / faults with any effect; no-op "
        "faults (effect exactly 0: a dead channel, or values equal to those they replace, such "
        "as BatchNorm weights still at 1) are counted apart; effect in noise floors.",
        "",
        "| fault | size | where | dead | effect (median) | old rule | new rule |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, Any, str], list[dict[str, Any]]] = {}
    for r in det:
        groups.setdefault((r["class"], r["size"], r["where"]), []).append(r)
    for (cls, size, where), rows in sorted(groups.items(), key=lambda g: (
            g[0][0], -(g[0][1] or 1.0), g[0][2])):
        alive = [r for r in rows if r["effect"] > 0]
        lines.append(f"| {cls} | {'-' if size is None else f'{size:g}'} | {where} | "
                     f"{len(rows) - len(alive)} | "
                     f"{np.median([r['effect'] for r in alive]) if alive else 0:.3g} | "
                     f"{_rate(alive, 'old')} | {_rate(alive, 'new')} |")
    lines.append("")
    for key, name in (("old", "Old rule"), ("new", "New rule")):
        caught = [r["effect"] for r in live if not r[key]]
        missed = [r["effect"] for r in live if r[key]]
        lines.append(f"- {name}: {sum(not r[key] for r in ff)} false failures; of the faults "
                     f"over 10x the noise floor it missed {sum(r[key] for r in big)}; the "
                     f"largest effect it missed is {max(missed, default=0.0):.3g}x the noise "
                     f"floor, the smallest it caught {min(caught, default=float('nan')):.3g}x.")
    lines += ["", "A fixed `rtol=1e-4` is far above float32 on a well-conditioned output (the old "
              "rule misses faults hundreds of noise floors large) and below it on a deep one (its "
              "false failures are all on the deepest nets); the noise rule draws its line at "
              f"{DEFAULT_NOISE_FACTOR:g} noise floors on every output, about twice the largest "
              "error of a correct backend seen here."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verdict_study", description=__doc__)
    parser.add_argument("--worker", choices=CAPABILITIES, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--detect", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--random", type=int, default=N_RANDOM,
                        help=f"seeded random archs per space (default {N_RANDOM})")
    parser.add_argument("--space", action="append", default=[],
                        help="only this space (repeatable; default every zoo space); a partial "
                             "run prints its section and saves nothing")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/parity.md")
    parser.add_argument("--render", action="store_true",
                        help="rewrite the docs section from the saved results; run nothing")
    args = parser.parse_args(argv)
    if args.worker:
        part = worker(args.worker, args.cache, args.detect, args.random, args.space)
        args.part.write_text(json.dumps(part), encoding="utf-8")
        return 0
    from bench import RESULTS, update_docs

    saved = RESULTS / f"{NAME}.json"
    if args.render:
        result = json.loads(saved.read_text(encoding="utf-8"))
    else:
        result = run(args.random, args.space)
        if args.space or args.random != N_RANDOM:  # a partial run never replaces the study
            args.no_docs = True
        else:
            RESULTS.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(result, sort_keys=True) + "\n", encoding="utf-8")
    if not args.no_docs:
        update_docs(NAME, markdown(result), path=PARITY_DOC)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
