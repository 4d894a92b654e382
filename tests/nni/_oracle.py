"""NNI 2.10 as the oracle: its one-shot supernets, checkpoints, archs and outputs, and ours.

Every space in ``spaces/`` is an NNI 2.x model space file as an NNI user writes it. NNI's side
loads it as is and wraps it the way NNI's one-shot strategies do (``ClassificationModule`` inside
``RandomSamplingLightningModule`` or ``DartsLightningModule``); our side loads the same source
text with only its two import lines replaced (:func:`rewrite`), through the factory spec
``path.py:name`` as the CLI does.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import random
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

SPACE_DIR = Path(__file__).resolve().parent / "spaces"

#: NNI's import lines and the only change a user makes to them.
IMPORTS = {
    "import nni.retiarii.nn.pytorch as nn": "import subnet_export.nni as nn",
    "from nni.retiarii import model_wrapper": "from subnet_export.nni import model_wrapper",
}

#: softmax of an alpha whose other entries are this far below the chosen one is exactly one-hot
#: in float32 and float64 (exp(-1000) underflows to 0 in both).
ALPHA_GAP = 1000.0

@dataclass(frozen=True)
class Space:
    """One model space file of ``spaces/`` and how to call it."""

    file: str
    factory: str
    input_shape: tuple[int, ...]
    strategies: tuple[str, ...] = ("sampling", "differentiable")

    @property
    def path(self) -> Path:
        return SPACE_DIR / self.file

    def inputs(self, batch: int, seed: int = 0) -> torch.Tensor:
        """Seeded standard-normal inputs of this space's shape at ``batch``."""
        gen = torch.Generator().manual_seed(1000 + seed)
        return torch.randn((batch, *self.input_shape[1:]), generator=gen)

    @property
    def shape_text(self) -> str:
        """``--input-shape`` of this space."""
        return "x".join(str(n) for n in self.input_shape)


SPACES = {
    "cnn": Space("cnn.py", "CNN", (1, 3, 8, 8)),
    "transformer": Space("transformer.py", "Transformer", (1, 5, 6), ("sampling",)),
    # NNI's DARTS cannot search num_heads of MultiheadAttention: that space fixes it
    "transformer-2heads": Space("transformer.py", "fixed_heads", (1, 5, 6)),
    "darts": Space("darts.py", "DartsSpace", (1, 3, 8, 8)),
    "nasbench201": Space("nasbench201.py", "NasBench201", (1, 3, 8, 8)),
}


def spaces_for(strategy: str) -> list[str]:
    """Names of the spaces NNI's ``strategy`` runs."""
    return [name for name, s in SPACES.items() if strategy in s.strategies]


# -- the space file, twice ------------------------------------------------------------------------
def rewrite(source: str) -> str:
    """``source`` with NNI's two import lines replaced by ours, and nothing else changed.

    Raises:
        ValueError: an import line is missing or appears more than once.
    """
    lines = source.splitlines(keepends=True)
    for old, new in IMPORTS.items():
        hits = [k for k, line in enumerate(lines) if line.rstrip("\n") == old]
        if len(hits) != 1:
            raise ValueError(f"{old!r} must appear once as a line, found {len(hits)}")
        lines[hits[0]] = new + "\n"
    return "".join(lines)


def write_ours(name: str, directory: Path) -> Path:
    """Write the rewritten space file of ``name`` into ``directory``; return its path."""
    space = SPACES[name]
    out = Path(directory) / space.file
    out.write_text(rewrite(space.path.read_text()))
    return out


def our_spec(name: str, directory: Path) -> str:
    """The CLI's ``SUPERNET`` for our copy of the space: ``<rewritten file>:<factory>``."""
    return f"{write_ours(name, directory)}:{SPACES[name].factory}"


def load_nni_module(name: str) -> Any:
    """The space file of ``name`` imported as is (NNI's imports)."""
    space = SPACES[name]
    module_name = f"_nni_space_{space.path.stem}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, space.path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# -- NNI's side -----------------------------------------------------------------------------------
def _strategy_class(strategy: str) -> type:
    if strategy == "sampling":
        from nni.nas.oneshot.pytorch.sampling import RandomSamplingLightningModule
        return RandomSamplingLightningModule
    if strategy == "differentiable":
        from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule
        return DartsLightningModule
    raise ValueError(strategy)


def nni_space(name: str, seed: int = 0) -> nn.Module:
    """NNI's model space of ``name``, weights drawn with ``seed``."""
    torch.manual_seed(seed)
    return getattr(load_nni_module(name), SPACES[name].factory)()


def nni_supernet(name: str, strategy: str, seed: int = 0) -> Any:
    """NNI's one-shot Lightning module of ``name``, built as NNI's strategies build it.

    Weights come from ``seed``; normalisation parameters and BatchNorm statistics are
    randomised (:func:`randomise`). In eval mode.
    """
    from nni.retiarii.evaluator.pytorch.lightning import ClassificationModule

    logging.getLogger("nni").setLevel(logging.WARNING)  # NNI logs each cell export on stdout
    net = nni_space(name, seed)
    evaluator = ClassificationModule()
    evaluator.running_mode = "oneshot"
    evaluator.set_model(net)
    module = _strategy_class(strategy)(evaluator)
    randomise(module, seed)
    return module.eval()


def base_model(module: Any) -> nn.Module:
    """The user's model inside an NNI one-shot module (its choices replaced by NNI's)."""
    return module.model.model


def randomise(module: nn.Module, seed: int) -> None:
    """Seeded affine parameters and running statistics of every norm layer, biases of attention.

    Away from BatchNorm's identity defaults, so a wrong slice of them shows in the output.
    """
    gen = torch.Generator().manual_seed(seed + 17)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(0.6 + 0.8 * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
                m.num_batches_tracked.fill_(100)
            if isinstance(m, nn.MultiheadAttention) and m.in_proj_bias is not None:
                m.in_proj_bias.copy_(0.2 * torch.randn(m.in_proj_bias.shape, generator=gen))


def sample_arch(module: Any, seed: int) -> dict[str, Any]:
    """NNI's ``resample()`` under ``random.seed(seed)``: the sample the supernet now runs."""
    random.seed(seed)
    return module.resample()


def set_sample(module: Any, arch: Mapping[str, Any]) -> None:
    """Make NNI's sampling supernet run ``arch`` (``resample`` with the arch as memo)."""
    module.resample(memo=dict(arch))


def as_json(arch: Mapping[str, Any]) -> dict[str, Any]:
    """``arch`` as an NNI user's arch file holds it: ``json.dump`` then ``json.load``."""
    return json.loads(json.dumps(dict(arch)))


def write_arch(arch: Mapping[str, Any], path: Path) -> Path:
    """Write ``arch`` with ``json.dump``, as NNI users keep ``export()``'s dict."""
    with open(path, "w") as f:
        json.dump(dict(arch), f)
    return path


def _nas_modules(module: Any) -> list[Any]:
    return list(module.nas_modules)


def random_choices(module: Any, seed: int) -> dict[str, Any]:
    """A seeded pick for each label of NNI's search space (``n_chosen`` distinct for inputs)."""
    rng = random.Random(seed)
    arch: dict[str, Any] = {}
    for label, spec in module.search_space_spec().items():
        values = list(spec.values)
        n = getattr(spec, "chosen_size", None)
        if isinstance(n, int) and n > 1:
            arch[label] = sorted(rng.sample(values, n))
        else:
            arch[label] = rng.choice(values)
    return arch


def set_one_hot(module: Any, seed: int) -> dict[str, Any]:
    """Set every architecture weight of NNI's DARTS module so its softmax is exactly one-hot.

    Each label's alpha gets a seeded value for a seeded choice and values ``ALPHA_GAP`` (and a
    little more) below it elsewhere; an input choice of ``n_chosen`` gets that many equal
    entries (so the mixture is their mean). A cell's edges: each node takes two distinct
    predecessors with one op each; its other edges take the zero op (the extra last alpha).

    Returns:
        NNI's own ``export()`` of the result (the arch an NNI user writes to arch.json).
    """
    from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedCell

    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    picks = random_choices(module, seed)

    def fill(alpha: torch.Tensor, chosen: set[int]) -> None:
        top = float(torch.randn((), generator=gen))
        low = top - ALPHA_GAP - torch.rand(alpha.shape, generator=gen, dtype=alpha.dtype)
        alpha.copy_(torch.where(torch.tensor([k in chosen for k in range(len(alpha))]),
                                torch.full_like(alpha, top), low))

    with torch.no_grad():
        for m in _nas_modules(module):
            if isinstance(m, DifferentiableMixedCell):
                for i in range(m.num_predecessors, m.num_nodes + m.num_predecessors):
                    edges = set(rng.sample(range(i), 2))
                    for j in range(i):
                        alpha = m._arch_alpha[f"{m.label}/{i}_{j}"]
                        op = rng.randrange(len(m.op_names)) if j in edges else len(alpha) - 1
                        fill(alpha, {op})
                continue
            alphas = m._arch_alpha
            items = alphas.items() if isinstance(alphas, nn.ParameterDict) else [(m.label, alphas)]
            for label, alpha in items:
                values = list(m.search_space_spec()[label].values)
                pick = picks[label]
                chosen = set(pick) if isinstance(pick, list) else {pick}
                fill(alpha, {values.index(v) for v in chosen})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return module.export()


def set_random_alphas(module: nn.Module, seed: int, scale: float = 1.0) -> None:
    """Seeded normal architecture weights (a trained DARTS supernet's are far from uniform)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, alpha in module.state_dict(keep_vars=True).items():
            if "_arch_alpha" in key:
                alpha.copy_(scale * torch.randn(alpha.shape, generator=gen))


def nni_run(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(NNI's float32 output on ``x``, the same module run in float64): reference and oracle."""
    module.eval()
    with torch.no_grad():
        out = module(x)
    model = copy.deepcopy(module).double()
    with torch.no_grad():
        out64 = model(x.double())
    return out, out64


def nni_sampling_twin(module: Any, name: str, seed: int = 0) -> Any:
    """NNI's sampling supernet of ``name`` holding the weights of NNI's DARTS ``module``.

    NNI has no discrete model of a DARTS supernet other than this (or ``fixed_arch``): the
    same weights, run on the path of one arch.
    """
    twin = nni_supernet(name, "sampling", seed)
    state = {k.removeprefix("model.model."): v for k, v in module.state_dict().items()
             if "_arch_alpha" not in k}
    twin.load_state_dict(state, strict=True)
    return twin.eval()


def nni_fixed_model(name: str, arch: Mapping[str, Any], state: Mapping[str, torch.Tensor]
                    ) -> nn.Module:
    """NNI's fixed model of ``arch`` (``nni.retiarii.fixed_arch``) loaded with ``state``."""
    from nni.retiarii import fixed_arch

    with fixed_arch(dict(arch)):
        net = nni_space(name)
    net.load_state_dict(dict(state), strict=True)
    return net.eval()


def save_state_dict(module: nn.Module, path: Path) -> Path:
    """``torch.save(module.state_dict(), path)``: how NNI users usually keep a supernet."""
    torch.save(module.state_dict(), path)
    return path


def save_trainer_checkpoint(module: Any, name: str, path: Path, steps: int = 2) -> Path:
    """Train NNI's sampling ``module`` ``steps`` steps with a Lightning Trainer and save the
    Trainer's ``.ckpt`` (the ``state_dict`` key, plus Lightning's loops, optimizer states and
    hyper-parameters)."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    x = SPACES[name].inputs(4 * steps, seed=99)
    y = torch.arange(4 * steps) % 4
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=4))
        randomise(module, 5)  # keep the statistics away from the few training batches'
        trainer.save_checkpoint(path)
    module.eval()
    return path


# -- our side -------------------------------------------------------------------------------------
def our_supernet(name: str, directory: Path, strategy: str, weights: Path | None = None
                 ) -> nn.Module:
    """Our supernet from the rewritten space file, as the CLI builds it (weights loaded)."""
    from subnet_export.loading import build_supernet, load_weights

    net = build_supernet(our_spec(name, directory), strategy)
    if weights is not None:
        load_weights(net, weights)
    return net.eval()


def ours_run(net: nn.Module, arch: Mapping[str, Any], x: torch.Tensor
             ) -> dict[str, torch.Tensor]:
    """Our supernet path of ``arch`` and the materialized plain model, on ``x``."""
    import subnet_export as se

    frozen = se.freeze(net, dict(arch))
    plain = se.materialize(net, frozen).eval()
    with torch.no_grad(), se.fixed_arch(net, frozen):
        path = net(x)
    with torch.no_grad():
        out = plain(x)
    return {"supernet path": path, "plain model": out}


def onnx_run(model_path: Path, x: torch.Tensor) -> torch.Tensor:
    """The bundle's ``model.onnx`` on onnxruntime CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(out)


def find_key(data: Any, word: str) -> list[tuple[str, Any]]:
    """Every ``(dotted key, value)`` in the JSON ``data`` whose key contains ``word``."""
    found: list[tuple[str, Any]] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                key = f"{prefix}.{k}" if prefix else str(k)
                if word in str(k):
                    found.append((key, v))
                walk(v, key)
        elif isinstance(node, list):
            for k, v in enumerate(node):
                walk(v, f"{prefix}[{k}]")

    walk(data, "")
    return found
