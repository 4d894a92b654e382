"""freeze + materialize on a supernet of about 57 M parameters, against two naive baselines.

Each measurement runs in a fresh interpreter: build the supernet, reset the peak RSS, run one
method, report its wall time and the increase of the peak RSS over the RSS before it. Methods:

- ``materialize``: ``se.freeze`` + ``se.materialize`` (meta skeleton, strict assign-load);
- ``deepcopy``: ``copy.deepcopy(supernet)`` then materialize from the copy (a second supernet);
- ``alloc_load``: build the plain model allocated and initialised, then
  ``load_state_dict(sub_state_dict(supernet))`` copying into it (the subnet twice).

The figure of merit is the extra peak memory divided by the subnet's own bytes (1.0 is ideal).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RUNS = 3
METHODS = ("materialize", "deepcopy", "alloc_load")
WIDTHS = (1024, 2048, 3072)
CHANNELS = (128, 256, 512)
N_LINEAR, N_CONV = 4, 3

#: Archs measured: small, middle-sized, and the largest subnet (every supernet weight).
ARCHS: dict[str, dict[str, Any]] = {
    "small": {"width": 1024, "channels": 128, "k": 3},
    "medium": {"width": 2048, "channels": 256, "k": 3},
    "largest": {"width": 3072, "channels": 512, "k": 5},
}


def build_space():
    """A wide stack: elastic convs (channels, kernel) then elastic Linear layers (width)."""
    import torch
    from torch import nn

    import subnet_export as se

    class Wide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = se.Choice(list(CHANNELS), label="channels")
            k = se.Choice([3, 5], label="k")
            w = se.Choice(list(WIDTHS), label="width")
            self.stem = se.Conv2d(3, c, 3, padding=1)
            self.convs = nn.Sequential(*(se.Conv2d(c, c, k, padding=k // 2)
                                         for _ in range(N_CONV)))
            self.proj = se.Linear(c, w)
            self.fcs = nn.Sequential(*(se.Linear(w, w) for _ in range(N_LINEAR)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.convs(self.stem(x)).mean((2, 3))
            return self.fcs(self.proj(x))

    return Wide()


def build_plain(arch: dict[str, Any]):
    """The plain model of ``arch``, written out by hand and allocated (the naive way)."""
    from torch import nn

    c, k, w = arch["channels"], arch["k"], arch["width"]

    class Wide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, c, 3, padding=1)
            self.convs = nn.Sequential(*(nn.Conv2d(c, c, k, padding=k // 2)
                                         for _ in range(N_CONV)))
            self.proj = nn.Linear(c, w)
            self.fcs = nn.Sequential(*(nn.Linear(w, w) for _ in range(N_LINEAR)))

    return Wide()


def _nbytes(module) -> int:
    return sum(t.numel() * t.element_size()
               for t in list(module.parameters()) + list(module.buffers()))


def _method(name: str, supernet, arch: dict[str, Any]):
    import copy

    import subnet_export as se

    if name == "materialize":
        return se.materialize(supernet, se.freeze(supernet, arch))
    if name == "deepcopy":
        clone = copy.deepcopy(supernet)
        plain = se.materialize(clone, se.freeze(clone, arch))
        del clone
        return plain
    if name == "alloc_load":
        plain = build_plain(arch)
        with se.fixed_arch(supernet, arch):
            plain.load_state_dict(se.sub_state_dict(supernet), strict=True)
        return plain
    raise ValueError(f"unknown method {name!r}")


def measure(method: str, arch_name: str) -> dict[str, Any]:
    """One measurement, in this process (called in a fresh subprocess by :func:`run`)."""
    import torch

    import subnet_export as se
    from bench import memory_status, reset_peak_rss

    torch.manual_seed(0)
    supernet = se.to_supernet(build_space(), strategy="sampling").eval()
    arch = se.freeze(supernet, ARCHS[arch_name])
    gc.collect()
    peak_reset = reset_peak_rss()
    before = memory_status()
    t0 = time.perf_counter()
    plain = _method(method, supernet, arch)
    seconds = time.perf_counter() - t0
    after = memory_status()
    return {
        "method": method,
        "arch": arch_name,
        "seconds": seconds,
        "peak_increase_bytes": after["VmHWM"] - before["VmRSS"],
        "rss_increase_bytes": after["VmRSS"] - before["VmRSS"],
        "peak_reset": peak_reset,
        "supernet_params": sum(p.numel() for p in supernet.parameters()),
        "supernet_bytes": _nbytes(supernet),
        "subnet_params": sum(p.numel() for p in plain.parameters()),
        "subnet_bytes": _nbytes(plain),
    }


def _subprocess(method: str, arch_name: str) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_materialize", method, arch_name],
        cwd=root, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(runs: int = RUNS) -> dict[str, Any]:
    """Every method on every arch, ``runs`` fresh processes each; medians and ratios."""
    from bench import machine

    raw = [_subprocess(m, a) for a in ARCHS for m in METHODS for _ in range(runs)]
    summary: dict[str, dict[str, Any]] = {}
    for a in ARCHS:
        rows = {m: [r for r in raw if r["arch"] == a and r["method"] == m] for m in METHODS}
        subnet_bytes = rows["materialize"][0]["subnet_bytes"]
        per = {}
        for m, rs in rows.items():
            peak = statistics.median(r["peak_increase_bytes"] for r in rs)
            per[m] = {
                "seconds_median": statistics.median(r["seconds"] for r in rs),
                "seconds_min": min(r["seconds"] for r in rs),
                "peak_increase_bytes_median": peak,
                "peak_over_subnet": peak / subnet_bytes,
            }
        for m in METHODS[1:]:
            per[m]["time_vs_materialize"] = (per[m]["seconds_median"]
                                             / per["materialize"]["seconds_median"])
            per[m]["peak_vs_materialize"] = (per[m]["peak_increase_bytes_median"]
                                             / per["materialize"]["peak_increase_bytes_median"])
        first = rows["materialize"][0]
        summary[a] = {"arch": ARCHS[a], "subnet_params": first["subnet_params"],
                      "subnet_bytes": subnet_bytes, "methods": per}
    first = raw[0]
    return {
        "benchmark": "materialize",
        "machine": machine(),
        "runs": runs,
        "supernet_params": first["supernet_params"],
        "supernet_bytes": first["supernet_bytes"],
        "peak_reset": all(r["peak_reset"] for r in raw),
        "summary": summary,
        "raw": raw,
    }


def _mb(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def markdown(result: dict[str, Any]) -> str:
    """The ``docs/benchmarks.md`` section of a :func:`run` result."""
    m = result["machine"]
    v = m["versions"]
    lines = [
        "## materialize: freeze + materialize on a wide supernet",
        "",
        f"Supernet: {result['supernet_params'] / 1e6:.1f} M parameters "
        f"({_mb(result['supernet_bytes'])} MiB float32): a 3x3 stem and {N_CONV} elastic "
        f"Conv2d (channels {list(CHANNELS)}, kernel 3/5), then {N_LINEAR + 1} elastic Linear "
        f"(width {list(WIDTHS)}). Each figure is the median of {result['runs']} fresh processes; "
        "extra peak = peak RSS during the step (VmHWM, reset just before it) minus the RSS "
        "before it. Ratios are against `materialize`; `extra / subnet` is the extra peak over "
        "the subnet's own parameter and buffer bytes (1.0 is the floor: the result itself).",
        "",
        "| arch | subnet | method | time (s) | extra peak (MiB) | extra / subnet "
        "| time vs materialize | peak vs materialize |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in result["summary"].items():
        for method, f in s["methods"].items():
            lines.append(
                f"| {name} | {s['subnet_params'] / 1e6:.1f} M ({_mb(s['subnet_bytes'])} MiB) "
                f"| `{method}` | {f['seconds_median']:.3f} | "
                f"{_mb(f['peak_increase_bytes_median'])} | {f['peak_over_subnet']:.2f} | "
                f"{f.get('time_vs_materialize', 1.0):.2f} | "
                f"{f.get('peak_vs_materialize', 1.0):.2f} |")
    lines += [
        "",
        "Methods: `materialize` builds the plain skeleton on the meta device and assigns the "
        "sliced copies from `sub_state_dict`; `deepcopy` copies the whole supernet first and "
        "materializes from the copy; `alloc_load` allocates and initialises the plain model, "
        "then copies `sub_state_dict` into it with `load_state_dict`.",
        "",
        f"Machine: {m['cpu']}, {m['nproc']} CPUs, {m['platform']}. Python {v['python']}, "
        f"torch {v['torch']}, numpy {v['numpy']}, subnet-export {v['subnet_export']}. "
        f"Date: {m['date']}. Raw figures: `bench/results/materialize.json`.",
    ]
    if not result["peak_reset"]:
        lines.append("\nThe peak RSS could not be reset here: peaks may be under-reported.")
    return "\n".join(lines)


if __name__ == "__main__":
    # Worker mode: `python -m bench.bench_materialize METHOD ARCH` prints one JSON line.
    print(json.dumps(measure(sys.argv[1], sys.argv[2])))
