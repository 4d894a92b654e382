"""The shipped spaces' exports pass the budgets in ci/budgets/, and the gate bites."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import subnet_export as se
from models import get_space, list_spaces
from subnet_export.pipeline import export_subnet

BUDGETS = Path(__file__).resolve().parents[2] / "ci" / "budgets"
SCRIPT = Path(sys.executable).with_name("subnet-export")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            info = get_space(name)
            out = tmp_path_factory.mktemp(name) / "bundle"
            export_subnet(info.build(), out, input_shapes=[info.input_shape],
                          arch=se.load_arch(info.arch_files()[0]), batch=2,
                          providers=["CPUExecutionProvider"])
            made[name] = out
        return made[name]

    return get


def test_every_space_has_a_budget():
    assert sorted(p.stem for p in BUDGETS.glob("*.toml")) == list_spaces()


@pytest.mark.parametrize("name", list_spaces())
def test_shipped_arch_passes_its_budget(bundles, name):
    budget = se.Budget.from_toml(BUDGETS / f"{name}.toml")
    report = se.gate(bundles(name), budget, baseline=bundles(name))
    assert report.passed, report.format_table()
    assert report.latency is not None


@pytest.mark.parametrize("name", ["mobilenetv3", "autoformer"])
def test_a_tighter_budget_fails_with_every_violation(bundles, name):
    budget = se.Budget.from_toml(BUDGETS / f"{name}.toml")
    ops = sorted(budget.allowed_ops)
    tight = dataclasses.replace(budget, max_params=1, max_file_bytes=1,
                                allowed_ops=tuple(o for o in ops if o != "MatMul" and o != "Conv"))
    report = se.gate(bundles(name), tight, baseline=bundles(name))
    assert not report.passed and report.exit_code == 1
    failed = {c.name for c in report.violations}
    assert {"max_params", "max_file_bytes", "allowed_ops"} <= failed, failed


def test_gate_command_exit_codes(bundles, tmp_path):
    bundle = bundles("mobilenetv3")
    ok = subprocess.run([str(SCRIPT), "gate", str(bundle), "--budget",
                         str(BUDGETS / "mobilenetv3.toml"), "--baseline", str(bundle)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    tight = tmp_path / "tight.toml"
    tight.write_text("max_params = 10\n")
    bad = subprocess.run([str(SCRIPT), "gate", str(bundle), "--budget", str(tight)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "max_params" in bad.stdout
    typo = tmp_path / "typo.toml"
    typo.write_text("max_parms = 10\n")
    wrong = subprocess.run([str(SCRIPT), "gate", str(bundle), "--budget", str(typo)],
                           capture_output=True, text=True)
    assert wrong.returncode == 2 and "max_parms" in wrong.stderr and "Traceback" not in wrong.stderr
