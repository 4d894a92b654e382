"""``.npz`` files, read one way: the bundle's samples, user samples and calibration data.

Pickled objects are refused, never unpickled. A file of model inputs follows one key convention
(:func:`pick_inputs`): the graph input names; else the exporter's default names (``input``, or
``input_0``, ``input_1``, ...); else the arrays in file order. numpy only.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import InputError

__all__ = ["load_npz", "pick_inputs"]


def load_npz(path: str | os.PathLike[str], what: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, in file order.

    Args:
        path: the file.
        what: what the file is, for messages (``"samples"``, ``"calibration data"``).

    Raises:
        InputError: the file is missing, is not an ``.npz`` (a bare ``.npy`` included), or holds
            pickled objects.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise InputError(f"{what} file {name!r} does not exist")
    with open(name, "rb") as f:
        magic = f.read(6)
    if magic[:2] != b"PK" and magic != b"\x93NUMPY":
        raise InputError(f"{what} file {name!r} is not an .npz archive; write it with "
                         "numpy.savez(path, input=array)")
    try:
        loaded = np.load(name, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise InputError(f"{what} file {name!r} is a single .npy array, not an .npz; write "
                             "it with numpy.savez(path, input=array)")
        with loaded as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as err:
        if "pickle" not in str(err):
            raise InputError(f"cannot read {what} file {name!r} as .npz ({err}); write it "
                             "with numpy.savez(path, input=array)") from err
        raise InputError(f"{what} file {name!r} holds object arrays (pickled Python objects), "
                         "which are never loaded; save numeric arrays, e.g. "
                         "numpy.savez(path, input=array.astype('float32'))") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"cannot read {what} file {name!r} as .npz ({err}); write it with "
                         "numpy.savez(path, input=array)") from err


def pick_inputs(arrays: Mapping[str, np.ndarray], what: str, *,
                names: Sequence[str] | None = None, count: int | None = None) -> list[np.ndarray]:
    """The model inputs among ``arrays``, by the key convention of this module.

    Args:
        arrays: key -> array, in file order.
        what: what the arrays are, for messages.
        names: the graph input names, when known.
        count: how many inputs the model takes; None: one, unless default names say more.

    Raises:
        InputError: the file is empty, or no rule finds ``count`` inputs; the message says
            which keys to use.
    """
    if not arrays:
        raise InputError(f"{what} holds no array; write it with numpy.savez(path, input=array)")
    if names and all(n in arrays for n in names):
        return [arrays[n] for n in names]
    if "input" in arrays and count in (None, 1):
        return [arrays["input"]]
    numbered = [f"input_{k}" for k in range(count or len(arrays))]
    found = [k for k in numbered if k in arrays]
    if found and found == numbered[:len(found)] and (count is None or len(found) == count):
        return [arrays[k] for k in found]
    if count is None:
        return [next(iter(arrays.values()))]
    if len(arrays) == count:
        return list(arrays.values())
    expected = list(names) if names else numbered
    raise InputError(f"{what}: {len(arrays)} arrays {list(arrays)} for {count} model inputs; "
                     f"save one array per input, named {expected}")
