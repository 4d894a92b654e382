"""subnet-export: a trained weight-sharing supernet in, a plain validated ONNX model out.

Names are loaded on first use, so that torch-free parts (``subnet-export verify`` on the edge)
never import torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from .version import __version__

# public name -> the module that defines it (tests/test_public_api.py checks both ways)
_EXPORTS: dict[str, str] = {
    # choices and specs
    "Choice": "space.choice",
    "ChoiceExpr": "space.choice",
    "compose": "space.choice",
    "evaluate": "space.choice",
    "ParameterSpec": "space.spec",
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
    "Conv2d": "space.placeholders",
    "Linear": "space.placeholders",
    "BatchNorm2d": "space.placeholders",
    "LayerNorm": "space.placeholders",
    "MultiheadAttention": "space.placeholders",
    "LayerChoice": "space.containers",
    "InputChoice": "space.containers",
    "EdgeChoice": "space.containers",
    "Repeat": "space.containers",
    "Parameter": "space.placeholders",
    # plain modules a materialized subnet may hold besides torch.nn's
    "ChosenEdges": "plain.modules",
    "LearnedTensor": "plain.modules",
    "SelectInputs": "plain.modules",
    "Zero": "plain.modules",
    "sum_terms": "plain.modules",
    # supernet contract
    "BaseSuperNetModule": "supernet.base",
    "sub_state_dict": "supernet.walk",
    "to_supernet": "supernet.convert",
    # stages
    "search_space": "arch",
    "freeze": "arch",
    "FrozenArch": "arch",
    "fixed_arch": "arch",
    "sample_arch": "arch",
    "load_arch": "arch",
    "materialize": "plain.materialize",
    "module_labels": "plain.materialize",
    "export_onnx": "export.exporter",
    "ExportResult": "export.exporter",
    "validate": "parity.validate",
    "make_inputs": "parity.inputs",
    "InputSpec": "signature",
    "export_subnet": "pipeline",
    "make_variants": "variants.build",
    "VariantOptions": "variants.build",
    "VariantResult": "variants.build",
    "JudgedSet": "variants.build",
    "VariantLimits": "variants.stats",
    "Int8Settings": "variants.convert",
    "Fp16Settings": "variants.convert",
    "RunResult": "pipeline",
    "sweep": "sweeps.runner",
    "load_weights": "loading",
    "load_checkpoint": "loading",
    "LoadedWeights": "weights",
    "SweepResult": "sweeps.runner",
    "inspect_bundle": "bundle.inspect",
    "BundleInspection": "bundle.inspection",
    "ParityReport": "parity.report",
    "BackendResult": "parity.report",
    "OutputComparison": "parity.comparison",
    "Tolerance": "parity.rule",
    "NoiseCheck": "parity.rule",
    "locate_divergence": "parity.locate",
    "Divergence": "parity.report",
    "recalibrate_bn": "recalibrate.bn",
    "CalibrationInfo": "recalibrate.bn",
    "write_bundle": "bundle.write",
    "BundleManifest": "bundle.manifest",
    "verify_bundle": "bundle.verify",
    "VerifyReport": "bundle.verify",
    "gate": "bundle.gate",
    "Budget": "bundle.budget",
    "GateReport": "bundle.gate",
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
