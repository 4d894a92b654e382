"""What a rerun may keep: a bundle already in the sweep directory that verifies as written.

"Verifies" is ``verify_bundle`` itself (every file against the manifest's hashes, the samples
rerun on onnxruntime CPU), plus the bundle's ``arch.json`` being the arch its name stands for;
a bundle recorded as failed needs its hashes only (its samples may not reproduce, by its very
failure), and an edge variant recorded as failed is not held against it either. A bundle that
fails is moved aside and deleted, so the arch is exported again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..bundle.layout import ARCH_NAME
from ..errors import SubnetExportError
from .job import bundle_facts
from .naming import canonical_json

__all__ = ["discard", "reusable"]


def reusable(bundle_dir: Path, arch: Mapping[str, Any]) -> dict[str, Any] | None:
    """The row facts of the verified bundle at ``bundle_dir``, or None when it must be redone.

    A bundle whose recorded parity failed but whose files verify is kept (its row says
    ``failed``) when its files match its manifest: the same arch and options would fail the
    same way. Anything else is removed (:func:`discard`).
    """
    if not (bundle_dir.exists() or bundle_dir.is_symlink()):
        return None
    from ..bundle.integrity import load_manifest
    from ..bundle.verify import verify_bundle

    try:
        report = verify_bundle(bundle_dir, require_parity=False)
        given = json.loads((bundle_dir / ARCH_NAME).read_text(encoding="utf-8"))
        manifest = load_manifest(bundle_dir)[0]
        # A bundle recorded as failed may fail its samples too (NaN outputs): its hashes decide.
        # So may an edge variant recorded as failed: it fails verify's rerun as it failed then.
        failed = {k for k, e in manifest.variants.items() if not e.get("passed")}
        rerun_ok = (not report.tampered and bool(report.samples)
                    and all(c.passed for c in (*report.samples, *report.noise))
                    and all(v.passed or v.kind in failed for v in report.variants))
        intact = not report.tampered and (rerun_ok or report.parity != "passed")
        ok = intact and canonical_json(given) == canonical_json(dict(arch))
        manifest = manifest if ok else None
    except (SubnetExportError, OSError, ValueError):
        manifest = None
    if manifest is None:
        discard(bundle_dir)
        return None
    return bundle_facts(bundle_dir, manifest)


def discard(bundle_dir: Path) -> None:
    """Remove a broken bundle: renamed to a hidden ``.NAME.old-<pid>-redo`` first, then deleted.

    The rename is one step, so the path holds the broken bundle or nothing, never a half-deleted
    one; a kill during the delete leaves only the hidden name, which the next export on that
    path removes.
    """
    if bundle_dir.is_symlink() or not bundle_dir.is_dir():
        bundle_dir.unlink()
        return
    aside = bundle_dir.parent / f".{bundle_dir.name}.old-{os.getpid()}-redo"
    if aside.exists():
        shutil.rmtree(aside)
    os.rename(bundle_dir, aside)
    shutil.rmtree(aside, ignore_errors=True)
