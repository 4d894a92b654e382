"""The search-space registry: ``register_space``, ``list_spaces``, ``get_space``.

Kept free of any space so that a space file can import it both as ``models._registry`` and,
when the CLI loads the file by path (``models/x.py:supernet``), as the sibling ``_registry``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

__all__ = ["ARCH_DIR", "CHECKPOINT_DIR", "SpaceInfo", "get_space", "list_spaces",
           "register_space"]

ARCH_DIR = Path(__file__).resolve().parent / "archs"
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"

Factory = Callable[..., nn.Module]


@dataclass(frozen=True)
class SpaceInfo:
    """One registered search space.

    Attributes:
        name: the registry key; arch files of the space are ``archs/<name>*.json``.
        factory: ``fn(strategy="sampling", seed=0, **config) -> supernet``; the supernet is
            converted (``se.to_supernet``), seeded, has calibrated BatchNorm statistics and is in
            eval mode. ``calib_steps=0`` skips the forward passes of the calibration.
        input_shape: the default input shape, batch first (small, for fast tests).
        arch_dir: the folder holding the arch files.
        default_strategy: the strategy the space is searched with.
        description: one line for listings.
    """

    name: str
    factory: Factory
    input_shape: tuple[int, ...]
    arch_dir: Path = ARCH_DIR
    default_strategy: str = "sampling"
    description: str = ""

    def build(self, strategy: str | None = None, seed: int = 0, **config) -> nn.Module:
        """The supernet; the registered configuration comes with its shipped trained weights.

        With the space's own strategy, seed 0 and no ``config``, the weights are the shipped
        checkpoint, loaded strictly: the same bits on every machine. Any other build is
        generated (:meth:`generate`), and its floats may differ in the last bits between CPUs.

        Raises:
            FileNotFoundError: the checkpoint is missing (``python -m models.make_checkpoints``).
        """
        strategy = strategy or self.default_strategy
        if strategy != self.default_strategy or seed != 0 or config:
            return self.generate(strategy, seed, **config)
        if not self.checkpoint.is_file():
            raise FileNotFoundError(f"{self.checkpoint} is missing: run "
                                    f"`python -m models.make_checkpoints {self.name}`")
        net = self.factory(strategy, seed, calib_steps=0)  # the skeleton; weights come next
        net.load_state_dict(load_file(str(self.checkpoint)), strict=True)
        return net

    def generate(self, strategy: str | None = None, seed: int = 0, **config) -> nn.Module:
        """The supernet with weights made from ``seed``: seeded initialisation, then BatchNorm
        statistics estimated with forward passes (what ``make_checkpoints.py`` writes). The
        floats depend on the CPU's kernels; compare them only with others made on this machine.
        """
        return self.factory(strategy or self.default_strategy, seed, **config)

    def arch_files(self) -> list[Path]:
        """The shipped arch files of this space, sorted."""
        return sorted(self.arch_dir.glob(f"{self.name}_*.json"))

    @property
    def checkpoint(self) -> Path:
        """Where ``make_checkpoints.py`` writes this space's seeded weights."""
        return CHECKPOINT_DIR / f"{self.name}.safetensors"


_SPACES: dict[str, SpaceInfo] = {}


def register_space(name: str, *, input_shape: tuple[int, ...], default_strategy: str = "sampling",
                   description: str = "") -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(strategy, seed, **config)`` under ``name``.

    Raises:
        ValueError: ``name`` is already registered by another factory.
    """
    def decorate(factory: Factory) -> Factory:
        prev = _SPACES.get(name)
        if prev is not None and prev.factory.__qualname__ != factory.__qualname__:
            raise ValueError(f"search space {name!r} is already registered")
        _SPACES[name] = SpaceInfo(name, factory, tuple(input_shape),
                                  default_strategy=default_strategy, description=description)
        return factory

    return decorate


def list_spaces() -> list[str]:
    """Registered space names, sorted."""
    return sorted(_SPACES)


def get_space(name: str) -> SpaceInfo:
    """The :class:`SpaceInfo` of ``name``.

    Raises:
        KeyError: no such space; the message lists the registered ones.
    """
    try:
        return _SPACES[name]
    except KeyError:
        raise KeyError(f"no search space {name!r}; registered: {list_spaces()}") from None
