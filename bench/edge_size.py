"""INT8 and FP16 file sizes at ImageNet scale: Once-for-All subnets, float32 against the variants.

The digits study (``bench/edge_digits.py``) measures accuracy on a trained model, but its
subnets hold 2k-100k parameters, where the graph's per-node bytes weigh as much as the weights.
This study measures what the size target is about on full-size subnets: OFA MobileNetV3 w1.0
(largest and smallest) and OFA ProxylessNAS w1.3 (largest), 1000 classes at 224x224, exported
with ``se.export_subnet`` and given their variants with ``se.make_variants`` (the defaults:
FP16 with float32 IO; INT8 static QDQ, per-channel 7-bit weights, calibrated on 8 inputs).

The weights are the factories' seeded initial ones: file sizes do not depend on the values
(ONNX stores raw tensors, uncompressed), so no trained checkpoint is needed for sizes; the
verdicts on random weights and inputs say nothing about accuracy and are not reported. Per
model: file bytes, initializer bytes by element type, node count, and ratios to float32.

Seeded, CPU only, about 3-5 minutes on two cores. Writes ``bench/results/edge_size.json`` and
its section of ``docs/benchmarks.md`` (between ``<!-- bench:edge_size -->`` markers).

Usage: ``python bench/edge_size.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import subnet_export as se  # noqa: E402
from bench import update_docs  # noqa: E402
from bench.edge_digits import SIZE_RATIO, environment, graph_bytes  # noqa: E402
from subnet_export.variants.run import run_set  # noqa: E402

__all__ = ["main", "markdown"]

NAME = "edge_size"
COMMAND = "python bench/edge_size.py"


def subnets() -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, factory, OFA arch)`` of the measured subnets."""
    big = {"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5}
    small = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5}
    return [
        ("mbv3-w10-largest", "mobilenetv3_w10", big),
        ("mbv3-w10-smallest", "mobilenetv3_w10", small),
        ("proxyless-w13-largest", "proxyless_w13",
         {"ks": [7] * 21, "e": [6] * 21, "d": [4] * 6}),
    ]


def one_subnet(name: str, factory: str, arch: dict[str, Any], work: Path,
               args: argparse.Namespace) -> dict[str, Any]:
    """Export one subnet, make its variants, measure the three files."""
    sys.path.insert(0, str(ROOT))
    import models.ofa as ofa

    torch.manual_seed(args.seed)
    net = getattr(ofa, factory)()
    start = time.perf_counter()
    run = se.export_subnet(net, work / name, input_shapes=[(1, 3, 224, 224)], arch=arch,
                           seed=args.seed, providers=["CPUExecutionProvider"])
    export_s = time.perf_counter() - start
    model = run.out_dir / "model.onnx"
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.calib_samples, 3, 224, 224), dtype=np.float32)
    feed = {"input": x}
    judged = se.JudgedSet("random", feed, run_set(model, feed, ["output"]))
    out = work / f"{name}-variants"
    out.mkdir()
    start = time.perf_counter()
    results = se.make_variants(model, out, judged=judged, calibration=feed,
                               options=se.VariantOptions(sensitivity="never"))
    variants_s = time.perf_counter() - start
    files = {"float32": model, **{r.kind: r.path for r in results}}
    models = {label: {"file_bytes": path.stat().st_size, **graph_bytes(path)}
              for label, path in files.items()}
    base = models["float32"]
    for entry in models.values():
        entry["size_ratio"] = entry["file_bytes"] / base["file_bytes"]
        entry["initializer_ratio"] = entry["initializer_bytes"] / base["initializer_bytes"]
        entry["graph_bytes"] = entry["file_bytes"] - entry["initializer_bytes"]
    return {"name": name, "factory": factory, "arch": arch, "params": run.parameter_count,
            "parity_passed": run.report.passed, "export_s": export_s, "variants_s": variants_s,
            "models": models, "int8_size_met": models["int8"]["size_ratio"] <= SIZE_RATIO}


def markdown(result: dict[str, Any]) -> str:
    """The docs section: one table row per subnet and file."""
    lines = [
        f"Command: `{result['command']}`; {result['environment']['cpu']}, "
        f"{result['environment']['nproc']} cores. OFA subnets at 224x224 with the factories' "
        "seeded initial weights (sizes do not depend on the values); INT8 with the defaults, "
        f"calibrated on {result['config']['calib_samples']} inputs. Target: INT8 file at most "
        f"x{SIZE_RATIO:g} of float32.",
        "",
        "| subnet | params | file | bytes | x float32 | initializers | graph and metadata | "
        "nodes |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["subnets"]:
        for label, m in row["models"].items():
            lines.append(
                f"| {row['name']} | {row['params']:,} | {label} | {m['file_bytes']:,} | "
                f"x{m['size_ratio']:.3f} | {m['initializer_bytes']:,} "
                f"(x{m['initializer_ratio']:.3f}) | {m['graph_bytes']:,} | {m['nodes']} |")
    met = [r["name"] for r in result["subnets"] if r["int8_size_met"]]
    worst = max(r["models"]["int8"]["size_ratio"] for r in result["subnets"])
    lines += ["", f"INT8 size target (at most x{SIZE_RATIO:g}): met by {len(met)} of "
              f"{len(result['subnets'])} subnets (worst x{worst:.3f})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the study; write the JSON results and the docs section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calib-samples", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/edge_size.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs/benchmarks.md")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-size-") as tmp:
        for name, factory, arch in subnets():
            work = Path(tmp) / name
            work.mkdir()
            rows.append(one_subnet(name, factory, arch, work, args))
            r = rows[-1]
            print(f"{name}: params {r['params']:,}  int8 x{r['models']['int8']['size_ratio']:.3f}"
                  f"  fp16 x{r['models']['fp16']['size_ratio']:.3f}  export {r['export_s']:.0f}s"
                  f"  variants {r['variants_s']:.0f}s", file=sys.stderr, flush=True)
    result = {"config": {"seed": args.seed, "calib_samples": args.calib_samples,
                         "target_int8_size_ratio": SIZE_RATIO},
              "subnets": rows, "environment": environment(), "command": COMMAND}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    update_docs(NAME, markdown(result), args.doc)
    print(f"wrote {args.out} and {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
