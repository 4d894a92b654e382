"""Fixtures of the NNI oracle tests: NNI's supernets, their checkpoints, our rewritten spaces."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import _oracle as oracle
import pytest
import torch

try:
    import nni  # noqa: F401  (the oracle: a hard requirement of tests/nni, never a skip)
except ImportError as err:
    raise ImportError(f"tests/nni needs NNI 2.10 ({err}); install the nni-oracle extra") from err


class Cases:
    """NNI's one-shot module per (space, strategy), its saved checkpoint, and our supernet.

    Built once per session: NNI's side first (it needs nothing of ours), our side on demand.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._nni: dict[tuple[str, str], Any] = {}
        self._ours: dict[tuple[str, str], torch.nn.Module] = {}

    def nni(self, name: str, strategy: str) -> Any:
        """NNI's one-shot Lightning module (seeded weights, random BatchNorm statistics)."""
        key = (name, strategy)
        if key not in self._nni:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._nni[key] = oracle.nni_supernet(name, strategy)
        return self._nni[key]

    def twin(self, name: str) -> Any:
        """NNI's sampling supernet holding the weights of NNI's DARTS supernet of ``name``."""
        key = (name, "twin")
        if key not in self._nni:
            self._nni[key] = oracle.nni_sampling_twin(self.nni(name, "differentiable"), name)
        return self._nni[key]

    def directory(self, name: str, strategy: str) -> Path:
        """A folder of this case's files (the rewritten space, checkpoints, archs)."""
        path = self.root / f"{name}-{strategy}"
        path.mkdir(exist_ok=True)
        return path

    def weights(self, name: str, strategy: str) -> Path:
        """NNI's Lightning module's state dict, saved with ``torch.save`` (now, as it is)."""
        return oracle.save_state_dict(self.nni(name, strategy),
                                      self.directory(name, strategy) / "supernet.pth")

    def ours(self, name: str, strategy: str) -> torch.nn.Module:
        """Our supernet from the rewritten space, NNI's checkpoint loaded as the CLI loads it."""
        key = (name, strategy)
        if key not in self._ours:
            self._ours[key] = oracle.our_supernet(name, self.directory(name, strategy), strategy,
                                                  self.weights(name, strategy))
        return self._ours[key]

    def reload(self, name: str, strategy: str) -> torch.nn.Module:
        """Our supernet with NNI's current state (alphas changed since) loaded again."""
        from subnet_export.loading import load_weights

        net = self.ours(name, strategy)
        load_weights(net, self.weights(name, strategy))
        return net.eval()


@pytest.fixture(scope="session")
def cases(tmp_path_factory) -> Cases:
    """The session's NNI and our supernets (see :class:`Cases`)."""
    return Cases(tmp_path_factory.mktemp("nni"))
