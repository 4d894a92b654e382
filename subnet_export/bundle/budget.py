"""``Budget``: the limits a bundle must meet in CI, read from TOML (format in docs/gates.md)."""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["Budget", "LatencyBudget", "VariantBudget"]

#: the variant kinds a budget may name (``[variants.KIND]``)
VARIANT_KINDS = ("fp16", "int8")


@dataclass(frozen=True)
class LatencyBudget:
    """onnxruntime CPU latency relative to a baseline bundle measured in the same process.

    Attributes:
        max_ratio: the bundle's median latency over the baseline's may not exceed this.
        batch_size: batch size fed to both models (their first dim, when it is dynamic).
        runs: timed runs of each model; the medians are compared.
        warmup: untimed runs of each model first.
        threads: onnxruntime intra-op threads; 1 keeps the ratio steady on busy CI machines.
    """

    max_ratio: float
    batch_size: int = 1
    runs: int = 50
    warmup: int = 5
    threads: int = 1


@dataclass(frozen=True)
class VariantBudget:
    """What one edge variant of the bundle (``[variants.int8]``, ``[variants.fp16]``) may be.

    A budget that names a variant requires the bundle to hold it. Statistics are the ones the
    manifest records for the variant's judged set, worst output first (docs/edge.md).

    Attributes:
        require_passed: the variant's recorded verdict must be passed.
        max_file_bytes: the variant's ``.onnx`` file may not exceed this many bytes.
        max_size_ratio: the variant's file over ``model.onnx`` plus external data.
        cosine_min: every output's recorded cosine similarity must reach it.
        snr_db_min: every output's recorded SNR in dB must reach it.
        top1_agreement_min: every logits output's recorded top-1 agreement must reach it.
        top5_agreement_min: every logits output's recorded top-5 agreement must reach it.
        max_abs_error_max: no output's recorded max abs error may exceed it.
        latency: the variant's onnxruntime CPU latency over the bundle's float32 model, timed
            alternately in one process (``max_ratio`` and the options of :class:`LatencyBudget`).
    """

    require_passed: bool = True
    max_file_bytes: int | None = None
    max_size_ratio: float | None = None
    cosine_min: float | None = None
    snr_db_min: float | None = None
    top1_agreement_min: float | None = None
    top5_agreement_min: float | None = None
    max_abs_error_max: float | None = None
    latency: LatencyBudget | None = None


@dataclass(frozen=True)
class Budget:
    """What a bundle may be. Every limit is optional; ``None`` means not checked.

    Attributes:
        require_parity: the bundle's parity verdict must be ``passed``.
        max_abs_error: the worst ``max_abs_error`` in the bundle's parity report may not exceed it.
        max_params: the manifest's parameter count may not exceed it.
        max_file_bytes: ``model.onnx`` plus its external data may not exceed this many bytes.
        max_opset: the default-domain opset may not exceed it.
        allowed_ops: every operator the model runs must be listed (``"Conv"``, or
            ``"domain::Op"`` outside the default domain).
        latency: see :class:`LatencyBudget`.
        variants: variant kind -> :class:`VariantBudget`, from ``[variants.KIND]`` tables.
    """

    require_parity: bool = True
    max_abs_error: float | None = None
    max_params: int | None = None
    max_file_bytes: int | None = None
    max_opset: int | None = None
    allowed_ops: tuple[str, ...] | None = None
    latency: LatencyBudget | None = None
    variants: Mapping[str, VariantBudget] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Budget:
        """Read a budget file.

        Args:
            path: a TOML file in the format of docs/gates.md.

        Returns:
            The budget.

        Raises:
            InputError: the file is missing or not TOML, or a key is unknown or mistyped
                (the message names the key).
        """
        path = Path(path)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise InputError(f"cannot read budget file {path}: {e.strerror or e}") from e
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"budget file {path} is not valid TOML: {e}") from e
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "budget") -> Budget:
        """Build a budget from parsed TOML (see :meth:`from_toml`)."""
        values = _checked(data, cls, source, prefix="")
        if "allowed_ops" in values:
            values["allowed_ops"] = tuple(values["allowed_ops"])
        if "latency" in values:
            values["latency"] = _latency(values["latency"], source, "latency.")
        if "variants" in values:
            values["variants"] = {kind: _variant(kind, table, source)
                                  for kind, table in values["variants"].items()}
        return cls(**values)


def _latency(data: Mapping[str, Any], source: str, prefix: str) -> LatencyBudget:
    return LatencyBudget(**_checked(data, LatencyBudget, source, prefix=prefix))


def _variant(kind: str, data: Any, source: str) -> VariantBudget:
    if kind not in VARIANT_KINDS:
        raise InputError(f"{source}: unknown variant kind [variants.{kind}]; known: "
                         f"{', '.join(VARIANT_KINDS)}")
    prefix = f"variants.{kind}."
    if not isinstance(data, dict):
        raise InputError(f"{source}: 'variants.{kind}' must be a table, not {data!r}")
    values = _checked(data, VariantBudget, source, prefix=prefix)
    if "latency" in values:
        values["latency"] = _latency(values["latency"], source, prefix + "latency.")
    return VariantBudget(**values)


# key -> (accepted types, must be positive)
_KINDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "require_parity": ((bool,), False),
    "max_abs_error": ((int, float), False),
    "max_params": ((int,), False),
    "max_file_bytes": ((int,), True),
    "max_opset": ((int,), True),
    "allowed_ops": ((list,), False),
    "latency": ((dict,), False),
    "variants": ((dict,), False),
    "require_passed": ((bool,), False),
    "max_size_ratio": ((int, float), True),
    "cosine_min": ((int, float), False),
    "snr_db_min": ((int, float), False),
    "top1_agreement_min": ((int, float), False),
    "top5_agreement_min": ((int, float), False),
    "max_abs_error_max": ((int, float), False),
    "max_ratio": ((int, float), True),
    "batch_size": ((int,), True),
    "runs": ((int,), True),
    "warmup": ((int,), False),
    "threads": ((int,), True),
}

_AT_MOST_ONE = ("cosine_min", "top1_agreement_min", "top5_agreement_min")


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    # TOML booleans are Python bools, which are ints: `max_params = true` must not pass as 1.
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def _checked(data: Mapping[str, Any], cls: type, source: str, *, prefix: str) -> dict[str, Any]:
    known = [f.name for f in fields(cls)]
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in known:
            raise InputError(
                f"{source}: unknown key {name!r}; known keys: "
                f"{', '.join(prefix + k for k in known)}"
            )
        types, positive = _KINDS[key]
        if not _type_ok(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise InputError(f"{source}: {name!r} must be {expected}, not {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            math.isnan(value) or value < 0 or (positive and value == 0)
        ):
            raise InputError(f"{source}: {name!r} must be {'> 0' if positive else '>= 0'}")
        if key in _AT_MOST_ONE and value > 1:
            raise InputError(f"{source}: {name!r} is a share or a cosine: it must be <= 1")
        if key == "allowed_ops" and not all(isinstance(op, str) and op for op in value):
            raise InputError(f"{source}: 'allowed_ops' must be a list of operator names")
        out[key] = float(value) if float in types else value
    if cls is LatencyBudget and "max_ratio" not in out:
        raise InputError(f"{source}: [{prefix.rstrip('.')}] needs 'max_ratio'")
    return out
