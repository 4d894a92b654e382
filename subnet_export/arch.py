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
from .supernet.walk import collect_specs, iter_supernet_modules

__all__ = ["FrozenArch", "fixed_arch", "freeze", "load_arch", "most_probable", "sample_arch",
           "search_space"]

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
            arch that is not in its format. Probabilities as NNI's ``export_probs()`` writes
            them (``{"label/candidate": p}``, or ``{label: {candidate: p}}``) give the most
            probable value of each label (the top ``n_chosen`` inputs of an input choice).

    Returns:
        A :class:`FrozenArch`: ``{label: value}`` in search-space order; input choices as
        sorted index lists (a bare index where the space says so, as NNI's export), tuple
        candidates as tuples; ``source`` holds the arch as given when it was translated. A
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
    chosen = most_probable(supernet, specs, arch)
    if chosen is not None:
        source, arch = dict(arch) if source is None else source, chosen
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


def most_probable(supernet: nn.Module, specs: Mapping[str, ParameterSpec],
                  probs: Mapping[str, Any]) -> Arch | None:
    """The arch of the largest probabilities in ``probs``, or None if ``probs`` is no such form.

    ``probs`` as NNI 2.10's ``export_probs()`` writes it, ``{"<label>/<candidate>": p}``, or as
    ours, ``{label: {"<candidate>": p}}``. A supernet module whose labels NNI writes under other
    keys (a cell's edges) may define ``arch_from_probs(probs) -> (arch, keys it read)``.

    Raises:
        ArchError: a key that names no candidate of a label.
    """
    if not probs or not all(_is_prob(v) or isinstance(v, Mapping) for v in probs.values()):
        return None
    grouped: dict[str, dict[str, Any]] = {}
    rest = {}
    for key, value in probs.items():
        if isinstance(value, Mapping):
            if key not in specs or not all(_is_prob(p) for p in value.values()):
                return None
            grouped[key] = {str(k): p for k, p in value.items()}
            continue
        if key in specs:
            return None
        owner = max((lb for lb in specs if str(key).startswith(lb + "/")), key=len, default=None)
        if owner is None:
            rest[key] = value
        else:
            grouped.setdefault(owner, {})[str(key)[len(owner) + 1:]] = value
    out: Arch = {}
    for _, module in iter_supernet_modules(supernet):
        hook = getattr(module, "arch_from_probs", None)
        if callable(hook):
            decided, read = hook(probs)
            out.update(decided)
            rest = {k: v for k, v in rest.items() if k not in read}
    if not grouped and not out:
        return None
    if rest:
        key = next(iter(rest))
        raise ArchError(f"probability {key!r} names no candidate of any label; the labels "
                        f"are {list(specs)}", str(key))
    for label, weights in grouped.items():
        out.setdefault(label, _top(specs[label], weights))
    return out


def _is_prob(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _top(spec: ParameterSpec, weights: Mapping[str, Any]) -> Any:
    names = {str(c): c for c in spec.candidates}
    names.update({str(list(c)): c for c in spec.candidates if isinstance(c, tuple)})
    unknown = [k for k in weights if k not in names]
    if unknown:
        raise ArchError(f"label {spec.label!r}: probability of {unknown[0]!r}, which is not a "
                        f"candidate; valid values are {spec.describe()}", spec.label)
    ranked = sorted(((float(p), -i, names[k]) for i, (k, p) in enumerate(weights.items())),
                    reverse=True)
    if spec.kind != "input":
        return ranked[0][2]
    chosen = sorted(c for _, _, c in ranked[:spec.n_chosen or len(ranked)])
    return chosen[0] if spec.bare else chosen


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
