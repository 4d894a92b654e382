"""Write a starting budget for every shipped space from a bundle of its first arch file.

Budgets are policy: this script proposes one (limits a few percent above what the current
export needs, the operator set it uses today); commit it, then tighten or loosen by hand.

    python ci/make_budgets.py [--out ci/budgets]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import subnet_export as se  # noqa: E402
from models import get_space, list_spaces  # noqa: E402
from subnet_export.export.graph import op_types  # noqa: E402
from subnet_export.pipeline import export_subnet  # noqa: E402


def bundle_for(name: str, out: Path) -> Path:
    """Export the space's first arch file into a bundle at ``out``."""
    info = get_space(name)
    net = info.build()
    arch = se.load_arch(info.arch_files()[0])
    export_subnet(net, out, input_shapes=[info.input_shape], arch=arch, batch=2,
                  providers=["CPUExecutionProvider"])
    return out


def propose(bundle: Path) -> str:
    """The TOML text of a budget that the bundle passes with a little headroom."""
    import onnx

    manifest = json.loads((bundle / "manifest.json").read_text())
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    ops = sorted(set(op_types(model)))
    size = sum(f["size"] for p, f in manifest["files"].items() if p.startswith("model.onnx"))
    lines = [
        "require_parity = true",
        "max_abs_error = 1e-4",
        f"max_params = {math.ceil(manifest['parameter_count'] * 1.02)}",
        f"max_file_bytes = {math.ceil(size * 1.05)}",
        f"max_opset = {manifest['opset']}",
        "allowed_ops = [",
        *[f'    "{op}",' for op in ops],
        "]",
        "",
        "[latency]",
        "max_ratio = 1.5",
        "batch_size = 1",
        "runs = 30",
        "warmup = 3",
        "threads = 1",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "ci" / "budgets")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in list_spaces():
        with tempfile.TemporaryDirectory() as tmp:
            bundle = bundle_for(name, Path(tmp) / "bundle")
            header = (f"# Budget of the {name} space's shipped arch "
                      f"({get_space(name).arch_files()[0].name}); see docs/gates.md.\n")
            (args.out / f"{name}.toml").write_text(header + propose(bundle))
        print(f"wrote {args.out / f'{name}.toml'}")


if __name__ == "__main__":
    main()
