"""Graph templates (export/template.py, export/reuse.py).

A stored trace, fitted to an arch of the same topology, must write the very file a fresh trace
of that arch writes, byte for byte; what it cannot fit is traced, and a fitted graph that fails
parity is traced again and judged on its own.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

import subnet_export as se
from subnet_export.export.exporter import _state_tensors, export_onnx
from subnet_export.export.reuse import TemplateStore
from subnet_export.export.template import GraphTemplate, TemplateMismatch
from subnet_export.export.topology import topology_key
from subnet_export.export.trace import trace
from subnet_export.pipeline import export_subnet

ROOT = Path(__file__).resolve().parents[2]
#: the labels an arch of one topology may change: widths and kernel sizes only
SHAPE_LABELS = {"demo": ("expand", "kernel", "width", "features"),
                "autoformer": ("embed", "mlp_ratio")}


def _space(name: str) -> nn.Module:
    sys.path.insert(0, str(ROOT))
    try:
        from models import autoformer, demo
    finally:
        sys.path.remove(str(ROOT))
    return {"demo": demo, "autoformer": autoformer}[name].supernet()


def _base_arch(name: str, supernet: nn.Module) -> dict:
    if name == "demo":
        return json.loads((ROOT / "models" / "archs" / "demo.json").read_text())
    layers = {f"layer{i}.{k}": v for i in range(4) for k, v in (("heads", 2 + 2 * (i % 2)),
                                                              ("mlp_ratio", 4.0))}
    return dict(se.freeze(supernet, {"embed": 48, "depth": 2, **layers}))


def _plain(supernet: nn.Module, arch: dict) -> nn.Module:
    return se.materialize(supernet, se.freeze(supernet, arch)).eval()


def _same_topology(name: str, supernet: nn.Module, base: dict, count: int) -> list[dict]:
    """``count`` archs that differ from ``base`` in widths/kernels and share its topology key."""
    space, key = se.search_space(supernet), topology_key(_plain(supernet, base))
    found: list[dict] = []
    for seed in range(200):
        rng, arch = random.Random(seed), dict(base)
        for label in arch:
            if label.split(".")[-1] in SHAPE_LABELS[name]:
                arch[label] = rng.choice(list(space[label].candidates))
        if arch != base and arch not in found and topology_key(_plain(supernet, arch)) == key:
            found.append(arch)
        if len(found) == count:
            return found
    raise AssertionError(f"{name}: fewer than {count} archs of the base arch's topology")


def _export(plain: nn.Module, shape: tuple[int, ...], path: Path, arch: dict,
            store: TemplateStore | None):
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    return export_onnx(plain, example, path, arch=arch, templates=store)


@pytest.fixture(scope="module", params=["demo", "autoformer"])
def fitted(request, tmp_path_factory):
    """(name, supernet, base arch, same-topology archs, their files fitted and traced)."""
    name, root = request.param, tmp_path_factory.mktemp(request.param)
    supernet = _space(name)
    shape = tuple(supernet.input_shape)
    base = _base_arch(name, supernet)
    others = _same_topology(name, supernet, base, 2)
    store = TemplateStore()
    first = _export(_plain(supernet, base), shape, root / "base.onnx", base, store)
    results = []
    for i, arch in enumerate(others):
        via = _export(_plain(supernet, arch), shape, root / f"fitted{i}.onnx", arch, store)
        fresh = _export(_plain(supernet, arch), shape, root / f"traced{i}.onnx", arch, None)
        results.append((via, fresh))
    return name, supernet, base, others, first, results, store


def test_a_fitted_template_writes_the_file_a_fresh_trace_writes(fitted):
    name, _, _, others, first, results, store = fitted
    assert first.route == "traced" and len(store) == 1
    for via, fresh in results:
        assert via.route == "template", via.template_notes
        assert fresh.route == "traced"
        assert via.path.read_bytes() == fresh.path.read_bytes(), name
        assert via.graph == fresh.graph and via.unused == fresh.unused == ()


def test_a_template_one_worker_wrote_is_fitted_by_another(fitted, tmp_path):
    from subnet_export.export.shared_templates import SharedTemplates

    _, supernet, _, others, _, results, store = fitted
    folder = tmp_path / "templates"
    folder.mkdir()
    writer = SharedTemplates(folder)
    for template in list(store._templates.values()):
        writer.add(template)
    assert len(list(folder.glob("*.onnx"))) == len(store)
    reader = SharedTemplates(folder)  # another process: nothing of its own yet
    shape = tuple(supernet.input_shape)
    via = _export(_plain(supernet, others[0]), shape, tmp_path / "m.onnx", others[0], reader)
    assert via.route == "template", via.template_notes
    assert via.path.read_bytes() == results[0][1].path.read_bytes()


def test_unreadable_and_foreign_shared_templates_are_passed_over(fitted, tmp_path):
    from subnet_export.export.shared_templates import SharedTemplates, _prefix

    store = fitted[-1]
    folder = tmp_path / "templates"
    folder.mkdir()
    SharedTemplates(folder).add(next(iter(store._templates.values())))
    (written,) = folder.glob("*.onnx")
    written.rename(folder / f"{_prefix('another key')}-1-foreign.onnx")
    (folder / f"{_prefix('another key')}-1-broken.onnx").write_bytes(b"not a model")
    reader = SharedTemplates(folder)
    reader._read("another key")
    assert len(reader) == 0
    reader._read(next(iter(store._templates.values())).key)  # under its own key: nothing there
    assert len(reader) == 0


def test_a_worker_waits_for_a_trace_under_way_instead_of_tracing_it_too(fitted, tmp_path):
    import threading

    from subnet_export.export.shared_templates import SharedTemplates

    _, supernet, _, others, _, _, store = fitted
    template = next(iter(store._templates.values()))
    folder = tmp_path / "templates"
    folder.mkdir()
    tracer, waiter = SharedTemplates(folder), SharedTemplates(folder)
    tracer._mark(template.key)  # "tracing": this process is alive, so the marker is live
    assert list(folder.glob("*.tracing-*"))
    # the trace ends while the other waits
    threading.Timer(0.5, tracer.add, args=(template,)).start()
    assert waiter._wait(template.key)
    assert len(waiter) == 1 and not list(folder.glob("*.tracing-*"))  # add() unmarked


def test_a_dead_or_stale_trace_is_not_waited_for(tmp_path):
    import json
    import os
    import socket
    import subprocess
    import time

    from subnet_export.export.shared_templates import MAX_WAIT_S, SharedTemplates, _live, _prefix

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = {"host": socket.gethostname()}
    dead, old, alive = (tmp_path / f"{_prefix('k')}.tracing-{n}" for n in ("a", "b", "c"))
    dead.write_text(json.dumps({**here, "pid": gone.pid}))
    old.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    os.utime(old, (time.time() - MAX_WAIT_S - 1,) * 2)
    alive.write_text(json.dumps({**here, "pid": os.getpid()}))
    assert (_live(dead), _live(old), _live(alive)) == (False, False, True)
    alive.unlink()
    start = time.monotonic()
    assert SharedTemplates(tmp_path)._wait("k") is False  # nothing live: no wait, no template
    assert time.monotonic() - start < 5


def test_a_head_count_change_is_fitted_and_writes_a_fresh_trace_bytes(tmp_path):
    """AutoFormer's ``reshape(b, n, heads, head_dim)``: the head count is a traced number."""
    from subnet_export.export.topology import int_attributes

    supernet = _space("autoformer")
    shape = tuple(supernet.input_shape)
    base = _base_arch("autoformer", supernet)
    other = dict(base)
    for i in (0, 1):  # other head counts (and so other q/k/v widths) in both layers
        other[f"layer{i}.heads"] = 4 if base[f"layer{i}.heads"] == 2 else 2
    plain = _plain(supernet, other)
    assert topology_key(plain) != topology_key(_plain(supernet, base))
    assert topology_key(plain, loose=True) == topology_key(_plain(supernet, base), loose=True)
    assert int_attributes(plain) != int_attributes(_plain(supernet, base))
    store = TemplateStore()
    first = _export(_plain(supernet, base), shape, tmp_path / "base.onnx", base, store)
    (template,) = store._templates.values()
    # the head count and the head width: the two numbers of the reshape no shape gives back
    assert {attr.split(":")[1] for _, _, attr in template._attr_elements} == {"heads",
                                                                               "head_dim"}
    via = _export(plain, shape, tmp_path / "fitted.onnx", other, store)
    fresh = _export(_plain(supernet, other), shape, tmp_path / "traced.onnx", other, None)
    assert first.route == "traced" and via.route == "template", via.template_notes
    assert via.path.read_bytes() == fresh.path.read_bytes()


class _Noted(nn.Module):
    """A module holding an integer its forward never reads into the graph."""

    def __init__(self, note: int) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.note = note

    def forward(self, x):
        return self.fc(x).relu()


def test_an_integer_the_graph_does_not_hold_is_never_fitted(tmp_path):
    from subnet_export.export.topology import int_attributes

    store = TemplateStore()
    first = _export(_Noted(3).eval(), (2, 4), tmp_path / "a.onnx", None, store)
    (template,) = store._templates.values()
    assert template.ints == {":note": 3} and template._attr_elements == []
    assert not template.covers(int_attributes(_Noted(5)))
    # another integer: another exact key, the same loose key, and not even tried
    again = _export(_Noted(5).eval(), (2, 4), tmp_path / "b.onnx", None, store)
    assert first.route == again.route == "traced" and again.template_notes == ()
    with pytest.raises(TemplateMismatch, match="integer attributes"):
        template.instantiate(_state(_Noted(5)), {":note": 5})


def test_the_archs_really_differ_in_shape(fitted):
    # the test above would prove nothing if the fitted graphs held the base arch's shapes
    _, _, _, _, first, results, _ = fitted
    base = {t.name: list(t.dims) for t in onnx.load(str(first.path)).graph.initializer}
    for via, _ in results:
        dims = {t.name: list(t.dims) for t in onnx.load(str(via.path)).graph.initializer}
        assert dims.keys() == base.keys() and dims != base


def test_other_tensor_names_are_a_mismatch(fitted, tmp_path):
    name, supernet, base, _, _, _, _ = fitted
    deeper = dict(base)
    depth = "depth" if name == "autoformer" else "s1.depth"
    deeper[depth] = next(c for c in se.search_space(supernet)[depth].candidates
                         if c != base[depth])
    plain = _plain(supernet, deeper)
    template = _template(_plain(supernet, base), tuple(supernet.input_shape), tmp_path)
    state = {k: v.detach().numpy() for k, v in _state_tensors(plain).items()}
    with pytest.raises(TemplateMismatch, match="other tensors"):
        template.instantiate(state)


def _template(plain: nn.Module, shape: tuple[int, ...], folder: Path) -> GraphTemplate:
    example = (torch.randn(*shape),)
    raw = trace(plain, example, folder / "raw.onnx", "dynamo", None, {"input": {0: "batch"}},
                ("input",), ("output",))
    names = set(_state_tensors(plain))
    return GraphTemplate.from_trace(raw, folder, names, topology_key(plain))


# -- convs: kernel, group and padding rules --------------------------------------------------------
class _Convs(nn.Module):
    def __init__(self, width: int, kernel: int, padding: int | None = None) -> None:
        super().__init__()
        pad = kernel // 2 if padding is None else padding
        self.stem = nn.Conv2d(3, width, kernel, padding=pad)
        self.dw = nn.Conv2d(width, width, kernel, padding=kernel // 2, groups=width)
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.dw(torch.relu(self.stem(x))).mean((2, 3)), 1))


def _state(plain: nn.Module) -> dict:
    return {k: v.detach().numpy() for k, v in _state_tensors(plain).items()}


def test_kernel_group_and_same_padding_follow_the_weights(tmp_path):
    torch.manual_seed(0)
    template = _template(_Convs(8, 3).eval(), (1, 3, 10, 10), tmp_path)
    other = _Convs(12, 5).eval()
    model = template.instantiate(_state(other))
    convs = {n.input[1]: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in model.graph.node if n.op_type == "Conv"}
    assert convs["stem.weight"]["kernel_shape"] == [5, 5]
    assert convs["stem.weight"]["pads"] == [2, 2, 2, 2]
    assert convs["dw.weight"]["group"] == 12
    from subnet_export.runtime import make_session

    x = torch.randn(2, 3, 10, 10)
    got = make_session(model.SerializeToString()).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = other(x).numpy()
    assert got.shape == want.shape == (2, 4)
    assert abs(got - want).max() <= 1e-5 * max(1.0, float(abs(want).max()))


def test_a_kernel_change_without_same_padding_is_a_mismatch(tmp_path):
    template = _template(_Convs(8, 3, padding=0).eval(), (1, 3, 10, 10), tmp_path)
    with pytest.raises(TemplateMismatch, match="does not pad 'same'"):
        template.instantiate(_state(_Convs(8, 5, padding=0).eval()))
    # a width change alone needs no padding rule
    assert template.instantiate(_state(_Convs(16, 3, padding=0).eval())) is not None


def test_a_dtype_change_is_a_mismatch(tmp_path):
    template = _template(_Convs(8, 3).eval(), (1, 3, 10, 10), tmp_path)
    with pytest.raises(TemplateMismatch, match="float64"):
        template.instantiate(_state(_Convs(8, 3).double().eval()))


# -- the store's pre-selection and the pipeline's second judgement ---------------------------------
class _Residual(nn.Module):
    """Same tensors whatever ``add`` is; the residual add changes the graph, not the names."""

    def __init__(self, add: bool) -> None:
        super().__init__()
        self.add = add
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + x if self.add else y


def test_a_template_of_another_graph_is_not_picked(tmp_path):
    template = _template(_Residual(True).eval(), (1, 4, 6, 6), tmp_path)
    store = TemplateStore()
    store.add(template)
    other = _Residual(False).eval()
    assert topology_key(other) != template.key  # the flag a forward reads is in the key
    pick = store.pick(template.key, _state(other), other, (torch.randn(1, 4, 6, 6),), ["input"])
    assert pick.model is None and pick.tried == 1
    assert pick.reasons == ["output 0 differs from the plain model's"]


def test_a_fitted_graph_that_fails_parity_is_traced_again(fitted, tmp_path, monkeypatch):
    name, supernet, base, others, *_ = fitted
    if name != "demo":
        return  # one space is enough for the pipeline's fallback
    from subnet_export.export import reuse

    store = TemplateStore()
    _export(_plain(supernet, base), tuple(supernet.input_shape), tmp_path / "base.onnx", base,
            store)
    calls = []

    def spoil(model, plain, inputs, in_names):  # pass pre-selection with a wrong weight
        calls.append(1)
        first = next(t for t in model.graph.initializer if t.name == "stem.0.weight")
        first.raw_data = bytes(len(first.raw_data))

    monkeypatch.setattr(reuse, "_preselect", spoil)
    result = export_subnet(supernet, tmp_path / "bundle", arch=others[0],
                           input_shapes=[tuple(supernet.input_shape)], templates=store)
    assert calls == [1]
    assert result.export_route == "retraced" and result.report.passed
    assert result.manifest.extra["export_route"] == "retraced"
