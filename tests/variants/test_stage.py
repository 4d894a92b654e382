"""The variants stage's data: the judged set held out from INT8 calibration (docs/edge.md)."""

from __future__ import annotations

import numpy as np
import pytest

from subnet_export.variants.stage import HELD_OUT_MIN, JUDGED_MAX, split_calibration


def _rows(n: int) -> np.ndarray:
    # row i holds the value i everywhere, so a sample is known by its first element
    return np.repeat(np.arange(n, dtype=np.float32), 6).reshape(n, 1, 2, 3)


def _ids(tensors) -> set[int]:
    (t,) = tensors
    return {int(v) for v in t[:, 0, 0, 0]}


@pytest.mark.parametrize(("n", "calib_samples", "held", "calibrated"), [
    (200, None, 50, 150),       # a quarter held out, the rest calibrates
    (1797, None, JUDGED_MAX, 1797 - JUDGED_MAX),
    (1000, 512, JUDGED_MAX, 512),
    (600, 560, 40, 560),        # what --calib-samples leaves, when it is enough
])
def test_the_judged_set_is_held_out_from_calibration(n, calib_samples, held, calibrated):
    label, judged, calibration = split_calibration(_rows(n), calib_samples, seed=3)
    assert label == "held-out"
    assert len(_ids(judged)) == held and len(_ids(calibration)) == calibrated
    assert not _ids(judged) & _ids(calibration)
    assert _ids(judged) | _ids(calibration) <= set(range(n))


@pytest.mark.parametrize(("n", "calib_samples"), [(4 * HELD_OUT_MIN - 4, None), (600, 580)])
def test_too_little_to_hold_out_judges_in_sample(n, calib_samples):
    label, judged, calibration = split_calibration(_rows(n), calib_samples, seed=3)
    assert label == "calibration"
    assert len(_ids(judged)) == min(n, JUDGED_MAX)
    assert len(_ids(calibration)) == (n if calib_samples is None else calib_samples)
    assert _ids(judged) & _ids(calibration)


def test_the_split_is_seeded():
    a = split_calibration(_rows(300), None, seed=1)
    b = split_calibration(_rows(300), None, seed=1)
    c = split_calibration(_rows(300), None, seed=2)
    assert _ids(a[1]) == _ids(b[1]) and _ids(a[1]) != _ids(c[1])


def test_samples_are_split_under_their_own_labels():
    import torch

    rows = torch.from_numpy(_rows(200))
    labels = ("samples-held-out", "samples")
    assert split_calibration([rows], None, 0, labels)[0] == "samples-held-out"
    assert split_calibration([rows[:8]], None, 0, labels)[0] == "samples"
