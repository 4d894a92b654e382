"""The public API: every promised name exists, resolves lazily, and is documented."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import subnet_export as se

#: names the issues promise to users (keep them)
PROMISED = [
    "Choice", "to_supernet", "freeze", "materialize", "fixed_arch", "BaseSuperNetModule",
    "sub_state_dict", "ParameterSpec", "ArchError", "InputChoice", "LayerChoice", "Repeat",
    "Conv2d", "BatchNorm2d", "Linear", "LayerNorm", "MultiheadAttention", "export_onnx",
    "validate", "ParityReport", "recalibrate_bn", "write_bundle", "verify_bundle", "gate",
]


@pytest.mark.parametrize("name", PROMISED)
def test_promised_names_exist(name):
    assert name in se.__all__
    assert getattr(se, name) is not None


@pytest.mark.parametrize("name", [n for n in se.__all__ if n != "__version__"])
def test_every_public_name_resolves_and_is_documented(name):
    value = getattr(se, name)
    assert not inspect.ismodule(value), f"se.{name} is a module, not the public object"
    if inspect.isclass(value) or inspect.isfunction(value):
        assert inspect.getdoc(value), f"se.{name} has no docstring"
    module = sys.modules[value.__module__] if hasattr(value, "__module__") else None
    if module is not None and hasattr(module, "__all__") and module.__name__.startswith(
            "subnet_export"):
        assert name in module.__all__, f"{name} missing from {module.__name__}.__all__"


def test_public_functions_win_over_submodules():
    # importing a submodule binds its name on the package; the function must stay bound
    import subnet_export.arch  # noqa: F401
    import subnet_export.bundle.gate  # noqa: F401
    import subnet_export.parity.validate  # noqa: F401

    assert inspect.isfunction(se.freeze) and inspect.isfunction(se.validate)
    assert inspect.isfunction(se.gate)


def test_importing_the_package_does_not_import_torch():
    code = "import sys, subnet_export; assert 'torch' not in sys.modules; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize("name", [n for n in se.__all__ if n != "__version__"])
def test_the_map_points_at_the_defining_module(name):
    value = getattr(se, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        assert value.__module__ == f"subnet_export.{se._EXPORTS[name]}"


#: packages that are drop-ins for another framework's namespace (torch.nn's names and more)
FRONT_ENDS = {"subnet_export.nni"}


def test_every_module_lists_only_what_it_defines():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(se.__path__, "subnet_export."):
        if info.name in FRONT_ENDS:  # a drop-in namespace re-exports by design
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert value.__module__ == info.name, f"{info.name}.__all__ re-exports {name}"
