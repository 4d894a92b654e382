"""diagnose: real failed exports, each sorted into its category and told in one accurate line."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from subnet_export.errors import ExportError, InputError, SubnetExportError
from subnet_export.export.diagnose import CATEGORIES, diagnose_failure
from subnet_export.export.op_site import module_of_frame, module_running_op
from subnet_export.export.trace import trace
from subnet_export.export.writing import step


@torch.library.custom_op("subnet_export_tests::wobble", mutates_args=())
def wobble(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@wobble.register_fake
def _(x):
    return torch.empty_like(x)


class Kth(nn.Module):
    def forward(self, x):
        return torch.kthvalue(x, 2, dim=-1, keepdim=True)[0] + x


class Custom(nn.Module):
    def forward(self, x):
        return wobble(x) + 1


class Unflatten(nn.Module):
    def forward(self, x):
        return x.unflatten(1, (2, 2)).sum(-1).repeat(1, 2)


class Fft(nn.Module):
    def forward(self, x):
        return torch.fft.fft(x).abs()


class Histc(nn.Module):
    def forward(self, x):
        return torch.histc(x, bins=4).sum() + x  # min == max == 0: torchlib cannot


class Branchy(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x  # data-dependent: torch.export refuses it


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom\nsecond line of the story")


class Cell(nn.Module):
    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.op = op

    def forward(self, x):
        return self.op(self.fc(x))


class Net(nn.Module):
    """The op under test runs in ``blocks.1.op``."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Cell(nn.ReLU()), Cell(op)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


OPS = {"kthvalue": Kth, "custom": Custom, "unflatten": Unflatten, "fft": Fft, "histc": Histc,
       "branchy": Branchy, "boom": Boom}
INPUTS = (torch.randn(2, 4),)
PREFIX = "export: step 'trace' failed: "


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    """``failed(op, exporter, opset)``: (model, the ExportError of its trace), made once."""
    folder = tmp_path_factory.mktemp("failed")

    @functools.cache
    def run(op: str, exporter: str, opset: int | None = None):
        torch.manual_seed(0)
        model = Net(OPS[op]()).eval()
        with pytest.raises(ExportError) as err:
            trace(model, INPUTS, folder / f"{op}-{exporter}.onnx", exporter, opset, True,
                  ("input",), ("output",))
        return model, err.value

    return run


UNSUPPORTED = [
    # (op module, exporter, opset, operator, what the message says after "; hint: ")
    ("kthvalue", "dynamo", None, "aten::kthvalue",
     "the torchscript exporter has no translation either; replace it in the forward with "
     "supported ops"),
    ("kthvalue", "torchscript", None, "aten::kthvalue",
     "the dynamo exporter has no translation either; replace it in the forward with supported "
     "ops, or register a symbolic with torch.onnx.register_custom_op_symbolic"),
    ("custom", "dynamo", None, "subnet_export_tests::wobble",
     "replace it in the forward with supported ops, or register a symbolic with "
     "torch.onnx.register_custom_op_symbolic and use exporter 'torchscript'"),
    ("custom", "torchscript", None, "subnet_export_tests::wobble",
     "replace it in the forward with supported ops, or register a symbolic with "
     "torch.onnx.register_custom_op_symbolic"),
    ("unflatten", "torchscript", 12, "aten::unflatten",
     "it has one from opset 13: pass an opset in 13..20"),
    ("fft", "torchscript", None, "aten::fft_fft",
     "the dynamo exporter may translate it once decomposed: try exporter 'dynamo'"),
]


@pytest.mark.parametrize(("op", "exporter", "opset", "operator", "hint"), UNSUPPORTED)
def test_an_operator_without_translation_is_named_with_its_module(failed, op, exporter, opset,
                                                                  operator, hint):
    model, err = failed(op, exporter, opset)
    message = str(err)
    at = opset or 20
    assert message == (f"{PREFIX}operator {operator} (in module 'blocks.1.op') has no ONNX "
                       f"translation in the {exporter} exporter at opset {at}; hint: {hint}")
    assert err.category == "unsupported_op"
    found = diagnose_failure(err.__cause__, model, INPUTS, exporter, opset)
    assert (found.category, found.op, found.module) == ("unsupported_op", operator, "blocks.1.op")


def test_a_translation_that_fails_for_these_arguments_says_why(failed):
    _, err = failed("histc", "dynamo")
    assert err.category == "unsupported_op"
    assert str(err) == (
        f"{PREFIX}operator aten::histc (in module 'blocks.1.op') could not be translated by the "
        "dynamo exporter at opset 20 (aten_histc with min == max (0.0) is not supported in this "
        "export path.); hint: the torchscript exporter has no translation either; replace it in "
        "the forward with supported ops")


@pytest.mark.parametrize(("op", "exporter"), [("kthvalue", "torchscript"), ("custom", "dynamo"),
                                              ("branchy", "dynamo"), ("boom", "torchscript")])
def test_the_message_is_one_line_and_torch_s_text_is_in_the_details(failed, op, exporter):
    _, err = failed(op, exporter)
    message, details = str(err), err.details
    assert "\n" not in message and message.startswith(PREFIX)
    # torch's own words: its IR dump (TorchScript, printed on fd 1) or its step banner (dynamo)
    torch_text = {"kthvalue": "Torch IR graph at exception", "custom": "This is step 3/3",
                  "branchy": "This is step 1/3", "boom": "second line of the story"}[op]
    assert torch_text in details and torch_text not in message
    assert "Traceback (most recent call last)" in details


def test_data_dependent_control_flow_names_the_module_and_suggests_torchscript(failed):
    model, err = failed("branchy", "dynamo")
    assert err.category == "data_dependent"
    assert str(err) == (
        f"{PREFIX}the forward branches on tensor values (data-dependent control flow) in module "
        "'blocks.1.op', which the dynamo exporter cannot trace; hint: rewrite the branch with "
        "torch.where or torch.cond, or use exporter 'torchscript' (it bakes in the branch the "
        "example inputs take)")
    # a hint never suggests the exporter that already failed
    again = diagnose_failure(err.__cause__, model, INPUTS, "torchscript", None)
    assert again.category == "data_dependent" and again.module == "blocks.1.op"
    assert "use exporter 'torchscript'" not in again.message


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_anything_else_keeps_the_first_line_of_the_cause(failed, exporter):
    _, err = failed("boom", exporter)
    assert err.category == "other"
    assert str(err) == (f"{PREFIX}the {exporter} exporter failed at opset 20: RuntimeError: boom; "
                        "hint: torch's full message is in the error details (--debug)")


def test_dynamic_shapes_the_model_contradicts():
    class Square(nn.Module):
        def forward(self, x):
            return x @ x.transpose(0, 1)

    # one Dim on two axes of different sizes: torch.export's refusal, seen from torch itself
    dim = torch.export.Dim("n")
    x = torch.randn(2, 3)
    with pytest.raises(Exception) as err:
        torch.onnx.export(Square().eval(), (x,), dynamo=True, optimize=False, verbose=False,
                          dynamic_shapes=({0: dim, 1: dim},))
    found = diagnose_failure(err.value, Square(), (x,), "dynamo", None)
    assert found.category == "dynamic_shape", found.message
    assert "forward argument 'x'" in found.message and "\n" not in found.message
    assert found.message.startswith("the dynamic axes do not fit the model or its example "
                                    "inputs (axis 1 of forward argument 'x' = 3 is not equal to")
    assert found.message.endswith("hint: drop the dynamic axis the model needs fixed, and give "
                                  "one dim name only to axes that are always equal")


def test_categories_are_the_documented_ones():
    assert CATEGORIES == ("unsupported_op", "data_dependent", "dynamic_shape", "other")


# -- where an op runs ----------------------------------------------------------------------------

def test_module_running_op_finds_the_innermost_module():
    model = Net(Kth())
    assert module_running_op(model, INPUTS, {"aten::kthvalue"}) == "blocks.1.op"
    assert module_running_op(model, INPUTS, {"aten::addmm"}) == "blocks.0.fc"
    assert module_running_op(model, INPUTS, {"aten::linalg_eig"}) is None
    assert module_running_op(Kth(), INPUTS, {"aten::kthvalue"}) == ""
    assert module_running_op(Net(Boom()), INPUTS, {"aten::addmm"}) is None  # forward fails
    # no hook is left behind
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_module_of_frame_reads_the_traceback():
    model = Net(Boom())
    with pytest.raises(RuntimeError) as err:
        model(*INPUTS)
    assert module_of_frame(err.value, model) == "blocks.1.op"
    wrapped = ValueError("wrapper")
    wrapped.__cause__ = err.value
    assert module_of_frame(wrapped, model) == "blocks.1.op"


# -- step --------------------------------------------------------------------------------------

def _fail(exc: Exception):
    def fn():
        raise exc
    return fn


def test_step_phrases_a_failure_and_keeps_the_full_text_in_details():
    with pytest.raises(ExportError) as err:
        step("load", _fail(OSError("disk\nfull")))
    assert str(err.value).startswith("export: step 'load' failed: disk\nfull. the exporter wrote")
    assert "OSError: disk" in err.value.details
    with pytest.raises(ExportError) as err:
        step("trace", _fail(OSError("long\ntext")), describe=lambda exc: "one line")
    assert str(err.value) == "export: step 'trace' failed: one line"
    assert isinstance(err.value.__cause__, OSError)


def test_step_survives_a_failing_describe_and_passes_its_own_errors_on():
    def broken(exc):
        raise KeyError("bug")

    with pytest.raises(ExportError) as err:
        step("trace", _fail(ValueError("bad")), describe=broken)
    assert str(err.value) == ("export: step 'trace' failed: bad. the error details (--debug) "
                              "hold the traceback")
    own = InputError("opset 3 cannot be produced")
    with pytest.raises(SubnetExportError) as err:
        step("trace", _fail(own))
    assert err.value is own
    assert step("save", lambda: 7) == 7
