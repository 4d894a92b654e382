"""Write the seeded checkpoint of every registered space to ``models/checkpoints/``.

Usage: ``python -m models.make_checkpoints [--seed 0] [--out models/checkpoints]`` from the
repository root. Each file is the ``state_dict`` of ``get_space(name).generate(seed=seed)`` (its
default strategy and configuration) in safetensors, with the space, seed and strategy in its
metadata. The shipped files are the zoo's trained supernets: ``get_space(name).build()`` loads
them instead of regenerating, so every machine runs the same bits. Regenerating is a maintainer
step: the same command on one machine writes the same bytes, but BatchNorm statistics come from
forward passes, whose last bits depend on the CPU's kernels, so another machine may write other
bytes. Load one with
``subnet-export onnx models/<space>.py:supernet --weights models/checkpoints/<space>.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import CHECKPOINT_DIR, get_space, list_spaces  # noqa: E402

__all__ = ["main", "write_checkpoint"]


def write_checkpoint(name: str, out_dir: Path = CHECKPOINT_DIR, seed: int = 0) -> Path:
    """Write ``<out_dir>/<name>.safetensors`` and return its path."""
    info = get_space(name)
    net = info.generate(seed=seed)
    # Every key gets its own copy: safetensors refuses aliased tensors (differentiable
    # supernets share one architecture-weight tensor between the cells of a label), and a
    # strict load wants every key present.
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    tmp = path.with_suffix(".tmp")
    # One metadata key: safetensors writes its metadata map in hash order, which differs from
    # process to process; a single key holding sorted JSON keeps the bytes stable.
    meta = json.dumps({"space": name, "seed": seed, "strategy": info.default_strategy},
                      sort_keys=True)
    save_file(state, str(tmp), metadata={"subnet_export": meta})
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints one line per checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR)
    parser.add_argument("spaces", nargs="*", help="space names (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.spaces or list_spaces():
        path = write_checkpoint(name, args.out, args.seed)
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
