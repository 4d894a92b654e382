"""subnet-export: a trained weight-sharing supernet in, a plain validated ONNX model out.

Names are loaded on first use, so that torch-free parts (``subnet-export verify`` on the edge)
never import torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # choices and specs
    "Choice": "choice",
    "ChoiceExpr": "choice",
    "compose": "choice",
    "evaluate": "choice",
    "ParameterSpec": "spec",
    # errors
    "SubnetExportError": "errors",
    "ArchError": "errors",
    "SearchSpaceError": "errors",
    "CheckpointError": "errors",
    "ExportError": "errors",
    "InputError": "errors",
    "BundleError": "errors",
    "TamperError": "errors",
    # search-space placeholders
    "Conv2d": "supernet.placeholders",
    "Linear": "supernet.placeholders",
    "BatchNorm2d": "supernet.placeholders",
    "LayerNorm": "supernet.placeholders",
    "MultiheadAttention": "supernet.placeholders",
    "LayerChoice": "supernet.placeholders",
    "InputChoice": "supernet.placeholders",
    "EdgeChoice": "supernet.placeholders",
    "Repeat": "supernet.placeholders",
    "Parameter": "supernet.placeholders",
    # plain modules a materialized subnet may hold besides torch.nn's
    "ChosenEdges": "plain",
    "LearnedTensor": "plain",
    "SelectInputs": "plain",
    "Zero": "plain",
    "sum_terms": "plain",
    # supernet contract
    "BaseSuperNetModule": "supernet.base",
    "sub_state_dict": "supernet.base",
    "to_supernet": "supernet.convert",
    # stages
    "search_space": "arch",
    "freeze": "arch",
    "fixed_arch": "arch",
    "sample_arch": "arch",
    "load_arch": "arch",
    "materialize": "materialization",
    "module_labels": "materialization",
    "export_onnx": "export",
    "ExportResult": "export",
    "validate": "validation",
    "make_inputs": "inputs",
    "ParityReport": "parity",
    "BackendResult": "parity",
    "OutputComparison": "parity",
    "Tolerance": "rule",
    "NoiseCheck": "rule",
    "locate_divergence": "locate",
    "Divergence": "locate",
    "recalibrate_bn": "recalibrate",
    "CalibrationInfo": "recalibrate",
    "write_bundle": "bundle",
    "BundleManifest": "bundle",
    "verify_bundle": "verify",
    "VerifyReport": "verify",
    "gate": "gating",
    "Budget": "gating",
    "GateReport": "gating",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'subnet_export' has no attribute {name!r}")
    importlib.import_module(f".{module}", __name__)
    _bind_loaded()
    return globals()[name]


def _bind_loaded() -> None:
    # Importing a submodule binds its name on the package; a public function must win over a
    # submodule of the same name, so every loaded export is (re)bound here.
    for export, module in _EXPORTS.items():
        loaded = sys.modules.get(f"{__name__}.{module}")
        if loaded is not None and hasattr(loaded, export):
            globals()[export] = getattr(loaded, export)


def __dir__() -> list[str]:
    return sorted(__all__)
