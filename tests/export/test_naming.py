"""Node names after their module: ``features.0/Conv``, unique, deterministic, numerics untouched."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import subnet_export as se
from subnet_export.errors import ExportError
from subnet_export.export.naming import NameNodesByModule, name_nodes_by_module
from subnet_export.parity.locate import module_scopes
from subnet_export.runtime import make_session

EXPORTERS = ["dynamo", "torchscript"]


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.fc(x))
        return self.act(y - 0.5) + y  # one module, two Relu nodes


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU(), nn.Conv2d(8, 8, 1, bias=False))
        self.head = nn.Module()  # a plain container whose forward is never called
        self.head.inner = Inner()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.inner(self.features(x).mean((2, 3))) * 2.0


class Branchy(nn.Module):
    """torch.cond: the dynamo export holds the branches as If bodies."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return torch.cond(y.sum() > 0, lambda t: self.a(t).relu(), lambda t: self.b(t), (y,))


def _net() -> Net:
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.features[1].running_mean.normal_()
        net.features[1].running_var.uniform_(0.5, 2.0)
    return net


_EXPORTS: dict[str, tuple[Net, torch.Tensor, onnx.ModelProto]] = {}


def _exported(exporter: str, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Net, torch.Tensor, onnx.ModelProto]:
    """The test net, an input and its export as saved by export_onnx (not renamed), made once."""
    if exporter not in _EXPORTS:
        net, x = _net(), torch.randn(2, 3, 8, 8)
        path = tmp_path_factory.mktemp(exporter) / "net.onnx"
        se.export_onnx(net, x, path, exporter=exporter)
        _EXPORTS[exporter] = (net, x, onnx.load(str(path)))
    net, x, model = _EXPORTS[exporter]
    return net, x, copy.deepcopy(model)


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    out = []
    for node in graph.node:
        out.append(node)
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                out += _all_nodes(sub)
    return out


def _names(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in _all_nodes(model.graph)]


def _without_names(model: onnx.ModelProto) -> bytes:
    bare = copy.deepcopy(model)
    for node in _all_nodes(bare.graph):
        node.name = ""
    return bare.SerializeToString()


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return make_session(model.SerializeToString(), threads=1).run(None, feed)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_renaming_changes_names_only_and_keeps_outputs_bit_exact(exporter, tmp_path_factory):
    _, x, raw = _exported(exporter, tmp_path_factory)
    named = copy.deepcopy(raw)
    name_nodes_by_module(named)
    names = _names(named)
    assert all(names) and len(set(names)) == len(names)
    assert _without_names(named) == _without_names(raw)  # not a value, not a metadata entry
    onnx.checker.check_model(named, full_check=True)
    feed = {"input": x.numpy()}
    for before, after in zip(_run(raw, feed), _run(named, feed), strict=True):
        assert before.tobytes() == after.tobytes()


def test_dynamo_nodes_are_named_by_module_path(tmp_path_factory):
    net, _, model = _exported("dynamo", tmp_path_factory)
    for i, node in enumerate(model.graph.node):  # dynamo's own names, whether or not
        node.name = f"node_{i}"                   # export_onnx already ran the pass
    assert name_nodes_by_module(model) == len(model.graph.node)
    names = _names(model)
    assert {"features.0/Conv", "features.1/BatchNormalization", "features.2/Relu",
            "features.3/Conv", "head.inner.fc/Gemm", "head.inner.act/Relu",
            "head.inner.act/Relu_1", "/ReduceMean", "/Mul"} <= set(names)
    paths = {path for path, _ in net.named_modules()}
    for node in model.graph.node:
        path, op = node.name.rsplit("/", 1)
        assert path in paths and op.split("_")[0] == node.op_type
        # the same module locate reads from the metadata (root nodes: no module)
        assert path == (module_scopes(node) or [""])[-1]


def test_torchscript_scope_names_are_kept(tmp_path_factory):
    # TorchScript's scopes are not named_modules() paths: "head" is never called, so its
    # child is "/inner/..."; those names stay, as locate reads modules from them
    _, _, raw = _exported("torchscript", tmp_path_factory)
    model = copy.deepcopy(raw)
    name_nodes_by_module(model)
    names = _names(model)
    assert {"/features/features.0/Conv", "/features/features.3/Conv", "/inner/fc/Gemm",
            "/inner/act/Relu", "/inner/act_1/Relu"} <= set(names)
    assert all(name.startswith("/") for name in names)
    for old, new in zip(raw.graph.node, model.graph.node, strict=True):
        assert module_scopes(new) == module_scopes(old)
        if old.name.startswith("/"):
            assert new.name == old.name


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_pass_is_deterministic_and_idempotent(exporter, tmp_path, tmp_path_factory):
    net, x, first = _exported(exporter, tmp_path_factory)
    se.export_onnx(net, x, tmp_path / "again.onnx", exporter=exporter)
    second = onnx.load(str(tmp_path / "again.onnx"))
    name_nodes_by_module(first)
    name_nodes_by_module(second)
    assert _names(first) == _names(second)
    assert name_nodes_by_module(first) == 0


def test_locate_names_a_layer_the_engineer_finds_by_node_name(tmp_path, tmp_path_factory):
    net, x, model = _exported("dynamo", tmp_path_factory)
    name_nodes_by_module(model)
    (weight,) = [t for t in model.graph.initializer if t.name == "features.3.weight"]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 0.5, weight.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    div = se.locate_divergence(net, tmp_path / "bad.onnx", (x,), tolerance=se.Tolerance())
    assert div is not None and div.module == "features.3"
    assert [n.name for n in model.graph.node if n.name.startswith(f"{div.module}/")] == [
        "features.3/Conv"]


def test_if_bodies_take_the_module_of_their_if(tmp_path):
    torch.manual_seed(0)
    net, x = Branchy().eval(), torch.randn(2, 4)
    se.export_onnx(net, x, tmp_path / "cond.onnx")
    raw = onnx.load(str(tmp_path / "cond.onnx"))
    model = copy.deepcopy(raw)
    name_nodes_by_module(model)
    (cond,) = [n for n in model.graph.node if n.op_type == "If"]
    assert cond.name == "/If"
    bodies = {a.name: [n.name for n in a.g.node] for a in cond.attribute}
    # torch.cond's branches carry no module scopes: their nodes belong to the If's (the root)
    assert bodies == {"then_branch": ["/Gemm", "/Relu"], "else_branch": ["/Gemm_1"]}
    assert "fc/Gemm" in _names(model)
    names = _names(model)
    assert len(set(names)) == len(names)
    feed = {"input": x.numpy()}
    for before, after in zip(_run(raw, feed), _run(model, feed), strict=True):
        assert before.tobytes() == after.tobytes()


def _scoped(node: onnx.NodeProto, *scopes: str) -> onnx.NodeProto:
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(["", *scopes, "op"]))
    return node


def _hand_built() -> onnx.ModelProto:
    """No exporter: unnamed nodes, a foreign name, TorchScript names (one twice), metadata, If."""
    body = helper.make_graph(
        [helper.make_node("Neg", ["y"], ["t"]), _scoped(helper.make_node("Abs", ["t"], ["u"]),
                                                        "blk", "blk.inner")],
        "body", [], [helper.make_tensor_value_info("u", TensorProto.FLOAT, [2])])
    other = helper.make_graph(
        [helper.make_node("Identity", ["y"], ["v"])],
        "other", [], [helper.make_tensor_value_info("v", TensorProto.FLOAT, [2])])
    nodes = [
        helper.make_node("Add", ["x", "x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"], name="relu_7"),
        helper.make_node("Add", ["b", "x"], ["c"], name="/Add"),
        helper.make_node("Mul", ["c", "c"], ["d"], name="/blk/Mul"),
        helper.make_node("Mul", ["d", "d"], ["e"], name="/blk/Mul"),
        _scoped(helper.make_node("Add", ["e", "x"], ["y"]), "blk"),
        _scoped(helper.make_node("ReduceSum", ["y"], ["s"], keepdims=0), "blk"),
        helper.make_node("Greater", ["s", "zero"], ["g"]),
        _scoped(helper.make_node("If", ["g"], ["out"], then_branch=body, else_branch=other),
                "blk"),
    ]
    graph = helper.make_graph(
        nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_nodes_without_module_metadata_are_root_nodes():
    model = _hand_built()
    onnx.checker.check_model(model, full_check=True)
    raw = copy.deepcopy(model)
    name_nodes_by_module(model)
    assert [n.name for n in model.graph.node] == [
        "/Add_1",       # unnamed: a root node; "/Add" is taken by the kept TorchScript name
        "/Relu",        # a foreign name without "/" is replaced the same way
        "/Add",         # a TorchScript name is kept...
        "/blk/Mul",
        "/blk/Mul_1",   # ...once: a repeat is uniquified
        "blk/Add", "blk/ReduceSum", "/Greater", "blk/If"]
    (cond,) = [n for n in model.graph.node if n.op_type == "If"]
    bodies = {a.name: [n.name for n in a.g.node] for a in cond.attribute}
    # body nodes without a module of their own take the If's; one with its own keeps it
    assert bodies == {"then_branch": ["blk/Neg", "blk.inner/Abs"],
                      "else_branch": ["blk/Identity"]}
    assert _without_names(model) == _without_names(raw)
    onnx.checker.check_model(model, full_check=True)
    # onnxruntime refuses the raw model ("two nodes with same node name"), so compare with it
    # nameless
    feed = {"x": np.array([0.5, -2.0], np.float32)}
    nameless = onnx.load_from_string(_without_names(raw))
    assert _run(model, feed)[0].tobytes() == _run(nameless, feed)[0].tobytes()


def test_same_model_same_names():
    first, second = _hand_built(), _hand_built()
    assert name_nodes_by_module(first) == name_nodes_by_module(second) == 10  # 2 kept
    assert _names(first) == _names(second)
    assert name_nodes_by_module(first) == 0


def test_broken_names_break_the_contract():
    model = _hand_built()
    name_nodes_by_module(model)
    model.graph.node[1].name = model.graph.node[0].name
    assert "not unique" in NameNodesByModule().ensures(model)
    model.graph.node[1].name = "/Relu"
    model.graph.node[5].name = "elsewhere/Add"
    assert "not named after its module 'blk'" in NameNodesByModule().ensures(model)

    class Lazy(NameNodesByModule):
        def call(self, model):
            from subnet_export.export.passes import PassResult

            return PassResult(False, 0)

    with pytest.raises(ExportError, match="name_nodes_by_module broke its contract"):
        Lazy()(_hand_built())
