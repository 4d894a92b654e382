"""``sweep --executor ray`` on a real local Ray cluster (``ray start --head``, two CPUs).

The cluster is this module's: started once on 127.0.0.1 in a session of its own, and the
processes of that session killed at the end, so no other Ray on the machine is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from subnet_export.bundle.verify import verify_bundle
from subnet_export.errors import InputError
from subnet_export.sweeps.index import INDEX_JSON
from subnet_export.sweeps.runner import sweep

try:
    import ray  # noqa: F401 - a hard requirement of these tests (the ray extra), never a skip
except ImportError as err:
    raise ImportError(f"tests/sweeps/test_ray.py needs Ray ({err}); install the ray extra") from err

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPACE = f"{FIXTURES / 'tiny_space.py'}:supernet"
ARCHS = [{"width": w, "block.k": k, "depth": d, "op": "skip"}
         for w in (8, 12, 16) for k in (3, 5) for d in (1, 2)]
OPTIONS = {"exporter": "torchscript", "batch": 2, "latency_runs": 0}
VOLATILE = ("timings_s", "latency_ms", "warnings", "template_notes")
#: Ray's own CLI, beside this interpreter
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_pids(session: int) -> list[int]:
    """Processes of the cluster whose ``ray start`` led ``session``: GCS, raylet, agents, workers.

    Ray's daemons and workers stay in the session of the ``ray start`` that launched them; their
    command lines and environments are rewritten by their process titles, so neither is a sure
    way to find them.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:
            pids.append(int(entry.name))
    return pids


def _worker_pids(session: int) -> list[int]:
    """Our actors' processes: Ray names them after the actor class."""
    out = []
    for pid in _cluster_pids(session):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("ray::_Worker"):
            out.append(pid)
    return out


@pytest.fixture(scope="module")
def cluster():
    """``HOST:PORT`` of a two-CPU head node on 127.0.0.1, and its session; torn down by it."""
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must be short
    port = _free_port()
    env = {**os.environ, "RAY_TMPDIR": temp_dir, "RAY_USAGE_STATS_ENABLED": "0"}
    # in a session of its own, which every process of the cluster inherits
    start = subprocess.Popen(
        [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--temp-dir", temp_dir, "--include-dashboard", "false",
         "--disable-usage-stats"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    output, _ = start.communicate(timeout=180)
    os.environ["RAY_TMPDIR"] = temp_dir
    try:
        assert start.returncode == 0, output
        yield f"127.0.0.1:{port}", start.pid
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for pid in _cluster_pids(start.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        os.environ.pop("RAY_TMPDIR", None)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stable(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    return sweep(SPACE, tmp_path_factory.mktemp("local") / "out", archs=ARCHS, **OPTIONS).rows


def test_a_sweep_on_ray_gives_the_rows_of_a_local_one(cluster, local_rows, tmp_path):
    address, _ = cluster
    result = sweep(SPACE, tmp_path / "out", archs=ARCHS, executor="ray", address=address,
                   workers=2, **OPTIONS)
    assert result.exit_code == 0 and result.complete
    assert _stable(result.rows) == _stable(local_rows)
    assert all(verify_bundle(tmp_path / "out" / r["bundle"]).passed for r in result.rows)
    assert json.loads((tmp_path / "out" / INDEX_JSON).read_text())["executor"] == "ray"


def test_a_killed_worker_has_its_arch_run_again(cluster, local_rows, tmp_path):
    address, session = cluster
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_one_mid_export() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            busy = out.is_dir() and any(p.name.startswith(".subnet-") for p in out.iterdir())
            workers = _worker_pids(session)
            if busy and workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_mid_export)
    killer.start()
    result = sweep(SPACE, out, archs=ARCHS, executor="ray", address=address, workers=2,
                   **OPTIONS)
    killer.join()
    assert killed, "no worker was seen mid-export"
    assert result.exit_code == 0 and result.complete
    assert _stable(result.rows) == _stable(local_rows)
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".")], names  # no partial bundle left
    assert all(verify_bundle(out / r["bundle"]).passed for r in result.rows)


def test_no_cluster_is_one_message(tmp_path):
    with pytest.raises(InputError, match="cannot reach a Ray cluster at 127.0.0.1:9"):
        sweep(SPACE, tmp_path / "out", archs=ARCHS[:1], executor="ray",
              address="127.0.0.1:9", **OPTIONS)


def test_the_console_script_sweeps_on_ray(cluster, local_rows, tmp_path):
    address, _ = cluster
    archs = tmp_path / "archs.jsonl"
    archs.write_text("".join(json.dumps(a) + "\n" for a in ARCHS[:4]))
    out = tmp_path / "out"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("subnet-export")), "sweep", SPACE, "--archs",
         str(archs), "--out", str(out), "--executor", "ray", "--address", address, "--workers",
         "2", "--exporter", "torchscript", "--batch", "2", "--latency-runs", "0", "--json"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    # the same rows as the in-process sweep, but for where each arch came from (a file here)
    assert [r.pop("origin") for r in summary["rows"]] == [f"archs.jsonl:{i}" for i in range(1, 5)]
    assert _stable(summary["rows"]) == [{k: v for k, v in r.items() if k != "origin"}
                                        for r in _stable(local_rows[:4])]
    assert json.loads((out / INDEX_JSON).read_text())["executor"] == "ray"
