"""One .npz convention for model inputs: graph names, then the exporter's defaults, then order."""

from __future__ import annotations

import numpy as np
import pytest

from subnet_export.errors import InputError
from subnet_export.npz import load_npz, pick_inputs

A, B = np.zeros((2, 3)), np.ones((2, 4))


@pytest.mark.parametrize(("arrays", "kw", "expected"), [
    ({"x": A, "ids": B}, dict(names=["ids", "x"], count=2), [B, A]),  # graph names win
    ({"label": B, "input": A}, dict(count=1), [A]),                    # the default name
    ({"label": B, "input": A}, {}, [A]),
    ({"input_1": B, "input_0": A}, dict(count=2), [A, B]),             # numbered defaults
    ({"input_0": A, "input_1": B}, {}, [A, B]),
    ({"p": A, "q": B}, dict(count=2), [A, B]),                         # file order
    ({"arr_0": A}, dict(count=1), [A]),
    ({"p": A, "q": B}, {}, [A]),                                       # one input: the first
])
def test_the_convention(arrays, kw, expected):
    got = pick_inputs(arrays, "samples", **kw)
    assert len(got) == len(expected) and all(g is e for g, e in zip(got, expected))


def test_no_rule_fits_names_the_keys_to_use():
    with pytest.raises(InputError, match=r"2 arrays \['p', 'q'\] for 3 model inputs.*'input_0'"):
        pick_inputs({"p": A, "q": B}, "samples", count=3)
    with pytest.raises(InputError, match=r"named \['ids', 'mask'\]"):
        pick_inputs({"p": A}, "samples", names=["ids", "mask"], count=2)
    with pytest.raises(InputError, match="holds no array"):
        pick_inputs({}, "calibration data")


def test_load_refuses_what_is_not_an_npz_and_never_unpickles(tmp_path):
    np.save(tmp_path / "one.npy", A)
    with pytest.raises(InputError, match="single .npy array"):
        load_npz(tmp_path / "one.npy", "samples")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="samples file .* is not an .npz archive"):
        load_npz(tmp_path / "bad.npz", "samples")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="object arrays .* never loaded"):
        load_npz(tmp_path / "obj.npz", "samples")["x"]
    with pytest.raises(InputError, match="does not exist"):
        load_npz(tmp_path / "none.npz", "calibration data")
    np.savez(tmp_path / "ok.npz", b=B, a=A)
    assert list(load_npz(tmp_path / "ok.npz", "samples")) == ["b", "a"]
