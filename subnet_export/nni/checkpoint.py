"""NNI 2.x one-shot checkpoints: recognise their layout and map it onto our supernet's keys.

What NNI 2.10's one-shot strategies save (the Lightning module's ``state_dict()``, alone or as
the ``state_dict`` of a Trainer ``.ckpt``):

- RandomOneShot (SPOS) and ENAS: the user's model's own keys (their ``state_dict`` skips the
  evaluator and ENAS's RL controller). A whole-module state dict has them under ``model.model.``
  and the controller's tensors under ``controller.``: strategy state, not supernet weights.
- DARTS, GumbelDARTS, Proxyless: the model's keys under ``model.model.`` and architecture
  weights: ``<path>._arch_alpha`` of a layer or input choice, ``<path>._arch_alpha.<label>``
  (a ``ParameterDict``) of value choices in an operation, a repeat's depth or a cell's edges.
  Modules sharing a label share one alpha, so it appears under each of their paths.
- A repeat's blocks at ``<path>.blocks.<i>.``.

Ours has the same keys, its alphas at ``<path>._arch_alpha.<i>`` (the module's ``i``-th label,
:class:`~subnet_export.supernet.base.DifferentiableMixin`), a repeat's blocks perhaps without
the ``blocks.`` level: :func:`map_nni_state` translates, checking every alpha on the way.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CheckpointError
from ..supernet.walk import collect_specs

__all__ = ["ALPHA", "arch_weight_keys", "map_nni_state"]

#: the attribute NNI's differentiable supermodules (and ours) keep architecture weights under
ALPHA = "_arch_alpha"
#: the RL controller of NNI's ENAS Lightning module
CONTROLLER = "controller."


def arch_weight_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys of ``state`` that hold architecture weights (NNI's layout or ours)."""
    return [k for k in state if ALPHA in k.split(".")]


def _walk(root: nn.Module, path: str) -> tuple[str, nn.Module | None]:
    """``path`` (dotted) as it names a submodule or tensor of ``root``, and that submodule.

    A repeat's ``blocks.`` level before a block index is dropped where ``root`` has none and
    added where it has one (NNI: ``<repeat>.blocks.<i>``). The module is None unless the whole
    path names one.
    """
    parts, out, module, i = path.split(".") if path else [], [], root, 0
    while i < len(parts):
        children = module._modules
        if children.get(parts[i]) is not None:
            out.append(parts[i])
            module, i = children[parts[i]], i + 1
        elif parts[i] == "blocks" and i + 1 < len(parts) and parts[i + 1] in children:
            i += 1
        elif children.get("blocks") is not None and parts[i] in children["blocks"]._modules:
            out.append("blocks")
            module = children["blocks"]
        else:
            return ".".join(out + parts[i:]), None
    return ".".join(out), module


@dataclass
class _Ours:
    """Our supernet: its keys and shapes, and the keys of its alphas by label."""

    root: nn.Module
    keys: dict[str, torch.Size]
    alphas: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, supernet: nn.Module) -> _Ours:
        own = cls(supernet, {k: v.shape for k, v in supernet.state_dict().items()})
        for name, m in supernet.named_modules():
            labels = getattr(m, "_alpha_labels", ()) if hasattr(m, ALPHA) else ()
            base = f"{name}.{ALPHA}" if name else ALPHA
            single = isinstance(getattr(m, ALPHA, None), nn.Parameter)
            for i, label in enumerate(labels):  # one parameter (NNI's layout) or a list (ours)
                own.alphas.setdefault(label, []).append(base if single else f"{base}.{i}")
        return own

    def find(self, key: str) -> str | None:
        """Our key for the checkpoint's ``key`` (prefix already stripped), or None."""
        if key in self.keys:
            return key
        ours = _walk(self.root, key)[0]
        return ours if ours in self.keys else None

    def module(self, path: str) -> nn.Module | None:
        """Our module at the checkpoint's ``path``, or None."""
        return _walk(self.root, path)[1]


def _prefix(keys: list[str], own: _Ours) -> str:
    # The dotted prefix shared by every key whose removal matches the most of our keys; the
    # shorter on a tie (a bare supernet whose keys all start with one child keeps them).
    if not keys:
        return ""
    parts = keys[0].split(".")
    best, score = "", -1
    for n in range(len(parts)):
        prefix = ".".join(parts[:n]) + "." if n else ""
        if not all(k.startswith(prefix) for k in keys):
            break
        hits = sum(own.find(k[len(prefix):]) is not None for k in keys)
        if hits > score:
            best, score = prefix, hits
    return best


def _alpha_label(key: str, prefix: str, own: _Ours) -> str:
    """The label the architecture weight ``key`` is for."""
    parts = key[len(prefix):].split(".")
    at = parts.index(ALPHA)
    path, rest = ".".join(parts[:at]), ".".join(parts[at + 1:])
    module = own.module(path)
    labels = list(getattr(module, "_alpha_labels", None) or (
        module.search_space_spec() if hasattr(module, "search_space_spec") else ()))
    if rest in own.alphas:
        return rest
    if rest.isdigit() and int(rest) < len(labels):
        return labels[int(rest)]  # our own layout
    if not rest and len(labels) == 1:
        return labels[0]
    if rest:
        near = difflib.get_close_matches(rest, list(own.alphas), n=1)
        raise CheckpointError(
            f"architecture weight {key!r} is for label {rest!r}, which this supernet does not "
            f"have{f' (nearest: {near[0]!r})' if near else ''}: was it saved from this space?")
    near = difflib.get_close_matches(path, [n for n, _ in own.root.named_modules()], n=1)
    raise CheckpointError(
        f"architecture weight {key!r} belongs to no choice of this supernet at {path!r}"
        f"{f' (nearest module: {near[0]!r})' if near else ''}: was it saved from this space?")


def _map_alphas(state: Mapping[str, torch.Tensor], keys: list[str], prefix: str, own: _Ours,
                supernet: nn.Module) -> dict[str, torch.Tensor]:
    """Our alpha keys -> tensors; checks sizes, shared copies, and that none is missing."""
    by_label: dict[str, list[str]] = {}
    for key in keys:
        by_label.setdefault(_alpha_label(key, prefix, own), []).append(key)
    specs = collect_specs(supernet)
    out: dict[str, torch.Tensor] = {}
    for label, found in by_label.items():
        first = state[found[0]]
        for other in found[1:]:
            if state[other].shape != first.shape or not torch.equal(state[other], first):
                raise CheckpointError(
                    f"the architecture weights of label {label!r} differ between {found[0]!r} "
                    f"and {other!r}, which NNI shares: the checkpoint is corrupt or was edited")
        targets = own.alphas.get(label, [])
        expected = own.keys[targets[0]] if targets else None
        if expected is not None and first.shape != expected:
            what = (f"{len(specs[label].candidates)} candidates {list(specs[label].candidates)}"
                    if label in specs else f"{expected.numel()} entries")
            raise CheckpointError(
                f"architecture weight {found[0]!r} has {first.numel()} entries but label "
                f"{label!r} has {what} here: was it saved from this space?")
        out.update({t: first for t in targets})
    missing = [lb for lb in own.alphas if lb not in by_label]
    if missing:
        raise CheckpointError(
            f"the checkpoint has no architecture weights for label(s) {missing[:5]} of this "
            "differentiable supernet" + ("" if by_label else
                                        " (it was saved by a sampling strategy: SPOS or ENAS)")
            + "; build the supernet with --strategy sampling, or give the DARTS checkpoint")
    return out


def map_nni_state(supernet: nn.Module, state: Mapping[str, torch.Tensor]
                  ) -> tuple[dict[str, torch.Tensor], str | None]:
    """Translate a state dict in NNI 2.x's one-shot layout to ``supernet``'s keys.

    A key this layout does not explain is kept under its own name, for the caller's strict
    check to name.

    Args:
        supernet: our supernet (sampling: the checkpoint's alphas are ignored; differentiable:
            each lands on its label).
        state: the checkpoint's tensors.

    Returns:
        (the state under our keys, one line saying what was mapped; None when nothing was).

    Raises:
        CheckpointError: an architecture weight for a label or module the supernet lacks, of
            the wrong size for its label, copies of one label that differ, or a label of a
            differentiable supernet with no weight in the checkpoint.
    """
    own = _Ours.of(supernet)
    # ENAS's controller sits beside ``model`` in the Lightning module's own state dict
    controller = [k for k in state if k.startswith(CONTROLLER)]
    if any(o.startswith(CONTROLLER) for o in own.keys) or not all(
            k.startswith("model.") for k in state if not k.startswith(CONTROLLER)):
        controller = []
    rest = [k for k in state if k not in controller]
    alphas = arch_weight_keys({k: state[k] for k in rest})
    prefix = _prefix([k for k in rest if k not in alphas] or rest, own)
    out: dict[str, torch.Tensor] = {}
    # modules that keep NNI's own alpha layout (the cells) take those keys as they are
    ours_by_label = {t for targets in own.alphas.values() for t in targets}
    verbatim = [k for k in alphas if k.startswith(prefix) and k[len(prefix):] in own.keys
                and k[len(prefix):] not in ours_by_label]
    out.update({k[len(prefix):]: state[k] for k in verbatim})
    alphas = [k for k in alphas if k not in verbatim]
    regrouped = 0
    for key in rest:
        if key in alphas:
            continue
        ours = own.find(key[len(prefix):]) if key.startswith(prefix) else None
        regrouped += ours is not None and ours != key[len(prefix):]
        out[ours or key] = state[key]
    if own.alphas:
        out.update(_map_alphas(state, alphas, prefix, own, supernet))
    notes = [f"stripped {prefix!r}"] if prefix else []
    if regrouped:
        notes.append(f"mapped {regrouped} repeat key(s) between '.blocks.N.' and '.N.'")
    if verbatim:
        notes.append(f"kept {len(verbatim)} architecture weight(s) of NNI's cell layout")
    if alphas and own.alphas:
        notes.append(f"mapped {len(alphas)} architecture weight(s) onto {len(own.alphas)} "
                     "label(s)")
    elif alphas:
        notes.append(f"ignored {len(alphas)} architecture weight(s) (the supernet is built "
                     "for sampling)")
    if controller:
        notes.append(f"ignored {len(controller)} ENAS controller tensor(s)")
    if not notes:
        return out, None
    kind = ("differentiable (DARTS-style)" if alphas or verbatim
            else "sampling (SPOS/ENAS-style)")
    return out, f"NNI {kind} one-shot checkpoint: " + ", ".join(notes)
