"""Bundle integrity: every file against the manifest's size and sha256, the manifest against itself.

stdlib only, shared by ``verify`` and ``gate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import BundleError, TamperError
from .hashing import digest_file, list_files
from .layout import MANIFEST_NAME
from .manifest import BundleManifest

__all__ = ["FileCheck", "check_files", "load_manifest", "require_intact", "tamper_message"]


@dataclass
class FileCheck:
    """The integrity of one bundle file.

    Attributes:
        path: relative POSIX path inside the bundle.
        status: ``ok``; ``modified`` (size or sha256 differ); ``missing`` (in the manifest, not
            on disk); ``added`` (on disk, not in the manifest); ``not_a_file`` (a symlink or
            other special entry, which a bundle never holds).
        expected: ``{"size", "sha256"}`` from the manifest, if it lists the file.
        actual: ``{"size", "sha256"}`` on disk, if it is a readable regular file.
    """

    path: str
    status: str
    expected: dict[str, Any] | None = None
    actual: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """Whether the file is as the manifest records it."""
        return self.status == "ok"


def tamper_message(bundle: str, bad: list[FileCheck]) -> str:
    """One line naming every altered file of ``bundle`` and what to do."""
    named = ", ".join(f"{f.path} ({f.status})" for f in bad)
    return f"bundle {bundle} has been altered: {named}; do not deploy it, fetch it again"


def load_manifest(bundle_dir: str | Path) -> tuple[BundleManifest, bytes]:
    """Read and parse a bundle's manifest.

    Args:
        bundle_dir: the bundle directory.

    Returns:
        The manifest and the raw bytes of ``manifest.json``.

    Raises:
        BundleError: the directory or its manifest is missing or unreadable, or the manifest is
            not valid JSON of the bundle schema, or it lists an unsafe path.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"{root} is not a directory; pass the bundle directory")
    path = root / MANIFEST_NAME
    if path.is_symlink() or not path.is_file():
        raise BundleError(f"{root} has no {MANIFEST_NAME}; it is not a subnet-export bundle")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e}") from e
    manifest = BundleManifest.loads(raw)
    for rel in manifest.files:
        parts = PurePosixPath(rel).parts
        if rel.startswith("/") or ".." in parts or "\\" in rel or rel == MANIFEST_NAME:
            raise BundleError(f"manifest.json lists an unsafe path {rel!r}; the bundle is corrupt")
    for rel in (manifest.model_file, *manifest.external_data):
        if rel not in manifest.files:
            raise BundleError(f"manifest.json does not hash {rel!r}; the bundle is corrupt")
    return manifest, raw


def check_files(bundle_dir: str | Path) -> tuple[BundleManifest, list[FileCheck]]:
    """Compare every file of a bundle with its manifest.

    ``manifest.json`` itself is checked against its self-digest and its canonical form, so an
    edit that keeps it valid JSON is caught as well.

    Args:
        bundle_dir: the bundle directory.

    Returns:
        The manifest and one :class:`FileCheck` per file listed or present, sorted by path.

    Raises:
        BundleError: see :func:`load_manifest`.
    """
    root = Path(bundle_dir)
    manifest, raw = load_manifest(root)
    checks: dict[str, FileCheck] = {}
    recorded = manifest.manifest_sha256
    intact = raw == manifest.dumps().encode() and recorded == manifest.content_sha256()
    checks[MANIFEST_NAME] = FileCheck(
        MANIFEST_NAME, "ok" if intact else "modified",
        {"sha256": recorded}, {"sha256": manifest.content_sha256()},
    )
    present = list_files(root)
    for rel, expected in manifest.files.items():
        kind = present.get(rel)
        if kind is None:
            checks[rel] = FileCheck(rel, "missing", expected, None)
        elif kind != "file":
            checks[rel] = FileCheck(rel, "not_a_file", expected, None)
        else:
            try:
                actual = digest_file(root / rel).to_json()
            except OSError as e:
                raise BundleError(f"cannot read {root / rel}: {e}") from e
            ok = actual["size"] == expected["size"] and actual["sha256"] == expected["sha256"]
            checks[rel] = FileCheck(rel, "ok" if ok else "modified", expected, actual)
    for rel, kind in present.items():
        if rel not in checks:
            checks[rel] = FileCheck(rel, "added" if kind == "file" else "not_a_file", None, None)
    return manifest, [checks[k] for k in sorted(checks)]


def require_intact(bundle_dir: str | Path) -> BundleManifest:
    """Check a bundle's files and return its manifest, raising if any file fails.

    Args:
        bundle_dir: the bundle directory.

    Returns:
        The manifest.

    Raises:
        TamperError: a file is modified, missing, added or not a regular file (all are named).
        BundleError: see :func:`load_manifest`.
    """
    manifest, files = check_files(bundle_dir)
    bad = [f for f in files if not f.passed]
    if bad:
        raise TamperError(tamper_message(str(bundle_dir), bad))
    return manifest
