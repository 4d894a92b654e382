"""The ``samples.npz`` of a bundle: key convention, byte-stable writing, safe reading.

Keys are ``<kind>[.<case>]:<name>``: ``kind`` is ``input``, ``output`` or ``oracle``, ``name`` the
ONNX graph input or output name (it may itself contain ``:`` or ``.``; only the first ``:``
splits), and the optional ``case`` a non-negative integer (no suffix means case 0). So one case is
``{"input:x": ..., "output:logits": ...}`` and a second one adds ``"input.1:x"``,
``"output.1:logits"``. Every case holds every graph input and at least one output. ``oracle``
arrays are the float64 outputs of the same reference (the noise rule's oracle,
``parity/rule.py``); a case that has any has one for each of its outputs.

numpy only: ``verify`` reads this on machines without torch.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..npz import load_npz

__all__ = ["SampleCase", "parse_samples", "read_samples", "sample_key", "write_samples"]

_KEY = re.compile(r"^(input|output|oracle)(?:\.(\d+))?:(.+)$", re.DOTALL)
KINDS = ("input", "output", "oracle")
# A fixed zip timestamp: np.savez stamps members with the current time, which would make two
# bundles written from the same inputs differ in bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class SampleCase:
    """One sample: graph inputs to feed, the outputs they must produce, their float64 oracle."""

    index: int
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    oracles: dict[str, np.ndarray] = field(default_factory=dict)


def sample_key(kind: str, name: str, case: int = 0) -> str:
    """Build a ``samples.npz`` key.

    Args:
        kind: ``"input"``, ``"output"`` or ``"oracle"``.
        name: the graph input or output name.
        case: the case index.

    Returns:
        ``"input:x"`` for case 0, ``"input.3:x"`` for case 3.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return f"{kind}:{name}" if case == 0 else f"{kind}.{case}:{name}"


def parse_samples(arrays: Mapping[str, np.ndarray]) -> list[SampleCase]:
    """Group flat ``samples`` keys into cases.

    Args:
        arrays: key -> array, keys as described in this module's docstring.

    Returns:
        The cases, sorted by index.

    Raises:
        ValueError: a key does not follow the convention, one key names a case twice
            (``input:x`` and ``input.0:x``), a value is not a numeric array, a case has
            no input or no output, or its oracles do not match its outputs. The message names
            the key or case.
    """
    cases: dict[int, SampleCase] = {}
    for key in sorted(arrays):
        m = _KEY.match(key)
        if m is None:
            raise ValueError(
                f"samples key {key!r} is not '<kind>:<name>' or '<kind>.<case>:<name>' with "
                f"kind one of {', '.join(KINDS)}"
            )
        kind, case_str, name = m.groups()
        array = np.asarray(arrays[key])
        if array.dtype.hasobject or array.dtype.kind not in "biufc":
            raise ValueError(f"samples[{key!r}] has dtype {array.dtype}; only numeric arrays")
        case = cases.setdefault(int(case_str or 0), SampleCase(int(case_str or 0)))
        slot = {"input": case.inputs, "output": case.outputs, "oracle": case.oracles}[kind]
        if name in slot:
            raise ValueError(f"samples name {kind} {name!r} of case {case.index} twice")
        slot[name] = array
    if not cases:
        raise ValueError("samples is empty: a bundle needs at least one input/output case")
    for case in cases.values():
        if not case.inputs or not case.outputs:
            raise ValueError(f"samples case {case.index} needs at least one input and one output")
        if case.oracles and (set(case.oracles) != set(case.outputs) or any(
                case.oracles[k].shape != case.outputs[k].shape for k in case.outputs)):
            raise ValueError(f"samples case {case.index} has oracles {sorted(case.oracles)} that "
                             f"do not match its outputs {sorted(case.outputs)} name for name and "
                             "shape for shape")
    return [cases[i] for i in sorted(cases)]


def write_samples(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an ``.npz`` that ``np.load`` reads, byte-identical for equal inputs.

    Members are sorted, stored uncompressed, stamped with a fixed date; the file is fsynced.

    Args:
        path: where to write.
        arrays: key -> numeric array.

    Raises:
        OSError: the file cannot be written.
    """
    with open(path, "wb") as raw:
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key in sorted(arrays):
                buf = io.BytesIO()
                array = np.ascontiguousarray(arrays[key])
                np.lib.format.write_array(buf, array, allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
        raw.flush()
        os.fsync(raw.fileno())


def read_samples(path: str | os.PathLike[str]) -> list[SampleCase]:
    """Read and group a ``samples.npz``; pickled objects are refused, never unpickled.

    Args:
        path: the file.

    Returns:
        The cases, as :func:`parse_samples` gives them.

    Raises:
        ValueError: the file is not a readable npz, holds pickled objects, or breaks the key
            convention.
    """
    try:
        arrays = load_npz(path, "samples")
    except InputError as e:
        raise ValueError(str(e)) from e
    return parse_samples(arrays)
