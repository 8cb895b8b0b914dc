#!/usr/bin/env python3
"""docs/performance.md's tables from the JSON reports of scripts/bench-fixtures.sh.

    python3 scripts/perf-table.py OUT_DIR MODEL...

Reads OUT_DIR/perf-MODEL-t1.json (all engines interleaved, 1 thread) and
OUT_DIR/perf-MODEL-t2-{cpu,tract,ort}.json (2 threads, one process per engine). Latency cells
are "p50 (p10-p90)" in ms; ratios divide p50s of the same run (1 thread) or of the same
script invocation (2 threads).
"""

import json
import sys
from pathlib import Path

ENGINES = ("cpu", "ort", "tract")


def load(path):
    rows = {}
    for r in json.loads(Path(path).read_text())["results"]:
        if r["status"] == "ok" and r["precision"] == "f32":
            rows[(r["backend"], r["batch"])] = r
    return rows


def cell(r):
    lat = r["latency_ms"]
    samples = sorted(r.get("samples_ms") or [])
    if len(samples) >= 10:
        lo, hi = samples[len(samples) // 10], samples[(9 * len(samples)) // 10]
        return f"{lat['p50']:.3f} ({lo:.3f}-{hi:.3f})"
    return f"{lat['p50']:.3f} (p90 {lat['p90']:.3f})"


def main():
    out, models = Path(sys.argv[1]), sys.argv[2:]
    lat = [
        "| model | batch | threads | Alembic cpu f32 | ONNX Runtime | tract | Alembic / ORT | Alembic / tract |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    mem = [
        "| model | Alembic init ms | ORT init ms | tract init + first run ms | Alembic peak RSS delta MiB | ORT | tract |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in models:
        t1 = load(out / f"perf-{m}-t1.json")
        t2 = {}
        for e in ENGINES:
            t2.update(load(out / f"perf-{m}-t2-{e}.json"))
        for threads, rows in ((1, t1), (2, t2)):
            for batch in (1, 8):
                r = [rows.get((e, batch)) for e in ENGINES]
                if None in r:
                    continue
                p = [x["latency_ms"]["p50"] for x in r]
                lat.append(
                    f"| {m} | {batch} | {threads} | {cell(r[0])} | {cell(r[1])} | {cell(r[2])} "
                    f"| {p[0] / p[1]:.2f}x | {p[0] / p[2]:.2f}x |"
                )
        # Init and memory from the 2-thread runs: one engine per process, so the peak is its own.
        r = [t2.get((e, 1)) for e in ENGINES]
        if None not in r:
            mib = [x["memory"]["peak_delta_bytes"] / 2**20 if x.get("memory") else float("nan") for x in r]
            tract_init = r[2]["init_ms"] + r[2]["first_inference_ms"]
            mem.append(
                f"| {m} | {r[0]['init_ms']:.1f} | {r[1]['init_ms']:.1f} | {tract_init:.1f} "
                f"| {mib[0]:.1f} | {mib[1]:.1f} | {mib[2]:.1f} |"
            )
    print("\n".join(lat))
    print()
    print("\n".join(mem))


if __name__ == "__main__":
    main()
