"""Memory at scale: a 1.1 GB transformer supernet from a checkpoint, a ~0.65 GB subnet exported.

Issue 6, item 4. The supernet is a stack of elastic pre-norm blocks (``se.MultiheadAttention``
and an ``se.Linear`` MLP) with the embed dim and the MLP ratio as choices; its float32 weights
are saved once (safetensors and ``torch.save``) in a temporary folder. Then, per loading method,
one fresh interpreter runs the phases in order, the supernet skeleton being built on the meta
device so that only the checkpoint's tensors ever hold weights:

``start`` (imports, meta skeleton) -> ``load`` (checkpoint, ``load_state_dict(assign=True)``)
-> ``freeze`` -> ``materialize`` -> ``export`` (``se.export_onnx``, dynamo).

Before each phase the peak RSS is reset (``/proc/self/clear_refs``); after it, the peak
(VmHWM) and the current anonymous and file-backed RSS are read from ``/proc/self/status``. Pages
of a memory-mapped checkpoint that a phase reads count in RSS as file pages: the kernel can drop
them at any time, so the anonymous figure is what a phase really allocates.

Loading methods: ``safetensors_mmap`` (``safetensors.torch.load_file``), ``torch_mmap``
(``torch.load(mmap=True)``), ``torch_eager`` (``torch.load``, the whole file read into memory).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["markdown", "render", "run"]

NAME = "memory"
EMBED = (1024, 1280, 1536)
RATIOS = (2.0, 3.0, 4.0)
HEADS = 16
DEPTH = 10
FEATURES = 64
TOKENS = 16
#: about 0.58 of the supernet's bytes
SUBNET_ARCH = {"embed": 1280, "mlp_ratio": 3.0}
METHODS = ("safetensors_mmap", "torch_mmap", "torch_eager")
PHASES = ("start", "load", "freeze", "materialize", "export")


def build_space() -> Any:
    """The search space (placeholders); call under ``torch.device('meta')`` to allocate nothing."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import subnet_export as se

    class Block(nn.Module):
        def __init__(self, embed: Any, hidden: Any) -> None:
            super().__init__()
            self.norm1 = se.LayerNorm(embed)
            self.attn = se.MultiheadAttention(embed, HEADS, batch_first=True)
            self.norm2 = se.LayerNorm(embed)
            self.fc1 = se.Linear(embed, hidden)
            self.fc2 = se.Linear(hidden, embed)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.norm1(x)
            x = x + self.attn(y, y, y, need_weights=False)[0]
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    class Space(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            e = se.Choice(list(EMBED), label="embed")
            hidden = se.compose(lambda e, r: int(e * r), e, se.Choice(list(RATIOS), "mlp_ratio"))
            self.embed = se.Linear(FEATURES, e)
            self.blocks = nn.Sequential(*(Block(e, hidden) for _ in range(DEPTH)))
            self.norm = se.LayerNorm(e)
            self.head = se.Linear(e, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.blocks(self.embed(x)))[:, 0])

    return Space()


# -- child side -----------------------------------------------------------------------------------
def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text(encoding="utf-8")
    out = {}
    for key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
        found = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        out[key] = int(found.group(1)) * 1024 if found else -1
    return out


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")


def child(method: str, folder: str, external: str) -> dict[str, Any]:
    """Run every phase in this (fresh) process; figures per phase."""
    phases: dict[str, Any] = {}
    state: dict[str, Any] = {}

    def phase(name: str, fn: Any) -> None:
        before = _status()
        _reset_peak()
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
        after = _status()
        phases[name] = {"wall_s": wall, "rss_before": before["VmRSS"], "peak": after["VmHWM"],
                        "rss_after": after["VmRSS"], "anon_before": before["RssAnon"],
                        "anon_after": after["RssAnon"], "file_after": after["RssFile"]}

    def start() -> None:
        import torch

        import subnet_export as se

        with torch.device("meta"):
            state["net"] = se.to_supernet(build_space(), "sampling")

    def load() -> None:
        import torch

        if method == "safetensors_mmap":
            from safetensors.torch import load_file

            sd = load_file(os.path.join(folder, "supernet.safetensors"))
        else:
            sd = torch.load(os.path.join(folder, "supernet.pt"), mmap=method == "torch_mmap",
                            weights_only=True)
        state["net"].load_state_dict(sd, strict=True, assign=True)
        state["net"].eval()

    def freeze() -> None:
        import subnet_export as se

        state["arch"] = se.freeze(state["net"], SUBNET_ARCH)

    def materialize() -> None:
        import subnet_export as se

        state["plain"] = se.materialize(state["net"], state["arch"]).eval()

    def export() -> None:
        import torch

        import subnet_export as se

        ext = {"auto": None, "yes": True, "no": False}[external]
        result = se.export_onnx(state["plain"], torch.randn(1, TOKENS, FEATURES),
                                Path(folder) / f"subnet-{method}.onnx", external_data=ext)
        state["export"] = {"external_data": result.external_data is not None,
                           "initializer_bytes": result.initializer_bytes}

    for name, fn in zip(PHASES, (start, load, freeze, materialize, export)):
        phase(name, fn)
    from subnet_export.export.exporter import state_bytes

    net = state["net"]
    return {"phases": phases, "export": state["export"],
            "supernet_bytes": sum(t.numel() * t.element_size() for t in net.state_dict().values()),
            "subnet_bytes": state_bytes(state["plain"])}


# -- parent side ----------------------------------------------------------------------------------
def _write_checkpoints(folder: Path) -> dict[str, Any]:
    # In its own process, so the parent never holds the supernet.
    code = (
        "import sys, torch; from safetensors.torch import save_file; "
        "import subnet_export as se; from bench.bench_memory import build_space; "
        "torch.manual_seed(0); net = se.to_supernet(build_space(), 'sampling'); "
        "sd = {k: v.contiguous() for k, v in net.state_dict().items()}; "
        f"save_file(sd, {str(folder / 'supernet.safetensors')!r}); "
        f"torch.save(sd, {str(folder / 'supernet.pt')!r})"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())
    return {"write_s": time.perf_counter() - start,
            "safetensors_bytes": (folder / "supernet.safetensors").stat().st_size,
            "torch_bytes": (folder / "supernet.pt").stat().st_size}


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _child(method: str, folder: Path, external: str = "auto") -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench.bench_memory", "--child", method,
                           str(folder), external], capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-5:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """Write the checkpoints, then measure each loading method in a fresh interpreter."""
    from . import machine

    out: dict[str, Any] = {"machine": machine(), "config": {
        "embed": EMBED, "mlp_ratio": RATIOS, "heads": HEADS, "depth": DEPTH,
        "subnet_arch": SUBNET_ARCH}, "methods": {}}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        folder = Path(tmp)
        out["checkpoint"] = _write_checkpoints(folder)
        for method in methods:
            out["methods"][method] = _child(method, folder)
            for f in folder.glob("subnet-*"):
                f.unlink()
        # The same export forced to external data, to separate the protobuf copies from the rest.
        out["methods"]["safetensors_mmap+external_data"] = _child("safetensors_mmap", folder, "yes")
    return out


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def render(results: dict[str, Any]) -> str:
    """The markdown section of item 4."""
    m = results["machine"]
    first = next((r for r in results["methods"].values() if "phases" in r), None)
    lines = [
        "## Memory at scale: a 1.1 GB transformer supernet, a ~0.6 GB subnet",
        "",
        f"Machine: {m['cpu']}, {m['nproc']} cores; {m['date']}; torch {m['versions']['torch']}. "
        "Each row: one fresh interpreter; per phase, the peak RSS (VmHWM, reset before the phase) "
        "minus the RSS before it, and the anonymous RSS it added (file-backed pages of a "
        "memory-mapped checkpoint are reclaimable, anonymous ones are not). "
        "`python -m bench.bench_memory`.",
        "",
    ]
    if first is None:
        return "\n".join(lines + ["No figures: every run failed; see bench/results/memory.json."])
    sup, sub = first["supernet_bytes"], first["subnet_bytes"]
    lines += [f"Supernet {_mb(sup)} float32 ({len(EMBED)} embed dims up to {max(EMBED)}, MLP "
              f"ratio up to {max(RATIOS)}, {DEPTH} blocks); subnet {SUBNET_ARCH}: {_mb(sub)} "
              f"({sub / sup:.2f} of the supernet).", "",
              "| method | phase | wall | peak - before | anon added | RSS after (anon + file) "
              "| peak / subnet |", "|---|---|---:|---:|---:|---:|---:|"]
    for method, r in results["methods"].items():
        if "phases" not in r:
            lines.append(f"| {method} | failed: `{' '.join(r['error'])[-200:]}` | | | | | |")
            continue
        for phase, p in r["phases"].items():
            rise = p["peak"] - p["rss_before"]
            lines.append(
                f"| {method} | {phase} | {p['wall_s']:.1f} s | {_mb(rise)} | "
                f"{_mb(p['anon_after'] - p['anon_before'])} | {_mb(p['anon_after'])} + "
                f"{_mb(p['file_after'])} | {rise / sub:.2f} |")
    return "\n".join(lines) + "\n"


markdown = render  # the name ``python -m bench`` looks for


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], sys.argv[4])))
        raise SystemExit(0)
    from . import DOCS, RESULTS, update_docs

    res = run()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n",
                                          encoding="utf-8")
    update_docs(NAME, render(res), DOCS)
    print(render(res))
