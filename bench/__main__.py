"""``python -m bench [name ...]``: run benchmarks, write bench/results/*.json and the docs."""

from __future__ import annotations

import argparse
import json
import sys

from . import RESULTS, discover, load, update_docs


def main(argv: list[str] | None = None) -> int:
    found = discover()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {list(found)})")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in found]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {list(found)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.names or list(found):
        module = load(found[name])
        print(f"bench {name} ...", file=sys.stderr, flush=True)
        result = module.run()
        out = RESULTS / f"{name}.json"
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"  wrote {out}", file=sys.stderr)
        if not args.no_docs and hasattr(module, "markdown"):
            update_docs(name, module.markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
