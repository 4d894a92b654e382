"""``sweep`` with edge variants: every bundle gets them, a failed variant fails its arch."""

from __future__ import annotations

from pathlib import Path

import pytest

from subnet_export.sweeps.runner import sweep
from subnet_export.variants.build import VariantOptions
from subnet_export.variants.stats import VariantLimits

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPACE = f"{FIXTURES / 'tiny_space.py'}:supernet"
SKIP8 = {"width": 8, "block.k": 3, "depth": 1, "op": "skip"}
SKIP16 = {"width": 16, "block.k": 5, "depth": 2, "op": "skip"}
OPTIONS = {"batch": 2, "latency_runs": 0}
# robust bounds for a random-weight net judged on random inputs (the defaults assume real data)
PASSING = VariantOptions(kinds=("int8",), limits={"int8": VariantLimits(snr_db_min=10.0)},
                         sensitivity="never")
FAILING = VariantOptions(kinds=("int8",), limits={"int8": VariantLimits(snr_db_min=500.0)},
                         sensitivity="never")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    return root, sweep(SPACE, root / "ok", archs=[SKIP8, SKIP16], variants=PASSING, **OPTIONS)


def test_every_bundle_gets_its_judged_variants(swept):
    _, result = swept
    assert [r["verdict"] for r in result.rows] == ["passed", "passed"], result.rows
    assert [r["variants"] for r in result.rows] == [{"int8": True}] * 2
    for row in result.rows:
        assert (result.out_dir / row["bundle"] / "model.int8.onnx").is_file()
    assert result.exit_code == 0


def test_variant_settings_are_part_of_the_bundle_names(swept, tmp_path):
    _, result = swept
    plain = sweep(SPACE, tmp_path / "plain", archs=[SKIP8], **OPTIONS)
    assert plain.rows[0]["variants"] is None
    assert plain.rows[0]["bundle"] != result.rows[0]["bundle"]


def test_a_failed_variant_fails_its_arch_and_a_rerun_keeps_it(swept):
    root, _ = swept
    first = sweep(SPACE, root / "bad", archs=[SKIP8], variants=FAILING, **OPTIONS)
    (row,) = first.rows
    assert row["verdict"] == "failed" and row["exit_code"] == 1 and first.exit_code == 1
    assert row["reason"].startswith("variant failed: int8:") and "snr_db" in row["reason"]
    assert row["variants"] == {"int8": False}
    again = sweep(SPACE, root / "bad", archs=[SKIP8], variants=FAILING, **OPTIONS)
    assert again.rows[0]["status"] == "reused" and again.rows[0]["reason"] == row["reason"]
