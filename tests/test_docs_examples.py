"""The Python examples of the README and docs/supernet.md run as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def _run(path: Path, block: str) -> dict:
    namespace: dict = {"__name__": "docs_example"}
    exec(compile(block, str(path), "exec"), namespace)  # noqa: S102 - our own docs
    return namespace


def test_readme_example_runs(tmp_path, monkeypatch):
    blocks = _python_blocks(ROOT / "README.md")
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace = _run(ROOT / "README.md", blocks[0])
    assert namespace["report"].passed
    assert os.path.isfile(tmp_path / "model.onnx")


def test_custom_supernet_module_example_runs():
    blocks = _python_blocks(ROOT / "docs" / "supernet.md")
    assert len(blocks) == 1
    namespace = _run(ROOT / "docs" / "supernet.md", blocks[0])
    assert namespace["arch"] == {"dim": 8}
    assert not any(isinstance(m, namespace["se"].BaseSuperNetModule)
                   for m in namespace["plain"].modules())
