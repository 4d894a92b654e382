"""Reading a sweep's arch file (JSONL or a JSON list, bare or with columns) and sampling archs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from subnet_export.errors import InputError
from subnet_export.sweeps.archs import read_archs, sample_entries

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ARCH = {"width": 12, "block.k": 5, "depth": 2, "op": "conv"}
OTHER = {"width": 8, "block.k": 3, "depth": 1, "op": "skip"}


@pytest.fixture(scope="module")
def tiny_net():
    sys.path.insert(0, str(FIXTURES))
    try:
        import tiny_space
    finally:
        sys.path.remove(str(FIXTURES))
    return tiny_space.supernet()


def test_jsonl_with_bare_and_wrapped_entries(tmp_path):
    path = tmp_path / "archs.jsonl"
    path.write_text(json.dumps({"arch": ARCH, "accuracy": 0.71, "note": "a"}) + "\n\n"
                    + json.dumps(OTHER) + "\n")
    first, second = read_archs(path)
    assert (first.arch, first.columns, first.position) == (ARCH, {"accuracy": 0.71, "note": "a"}, 0)
    assert (second.arch, second.columns, second.position) == (OTHER, {}, 1)
    assert first.origin == "archs.jsonl:1" and second.origin == "archs.jsonl:3"


def test_json_list_reads_the_same_entries(tmp_path):
    lines, listed = tmp_path / "a.jsonl", tmp_path / "a.json"
    items = [{"arch": ARCH, "accuracy": 0.5}, OTHER]
    lines.write_text("\n".join(json.dumps(i) for i in items))
    listed.write_text(json.dumps(items, indent=2))
    assert [(e.arch, e.columns) for e in read_archs(lines)] == [
        (e.arch, e.columns) for e in read_archs(listed)]


def test_a_non_object_entry_is_kept_for_an_error_row(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('[1, 2]\n"x"\n')
    assert [e.arch for e in read_archs(path)] == [[1, 2], "x"]


@pytest.mark.parametrize("text,needle", [("", "holds no arch"), ("{bad\n", ":1 is not a JSON"),
                                         ("[1,", ":1 is not a JSON")])
def test_unreadable_files_are_input_errors(tmp_path, text, needle):
    path = tmp_path / "a.jsonl"
    path.write_text(text)
    with pytest.raises(InputError, match=needle):
        read_archs(path)


def test_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_archs(tmp_path / "none.jsonl")


def test_samples_are_distinct_seeded_and_extend(tiny_net):
    five = sample_entries(tiny_net, 5, seed=3)
    keys = [json.dumps(e.arch, sort_keys=True) for e in five]
    assert len(set(keys)) == 5
    assert [e.arch for e in sample_entries(tiny_net, 5, seed=3)] == [e.arch for e in five]
    assert [e.arch for e in sample_entries(tiny_net, 6, seed=3)][:5] == [e.arch for e in five]
    assert all("sample_seed" in e.columns for e in five)
    assert [e.position for e in sample_entries(tiny_net, 2, seed=3, start=4)] == [4, 5]


def test_asking_more_samples_than_the_space_holds_gives_the_space(tiny_net):
    from subnet_export.arch import search_space

    size = 1
    for spec in search_space(tiny_net).values():
        size *= spec.size
    drawn = sample_entries(tiny_net, size + 5, seed=0)
    assert len({json.dumps(e.arch, sort_keys=True) for e in drawn}) == len(drawn) == size


def test_jobs_are_handed_out_one_topology_at_a_time(tiny_net, monkeypatch):
    from subnet_export.sweeps import setup

    a = {"width": 8, "block.k": 3, "depth": 2, "op": "skip"}
    b = {"width": 16, "block.k": 5, "depth": 2, "op": "skip"}   # a's topology
    c = {"width": 12, "block.k": 3, "depth": 1, "op": "skip"}   # another
    d = {"width": 12, "block.k": 3, "depth": 1, "op": "conv"}   # a third
    assert setup.topology_order(tiny_net, [a, b, c, d, {"width": 7}]) == [0, 2, 3, 4, 1]
    monkeypatch.setattr(setup, "ORDER_MAX_BYTES", 0)  # too big to materialize for the order
    assert setup.topology_order(tiny_net, [a, b, c, d]) == [0, 1, 2, 3]
