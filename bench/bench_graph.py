"""Exported-graph quality: the materialized subnet against a hand-written model and the naive route.

Issue 6, items 1 and 2, for MobileNetV3-Large and an AutoFormer-T subnet:

1. the materialized subnet and an independently written plain model (``bench/plain_*.py``, same
   weights through a name mapping) are exported the same way (``se.export_onnx``, dynamo);
   compared: nodes by operator type, initializer bytes, file size, onnxruntime CPU latency at
   batch 1 and 8 (medians, every model interleaved in one process);
2. the supernet itself, exported with the path fixed (``se.fixed_arch``), which is what a tool
   that never materializes ships, with each exporter, against the materialized export.

Torch parity of the hand-written model and onnxruntime parity of every file are recorded, so a
figure is only read for models that compute the same thing.
"""

from __future__ import annotations

import tempfile
import traceback
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["markdown", "render", "run"]

NAME = "graph"


def _export(model: Any, example: Any, path: Path, exporter: str, arch: Any = None) -> dict:
    import subnet_export as se

    try:
        se.export_onnx(model, example, path, exporter=exporter, arch=arch)
    except Exception as err:  # noqa: BLE001 - a failed export is a figure too
        return {"ok": False, "error": f"{type(err).__name__}: {err}".splitlines()[0][:400],
                "trace_tail": traceback.format_exc().splitlines()[-3:]}
    return {"ok": True}


def _with_bias_pass(path: Path, exports: dict[str, dict]) -> Path:
    # The materialized export after the pass proposed for export.py (see strip_zero_conv_bias).
    import onnx

    from .export_common import strip_zero_conv_bias

    model = onnx.load(str(path))
    changed = strip_zero_conv_bias(model)
    out = path.with_name("materialized_conv_bias_pass.onnx")
    onnx.save(model, str(out))
    onnx.checker.check_model(str(out), full_check=True)
    exports["materialized_conv_bias_pass"] = {"ok": True, "convs_changed": changed}
    return out


def _ort_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def measure(case: Any, workdir: Path) -> dict[str, Any]:
    """Every figure of one case; files are written under ``workdir``."""
    import torch

    import subnet_export as se

    from .export_common import alternated_latency, graph_stats, op_diff

    x = torch.randn(2, *case.input_shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = case.materialized(x)
        hand = case.handwritten(x)
        with se.fixed_arch(case.supernet, case.arch):
            sup = case.supernet.eval()(x)
    example = torch.randn(case.input_shape)
    files: dict[str, Path] = {}
    exports: dict[str, dict] = {}
    plan = [("materialized", case.materialized, "dynamo"),
            ("handwritten", case.handwritten, "dynamo"),
            ("naive_dynamo", case.supernet, "dynamo"),
            ("materialized_torchscript", case.materialized, "torchscript"),
            ("naive_torchscript", case.supernet, "torchscript")]
    for label, model, exporter in plan:
        path = workdir / f"{label}.onnx"
        if label.startswith("naive"):
            # The supernet with its path fixed: what ships when nothing is materialized.
            with se.fixed_arch(case.supernet, case.arch):
                exports[label] = _export(model, example, path, exporter)
        else:
            exports[label] = _export(model, example, path, exporter, case.arch)
        if exports[label]["ok"]:
            files[label] = path
    if "materialized" in files:
        files["materialized_conv_bias_pass"] = _with_bias_pass(files["materialized"], exports)
    x_np = x.numpy()
    for label, path in files.items():
        exports[label]["stats"] = graph_stats(path)
        diff = np.abs(_ort_outputs(path, x_np) - ref.numpy()).max()
        exports[label]["ort_max_abs_diff_vs_materialized_torch"] = float(diff)
    stats = {k: v["stats"] for k, v in exports.items() if v["ok"]}
    out: dict[str, Any] = {
        "arch": case.arch,
        "parameters": sum(p.numel() for p in case.materialized.parameters()),
        "supernet_parameters": sum(p.numel() for p in case.supernet.parameters()),
        "torch_max_abs_diff": {
            "handwritten_vs_materialized": float((hand - ref).abs().max()),
            "supernet_path_vs_materialized": float((sup - ref).abs().max()),
        },
        "exports": exports,
    }
    if "materialized" in stats and "handwritten" in stats:
        m, h = stats["materialized"], stats["handwritten"]
        out["vs_handwritten"] = {
            "op_counts_identical": m["ops"] == h["ops"],
            "op_diff": op_diff(m["ops"], h["ops"]),
            "initializer_bytes_rel_diff": (m["initializer_bytes"] - h["initializer_bytes"])
            / h["initializer_bytes"],
            "file_bytes_rel_diff": (m["file_bytes"] - h["file_bytes"]) / h["file_bytes"],
        }
    for naive, base in (("naive_dynamo", "materialized"),
                        ("naive_torchscript", "materialized_torchscript")):
        if naive in stats and base in stats:
            out[f"{naive}_op_diff"] = op_diff(stats[base]["ops"], stats[naive]["ops"])
    out["latency"] = alternated_latency(files, case.input_shape)
    return out


def run() -> dict[str, Any]:
    """Measure both cases; the runner writes ``bench/results/graph.json``."""
    from . import machine
    from .export_common import autoformer_t, mobilenetv3_large, ort_versions

    results: dict[str, Any] = {"machine": {**machine(), "export_stack": ort_versions()},
                               "cases": {}}
    for build in (mobilenetv3_large, autoformer_t):
        case = build()
        with tempfile.TemporaryDirectory(prefix="bench-graph-") as tmp:
            results["cases"][case.name] = measure(case, Path(tmp))
        del case
    return results


# -- report ---------------------------------------------------------------------------------------
def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def _latency_cell(lat: dict, batch: str, label: str) -> str:
    b = lat["batches"].get(batch, {})
    if label not in b.get("median_ms", {}):
        return "n/a"
    return f"{b['median_ms'][label]:.2f} ms (x{b['ratio_to_first'][label]:.3f})"


def render(results: dict[str, Any]) -> str:
    """The markdown section of items 1 and 2."""
    m = results["machine"]
    lines = [
        "## Exported graph: materialized subnet vs hand-written model vs naive export",
        "",
        f"Machine: {m['cpu']}, {m['nproc']} cores; {m['date']}; torch {m['versions']['torch']}, "
        f"onnx {m['export_stack']['onnx']}, onnxruntime {m['export_stack']['onnxruntime']}. "
        "Latency: onnxruntime CPU, 1 intra-op thread, median of interleaved runs (60 at batch 1, "
        "20 at batch 8); ratios are to the materialized dynamo export, which runs in the same "
        "rounds. `python -m bench.bench_graph` (raw: `bench/results/graph.json`).",
        "",
    ]
    for name, c in results["cases"].items():
        ex, lat = c["exports"], c["latency"]
        lines += [f"### {name} ({c['parameters'] / 1e6:.2f} M parameters; supernet "
                  f"{c['supernet_parameters'] / 1e6:.2f} M)", ""]
        d = c["torch_max_abs_diff"]
        lines += [f"Torch max |diff| to the materialized model: hand-written "
                  f"{d['handwritten_vs_materialized']:.2e}, supernet path "
                  f"{d['supernet_path_vs_materialized']:.2e}.", ""]
        lines += ["| export | ok | nodes | initializer bytes | file | batch 1 | batch 8 | "
                  "ORT max diff |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for label, e in ex.items():
            if not e["ok"]:
                lines.append(f"| {label} | **failed** | | | | | | |")
                continue
            s = e["stats"]
            lines.append(
                f"| {label} | yes | {s['nodes']} | {s['initializer_bytes']:,} | "
                f"{_mb(s['file_bytes'])} | {_latency_cell(lat, '1', label)} | "
                f"{_latency_cell(lat, '8', label)} | "
                f"{e['ort_max_abs_diff_vs_materialized_torch']:.1e} |")
        lines.append("")
        vh = c.get("vs_handwritten")
        if vh:
            same = "identical" if vh["op_counts_identical"] else f"differ: {vh['op_diff']}"
            lines.append(f"- Materialized vs hand-written: operator counts {same}; initializer "
                         f"bytes {vh['initializer_bytes_rel_diff']:+.3%}, file size "
                         f"{vh['file_bytes_rel_diff']:+.3%}.")
        bp = ex.get("materialized_conv_bias_pass")
        b1 = lat["batches"].get("1", {}).get("ratio_to_first", {})
        if bp and bp["convs_changed"] and "materialized_torchscript" in b1:
            lines.append(
                f"- Dynamo vs TorchScript export of the same materialized model, batch 1: "
                f"x{b1['materialized_torchscript']:.3f}. The unoptimised dynamo graph gives each "
                "bias-less Conv a zero bias computed at run time (`Expand(CastLike(0, x), "
                "Shape(W))`), which onnxruntime can neither fold nor fuse into the next "
                f"BatchNormalization. Removing it (`strip_zero_conv_bias`, {bp['convs_changed']} "
                f"Convs) gives x{b1.get('materialized_conv_bias_pass', float('nan')):.3f} with "
                "unchanged initializers.")
        for naive in ("naive_dynamo", "naive_torchscript"):
            if not ex.get(naive, {}).get("ok", False):
                err = ex.get(naive, {}).get("error", "not run")
                lines.append(f"- {naive}: export failed: `{err}`")
            elif f"{naive}_op_diff" in c:
                lines.append(f"- {naive}: ops that differ from the materialized export "
                             f"(materialized, naive): {c[f'{naive}_op_diff'] or 'none'}.")
        lines.append("")
    return "\n".join(lines)


markdown = render  # the name ``python -m bench`` looks for


if __name__ == "__main__":  # same as `python -m bench NAME`
    from .__main__ import main

    raise SystemExit(main([NAME]))
