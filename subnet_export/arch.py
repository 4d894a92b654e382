"""Stage 1, freeze: a complete, validated arch dict for a supernet.

Also the search space itself (``search_space``), random archs (``sample_arch``), arch files
(``load_arch``) and the supernet path for one arch (``fixed_arch``).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import random
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .errors import ArchError
from .space.spec import ParameterSpec
from .supernet.state import apply_arch, exported_arch, resample_arch
from .supernet.walk import collect_specs

__all__ = ["FrozenArch", "fixed_arch", "freeze", "load_arch", "sample_arch", "search_space"]

Arch = dict[str, Any]


def search_space(supernet: nn.Module) -> dict[str, ParameterSpec]:
    """``{label: ParameterSpec}`` of every label in the supernet, in module order.

    The walk itself is ``supernet.walk.collect_specs`` (which ``to_supernet`` runs too, to check
    the space); a depth label read in an expression as well is reported once, as ``depth``.

    Raises:
        SearchSpaceError: placeholders are left (``to_supernet`` was not called), or one label
            has two different specs.
    """
    return collect_specs(supernet)


class FrozenArch(dict):
    """A complete arch validated against one supernet: what :func:`freeze` returns.

    It is an ordinary ``{label: value}`` dict for reading (JSON, comparison, ``dict(arch)``), but
    cannot be changed, and :func:`freeze` (so ``fixed_arch``, ``materialize``, ``validate``)
    takes it as it is for the supernet it was made for, instead of validating it again.
    """

    def __init__(self, values: Mapping[str, Any], supernet: nn.Module,
                 source: Mapping[str, Any] | None = None) -> None:
        super().__init__(values)
        self._of = weakref.ref(supernet)
        #: the arch as the user gave it, when it was in another format (``translate_arch``)
        self.source = None if source is None else dict(source)

    def valid_for(self, supernet: nn.Module) -> bool:
        """Whether this arch was validated against ``supernet`` itself."""
        return self._of() is supernet

    def _frozen(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a frozen arch cannot change; dict(arch) is a copy that can")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _frozen

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))  # a pickled or copied arch is an ordinary dict


def freeze(supernet: nn.Module, arch: Mapping[str, Any] | None = None) -> FrozenArch:
    """Return a complete, valid arch for ``supernet``.

    Args:
        supernet: a module tree made by ``se.to_supernet``.
        arch: ``{label: value}``. None: the supernet's own ``export()`` (argmax of the
            architecture weights for differentiable modules, the current sample otherwise).
            An arch in another framework's format is accepted when the supernet's root has a
            ``translate_arch(arch) -> {label: value} | None`` attribute (a space of
            ``models/ofa.py`` takes Once-for-All's ``{ks, e, d}``); it answers None for an
            arch that is not in its format.

    Returns:
        A :class:`FrozenArch`: ``{label: value}`` in search-space order; input choices as
        sorted index lists; ``source`` holds the arch as given when it was translated. A
        FrozenArch of this supernet is returned as it is.

    Raises:
        ArchError: an unknown or missing label, a value that is not a candidate or of the wrong
            type, or conflicting values for one label. The message names the label and the
            valid values.
    """
    if isinstance(arch, FrozenArch) and arch.valid_for(supernet):
        return arch
    specs = search_space(supernet)
    if arch is None:
        arch = exported_arch(supernet)
    if not isinstance(arch, Mapping):
        raise ArchError(
            f"an arch must be a JSON object {{label: value}}, got {type(arch).__name__}")
    source = None
    translate = getattr(supernet, "translate_arch", None)
    if callable(translate) and any(k not in specs for k in arch):
        translated = translate(arch)
        if translated is not None:
            source, arch = dict(arch), translated
    unknown = [k for k in arch if k not in specs]
    if unknown:
        label = unknown[0]
        near = difflib.get_close_matches(str(label), list(specs), n=3)
        hint = f"; did you mean {near}?" if near else f"; the labels are {list(specs)}"
        raise ArchError(f"unknown label {label!r} in the arch{hint}", str(label))
    out: Arch = {}
    for label, spec in specs.items():
        if label not in arch:
            raise ArchError(
                f"label {label!r} is missing from the arch; valid values are {spec.describe()}",
                label)
        out[label] = spec.validate(arch[label])
    return FrozenArch(out, supernet, source)


def load_arch(path: str | Path) -> Arch:
    """Read an arch JSON file; duplicate keys are refused as conflicting values.

    Raises:
        ArchError: the file is not a JSON object or has a label twice.
        FileNotFoundError / OSError: as ``open`` raises them.
    """
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            # Compare as JSON: 8 and 8.0, or 1 and true, are different values of a label.
            if key in seen and json.dumps(seen[key], sort_keys=True) != json.dumps(
                    value, sort_keys=True):
                raise ArchError(
                    f"label {key!r} has conflicting values {seen[key]!r} and {value!r} in {path}",
                    key)
            seen[key] = value
        return seen

    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as err:
        raise ArchError(f"{path} is not valid JSON ({err}); an arch is a {{label: value}} object")
    if not isinstance(data, dict):
        raise ArchError(f"{path} holds a JSON {type(data).__name__}; an arch is a JSON object")
    return data


def sample_arch(supernet: nn.Module, seed: int | None = None) -> FrozenArch:
    """Resample every module (labels shared through one memo) and return the complete arch.

    The supernet is left on that sample, as a sampling strategy's ``resample`` leaves it.
    """
    arch = freeze(supernet, resample_arch(supernet, random.Random(seed)))
    apply_arch(supernet, arch)
    return arch


@contextlib.contextmanager
def fixed_arch(supernet: nn.Module,
               arch: Mapping[str, Any] | None = None) -> Iterator[FrozenArch]:
    """Run the supernet on one path: inside, ``supernet(x)`` computes the subnet ``arch``.

    Differentiable modules stop mixing and follow the arch. The previous state (samples,
    attribute values) is restored on exit. Yields the validated arch.
    """
    arch = freeze(supernet, arch)
    state = apply_arch(supernet, arch, fixed=True)
    try:
        yield arch
    finally:
        state.restore()
