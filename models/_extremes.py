"""The smallest and the largest arch of a supernet, for space-wide coverage."""

from __future__ import annotations

from typing import Any

from torch import nn

import subnet_export as se
from subnet_export.supernet.choices import MixedLayerChoice

__all__ = ["extreme_arch"]


def extreme_arch(supernet: nn.Module, which: str = "min") -> dict[str, Any]:
    """The arch taking every label's smallest (``"min"``) or largest (``"max"``) candidate.

    Values and depths compare as numbers (strings by their order in the space); a layer choice
    compares its candidates by parameter count, ties kept in the space's order, and the smallest
    arch avoids the zero op where there is another candidate (all-zero cells would make a
    network whose output ignores its input); an input choice takes the first or the last
    ``n_chosen`` inputs.

    Raises:
        ValueError: ``which`` is not ``"min"`` or ``"max"``.
    """
    if which not in ("min", "max"):
        raise ValueError(f"which must be 'min' or 'max', got {which!r}")
    pick = min if which == "min" else max
    sizes = _candidate_sizes(supernet)
    arch: dict[str, Any] = {}
    for label, spec in se.search_space(supernet).items():
        if spec.kind == "input":
            n = spec.n_chosen or 1
            cands = list(spec.candidates)
            arch[label] = cands[:n] if which == "min" else cands[-n:]
        elif spec.kind == "layer":
            sized = sizes.get(label, {})  # candidate -> (is the zero op, parameter count)
            if which == "min":
                arch[label] = min(spec.candidates, key=lambda c: sized.get(c, (False, 0)))
            else:
                arch[label] = max(spec.candidates, key=lambda c: sized.get(c, (False, 0))[1])
        elif all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in spec.candidates):
            arch[label] = pick(spec.candidates)
        else:
            arch[label] = spec.candidates[0 if which == "min" else -1]
    return arch


def _candidate_sizes(supernet: nn.Module) -> dict[str, dict[str, int]]:
    # The first module seen for a label stands for all modules sharing it.
    out: dict[str, dict[str, int]] = {}
    for module in supernet.modules():
        if isinstance(module, MixedLayerChoice) and module.label not in out:
            out[module.label] = {
                name: (isinstance(module._modules[name], se.Zero),
                       sum(p.numel() for p in module._modules[name].parameters()))
                for name in module.names}
    return out
