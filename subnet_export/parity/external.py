"""Outputs the user's own framework recorded: one more candidate, the backend ``external``.

Our supernet path reimplements the supernet the user trained (in Once-for-All, NNI or anything
else). An ``.npz`` of inputs and the outputs that framework computed for the arch lets parity be
judged against the framework too: the recorded outputs are judged like a backend's, on their
own inputs (the input set ``reference-outputs``), against our float64 oracle by the noise rule
(``rule.py``), the floor being our float32 reference's own distance to the oracle there. A
reimplementation that differs from the framework moves the oracle away from the recorded outputs
and fails ``external``, even where the plain model agrees with our supernet path.

Key convention (docs/parity.md): inputs as :func:`~subnet_export.npz.pick_inputs` reads them (the
graph input names, else ``input`` / ``input_0``, ``input_1``, ...); outputs as ``output`` (a model
with one output), ``output_0``, ``output_1``, ... (in the model's output order), or
``output:<graph output name>`` (the bundle's samples' form), one of the three per file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..npz import load_npz, pick_inputs
from .inputs import InputSet
from .report import EXTERNAL_BACKEND, ParityReport

__all__ = ["EXTERNAL_SET", "RecordedOutputs", "external_parity", "read_reference_outputs"]

#: Label of the input set the recorded outputs belong to.
EXTERNAL_SET = "reference-outputs"
_NUMBERED = re.compile(r"^output_(\d+)$")
_USAGE = ("name the outputs 'output' (one output), 'output_0', 'output_1', ... (in the model's "
          "output order) or 'output:<graph output name>', and the inputs 'input' / 'input_0', "
          "... or by graph input name, e.g. numpy.savez(path, input=x, output=y)")


@dataclass(frozen=True)
class RecordedOutputs:
    """An ``.npz`` of inputs and the outputs another implementation computed for them.

    Attributes:
        source: the file path, or ``"reference-outputs"`` for arrays given in memory.
        sha256: sha256 of the file's bytes (of nothing for in-memory arrays: None).
        inputs: the model inputs, in the model's input order.
        outputs: ``{key: array}`` of the recorded outputs, keys as in the file.
    """

    source: str
    sha256: str | None
    inputs: tuple[np.ndarray, ...]
    outputs: dict[str, np.ndarray]

    def input_set(self, examples: Sequence[torch.Tensor]) -> InputSet:
        """The recorded inputs as the input set ``reference-outputs``.

        Raises:
            InputError: an input's shape (besides the batch) or kind of dtype is not the model's.
        """
        tensors = []
        for k, (arr, ex) in enumerate(zip(self.inputs, examples, strict=True)):
            want = [str(d) for d in ex.shape[1:]]
            if arr.ndim != ex.ndim or list(arr.shape[1:]) != list(ex.shape[1:]):
                raise InputError(f"reference outputs: input {k} has shape {list(arr.shape)}, "
                                 f"the model takes [batch, {', '.join(want)}]")
            if _kind(arr.dtype) != _torch_kind(ex.dtype):
                raise InputError(f"reference outputs: input {k} is {arr.dtype}, the model takes "
                                 f"{str(ex.dtype).removeprefix('torch.')}")
            tensors.append(torch.from_numpy(np.ascontiguousarray(arr)).to(ex.dtype))
        return InputSet(EXTERNAL_SET, tuple(tensors), self.source)

    def arrays_for(self, output_names: Sequence[str],
                   references: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The recorded outputs in the model's output order, checked against our reference's.

        Args:
            output_names: the graph output names.
            references: our float32 reference's outputs on the recorded inputs.

        Raises:
            InputError: the keys do not name every output once, or a shape or dtype differs
                from the reference's (a float output may be recorded in float32 or float64).
        """
        keys = _output_keys(list(self.outputs), list(output_names), len(references))
        out = []
        for key, ref in zip(keys, references):
            arr = np.asarray(self.outputs[key])
            if arr.shape != ref.shape:
                raise InputError(f"reference outputs: {key!r} has shape {list(arr.shape)}, our "
                                 f"supernet path gives {list(ref.shape)} on those inputs")
            if arr.dtype != ref.dtype and not (ref.dtype.kind == "f" and
                                               arr.dtype in (np.float32, np.float64)):
                raise InputError(f"reference outputs: {key!r} is {arr.dtype}, the model's output "
                                 f"is {ref.dtype}")
            out.append(arr.astype(ref.dtype, copy=False))
        return out


def read_reference_outputs(source: str | Path | Mapping[str, np.ndarray] | RecordedOutputs, *,
                           input_names: Sequence[str] | None,
                           n_inputs: int) -> RecordedOutputs:
    """Read recorded inputs and outputs by the key convention of this module.

    Args:
        source: an ``.npz`` path, a mapping of arrays, or an already read :class:`RecordedOutputs`.
        input_names: the graph input names, when known.
        n_inputs: how many inputs the model takes.

    Raises:
        InputError: the file cannot be read, holds no output key, mixes output conventions, or
            its inputs cannot be found; the message says which keys to use.
    """
    if isinstance(source, RecordedOutputs):
        return source
    if isinstance(source, (str, Path)):
        data = load_npz(source, "reference outputs")
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
        name = str(source)
    else:
        data, digest, name = dict(source), None, EXTERNAL_SET
    outputs = {k: v for k, v in data.items() if k == "output" or k.startswith("output:")
               or _NUMBERED.match(k)}
    if not outputs:
        raise InputError(f"reference outputs {name!r} hold no output (keys {list(data)}); "
                         f"{_USAGE}")
    rest = {k: v for k, v in data.items() if k not in outputs}
    if not rest:
        raise InputError(f"reference outputs {name!r} hold no input (keys {list(data)}); {_USAGE}")
    try:
        inputs = pick_inputs(rest, "reference outputs", names=input_names, count=n_inputs)
    except InputError as err:
        raise InputError(f"{err}; {_USAGE}") from err
    return RecordedOutputs(name, digest, tuple(np.asarray(a) for a in inputs), outputs)


def external_parity(report: ParityReport, recorded: RecordedOutputs | None) -> dict[str, Any]:
    """The manifest's ``external_parity``: whether it was checked, the file's digest, the verdict.

    ``{"checked": false}`` when no reference outputs were given.
    """
    if recorded is None:
        return {"checked": False}
    return {"checked": True, "file_sha256": recorded.sha256,
            "passed": report.backend(EXTERNAL_BACKEND).status == "passed"}


def _output_keys(keys: list[str], names: list[str], count: int) -> list[str]:
    """The keys of the ``count`` outputs, in the model's order, by one of the conventions."""
    named = [k for k in keys if k.startswith("output:")]
    numbered = sorted((k for k in keys if _NUMBERED.match(k)), key=lambda k: int(k[7:]))
    plain = [k for k in keys if k == "output"]
    if sum(map(bool, (named, numbered, plain))) > 1:
        raise InputError(f"reference outputs mix output conventions ({keys}); {_USAGE}")
    if plain:
        if count != 1:
            raise InputError(f"reference outputs: 'output' names one output, the model has "
                             f"{count}; name them 'output_0'..'output_{count - 1}' or "
                             f"'output:<name>' of {names}")
        return plain
    if numbered:
        want = [f"output_{k}" for k in range(count)]
        if numbered != want:
            raise InputError(f"reference outputs: keys {numbered} for {count} model outputs; "
                             f"save them as {want}")
        return numbered
    want = [f"output:{n}" for n in names[:count]]
    if sorted(named) != sorted(want):
        raise InputError(f"reference outputs: keys {named} do not name the model's outputs; "
                         f"save them as {want}")
    return want


def _kind(dtype: np.dtype) -> str:
    return "f" if dtype.kind in "fc" else ("b" if dtype.kind == "b" else "i")


def _torch_kind(dtype: torch.dtype) -> str:
    return "f" if dtype.is_floating_point or dtype.is_complex else (
        "b" if dtype == torch.bool else "i")
