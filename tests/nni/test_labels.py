"""NNI 2.10's automatic labels, number for number: model_N, nested model_N_M, default_N, reuse.

Each space is built with NNI's ``nn`` and with ``subnet_export.nni``; the labels NNI's one-shot
supernet reports (``search_space_spec()``, in its order) must be ours, with the same candidates.
"""

from __future__ import annotations

import warnings

import pytest
from _twin import build, nni_space, our_space, reset_default_labels, spec_list
from torch import nn as tnn

import subnet_export.nni as our_nn
from subnet_export.nni import _labels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _block(nn, width):
    return nn.Sequential(nn.Conv2d(4, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, 4, 1))


def _inner(nn, wrap):
    @wrap
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.LayerChoice([nn.Conv2d(4, 4, 3, padding=1), nn.Identity()])
            k = nn.ValueChoice([1, 3])
            self.b = nn.Conv2d(4, 4, k, padding=k // 2)

        def forward(self, x):
            return self.b(self.a(x))
    return Inner


def space_every_kind(nn, wrap):
    """Choices inside a layer choice, a repeat with a tuple depth whose factory makes choices,
    input choices, expressions, nested model_wrapper, label reuse."""
    Inner = _inner(nn, wrap)

    @wrap
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            width = nn.ValueChoice([4, 8])                                     # model_1
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.op = nn.LayerChoice([_block(nn, width),                      # model_2
                                      _block(nn, nn.ValueChoice([2, 6]))])     # (model_? inner)
            self.rep = nn.Repeat(lambda i: _block(nn, nn.ValueChoice([4, 6])), (1, 3))
            self.inner = Inner()                                              # model_N_1..
            self.skip = nn.InputChoice(2)
            self.shared1 = nn.LayerChoice([nn.Conv2d(4, 4, 1), nn.Identity()], label="same")
            self.shared2 = nn.LayerChoice([nn.Conv2d(4, 4, 1), nn.Identity()], label="same")
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            x = self.stem(x)
            y = self.inner(self.rep(self.op(x)))
            y = self.shared2(self.shared1(self.skip([x, y])))
            return self.head(y.mean((2, 3)))
    return Net()


@pytest.mark.parametrize("strategy", ["sampling", "differentiable"])
def test_labels_order_and_candidates_are_nnis(strategy):
    twin = build(space_every_kind, strategy)
    theirs, ours = spec_list(twin)
    assert ours == theirs
    labels = [lb for lb, _ in theirs]
    assert "same" in labels and labels.count("same") == 1
    assert any(lb.count("_") == 2 for lb in labels), labels  # the nested model_N_M


def test_labels_restart_for_every_model_built():
    first = our_space(space_every_kind)
    second = our_space(space_every_kind)
    assert first.op.label == second.op.label == nni_space(space_every_kind).op.label


def test_nested_wrappers_number_in_the_parents_namespace():
    # NNI's own test (test_namespace.py): model_1_1, model_1_2, model_2, model_3_1, model_3_2
    def make(nn, wrap):
        @wrap
        class Inner(nn.Module):
            def __init__(self):
                super().__init__()
                self.net1 = nn.LayerChoice([nn.Linear(10, 10), nn.Linear(10, 10, bias=False)])
                self.net2 = nn.LayerChoice([nn.Linear(10, 10), nn.Linear(10, 10, bias=False)])

        @wrap
        class Nested(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = Inner()
                self.fc2 = nn.LayerChoice([nn.Linear(10, 10), nn.Linear(10, 10, bias=False)])
                self.fc3 = Inner()
        return Nested()

    for net in (nni_space(make), our_space(make)):
        assert [net.fc1.net1.label, net.fc1.net2.label, net.fc2.label, net.fc3.net1.label,
                net.fc3.net2.label] == ["model_1_1", "model_1_2", "model_2", "model_3_1",
                                        "model_3_2"]


def test_unlabelled_choices_outside_model_wrapper_are_default_n():
    def make(nn, wrap):
        class Plain(nn.Module):  # no @model_wrapper
            def __init__(self):
                super().__init__()
                self.a = nn.LayerChoice([nn.Linear(2, 2), nn.Identity()])
                self.b = nn.InputChoice(3, 2)
                self.c = nn.Repeat(nn.Linear(2, 2), (1, 2))
                self.d = nn.Linear(2, nn.ValueChoice([2, 4]))
        return Plain()

    labels = []
    for build_space in (nni_space, our_space):
        reset_default_labels()
        net = build_space(make)
        labels.append([net.a.label, net.b.label, net.c.label])
    assert labels[0] == labels[1] == [f"default_{k}" for k in (1, 2, 3)]
    with pytest.warns(RuntimeWarning, match="model_wrapper"):
        _labels.next_label()


def test_default_counter_is_never_reset_by_models():
    def make(nn, wrap):
        @wrap
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.LayerChoice([nn.Linear(2, 2), nn.Identity()])
        return Net()

    reset_default_labels()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _labels.next_label() == "default_1"
        our_space(make)
        assert _labels.next_label() == "default_2"


def test_a_subclass_of_a_wrapped_model_labels_its_own_choices_outside():
    # NNI returns a subclass of a wrapped class unwrapped: the base's __init__ opens the
    # namespace, so what the subclass builds after super().__init__() is default_N.
    def make(nn, wrap):
        @wrap
        class Base(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.LayerChoice([nn.Linear(2, 2), nn.Identity()])

        @wrap
        class Child(Base):
            def __init__(self):
                super().__init__()
                self.b = nn.LayerChoice([nn.Linear(2, 2), nn.Identity()])
        return Child()

    got = []
    for build_space in (nni_space, our_space):
        reset_default_labels()
        net = build_space(make)
        got.append((net.a.label, net.b.label))
    assert got[0] == got[1] == ("model_1", "default_1")


def test_model_wrapper_keeps_the_class():
    def make(nn, wrap):
        @wrap
        class Net(nn.Module):
            """Doc."""

            def __init__(self, k=2):
                super().__init__()
                self.k = k
                self.lin = nn.Linear(2, 2)
        return Net

    cls = make(our_nn, our_nn.model_wrapper)
    net = cls(k=3)
    assert isinstance(net, tnn.Module) and net.k == 3 and type(net).__name__ == "Net"
    assert cls.__doc__ == "Doc." and cls.__wrapped__.__name__ == "Net"
