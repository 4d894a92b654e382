"""The bundle's digests are taken from the bytes as written; every file is still hashed."""

from __future__ import annotations

from _onnx_fixtures import make_bundle

from subnet_export.bundle import atomic, write
from subnet_export.bundle.hashing import digest_file, list_files


def test_copy_and_write_return_the_digest_of_what_is_on_disk(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 9000)  # more than one copy chunk
    copied = atomic.copy_file(src, tmp_path / "sub" / "dst.bin")
    assert copied == digest_file(tmp_path / "sub" / "dst.bin") == digest_file(src)
    written = atomic.write_file(tmp_path / "w.json", b'{"a": 1}\n')
    assert written == digest_file(tmp_path / "w.json") and written.size == 9


def test_files_written_are_not_read_back_and_the_rest_are_hashed(tmp_path, monkeypatch):
    read_back = []
    real = write.digest_file

    def recording(path):
        read_back.append(path.name)
        return real(path)

    monkeypatch.setattr(write, "digest_file", recording)
    out, manifest = make_bundle(tmp_path, external=True)
    assert read_back == ["samples.npz"]  # the zip is written by zipfile: hashed from disk
    files = [rel for rel, kind in list_files(out).items() if rel != "manifest.json"]
    assert sorted(manifest.files) == sorted(files)
    for rel, entry in manifest.files.items():
        assert real(out / rel).to_json() == entry, rel
