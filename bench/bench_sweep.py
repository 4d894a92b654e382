"""Sweep throughput: one `subnet-export onnx` process per arch against `sweep`, side by side.

For each shipped space (MobileNetV3 of ``models/demo.py``, AutoFormer of
``models/autoformer.py``) and each arch set, in one run on one machine:

- (a) one ``subnet-export onnx`` process per arch, one after the other;
- (b) ``subnet-export sweep --reuse off`` (one process: the supernet built once, every arch traced);
- (c) ``subnet-export sweep --reuse template`` (an earlier trace of the same topology fitted);
- (d) (c) with ``--executor ray`` on a Ray head node this run starts on 127.0.0.1 (with as many
  CPUs as the machine; its processes are stopped at the end), with the largest worker count;
  left out when Ray is not installed.

(b) and (c) with each ``--workers`` count. Every route validates every subnet in full; the
figures count the verdicts. Arch sets: ``random`` (``--sample N``: random archs of the whole
space, which seldom share a topology) and ``front`` (a few random topologies, each with random
widths and kernel sizes: what a search's front or a width study looks like).

Archs per minute are wall-clock, process start included; ratios are to (a). Memory: one
in-process sweep over ``BENCH_SWEEP_MEMORY`` archs of the ``front`` kind, RSS after each arch.
Knobs (environment): ``BENCH_SWEEP_MOBILENET`` and ``BENCH_SWEEP_AUTOFORMER`` (archs per set,
default 50 and 20), ``BENCH_SWEEP_TOPOLOGIES`` (topologies of a front set, default 5),
``BENCH_SWEEP_WORKERS`` (default ``1,2``), ``BENCH_SWEEP_MEMORY`` (default 200; 0 skips).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["front_archs", "markdown", "run"]

NAME = "sweep"
ROOT = Path(__file__).resolve().parents[1]
SPACES = {"mobilenetv3": "models/demo.py:supernet", "autoformer": "models/autoformer.py:supernet"}


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _supernet(spec: str) -> Any:
    from subnet_export.loading import build_supernet

    return build_supernet(spec)


def front_archs(supernet: Any, count: int, topologies: int, seed: int = 0) -> list[dict]:
    """``count`` archs over ``topologies`` random topologies, widths and kernels drawn anew.

    A topology is a random arch; its variants redraw every numeric label that, changed alone
    in that arch, leaves the trace's topology key as it is (widths and kernel sizes; not
    strides, depths, or AutoFormer's head counts).
    """
    import subnet_export as se
    from subnet_export.export.topology import topology_key
    from subnet_export.sweeps.archs import sample_entries

    def key(arch: dict) -> str:
        return topology_key(se.materialize(supernet, se.freeze(supernet, arch)))

    space = se.search_space(supernet)
    bases = [dict(se.freeze(supernet, e.arch))
             for e in sample_entries(supernet, topologies, seed)]
    numeric = [k for k, v in space.items() if v.kind == "value" and all(
        isinstance(c, (int, float)) and not isinstance(c, bool) for c in v.candidates)]
    shapes = []
    for base in bases:
        own = key(base)
        shapes.append([k for k in numeric if all(key({**base, k: c}) == own
                                                 for c in space[k].candidates)])
    rng, out = random.Random(seed), []
    while len(out) < count:
        base, shape = bases[len(out) % len(bases)], shapes[len(out) % len(bases)]
        arch = dict(base)
        for label in shape:
            arch[label] = rng.choice(list(space[label].candidates))
        out.append(arch)
    return out


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("subnet-export"))
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=ROOT, timeout=7200)


def _one_process_each(spec: str, archs: list[dict], work: Path) -> dict[str, Any]:
    passed, start = 0, time.perf_counter()
    for i, arch in enumerate(archs):
        path = work / f"arch{i}.json"
        path.write_text(json.dumps(arch), encoding="utf-8")
        done = _cli(["onnx", spec, "--arch", str(path), "--out", str(work / f"b{i}"), "--json"])
        passed += done.returncode == 0
    return {"wall_s": time.perf_counter() - start, "passed": passed}


def _sweep(spec: str, archs: list[dict], work: Path, reuse: str, workers: int,
           ray_address: str | None = None) -> dict[str, Any]:
    where = f"{reuse}-{workers}{'-ray' if ray_address else ''}"
    path = work / f"archs-{where}.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in archs), encoding="utf-8")
    ray = ["--executor", "ray", "--address", ray_address] if ray_address else []
    start = time.perf_counter()
    done = _cli(["sweep", spec, "--archs", str(path), "--out", str(work / f"s-{where}"),
                 "--reuse", reuse, "--workers", str(workers), "--json", *ray])
    wall = time.perf_counter() - start
    summary = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {"rows": []}
    rows = summary["rows"]
    routes: dict[str, int] = {}
    for row in rows:
        routes[str(row.get("export_route"))] = routes.get(str(row.get("export_route")), 0) + 1
    return {"wall_s": wall, "passed": sum(r["verdict"] == "passed" for r in rows),
            "routes": routes, "exit_code": done.returncode}


def _memory(spec: str, count: int, topologies: int, work: Path) -> dict[str, Any]:
    from subnet_export.sweeps.runner import sweep

    from . import memory_status

    archs = front_archs(_supernet(spec), count, topologies, seed=1)
    rss: list[int] = []
    sweep(spec, work / "memory", archs=archs, latency_runs=0,
          progress=lambda row, done, total: rss.append(memory_status()["VmRSS"]))
    return {"archs": count, "rss_mib": [round(r / 2**20, 1) for r in rss]}


@contextlib.contextmanager
def _ray_cluster(cpus: int):
    """``HOST:PORT`` of a local Ray head node (None without Ray); its own processes stopped."""
    exe = Path(sys.executable).with_name("ray")
    if not exe.exists():
        yield None
        return
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # Ray's socket paths must be short
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_USAGE_STATS_ENABLED": "0"}
    # in a session of its own, which every process of the cluster inherits
    start = subprocess.Popen([str(exe), "start", "--head", "--node-ip-address", "127.0.0.1",
                              "--port", str(port), "--num-cpus", str(cpus), "--temp-dir", temp,
                              "--include-dashboard", "false", "--disable-usage-stats"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        if start.wait(timeout=180):
            raise RuntimeError("ray start --head failed")
        yield f"127.0.0.1:{port}"
    finally:
        _stop_session(start.pid)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_session(session: int) -> None:
    """SIGKILL the processes of ``session`` (the cluster's), no other Ray's."""
    for pid in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == session and int(pid) != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def run() -> dict[str, Any]:
    """Every route on every arch set of both spaces; the memory sweep last."""
    from . import machine

    sizes = {"mobilenetv3": _env_int("BENCH_SWEEP_MOBILENET", 50),
             "autoformer": _env_int("BENCH_SWEEP_AUTOFORMER", 20)}
    topologies = _env_int("BENCH_SWEEP_TOPOLOGIES", 5)
    workers = [int(w) for w in os.environ.get("BENCH_SWEEP_WORKERS", "1,2").split(",")]
    results: dict[str, Any] = {"machine": machine(), "topologies": topologies, "cases": []}
    with _ray_cluster(os.cpu_count() or 1) as address:
        _cases(results, sizes, topologies, workers, address)
    count = _env_int("BENCH_SWEEP_MEMORY", 200)
    if count:
        with tempfile.TemporaryDirectory() as tmp:
            results["memory"] = _memory(SPACES["mobilenetv3"], count, topologies, Path(tmp))
    return results


def _cases(results: dict[str, Any], sizes: dict[str, int], topologies: int, workers: list[int],
           ray_address: str | None) -> None:
    from subnet_export.sweeps.archs import sample_entries

    for space, spec in SPACES.items():
        supernet = _supernet(spec)
        sets = {"random": [e.arch for e in sample_entries(supernet, sizes[space], 7)],
                "front": front_archs(supernet, sizes[space], topologies)}
        for kind, archs in sets.items():
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                case = {"space": space, "archs": kind, "count": len(archs),
                        "a_processes": _one_process_each(spec, archs, work)}
                for w in workers:
                    case[f"b_reuse_off_w{w}"] = _sweep(spec, archs, work, "off", w)
                    case[f"c_template_w{w}"] = _sweep(spec, archs, work, "template", w)
                if ray_address:  # the Ray executor on a local head node, as many actors
                    w = max(workers)
                    case[f"d_ray_template_w{w}"] = _sweep(spec, archs, work, "template", w,
                                                          ray_address)
                results["cases"].append(case)
                print(f"  {space} {kind}: {json.dumps(case)}", file=sys.stderr, flush=True)


def markdown(results: dict[str, Any]) -> str:
    """The docs/benchmarks.md section: archs per minute per route, ratios to (a)."""
    m = results["machine"]
    sizes = {c["space"]: c["count"] for c in results["cases"]}
    knobs = [f"BENCH_SWEEP_{'MOBILENET' if k == 'mobilenetv3' else 'AUTOFORMER'}={v}"
             for k, v in sizes.items() if v != {"mobilenetv3": 50, "autoformer": 20}.get(k)]
    if results["topologies"] != 5:
        knobs.append(f"BENCH_SWEEP_TOPOLOGIES={results['topologies']}")
    mem = results.get("memory")
    if mem and mem["archs"] != 200:
        knobs.append(f"BENCH_SWEEP_MEMORY={mem['archs']}")
    command = " ".join([*knobs, "python -m bench sweep"])
    lines = [f"Measured {m['date']} on {m['cpu']} ({m['nproc']} cores), torch "
             f"{m['versions']['torch']}; `{command}`. Archs per minute, wall clock "
             "with process start; in brackets the ratio to (a); then how many subnets passed "
             "parity and how each was exported (`traced`/`template`/`retraced`). A front set "
             f"spreads its archs over {results['topologies']} topologies.", "",
             "| space | archs | route | archs/min | passed | routes |",
             "| --- | --- | --- | --- | --- | --- |"]
    for case in results["cases"]:
        base = case["count"] / case["a_processes"]["wall_s"] * 60
        for route in [k for k in case if k[:2] in ("a_", "b_", "c_", "d_")]:
            r = case[route]
            rate = case["count"] / r["wall_s"] * 60
            routes = ", ".join(f"{k} {v}" for k, v in sorted(r.get("routes", {}).items())) or "-"
            lines.append(f"| {case['space']} | {case['count']} {case['archs']} | {route} | "
                         f"{rate:.1f} ({rate / base:.2f}x) | {r['passed']}/{case['count']} | "
                         f"{routes} |")
    if mem:
        rss = mem["rss_mib"]
        tenth = max(1, len(rss) // 10)
        lines += ["", f"Memory over {mem['archs']} front archs of MobileNetV3 in one process "
                  f"(RSS after each arch, MiB): after {tenth}: {rss[tenth - 1]}, after "
                  f"{len(rss) // 2}: {rss[len(rss) // 2 - 1]}, at the end: {rss[-1]}, "
                  f"largest: {max(rss)}."]
    return "\n".join(lines)


if __name__ == "__main__":  # same as `python -m bench sweep`
    from bench.__main__ import main

    raise SystemExit(main([NAME]))
