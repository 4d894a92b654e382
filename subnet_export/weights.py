"""Fitting a checkpoint's tensors to a supernet: as saved, translated, or refused by name.

A state that fits the supernet as it is loads unchanged. One that does not is translated: first
by the supernet root's own ``translate_state_dict`` hook (a space for another framework's older
checkpoints), else from NNI 2.x's one-shot layout (``nni/checkpoint.py``). What was translated
is said in one line, which the CLI prints and the manifest records as ``weights_layout``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .errors import CheckpointError
from .nni.checkpoint import map_nni_state

__all__ = ["LoadedWeights", "fit_state", "load_state", "nearest_key"]


@dataclass(frozen=True)
class LoadedWeights:
    """What loading a weights file did.

    Attributes:
        sha256: the file's sha256 (None when no file was given).
        note: one line saying how the checkpoint's layout was mapped onto the supernet (None
            when it fitted as saved).
    """

    sha256: str | None = None
    note: str | None = None


def nearest_key(key: str, keys: list[str]) -> str | None:
    """The key of ``keys`` closest to ``key`` or to one of its dotted tails (a stray prefix)."""
    parts = key.split(".")
    best, score = None, 0.0
    for n in range(len(parts)):
        tail = ".".join(parts[n:])
        for match in difflib.get_close_matches(tail, keys, n=1, cutoff=0.6):
            ratio = difflib.SequenceMatcher(None, tail, match).ratio()
            if ratio > score:
                best, score = match, ratio
    return best


def _problems(supernet: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    own = supernet.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs supernet {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if extra:
        near = nearest_key(extra[0], list(own))
        hint = f" (nearest key of the supernet: {near!r})" if near else ""
        problems.append(f"{len(extra)} unexpected key(s) that fit no key of the supernet, e.g. "
                        f"{extra[0]!r}{hint}" + (f", {extra[1:3]}" if len(extra) > 1 else ""))
    if missing:
        problems.append(f"{len(missing)} key(s) of the supernet are missing, e.g. {missing[:3]}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[:2]}")
    return problems


def fit_state(supernet: nn.Module, state: Mapping[str, torch.Tensor], source: str
              ) -> tuple[dict[str, torch.Tensor], str | None]:
    """``state`` under ``supernet``'s keys, and a line saying what was mapped (None: as saved).

    Tried in order: the state as it is; the root's ``translate_state_dict(state)`` hook,
    which returns ``(new state, one-line note)`` or None when the state is not its format;
    NNI 2.x's one-shot layout.

    Args:
        supernet: the supernet the state is for.
        state: the checkpoint's tensors.
        source: what to call the checkpoint in messages (its path).

    Raises:
        CheckpointError: the state does not fit after translation: the first key that fits
            nowhere is named with the nearest key of the supernet; missing keys and wrong
            shapes are named too.
    """
    if not _problems(supernet, state):
        return dict(state), None
    translate = getattr(supernet, "translate_state_dict", None)
    translated = translate(dict(state)) if callable(translate) else None
    if translated is not None:
        mapped, note = translated
    else:
        mapped, note = map_nni_state(supernet, state)
    problems = _problems(supernet, mapped)
    if problems:
        raise CheckpointError(
            f"{source!r} does not fit this supernet" + (f" ({note})" if note else "") + ": " +
            "; ".join(problems) + ". Was it saved from the same search space (and strategy)?")
    return mapped, note


def load_state(supernet: nn.Module, state: Mapping[str, torch.Tensor], source: str
               ) -> str | None:
    """Fit ``state`` to ``supernet`` (:func:`fit_state`) and load it strictly; return the note."""
    fitted, note = fit_state(supernet, state, source)
    with torch.no_grad():
        supernet.load_state_dict(fitted, strict=True)
    return note
