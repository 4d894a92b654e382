"""``SharedTemplates``: a template store every worker of a sweep sees, through one folder.

Each worker of a pooled or Ray sweep keeps its own :class:`~.reuse.TemplateStore`; alone, each
would trace every topology itself. This store also writes each template it keeps into a folder
(the sweep's ``.templates/``, on the filesystem the workers share), and before each pick it
reads the templates other workers wrote for the key asked for, so a topology is traced about
once per sweep rather than once per worker.

While a worker traces a topology no template exists for, a marker file says so; another worker
that needs the same topology waits for that trace rather than tracing it too (the wait is never
longer than the trace it replaces, since the other trace started first). A marker of a process
that is gone (on this host), or older than :data:`MAX_WAIT_S`, is not waited for.

A template file is an ONNX graph without its weights (their initializers hold shapes only) with
the template's key and tensor names in its metadata: data, never code. A file that cannot be
read, or one written for another key, is passed over and the arch is traced, as it would be
without sharing; a folder that cannot be written only loses the sharing. Every fitted graph is
validated in full afterwards, as any other.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .reuse import Pick, TemplateStore
from .template import GraphTemplate

__all__ = ["MAX_WAIT_S", "META_KEY", "SharedTemplates"]

#: the metadata entry holding a template file's key and tensor names
META_KEY = "subnet_export.template"
#: the longest wait for another worker's trace, in seconds from its start
MAX_WAIT_S = 300.0
#: how often a waiting worker looks for the template, in seconds
POLL_S = 0.1


def _prefix(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class SharedTemplates(TemplateStore):
    """A :class:`TemplateStore` that writes its templates to ``folder`` and reads others'."""

    def __init__(self, folder: str | Path, limit: int = 64) -> None:
        super().__init__(limit)
        self.folder = Path(folder)
        self._seen: set[str] = set()
        self._marker: Path | None = None

    def add(self, template: GraphTemplate) -> None:
        """Keep ``template`` here and write it to the folder for the other workers."""
        super().add(template)
        model = onnx.ModelProto()
        model.CopyFrom(template.model)
        model.graph.value_info.extend(template._value_info)
        entry = model.metadata_props.add()
        entry.key = META_KEY
        entry.value = json.dumps({"key": template.key, "params": sorted(template.params),
                                  "unused": sorted(template.unused), "loose": template.loose,
                                  "ints": dict(template.ints)})
        name = (f"{_prefix(template.key)}-{_prefix(template.loose)}-{os.getpid()}-"
                f"{uuid.uuid4().hex[:8]}.onnx")
        self._seen.add(name)
        staged = self.folder / f".{name}.tmp"
        try:
            onnx.save_model(model, str(staged))
            os.replace(staged, self.folder / name)  # whole or absent for a reader
        except (OSError, ValueError):
            staged.unlink(missing_ok=True)  # sharing lost, nothing else
        self._unmark()

    def pick(self, key: str, state: dict[str, np.ndarray], plain: nn.Module,
             inputs: Sequence[torch.Tensor], in_names: Sequence[str], loose: str = "",
             ints: Mapping[str, int] | None = None) -> Pick:
        """Read the templates other workers wrote for ``loose``, then pick as the store does.

        With no template of ``key`` anywhere and another worker tracing it, wait for that
        trace first. When nothing fits, mark ``key`` as traced here (until :meth:`add`).
        """
        self._unmark()  # a trace of this process that never reached add() has failed
        self._read(key, loose)
        result = super().pick(key, state, plain, inputs, in_names, loose, ints)
        if result.tried == 0 and self._wait(key, loose):
            result = super().pick(key, state, plain, inputs, in_names, loose, ints)
        if result.model is None and result.tried == 0:
            self._mark(key)
        return result

    def _mark(self, key: str) -> None:
        marker = self.folder / f"{_prefix(key)}.tracing-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            marker.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        except OSError:
            return
        self._marker = marker

    def done(self) -> None:
        """The trace this process marked has ended, kept or not: nobody waits for it now."""
        self._unmark()

    def _unmark(self) -> None:
        if self._marker is not None:
            self._marker.unlink(missing_ok=True)
            self._marker = None

    def _wait(self, key: str, loose: str = "") -> bool:
        """Wait while another live worker traces ``key``; True when a template came."""
        while any(_live(m) for m in self._markers(key)):
            time.sleep(POLL_S)
            before = len(self)
            self._read(key, loose)
            if len(self) > before:
                return True
        self._read(key, loose)  # the trace may have ended between the two looks
        return any(t.key == key for t in self._templates.values())

    def _markers(self, key: str) -> list[Path]:
        try:
            return list(self.folder.glob(f"{_prefix(key)}.tracing-*"))
        except OSError:
            return []

    def _read(self, key: str, loose: str = "") -> None:
        pattern = f"*-{_prefix(loose)}-*.onnx" if loose else f"{_prefix(key)}-*.onnx"
        try:
            paths = sorted(self.folder.glob(pattern))
        except OSError:
            return
        for path in paths:
            if path.name in self._seen:
                continue
            self._seen.add(path.name)
            template = _load(path, key, loose)
            if template is not None:
                TemplateStore.add(self, template)  # kept here, not written back


def _load(path: Path, key: str, loose: str) -> GraphTemplate | None:
    try:
        model = onnx.load(str(path))
        props = {p.key: p.value for p in model.metadata_props}
        meta = json.loads(props[META_KEY])
        if meta.get("key") != key and not (loose and meta.get("loose") == loose):
            return None
        kept = [p for p in model.metadata_props if p.key != META_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        names = set(meta["params"]) | set(meta["unused"])
        return GraphTemplate.from_trace(model, path.parent, names, meta["key"],
                                        meta.get("loose", ""), meta.get("ints", {}))
    except Exception:  # an unreadable or foreign file: this worker traces instead
        return None


def _live(marker: Path) -> bool:
    """Whether ``marker`` stands for a trace still under way somewhere."""
    try:
        age = time.time() - marker.stat().st_mtime
        owner = json.loads(marker.read_text())
    except OSError:
        return False  # removed meanwhile: the trace ended
    except ValueError:
        return True  # being written
    if age > MAX_WAIT_S:
        return False
    if owner.get("host") == socket.gethostname():
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, TypeError, ValueError):
            return True
    return True
