"""``subnet-export sweep`` through the CLI: the table, ``--json``, exit codes, interruptions."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from subnet_export.bundle.verify import verify_bundle
from subnet_export.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPACE = f"{FIXTURES / 'tiny_space.py'}:supernet"
SKIP8 = {"width": 8, "block.k": 3, "depth": 1, "op": "skip"}
SKIP16 = {"width": 16, "block.k": 5, "depth": 2, "op": "skip"}
CONV12 = {"width": 12, "block.k": 5, "depth": 2, "op": "conv"}
FAST = ("--exporter", "torchscript", "--batch", "2", "--latency-runs", "2")
#: the console script, as a fresh process
ENTRY = "from subnet_export.cli import main\nif __name__ == '__main__':\n    main()\n"


def _archs(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    archs = _archs(root / "archs.jsonl", [{"arch": SKIP8, "accuracy": 0.7}, {"width": 9}])
    out = root / "out"
    return archs, out, _main(["sweep", SPACE, "--archs", str(archs), "--sample", "1",
                              "--seed", "4", "--out", str(out), "--json", *FAST])


def _main(argv):
    import contextlib
    import io

    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        code = main(argv)
    return code, std.getvalue(), err.getvalue()


def test_json_summary_rows_and_exit_code(first_run):
    _, out, (code, stdout, stderr) = first_run
    summary = json.loads(stdout)
    assert code == 2 == summary["exit_code"], stderr
    rows = summary["rows"]
    assert [r["verdict"] for r in rows] == ["passed", "error", "passed"]
    assert rows[0]["columns"] == {"accuracy": 0.7} and "sample_seed" in rows[2]["columns"]
    assert rows[1]["error_type"] == "ArchError" and "not a candidate" in rows[1]["reason"]
    assert "[3/3]" in stderr and "archs/min" in stderr and "index:" in stderr
    assert "Traceback" not in stderr
    assert json.loads((out / "index.json").read_text())["rows"] == rows


def test_a_rerun_prints_the_reused_bundles(first_run):
    archs, out, _ = first_run
    code, stdout, stderr = _main(["sweep", SPACE, "--archs", str(archs), "--sample", "1",
                                  "--seed", "4", "--out", str(out), *FAST])
    assert code == 2, stderr
    lines = [line for line in stdout.splitlines() if line[:3].strip().isdigit()]
    assert [line.split()[1:3] for line in lines] == [
        ["passed", "reused"], ["error", "error"], ["passed", "reused"]]
    assert f"index: {out}/index.json" in stdout and "(reused)" in stderr


@pytest.mark.parametrize("argv,needle", [
    ([], "nothing to sweep"),
    (["--archs", "missing.jsonl"], "does not exist"),
    (["--sample", "1", "--opset", "3"], "opset"),
    (["--sample", "1", "--report-axes", "parameters"], "two names, X,Y"),
    (["--sample", "1", "--report-axes", "parameters,accuracy"], "unknown report axis 'accuracy'"),
    (["--sample", "1", "--reuse", "always"], "Invalid value for '--reuse'"),
    (["--sample", "1", "--executor", "dask"], "Invalid value for '--executor'"),
    (["--sample", "1", "--calib-data", "missing.npz"], "calibration data"),
    (["--sample", "1", "--int8-exclude", "stem"], "add --variants"),
    (["--sample", "1", "--variants", "int4"], "int4"),
    (["--sample", "1", "--calib-samples", "0", "--calib-data", "x.npz"],
     "Invalid value for '--calib-samples'"),
    (["--sample", "1", "--executor", "ray", "--address", "127.0.0.1:9"],
     "cannot reach a Ray cluster at 127.0.0.1:9"),
])
def test_usage_errors_are_exit_2_with_one_message(tmp_path, argv, needle):
    code, _, stderr = _main(["sweep", SPACE, "--out", str(tmp_path / "o"), *argv])
    assert code == 2 and needle in stderr and "Traceback" not in stderr, stderr
    assert not (tmp_path / "o").exists()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 128 + signal.SIGTERM, "terminated"),
                                           (signal.SIGINT, 130, "interrupted")],
                         ids=["sigterm", "ctrl-c"])
def test_a_signal_mid_sweep_leaves_no_partial_bundle(tmp_path, sig, code, word):
    archs = _archs(tmp_path / "archs.jsonl", [SKIP8, SKIP16, CONV12])
    out = tmp_path / "out"
    # as a terminal starts it: a shell without job control starts background commands (a CI
    # step run with `&`) with SIGINT ignored, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, "sweep", SPACE, "--archs", str(archs),
                             "--out", str(out), *FAST], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 180

    def second_under_way() -> bool:
        # the first arch is done (its bundle is in place and its row logged) and the work
        # folder of another bundle exists: the signal then lands inside the second export
        names = [p.name for p in out.iterdir()] if out.is_dir() else []
        done = {n for n in names if n.startswith("subnet-")}
        logged = out / "index.jsonl"
        return bool(done) and logged.is_file() and bool(logged.read_text().strip()) and any(
            n.startswith(".subnet-") and n[1:].split(".")[0] not in done for n in names)

    while not second_under_way() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert second_under_way(), "the sweep never started its second export"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code and word in stderr, stderr
    names = sorted(p.name for p in out.iterdir())
    bundles = [n for n in names if n.startswith("subnet-")]
    assert names == sorted([*bundles, "index.json", "index.jsonl"])
    assert bundles and all(verify_bundle(out / b).passed for b in bundles)
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] is False and sorted(r["bundle"] for r in index["rows"]) == bundles
