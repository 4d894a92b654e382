"""``BundleManifest``: what ``manifest.json`` holds, its canonical bytes and its self-digest.

stdlib only: ``verify`` reads manifests on machines without torch (and possibly without onnx).
The schema is documented in docs/bundle.md; bump :data:`SCHEMA_VERSION` on any change to it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import BundleError
from .layout import TOLERANCE_KEYS

__all__ = ["SCHEMA", "SCHEMA_VERSION", "BundleManifest"]

SCHEMA = "subnet-export/bundle"
SCHEMA_VERSION = 3
#: Fields a manifest of an older schema may lack, with the value they then take.
_OPTIONAL: dict[str, type] = {"variants": dict, "ort": dict}

# Fields that must be present with these JSON types (bool is excluded from int below).
_TYPES: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "schema_version": int,
    "tool_version": str,
    "versions": dict,
    "model_file": str,
    "external_data": list,
    "ir_version": int,
    "opset": int,
    "opset_imports": dict,
    "inputs": list,
    "outputs": list,
    "parameter_count": int,
    "source_checkpoint_sha256": (str, type(None)),
    "parity": str,
    "tolerance": dict,
    "sample_cases": int,
    "files": dict,
    "extra": dict,
    "manifest_sha256": str,
}


@dataclass
class BundleManifest:
    """The contents of a bundle's ``manifest.json``.

    Attributes:
        tool_version: subnet-export version that wrote the bundle.
        versions: package -> installed version (``None`` when not installed): subnet-export,
            torch, onnx, onnxruntime, numpy.
        model_file: the model's file name inside the bundle (``model.onnx``).
        external_data: relative paths of the model's external-data files (may be empty).
        ir_version: ONNX IR version of the model.
        opset: opset of the default ONNX domain.
        opset_imports: every imported domain -> opset version (``""`` is the default domain).
        inputs: graph inputs, each ``{"name", "dtype", "shape"}``; a shape entry is an int,
            a string for a named dynamic dim, or ``None`` for an unnamed unknown dim.
        outputs: graph outputs, same form.
        parameter_count: number of parameters of the model.
        source_checkpoint_sha256: sha256 of the checkpoint the model came from, if known.
        parity: ``"passed"`` or ``"failed"``, the verdict of ``parity.json``.
        tolerance: the rule ``verify`` applies to the samples: ``{"atol", "rtol",
            "noise_factor"}``, each a number >= 0 or None, at least one set (see
            ``parity/rule.py``).
        sample_cases: number of cases in ``samples.npz``.
        files: relative path -> ``{"size", "sha256"}`` for every bundle file but the manifest.
        extra: free-form JSON the writer added (calibration, exporter, ...).
        variants: kind (``fp16``, ``int8``) -> the edge variant's entry: its ``file``, verdict
            (``passed``), ``limits``, statistics on its ``judged_set``, settings, sensitivity
            (schema 3; docs/edge.md). Empty without variants.
        ort: ``{"files": {model file: .ort file}, "operators_config": name}`` when the bundle
            holds ORT-format models for onnxruntime's minimal build (schema 3), else empty.
        schema: always :data:`SCHEMA`.
        schema_version: :data:`SCHEMA_VERSION` of the writer.
        manifest_sha256: sha256 of the canonical manifest with this field set to ``""``.
    """

    tool_version: str
    versions: dict[str, str | None]
    model_file: str
    external_data: list[str]
    ir_version: int
    opset: int
    opset_imports: dict[str, int]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    parameter_count: int
    source_checkpoint_sha256: str | None
    parity: str
    tolerance: dict[str, float | None]
    sample_cases: int
    files: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    ort: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION
    manifest_sha256: str = ""

    @property
    def passed(self) -> bool:
        """Whether the recorded parity verdict is ``"passed"``."""
        return self.parity == "passed"

    def content_sha256(self) -> str:
        """Return the digest of the canonical manifest with ``manifest_sha256`` blanked."""
        body = asdict(self)
        body["manifest_sha256"] = ""
        return hashlib.sha256(_canonical(body).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """Return the manifest as a JSON-ready dict, its self-digest filled in."""
        body = asdict(self)
        body["manifest_sha256"] = self.content_sha256()
        return body

    def dumps(self) -> str:
        """Return the canonical text of ``manifest.json`` (sorted keys, 2-space indent, ASCII)."""
        return _canonical(self.to_json())

    @classmethod
    def from_json(cls, data: Any) -> BundleManifest:
        """Build a manifest from parsed JSON, checking its schema.

        Args:
            data: the parsed ``manifest.json``.

        Returns:
            The manifest, ``manifest_sha256`` as recorded (not recomputed).

        Raises:
            BundleError: not an object, another schema, a newer schema version, a missing,
                unknown or mistyped field.
        """
        if not isinstance(data, dict):
            raise BundleError("manifest.json is not a JSON object; the bundle is corrupt")
        if data.get("schema") != SCHEMA:
            raise BundleError(f"manifest.json has schema {data.get('schema')!r}, not {SCHEMA!r}")
        version = data.get("schema_version")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise BundleError(
                f"manifest.json has schema_version {version}; this subnet-export reads up to "
                f"{SCHEMA_VERSION}: upgrade subnet-export"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError(
                f"manifest.json has unknown field(s) {unknown}; the bundle is corrupt"
            )
        for name, typ in _TYPES.items():
            if name not in data:
                raise BundleError(f"manifest.json lacks field {name!r}; the bundle is corrupt")
            value = data[name]
            if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
                raise BundleError(f"manifest.json field {name!r} has the wrong type")
        for name, typ in _OPTIONAL.items():
            if not isinstance(data.get(name, typ()), typ):
                raise BundleError(f"manifest.json field {name!r} has the wrong type")
        for kind, entry in data.get("variants", {}).items():
            if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                    and isinstance(entry.get("passed"), bool)):
                raise BundleError(f"manifest.json variant {kind!r} lacks its file or verdict")
        if data["parity"] not in ("passed", "failed"):
            raise BundleError("manifest.json field 'parity' is neither 'passed' nor 'failed'")
        tol = data["tolerance"]
        if set(tol) != set(TOLERANCE_KEYS) or all(v is None for v in tol.values()) or not all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0)
            for v in tol.values()
        ):
            raise BundleError("manifest.json field 'tolerance' must hold atol, rtol and "
                              "noise_factor, each a number >= 0 or null, not all null")
        for rel, entry in data["files"].items():
            if not (isinstance(entry, dict) and isinstance(entry.get("size"), int)
                    and isinstance(entry.get("sha256"), str)):
                raise BundleError(f"manifest.json entry for {rel!r} lacks size or sha256")
        return cls(**data)

    @classmethod
    def loads(cls, text: str | bytes) -> BundleManifest:
        """Parse ``manifest.json`` text.

        Args:
            text: the file's contents.

        Returns:
            The manifest.

        Raises:
            BundleError: invalid UTF-8 or JSON, or a schema problem (see :meth:`from_json`).
        """
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(
                f"manifest.json is not valid JSON ({e}); the bundle is corrupt"
            ) from e
        return cls.from_json(data)


def _canonical(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"
