"""ORT-format models and the operator config an onnxruntime minimal build is compiled with.

``onnxruntime.tools.convert_onnx_models_to_ort`` converts every model of a directory (the
"fixed" optimization style: optimizations baked in at level ``all``, for the CPU execution
provider) and writes one ``required_operators.config`` listing the operators all of them need;
``build.sh --minimal_build --include_ops_by_config`` takes that file. Its header names the
converted models by path; here it names them by their bundle file names, so a bundle's bytes do
not depend on where it was built.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import ExportError

__all__ = ["OPERATORS_CONFIG", "ort_name", "to_ort_format"]

OPERATORS_CONFIG = "required_operators.config"


def ort_name(model_file: str) -> str:
    """``model.int8.onnx`` -> ``model.int8.ort``."""
    return model_file.removesuffix(".onnx") + ".ort"


def _relative_header(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.startswith("# - "):
            line = f"# - {os.path.basename(line[4:])}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def to_ort_format(models: Sequence[Path], out_dir: Path) -> dict[str, object]:
    """Write ``<model>.ort`` for each model and :data:`OPERATORS_CONFIG` into ``out_dir``.

    Args:
        models: ONNX files (their external data beside them).
        out_dir: where the ``.ort`` files and the config go.

    Returns:
        The manifest's ``ort`` entry: ``{"files": {model file: ort file}, "operators_config"}``.

    Raises:
        ExportError: onnxruntime cannot convert a model.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    with tempfile.TemporaryDirectory(prefix=".ort-", dir=out_dir) as tmp:
        src, dst = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        for model in models:
            os.link(model, src / model.name) if _same_fs(model, src) else shutil.copy2(
                model, src / model.name)
        logging.disable(logging.INFO)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                convert_onnx_models_to_ort(src, output_dir=dst,
                                           optimization_styles=[OptimizationStyle.Fixed])
        except Exception as e:  # onnxruntime's own error types
            raise ExportError(f"onnxruntime cannot convert the model to ORT format: {e}") from e
        finally:
            logging.disable(logging.NOTSET)
        files = {}
        for model in models:
            name = ort_name(model.name)
            if not (dst / name).is_file():
                raise ExportError(f"onnxruntime wrote no ORT-format model for {model.name}")
            shutil.move(dst / name, out_dir / name)
            files[model.name] = name
        config = (dst / OPERATORS_CONFIG).read_text()
        (out_dir / OPERATORS_CONFIG).write_text(_relative_header(config))
    return {"files": files, "operators_config": OPERATORS_CONFIG}


def _same_fs(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev
