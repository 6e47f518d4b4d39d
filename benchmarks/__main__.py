"""`make bench`: run every benchmarks/bench_*.py and print one table.

Each module exposes `run() -> list[dict]` with rows {name, value, unit, baseline, ratio,
target, note}. Speed targets are ratios against a baseline measured in the same run, so
the figures mean something on a busy or slow machine. Select modules by name:
`python -m benchmarks trainer ingest`. Results are also written to
benchmarks/results/latest.json.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("name", "value", "unit", "baseline", "ratio", "target", "note")


def discover() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return "" if value is None else str(value)


def main(argv: list[str]) -> int:
    wanted = [f"bench_{a.removeprefix('bench_')}" for a in argv]
    modules = [m for m in discover() if not wanted or m in wanted]
    if wanted and len(modules) != len(wanted):
        print(f"unknown benchmark(s): {sorted(set(wanted) - set(modules))}; have {discover()}")
        return 2
    rows = []
    for name in modules:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        for row in module.run():
            rows.append({"module": name, **row})
            shown = (f"{k}={fmt(row.get(k))}" for k in COLUMNS if row.get(k) is not None)
            print("   " + "  ".join(shown))
        print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)
    out = HERE / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2, default=str))
    widths = [max([len(c)] + [len(fmt(r.get(c))) for r in rows]) for c in COLUMNS]
    print("\n" + "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for r in rows:
        print("  ".join(fmt(r.get(c)).ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
