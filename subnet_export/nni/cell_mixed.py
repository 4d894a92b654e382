"""The fully connected supernet cell: NNI 2.10's ``PathSamplingCell``, ``DifferentiableMixedCell``.

NNI's one-shot strategies replace a :class:`~subnet_export.nni.cell.Cell` by this module when
its ops come from factories (an op may depend on the input it reads) or when it merges loose
ends. Node ``i`` holds a dict of candidates for every input ``j``: sampling runs the chosen
``(input, op)`` pairs; differentiable (DARTS) sums, over every input ``j < i``, the
softmax(``{label}/{i}_{j}``)-weighted candidates plus a zero path. Keys, alphas and the export
follow NNI exactly, so NNI's checkpoints and exported archs load; the plain module
(:class:`FrozenCell`) holds the chosen ops only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import SearchSpaceError
from ..space.spec import ParameterSpec
from ..supernet.base import BaseSuperNetModule
from ..supernet.walk import collect_sub_state, freeze_child
from .cell import Cell
from .cell_ops import cell_output, create_cell_op_candidates, node_sum, preprocess_cell_inputs

__all__ = ["FrozenCell", "MixedCell"]


def _loose_end_factory(choice: nn.Module) -> dict[str, Any]:
    # NNI 2.10 builds a loose-end cell's factory from lambdas that all close over one loop
    # variable, so every name makes a copy of the *last* candidate; its supernets and
    # checkpoints hold that op under every name, and so must ours to load them.
    names = list(choice._modules)
    last = choice._modules[names[-1]]
    return {name: (lambda *_: copy.deepcopy(last)) for name in names}


class MixedCell(BaseSuperNetModule):
    """A cell as one supernet module; ``ops[n][j][name]``: op ``name`` of node ``n`` on input ``j``.

    As NNI 2.10, node ``i`` builds ``i + num_predecessors`` input dicts although only the first
    ``i`` are read (their tensors are in NNI's checkpoints). Arch labels are the cell's
    ``{label}/op_{i}_{k}`` and ``{label}/input_{i}_{k}`` (a bare index).
    """

    def __init__(self, op_factory: Any, num_nodes: int, num_ops_per_node: int,
                 num_predecessors: int, preprocessor: Any, postprocessor: Any, concat_dim: int,
                 label: str, strategy: str = "sampling", memo: dict | None = None) -> None:
        super().__init__(strategy)
        self.num_nodes, self.num_ops_per_node = num_nodes, num_ops_per_node
        self.num_predecessors, self.concat_dim, self.label = num_predecessors, concat_dim, label
        self.preprocessor = preprocessor
        self.ops = nn.ModuleList()
        self.postprocessor = postprocessor
        self.op_names: list[str] = []
        for i in self.node_indices():
            row = nn.ModuleList()
            for j in range(i + num_predecessors):
                ops, _ = create_cell_op_candidates(op_factory, i, 0, j)
                self.op_names = list(ops)
                row.append(nn.ModuleDict(ops))
            self.ops.append(row)
        self._arch = {lb: spec.candidates[0] for lb, spec in self.search_space_spec().items()}
        if strategy == "differentiable":
            self._init_alphas(memo if memo is not None else {})

    def node_indices(self) -> range:
        """The nodes' indices, counting the predecessors."""
        return range(self.num_predecessors, self.num_predecessors + self.num_nodes)

    def _init_alphas(self, memo: dict) -> None:
        if "." in self.label:
            raise SearchSpaceError(
                f"Cell label {self.label!r} holds a '.', which a differentiable cell's "
                "architecture weights cannot be keyed by (nor can NNI's); rename the cell")
        shared = memo.setdefault("_alphas", {})
        self._arch_alpha = nn.ParameterDict()
        for i in self.node_indices():
            for j in range(i):
                edge = f"{self.label}/{i}_{j}"
                if edge not in shared:
                    shared[edge] = nn.Parameter(torch.randn(len(self.op_names) + 1) * 1e-3)
                elif len(shared[edge]) not in (len(self.op_names), len(self.op_names) + 1):
                    raise SearchSpaceError(
                        f"label {edge!r} has {len(shared[edge])} architecture weights elsewhere "
                        f"but this cell's edge needs {len(self.op_names) + 1}; rename one of them")
                self._arch_alpha[edge] = shared[edge]

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if not isinstance(module, Cell) or not module.is_elastic():
            return None
        factory = module.op_candidates_factory
        if factory is None:
            factory = _loose_end_factory(module.ops[-1][-1])
        elif not isinstance(factory, (list, Mapping)):
            raise SearchSpaceError(
                f"Cell {module.label!r}: op_candidates is a callable returning the candidates, "
                "which no one-shot supernet takes (nor NNI's); pass a list or dict of modules "
                "or of factories fn(node_index, op_index, input_index)")
        return cls(factory, module.num_nodes, module.num_ops_per_node, module.num_predecessors,
                   module.preprocessor, module.postprocessor, module.concat_dim, module.label,
                   mutate_kwargs["strategy"], memo)

    def search_space_spec(self):
        spec = {}
        for i in self.node_indices():
            for k in range(self.num_ops_per_node):
                op, inp = f"{self.label}/op_{i}_{k}", f"{self.label}/input_{i}_{k}"
                spec[op] = ParameterSpec(op, "layer", tuple(self.op_names))
                spec[inp] = ParameterSpec(inp, "value", tuple(range(i)))
        return spec

    def current_arch(self) -> dict[str, Any]:
        return self._darts_export() if self.mixing() else dict(self._arch)

    def _darts_export(self) -> dict[str, Any]:
        """NNI's export: per node, the best (weight, input, op) triples, distinct inputs first."""
        exported: dict[str, Any] = {}
        for i in self.node_indices():
            weights: list[tuple[float, int, str]] = []
            for j in range(i):
                alpha = self._arch_alpha[f"{self.label}/{i}_{j}"]
                weights += [(float(alpha[k].item()), j, name)
                            for k, name in enumerate(self.op_names)]
            weights.sort(reverse=True)
            first = sorted(weights.index(next(t for t in weights if t[1] == j)) for j in range(i))
            weights = [weights[k] for k in first] + [w for k, w in enumerate(weights)
                                                     if k not in first]
            for k in range(self.num_ops_per_node):
                _, j, name = weights[k % len(weights)]
                exported[f"{self.label}/op_{i}_{k}"] = name
                exported[f"{self.label}/input_{i}_{k}"] = j
        return exported

    def _label_probs(self, label: str) -> list[float] | None:
        return None  # NNI's weights are per edge, not per arch label

    def chosen(self, arch: Mapping[str, Any] | None = None) -> list[list[tuple[int, str]]]:
        """``[(input, op name)]`` of every op of every node under ``arch`` (default: current)."""
        arch = self.current_arch() if arch is None else arch
        return [[(arch[f"{self.label}/input_{i}_{k}"], arch[f"{self.label}/op_{i}_{k}"])
                 for k in range(self.num_ops_per_node)] for i in self.node_indices()]

    def forward(self, *inputs: Any) -> Any:
        processed = preprocess_cell_inputs(self.num_predecessors, *inputs)
        states = self.preprocessor(processed)
        if self.mixing():
            for i, ops in zip(self.node_indices(), self.ops):
                states.append(sum(self._mixed_edge(i, j, ops[j], states[j]) for j in range(i)))
        else:
            for ops, node in zip(self.ops, self.chosen()):
                states.append(sum(ops[j][name](states[j]) for j, name in node))
        return self.postprocessor(cell_output(states, self.num_predecessors, self.concat_dim),
                                  processed)

    def _mixed_edge(self, i: int, j: int, ops: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
        results = torch.stack([op(x) for op in ops.values()])
        weights = torch.softmax(self._arch_alpha[f"{self.label}/{i}_{j}"], -1)
        if len(weights) == len(results) + 1:  # the zero path: the edge is not chosen at all
            results = torch.cat((results, torch.zeros_like(results[:1])), 0)
        return torch.sum(results * weights.view(-1, *[1] * (results.dim() - 1)), 0)

    def freeze(self, memo):
        rows = []
        for i, ops, node in zip(self.node_indices(), self.ops, self.chosen(memo)):
            n = i - self.num_predecessors
            labels = [(f"{self.label}/op_{i}_{k}", f"{self.label}/input_{i}_{k}")
                      for k in range(self.num_ops_per_node)]
            rows.append([freeze_child(ops[j][name], memo, f"ops.{n}.{k}", labels[k])
                         for k, (j, name) in enumerate(node)])
        return FrozenCell(self._freeze_part(self.preprocessor, memo, "preprocessor"), rows,
                          [[j for j, _ in node] for node in self.chosen(memo)],
                          self._freeze_part(self.postprocessor, memo, "postprocessor"),
                          self.num_predecessors, self.concat_dim)

    @staticmethod
    def _freeze_part(part: Any, memo: Mapping[str, Any], name: str) -> Any:
        return freeze_child(part, memo, name) if isinstance(part, nn.Module) else part

    def _save_to_sub_state_dict(self, dest, prefix, keep_vars):
        if isinstance(self.preprocessor, nn.Module):
            collect_sub_state(self.preprocessor, dest, f"{prefix}preprocessor.", keep_vars)
        for n, (ops, node) in enumerate(zip(self.ops, self.chosen())):
            for k, (j, name) in enumerate(node):
                collect_sub_state(ops[j][name], dest, f"{prefix}ops.{n}.{k}.", keep_vars)
        if isinstance(self.postprocessor, nn.Module):
            collect_sub_state(self.postprocessor, dest, f"{prefix}postprocessor.", keep_vars)


class FrozenCell(nn.Module):
    """A frozen :class:`MixedCell`: node ``n`` sums ``ops[n][k](states[input_indices[n][k]])``.

    Every node is concatenated, as the supernet cell does; zero ops are left out of the sums.
    """

    def __init__(self, preprocessor: Any, ops: list[list[nn.Module]],
                 input_indices: list[list[int]], postprocessor: Any, num_predecessors: int,
                 concat_dim: int) -> None:
        super().__init__()
        self.preprocessor = preprocessor
        self.ops = nn.ModuleList(nn.ModuleList(node) for node in ops)
        self.postprocessor = postprocessor
        self.input_indices = [[int(j) for j in node] for node in input_indices]
        self.num_predecessors, self.concat_dim = num_predecessors, concat_dim

    def forward(self, *inputs: Any) -> Any:
        processed = preprocess_cell_inputs(self.num_predecessors, *inputs)
        states = self.preprocessor(processed)
        for ops, indices in zip(self.ops, self.input_indices):
            states.append(node_sum(list(ops), states, indices))
        return self.postprocessor(cell_output(states, self.num_predecessors, self.concat_dim),
                                  processed)

    def extra_repr(self) -> str:
        return f"input_indices={self.input_indices}"
