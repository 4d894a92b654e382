"""``sweep`` in Python: index rows, failures as rows, resumption, duplicates, the process pool."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from subnet_export.bundle.hashing import digest_file
from subnet_export.bundle.verify import verify_bundle
from subnet_export.sweeps.index import INDEX_JSON, INDEX_JSONL
from subnet_export.sweeps.report import REPORT_NAME
from subnet_export.sweeps.runner import ROW_DEFAULTS, sweep

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPACE = f"{FIXTURES / 'tiny_space.py'}:supernet"
SKIP8 = {"width": 8, "block.k": 3, "depth": 1, "op": "skip"}
SKIP16 = {"width": 16, "block.k": 5, "depth": 2, "op": "skip"}
CONV12 = {"width": 12, "block.k": 5, "depth": 2, "op": "conv"}  # reads the poisoned tensor
ENTRIES = [{"arch": SKIP8, "accuracy": 0.5}, CONV12, {"width": 9, "block.k": 3, "depth": 1,
           "op": "skip"}, {"arch": SKIP8, "accuracy": 0.6}, SKIP16]
OPTIONS = {"exporter": "torchscript", "batch": 2, "latency_runs": 3}
VOLATILE = ("timings_s", "latency_ms", "warnings")


def _tiny():
    sys.path.insert(0, str(FIXTURES))
    try:
        import tiny_space
    finally:
        sys.path.remove(str(FIXTURES))
    return tiny_space


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A clean checkpoint, and one with a NaN in the tensor only `op: conv` archs read."""
    root = tmp_path_factory.mktemp("ckpt")

    def poison(state):
        state["op.conv.weight"][0, 0, 0, 0] = float("nan")

    return (_tiny().save_checkpoint(root / "clean.pt"),
            _tiny().save_checkpoint(root / "poisoned.pt", poison))


@pytest.fixture(scope="module")
def swept(tmp_path_factory, checkpoints):
    out = tmp_path_factory.mktemp("sweep") / "out"
    seen = []
    result = sweep(SPACE, out, archs=ENTRIES, weights=checkpoints[1],
                   progress=lambda row, done, total: seen.append((done, total)), **OPTIONS)
    return out, result, seen


def _stable(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def test_rows_say_each_arch_and_the_sweep_goes_on(swept):
    out, result, seen = swept
    rows = result.rows
    assert [r["position"] for r in rows] == list(range(len(ENTRIES)))
    assert all(set(ROW_DEFAULTS) <= set(r) for r in rows)
    assert [r["verdict"] for r in rows] == ["passed", "failed", "error", "passed", "passed"]
    assert rows[1]["reason"].startswith("parity failed") and rows[1]["exit_code"] == 1
    assert rows[2]["error_type"] == "ArchError" and "'width'" in rows[2]["reason"]
    assert rows[2]["bundle"] is None and rows[2]["exit_code"] == 2
    assert result.exit_code == 2 and result.complete
    assert rows[0]["columns"] == {"accuracy": 0.5} and rows[3]["columns"] == {"accuracy": 0.6}
    assert seen == [(n, len(ENTRIES)) for n in range(1, len(ENTRIES) + 1)]


def test_the_same_arch_twice_is_one_bundle(swept):
    out, result, _ = swept
    rows = result.rows
    assert rows[0]["bundle"] == rows[3]["bundle"] and rows[3]["duplicate_of"] == 0
    bundles = {r["bundle"] for r in rows if r["bundle"]}
    assert len(bundles) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*bundles, INDEX_JSON, INDEX_JSONL, REPORT_NAME])
    report = (out / REPORT_NAME).read_text(encoding="utf-8")
    assert all(f"{b}/manifest.json" in report for b in bundles)


def test_rows_match_their_bundles(swept):
    out, result, _ = swept
    good, bad = result.rows[0], result.rows[1]
    assert verify_bundle(out / good["bundle"]).passed
    manifest = json.loads((out / bad["bundle"] / "manifest.json").read_text())
    assert manifest["parity"] == "failed"
    for row in (good, bad):
        bundle = out / row["bundle"]
        assert json.loads((bundle / "arch.json").read_text()) == row["arch"]
        assert row["model_bytes"] == (bundle / "model.onnx").stat().st_size
        man = json.loads((bundle / "manifest.json").read_text())
        assert row["parameters"] == man["parameter_count"] > 0
        assert row["latency_ms"] > 0 and "export" in row["timings_s"]


def test_the_index_files_hold_the_rows(swept, checkpoints):
    out, result, _ = swept
    logged = [json.loads(line) for line in (out / INDEX_JSONL).read_text().splitlines()]
    index = json.loads((out / INDEX_JSON).read_text())
    assert sorted(logged, key=lambda r: r["position"]) == index["rows"] == result.rows
    assert index["complete"] is True
    assert index["checkpoint_sha256"] == digest_file(checkpoints[1]).sha256


def test_a_rerun_keeps_verified_bundles_and_redoes_broken_ones(swept, checkpoints, tmp_path):
    src, first, _ = swept
    out = tmp_path / "again"
    shutil.copytree(src, out)
    good, other = first.rows[0]["bundle"], first.rows[4]["bundle"]
    with open(out / good / "model.onnx", "ab") as f:
        f.write(b"\0")
    (out / other / "manifest.json").unlink()
    kept = (out / first.rows[1]["bundle"] / "model.onnx").stat().st_mtime_ns
    result = sweep(SPACE, out, archs=ENTRIES, weights=checkpoints[1], **OPTIONS)
    assert [r["status"] for r in result.rows] == [
        "exported", "reused", "error", "exported", "exported"]
    assert _stable(result.rows) == _stable(
        [{**r, "status": s} for r, s in zip(first.rows, [r["status"] for r in result.rows])])
    assert (out / first.rows[1]["bundle"] / "model.onnx").stat().st_mtime_ns == kept
    assert verify_bundle(out / good).passed and verify_bundle(out / other).passed
    assert result.rows[1]["latency_ms"] == first.rows[1]["latency_ms"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_another_checkpoint_gives_another_bundle(swept, checkpoints, tmp_path):
    src, first, _ = swept
    result = sweep(SPACE, tmp_path / "clean", archs=[SKIP8], weights=checkpoints[0],
                   **{**OPTIONS, "latency_runs": 0})
    assert result.rows[0]["verdict"] == "passed" and result.rows[0]["latency_ms"] is None
    assert result.rows[0]["bundle"] != first.rows[0]["bundle"]


def test_an_interrupted_sweep_keeps_what_it_finished(checkpoints, tmp_path):
    def stop_after_one(row, done, total):
        if row["status"] == "exported":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(SPACE, tmp_path, archs=[SKIP8, SKIP16], weights=checkpoints[0],
              progress=stop_after_one, **OPTIONS)
    index = json.loads((tmp_path / INDEX_JSON).read_text())
    assert index["complete"] is False and len(index["rows"]) == 1
    assert verify_bundle(tmp_path / index["rows"][0]["bundle"]).passed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [index["rows"][0]["bundle"], INDEX_JSON, INDEX_JSONL])


def test_two_workers_give_the_rows_of_one(swept, checkpoints, tmp_path):
    _, first, _ = swept
    result = sweep(SPACE, tmp_path, archs=ENTRIES, weights=checkpoints[1], workers=2,
                   **OPTIONS)
    assert _stable(result.rows) == _stable(first.rows)
    assert json.loads((tmp_path / INDEX_JSON).read_text())["workers"] == 2


def test_an_interruption_after_a_bundle_is_installed_still_logs_its_row(checkpoints, tmp_path,
                                                                        monkeypatch):
    import subnet_export.sweeps.runner as runner

    real = runner.export_one

    def installed_then_interrupted(*args, **kwargs):
        real(*args, **kwargs)  # the bundle is in place, its row not yet handed back
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "export_one", installed_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(SPACE, tmp_path, archs=[SKIP8, SKIP16], weights=checkpoints[0], **OPTIONS)
    index = json.loads((tmp_path / INDEX_JSON).read_text())
    bundles = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("subnet-"))
    assert index["complete"] is False and len(bundles) == 1
    assert [(r["bundle"], r["status"], r["verdict"]) for r in index["rows"]] == [
        (bundles[0], "exported", "passed")]


# -- template reuse -------------------------------------------------------------------------------
#: one topology (depth 2, op skip), three widths and kernels: one trace, two fitted templates
SAME_TOPOLOGY = [{"width": 8, "block.k": 3, "depth": 2, "op": "skip"},
                 {"width": 16, "block.k": 5, "depth": 2, "op": "skip"},
                 {"width": 12, "block.k": 3, "depth": 2, "op": "skip"},
                 {"width": 12, "block.k": 5, "depth": 1, "op": "skip"}]


@pytest.fixture(scope="module")
def reuse_pair(tmp_path_factory, checkpoints):
    """The same dynamo sweep with template reuse and without."""
    root = tmp_path_factory.mktemp("reuse")
    runs = {}
    for reuse in ("template", "off"):
        runs[reuse] = sweep(SPACE, root / reuse, archs=SAME_TOPOLOGY, weights=checkpoints[0],
                            batch=2, latency_runs=0, reuse=reuse)
    return runs


def test_template_reuse_fits_one_trace_to_archs_of_its_topology(reuse_pair):
    rows = reuse_pair["template"].rows
    assert [r["verdict"] for r in rows] == ["passed"] * len(SAME_TOPOLOGY)
    assert [r["export_route"] for r in rows] == ["traced", "template", "template", "traced"]
    assert all(r["template_notes"] == [] for r in rows[:3])
    assert [r["export_route"] for r in reuse_pair["off"].rows] == ["traced"] * len(SAME_TOPOLOGY)
    header = json.loads((reuse_pair["template"].out_dir / INDEX_JSON).read_text())
    assert header["reuse"] == "template"


def test_template_reuse_changes_no_bundle_name_and_no_model_byte(reuse_pair):
    fitted, traced = reuse_pair["template"], reuse_pair["off"]
    assert [r["bundle"] for r in fitted.rows] == [r["bundle"] for r in traced.rows]
    for row in fitted.rows:
        mine = (fitted.out_dir / row["bundle"] / "model.onnx").read_bytes()
        assert mine == (traced.out_dir / row["bundle"] / "model.onnx").read_bytes()
        assert verify_bundle(fitted.out_dir / row["bundle"]).passed


def test_an_unknown_reuse_setting_is_refused(tmp_path):
    from subnet_export.errors import InputError

    with pytest.raises(InputError, match="reuse must be one of template, off"):
        sweep(SPACE, tmp_path / "out", archs=[SKIP8], reuse="always")


def test_the_report_draws_the_axes_asked_for(checkpoints, tmp_path):
    from subnet_export.errors import InputError

    entries = [{"arch": SKIP8, "accuracy": 0.5}, {"arch": SKIP16, "accuracy": 0.7}]
    with pytest.raises(InputError, match="unknown report axis 'flops'"):
        sweep(SPACE, tmp_path / "refused", archs=entries, report_axes=("parameters", "flops"))
    assert not (tmp_path / "refused").exists()  # refused before any work
    result = sweep(SPACE, tmp_path / "out", archs=entries, weights=checkpoints[0],
                   report_axes=("parameters", "accuracy"), **OPTIONS)
    page = (result.out_dir / REPORT_NAME).read_text(encoding="utf-8")
    assert "accuracy (higher is better)" in page and "latency (ms) (lower" not in page


def test_two_workers_share_their_traces_and_write_the_same_bundles(reuse_pair, checkpoints,
                                                                   tmp_path):
    from subnet_export.sweeps.setup import TEMPLATES_DIR

    traced = reuse_pair["off"]
    result = sweep(SPACE, tmp_path / "out", archs=SAME_TOPOLOGY, weights=checkpoints[0],
                   batch=2, latency_runs=0, reuse="template", workers=2)
    assert [r["verdict"] for r in result.rows] == ["passed"] * len(SAME_TOPOLOGY)
    assert "template" in [r["export_route"] for r in result.rows]
    for row, fresh in zip(result.rows, traced.rows):
        assert row["bundle"] == fresh["bundle"]
        mine = (result.out_dir / row["bundle"] / "model.onnx").read_bytes()
        assert mine == (traced.out_dir / row["bundle"] / "model.onnx").read_bytes()
    assert not (result.out_dir / TEMPLATES_DIR).exists()  # the shared traces go with the sweep
