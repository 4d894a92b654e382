"""What a bundle directory holds, by name, and the rule its samples are judged by by default.

The one place bundle file names are written: the writer, ``verify``, ``gate`` and the latency
check all read them from here.
"""

from __future__ import annotations

from ..parity.rule import DEFAULT_NOISE_FACTOR, Tolerance

__all__ = ["ARCH_NAME", "DEFAULT_TOLERANCE", "MANIFEST_NAME", "MODEL_NAME", "PARITY_NAME",
           "RESERVED", "SAMPLES_NAME", "TOLERANCE_KEYS", "VARIANTS_SAMPLES"]

MODEL_NAME = "model.onnx"
ARCH_NAME = "arch.json"
PARITY_NAME = "parity.json"
SAMPLES_NAME = "samples.npz"
MANIFEST_NAME = "manifest.json"
#: The edge variants' judged inputs and float32 reference outputs (``variants/stage.py``).
VARIANTS_SAMPLES = "variants.npz"
#: Names an external-data file of the model may not take.
RESERVED = frozenset({MODEL_NAME, ARCH_NAME, PARITY_NAME, SAMPLES_NAME, MANIFEST_NAME,
                      VARIANTS_SAMPLES})
#: The fields of the manifest's ``tolerance``, as ``rule.Tolerance`` names them.
TOLERANCE_KEYS = ("atol", "rtol", "noise_factor")
#: What ``verify`` applies when the writer was given no tolerance: the verdict's own rule, which
#: needs ``oracle`` arrays in the samples.
DEFAULT_TOLERANCE: dict[str, float | None] = Tolerance(noise_factor=DEFAULT_NOISE_FACTOR).to_dict()
