"""Crashes mid-run, determinism across processes, and memory over many exports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SPACE = f"{FIXTURES / 'tiny_space.py'}:supernet"
SCRIPT = Path(sys.executable).with_name("subnet-export")
BUNDLE_FILES = {"arch.json", "manifest.json", "model.onnx", "parity.json", "samples.npz"}

#: fractions of a full run's duration at which a run is killed
KILL_POINTS = (0.2, 0.5, 0.75, 0.9, 0.97, 1.02)


def _onnx(out: Path, *extra: str) -> list[str]:
    return [str(SCRIPT), "onnx", SPACE, "--out", str(out), "--batch", "2", *extra]


def _verify(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "verify", str(out)], capture_output=True, text=True)


def _is_complete(out: Path) -> bool:
    return {p.name for p in out.iterdir()} == BUNDLE_FILES and _verify(out).returncode == 0


@pytest.fixture(scope="module")
def run_seconds(tmp_path_factory) -> float:
    out = tmp_path_factory.mktemp("t") / "b"
    start = time.perf_counter()
    subprocess.run(_onnx(out), check=True, capture_output=True)
    return time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "over-previous"])
def test_sigkill_never_leaves_a_partial_bundle(tmp_path, run_seconds, previous):
    survived = 0
    for n, fraction in enumerate(KILL_POINTS):
        out = tmp_path / f"b{n}"
        extra: tuple[str, ...] = ()
        if previous:
            subprocess.run(_onnx(out, "--seed", "1"), check=True, capture_output=True)
            old_manifest = (out / "manifest.json").read_bytes()
            extra = ("--force",)
        proc = subprocess.Popen(_onnx(out, *extra), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(run_seconds * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not out.exists():
            assert not previous, "the previous complete bundle vanished"
        else:
            assert _is_complete(out), f"partial bundle after a kill at {fraction:.0%}"
            if previous and (out / "manifest.json").read_bytes() == old_manifest:
                survived += 1
        # a killed run may leave its hidden work directory; the next run must not trip on it
        # and nothing visible may look like a bundle
        visible = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
        assert all(name.startswith("b") for name in visible)
    # the next run to the same --out removes the work directories killed runs left beside it
    leftovers = {p.name.split(".partial-")[0].lstrip(".") for p in tmp_path.iterdir()
                 if ".partial-" in p.name}
    for name in sorted(leftovers):
        subprocess.run(_onnx(tmp_path / name, "--force"), check=True, capture_output=True)
        assert _is_complete(tmp_path / name)
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []
    if previous:
        assert survived >= 1, "no kill landed before the new bundle replaced the old one"


def test_two_processes_give_identical_bundles(tmp_path):
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(FIXTURES))
    try:
        import tiny_space
    finally:
        sys.path.remove(str(FIXTURES))
    torch.manual_seed(123)
    net = tiny_space.supernet()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ckpt = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ckpt))
    outs = []
    for name in ("one", "two"):
        out = tmp_path / name
        subprocess.run(_onnx(out, "--weights", str(ckpt)), check=True, capture_output=True)
        outs.append(out)
    for f in sorted(BUNDLE_FILES):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    manifest = json.loads((outs[0] / "manifest.json").read_text())
    assert manifest["source_checkpoint_sha256"] is not None


SOAK = r"""
import json, sys, tempfile, torch
sys.path.insert(0, sys.argv[1])
import tiny_space
import subnet_export as se

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

net = tiny_space.supernet().eval()
x = torch.randn(1, 3, 12, 12)
rss = []
with tempfile.TemporaryDirectory() as tmp:
    for seed in range(int(sys.argv[2])):
        arch = se.sample_arch(net, seed)
        plain = se.materialize(net, arch).eval()
        path = f"{tmp}/m.onnx"
        se.export_onnx(plain, x, path, exporter="torchscript", arch=arch)
        report = se.validate(net, arch, plain, path, example_inputs=x, batch_sizes=(1, 2),
                             providers=["CPUExecutionProvider"])
        assert report.passed, report.format_table()
        rss.append(rss_mb())
print(json.dumps(rss))
"""

#: exports in the soak run, and the RSS growth allowed between the first fifth and the end
SOAK_EXPORTS = 100
SOAK_MAX_GROWTH_MB = 40.0


@pytest.mark.slow
def test_memory_stays_flat_over_many_exports():
    proc = subprocess.run([sys.executable, "-c", SOAK, str(FIXTURES), str(SOAK_EXPORTS)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rss = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rss) == SOAK_EXPORTS
    warm = rss[SOAK_EXPORTS // 5]
    growth = max(rss[SOAK_EXPORTS // 5:]) - warm
    print(f"soak: RSS {rss[0]:.0f} MB first, {warm:.0f} MB warm, {rss[-1]:.0f} MB last")
    assert growth < SOAK_MAX_GROWTH_MB, f"RSS grew {growth:.1f} MB over {SOAK_EXPORTS} exports"


def _tiny_checkpoint(tmp_path: Path, mutate) -> Path:
    sys.path.insert(0, str(FIXTURES))
    try:
        import tiny_space
    finally:
        sys.path.remove(str(FIXTURES))
    return tiny_space.save_checkpoint(tmp_path / "weights.pt", mutate)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nonfinite_weights_are_named_and_fail_parity(tmp_path, bad):
    def poison(state):
        state["head.weight"][0, 0] = bad

    ckpt = _tiny_checkpoint(tmp_path, poison)
    out = tmp_path / "b"
    proc = subprocess.run(_onnx(out, "--weights", str(ckpt), "--json"), capture_output=True,
                          text=True)
    assert proc.returncode == 1, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warning and "head.weight" in warning[0]
    summary = json.loads(proc.stdout)
    assert summary["passed"] is False and summary["nonfinite_tensors"] == ["head.weight"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"] == "failed"


def test_disk_full_during_bundle_leaves_nothing(tmp_path, monkeypatch, capsys):
    import errno

    from subnet_export.bundle import atomic as _atomic
    from subnet_export.cli import main

    real = _atomic.os.fsync
    calls = {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(_atomic.os, "fsync", failing_fsync)
    out = tmp_path / "b"
    code = main(["onnx", SPACE, "--out", str(out), "--batch", "2"])
    assert code == 2
    assert calls["n"] >= 3, "the simulated failure never triggered"
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


#: byte positions flipped per file, spread evenly from the first byte to the last
FLIPS_PER_FILE = 24


@pytest.fixture(scope="module")
def cli_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tamper") / "b"
    subprocess.run(_onnx(out), check=True, capture_output=True)
    return out


@pytest.mark.parametrize("name", sorted(BUNDLE_FILES))
def test_every_flipped_byte_is_caught(cli_bundle, tmp_path, name):
    import shutil

    from subnet_export.bundle.verify import verify_bundle
    from subnet_export.errors import BundleError

    size = (cli_bundle / name).stat().st_size
    positions = sorted({round(i * (size - 1) / (FLIPS_PER_FILE - 1))
                        for i in range(FLIPS_PER_FILE)})
    caught = 0
    for pos in positions:
        copy = tmp_path / f"c{pos}"
        shutil.copytree(cli_bundle, copy)
        data = bytearray((copy / name).read_bytes())
        data[pos] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        try:
            report = verify_bundle(copy)
        except BundleError as err:
            # a manifest that no longer parses is a corrupt bundle (exit 2), named as such
            assert name == "manifest.json" and "manifest" in str(err)
            caught += 1
            continue
        assert report.exit_code == 1
        bad = [f.path for f in report.files if not f.passed]
        # a flip inside the manifest's own hash table may also make another file look changed
        assert name in bad and (bad == [name] or name == "manifest.json")
        caught += 1
        shutil.rmtree(copy)
    assert caught == len(positions)
