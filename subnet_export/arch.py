"""Stage 1, freeze: a complete, validated arch dict for a supernet.

Also the search space itself (``search_space``), random archs (``sample_arch``), arch files
(``load_arch``) and the supernet path for one arch (``fixed_arch``).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .errors import ArchError, SearchSpaceError
from .space.choice import evaluate, leaves
from .space.placeholders import Placeholder
from .space.spec import ParameterSpec
from .supernet.base import BaseSuperNetModule, choice_attributes, iter_supernet_modules

__all__ = ["fixed_arch", "freeze", "load_arch", "sample_arch", "search_space"]

Arch = dict[str, Any]


def search_space(supernet: nn.Module) -> dict[str, ParameterSpec]:
    """``{label: ParameterSpec}`` of every label in the supernet, in module order.

    A repeat's depth label may also be read in an expression (the next stage's input width
    depends on whether a stage exists): a ``depth`` spec and a ``value`` spec with the same
    candidates are one label, reported as ``depth``.

    Raises:
        SearchSpaceError: placeholders are left (``to_supernet`` was not called), or one label
            has two different specs.
    """
    specs: dict[str, ParameterSpec] = {}

    def add(spec: ParameterSpec, where: str) -> None:
        prev = specs.get(spec.label)
        if prev is not None and _depth_read_as_value(prev, spec):
            if spec.kind == "depth":  # keep the label's place in module order
                specs[spec.label] = spec
            return
        if prev is not None and prev != spec:
            raise SearchSpaceError(
                f"label {spec.label!r} at {where!r} is {spec.kind} {list(spec.candidates)}, "
                f"but elsewhere {prev.kind} {list(prev.candidates)}; "
                "one label must mean one choice everywhere")
        specs.setdefault(spec.label, spec)

    for path, module in supernet.named_modules():
        if isinstance(module, Placeholder):
            raise SearchSpaceError(
                f"{type(module).__name__} at {path or '<root>'!r} is still a placeholder; "
                "call se.to_supernet(space) first")
        if isinstance(module, BaseSuperNetModule):
            for spec in module.search_space_spec().values():
                add(spec, path)
    for path, _, attr, expr in choice_attributes(supernet):
        for label, choice in leaves(expr).items():
            add(ParameterSpec(label, "value", choice.candidates), f"{path}.{attr}")
    return specs


def _depth_read_as_value(a: ParameterSpec, b: ParameterSpec) -> bool:
    # Same candidates with the same types: a depth 2 and a value 2.0 are different labels.
    return ({a.kind, b.kind} == {"depth", "value"}
            and [(type(c), c) for c in a.candidates] == [(type(c), c) for c in b.candidates])


def freeze(supernet: nn.Module, arch: Mapping[str, Any] | None = None) -> Arch:
    """Return a complete, valid arch for ``supernet``.

    Args:
        supernet: a module tree made by ``se.to_supernet``.
        arch: ``{label: value}``. None: the supernet's own ``export()`` (argmax of the
            architecture weights for differentiable modules, the current sample otherwise).

    Returns:
        ``{label: value}`` in search-space order; input choices as sorted index lists.

    Raises:
        ArchError: an unknown or missing label, a value that is not a candidate or of the wrong
            type, or conflicting values for one label. The message names the label and the
            valid values.
    """
    specs = search_space(supernet)
    if arch is None:
        arch = _exported(supernet)
    if not isinstance(arch, Mapping):
        raise ArchError(
            f"an arch must be a JSON object {{label: value}}, got {type(arch).__name__}")
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
    return out


def _exported(supernet: nn.Module) -> Arch:
    memo: Arch = {}
    for path, module in iter_supernet_modules(supernet):
        for label, value in module.export(memo).items():
            memo[label] = value
    for path, module, attr, expr in choice_attributes(supernet):
        # Leaf values no module exports come from the arch last applied to the attribute
        # (recorded by _apply); the value alone cannot be inverted for a * b or k // 2.
        applied = module.__dict__.get("_se_choice_leaves", {}).get(attr, {})
        for label, choice in leaves(expr).items():
            if label not in memo:
                memo[label] = applied.get(label, choice.candidates[0])
    return memo


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


def _apply(supernet: nn.Module, arch: Arch, fixed: bool | None) -> None:
    for _, module in iter_supernet_modules(supernet):
        module.set_arch(arch)
        if fixed is not None:
            module._fixed = fixed
    for _, module, attr, expr in choice_attributes(supernet):
        setattr(module, attr, evaluate(expr, arch))
        module.__dict__.setdefault("_se_choice_leaves", {})[attr] = {
            lb: arch[lb] for lb in leaves(expr)}


def sample_arch(supernet: nn.Module, seed: int | None = None) -> Arch:
    """Resample every module (labels shared through one memo) and return the complete arch.

    The supernet is left on that sample, as a sampling strategy's ``resample`` leaves it.
    """
    rng = random.Random(seed)
    memo: Arch = {}
    for _, module in iter_supernet_modules(supernet):
        memo.update(module.resample(memo, rng))
    for _, _, _, expr in choice_attributes(supernet):
        for label, choice in leaves(expr).items():
            if label not in memo:
                memo[label] = rng.choice(choice.candidates)
    arch = freeze(supernet, memo)
    _apply(supernet, arch, None)
    return arch


@contextlib.contextmanager
def fixed_arch(supernet: nn.Module, arch: Mapping[str, Any] | None = None) -> Iterator[Arch]:
    """Run the supernet on one path: inside, ``supernet(x)`` computes the subnet ``arch``.

    Differentiable modules stop mixing and follow the arch. The previous state (samples,
    attribute values) is restored on exit. Yields the validated arch.
    """
    arch = freeze(supernet, arch)
    saved = [(m, dict(m._arch), m._fixed) for _, m in iter_supernet_modules(supernet)]
    saved_attrs = [(m, attr, getattr(m, attr), m.__dict__.get("_se_choice_leaves", {}).get(attr))
                   for _, m, attr, _ in choice_attributes(supernet)]
    try:
        _apply(supernet, arch, True)
        yield arch
    finally:
        for module, state, was_fixed in saved:
            module._arch, module._fixed = state, was_fixed
        for module, attr, value, applied in saved_attrs:
            setattr(module, attr, value)
            recorded = module.__dict__.setdefault("_se_choice_leaves", {})
            if applied is None:
                recorded.pop(attr, None)
            else:
                recorded[attr] = applied
