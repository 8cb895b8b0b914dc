#!/usr/bin/env python3
"""docs/performance.md's tables from the JSON reports of scripts/bench-fixtures.sh.

    python3 scripts/perf-table.py OUT_DIR MODEL...

Latency: OUT_DIR/perf-MODEL.json, every engine, precision, batch and thread count interleaved
in one process; cells are p50 ms, ratios divide p50s of the same batch and thread count.
Init and memory: OUT_DIR/perf-MODEL-mem-{cpu,tract,ort}.json, one process per engine.
"""

import json
import sys
from pathlib import Path

ENGINES = ("cpu", "ort", "tract")


def results(path):
    return [r for r in json.loads(Path(path).read_text())["results"] if r["status"] == "ok"]


def ms(v):
    return f"{v:.4f}" if v < 0.01 else f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def ratio(x, limit):
    s = f"{x:.2f}x"
    return f"**{s}**" if x <= limit else s


def main():
    out, models = Path(sys.argv[1]), sys.argv[2:]
    lat = [
        "| model | batch | threads | Alembic f32 | ONNX Runtime | tract | Alembic / ORT | Alembic / tract "
        "| w8a8 / f32 | int8 / f32 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    mem = [
        "| model | Alembic init ms | ORT init ms | tract init + first run ms | Alembic peak RSS delta MiB | ORT | tract |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in models:
        p50 = {
            (r["backend"], r["precision"], r["batch"], r.get("threads")): r["latency_ms"]["p50"]
            for r in results(out / f"perf-{m}.json")
        }
        for batch in (1, 8):
            for threads in (1, 2):
                get = lambda e, p: p50.get((e, p, batch, threads))  # noqa: E731
                a, o, t, w, i = get("cpu", "f32"), get("ort", "f32"), get("tract", "f32"), get("cpu", "w8a8"), get("cpu", "int8")
                if None in (a, o, t):
                    continue
                q = [ratio(x / a, 0.7) if x else "-" for x in (w, i)]
                lat.append(
                    f"| {m} | {batch} | {threads} | {ms(a)} | {ms(o)} | {ms(t)} | {ratio(a / o, 1.0)} "
                    f"| {ratio(a / t, 0.5)} | {q[0]} | {q[1]} |"
                )
        r = [next(iter(results(out / f"perf-{m}-mem-{e}.json")), None) for e in ENGINES]
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
