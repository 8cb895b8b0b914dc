#!/usr/bin/env python3
"""Extract the ONNX backend *node* conformance cases into plain files.

Uses ``onnx.backend.test.case.node.collect_testcases()`` (the generators behind
onnx's own ``backend/test/data/node``) and writes, for every case:

    OUT/<case name>/model.onnx
    OUT/<case name>/test_data_set_<K>/input_<I>.pb    (onnx.TensorProto)
    OUT/<case name>/test_data_set_<K>/output_<I>.pb   (onnx.TensorProto)

Each TensorProto is named after the graph input/output it belongs to (the I-th
graph input/output, in graph order). Only cases whose graph inputs and outputs
are all plain tensors are written; cases with sequence/optional/map/sparse
inputs or outputs (or data that cannot be serialized) are not written, only
listed in the manifest as skipped with the reason.

OUT/manifest.tsv, one line per case, sorted by case name, tab-separated, with
one header line that starts with '#':

    #name  op_types  opset  rtol  atol  status

  name      case name (== directory name), e.g. test_add_bcast
  op_types  distinct op types of all nodes of the model, nested subgraphs
            (If/Loop/Scan bodies) included, in first-appearance order
            (depth-first), comma-separated. Ops of a non-default domain are
            written "domain:OpType" (e.g. ai.onnx.ml:LabelEncoder); the default
            domain ("" / "ai.onnx") is written as the bare OpType. "-" if the
            graph has no nodes. For non-expanded cases the first op type is the
            op under test; *_expanded cases (function bodies) list the
            primitive ops they expand into.
  opset     opset version imported for the default domain ("-" if none)
  rtol      relative tolerance of the case (onnx's TestCase.rtol)
  atol      absolute tolerance of the case (onnx's TestCase.atol)
  status    "ok", or "skipped:<reason>" (no directory written)

Comparison rule used by onnx's backend tests:
    |actual - expected| <= atol + rtol * |expected|   (NaNs compare equal)

OUT/STAMP records the onnx version, the op filter and this script's hash; when
it matches, the script exits immediately without regenerating (use --force to
regenerate anyway). Output is deterministic for a given onnx version; it is
built in a temporary sibling directory and swapped in, so an interrupted run
never leaves a half-written tree behind a valid STAMP.

--ops Op1,Op2,...  keeps only the cases whose op types (the op_types column:
every node of the model, nested subgraphs included) are ALL in the given set,
i.e. the cases an engine that implements exactly those ops can run. Names are
case-sensitive, non-default-domain ops written "domain:OpType". Without --ops
every case is written.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "data" / "onnx-node"
DEFAULT_DOMAINS = ("", "ai.onnx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Write ONNX node conformance test cases (model + .pb data) and a manifest.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output directory (default: {DEFAULT_OUT.relative_to(ROOT)} in the repo root)",
    )
    p.add_argument(
        "--ops",
        default=None,
        help="comma-separated op types; keep only cases all of whose node op types are listed",
    )
    p.add_argument("--force", action="store_true", help="regenerate even if STAMP matches")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p.parse_args(argv)


def stamp_text(ops: list[str] | None) -> str:
    script_hash = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return (
        f"onnx={metadata.version('onnx')}\n"
        f"ops={','.join(ops) if ops is not None else '*'}\n"
        f"script={script_hash}\n"
    )


def qualified(node) -> str:
    if node.domain in DEFAULT_DOMAINS:
        return node.op_type
    return f"{node.domain}:{node.op_type}"


def collect_op_types(graph, acc: dict[str, None]) -> None:
    """Distinct op types, first-appearance order, subgraphs depth-first."""
    import onnx

    for node in graph.node:
        acc.setdefault(qualified(node), None)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                collect_op_types(attr.g, acc)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    collect_op_types(g, acc)


def default_opset(model) -> str:
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return str(imp.version)
    return "-"


def value_kind(vi) -> str:
    kind = vi.type.WhichOneof("value")
    return {
        "tensor_type": "tensor",
        "sequence_type": "sequence",
        "optional_type": "optional",
        "map_type": "map",
        "sparse_tensor_type": "sparse_tensor",
        None: "untyped",
    }.get(kind, kind)


def to_tensor_proto(value, name: str):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    if isinstance(value, onnx.TensorProto):
        t = onnx.TensorProto()
        t.CopyFrom(value)
        t.name = name
        return t
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"unsupported data of type {type(value).__name__}")
    return numpy_helper.from_array(value, name)


def fmt_float(x: float) -> str:
    return repr(float(x))


def check_case(case) -> str | None:
    """Reason the case cannot be written, or None."""
    g = case.model.graph
    for what, vis in (("input", g.input), ("output", g.output)):
        for vi in vis:
            kind = value_kind(vi)
            if kind != "tensor":
                return f"{kind}_{what}"
    if not case.data_sets:
        return "no_data"
    for inputs, outputs in case.data_sets:
        if len(inputs) != len(g.input):
            return f"input_count_mismatch({len(inputs)}!={len(g.input)})"
        if len(outputs) != len(g.output):
            return f"output_count_mismatch({len(outputs)}!={len(g.output)})"
    return None


def write_case(case, case_dir: Path) -> None:
    g = case.model.graph
    case_dir.mkdir()
    for k, (inputs, outputs) in enumerate(case.data_sets):
        ds = case_dir / f"test_data_set_{k}"
        ds.mkdir()
        for i, (value, vi) in enumerate(zip(inputs, g.input)):
            (ds / f"input_{i}.pb").write_bytes(to_tensor_proto(value, vi.name).SerializeToString())
        for i, (value, vi) in enumerate(zip(outputs, g.output)):
            (ds / f"output_{i}.pb").write_bytes(to_tensor_proto(value, vi.name).SerializeToString())
    (case_dir / "model.onnx").write_bytes(case.model.SerializeToString())


def sanitize_reason(msg: str) -> str:
    msg = " ".join(str(msg).split())
    return msg.replace("\t", " ")[:120]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ops = None
    if args.ops is not None:
        ops = sorted({o.strip() for o in args.ops.split(",") if o.strip()})
    out: Path = args.out.resolve()
    stamp = stamp_text(ops)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))

    stamp_path = out / "STAMP"
    if not args.force and stamp_path.is_file() and stamp_path.read_text() == stamp:
        say(f"onnx_node_cases: {out} is up to date (onnx {metadata.version('onnx')})")
        return 0

    import numpy as np

    # The generators are deterministic already; seed anyway in case one is not.
    np.random.seed(0)
    with warnings.catch_warnings():
        # Several generators intentionally overflow / divide by zero.
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            from onnx.backend.test.case.node import collect_testcases

            cases = list(collect_testcases(None))

    names = [c.name for c in cases]
    if len(names) != len(set(names)):
        dups = sorted({n for n in names if names.count(n) > 1})
        print(f"onnx_node_cases: duplicate case names: {dups[:10]}", file=sys.stderr)
        return 1

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        rows = []
        n_ok = n_skip = n_filtered = 0
        all_ops: set[str] = set()
        for case in sorted(cases, key=lambda c: c.name):
            if case.kind != "node" or case.model is None:
                continue
            acc: dict[str, None] = {}
            collect_op_types(case.model.graph, acc)
            op_types = list(acc)
            if ops is not None and not set(op_types) <= set(ops):
                n_filtered += 1
                continue
            reason = check_case(case)
            if reason is None:
                try:
                    write_case(case, tmp / case.name)
                except Exception as e:  # noqa: BLE001 - record, don't abort
                    shutil.rmtree(tmp / case.name, ignore_errors=True)
                    reason = "serialize_error(" + sanitize_reason(f"{type(e).__name__}: {e}") + ")"
            if reason is None:
                status = "ok"
                n_ok += 1
                all_ops.update(op_types)
            else:
                status = f"skipped:{reason}"
                n_skip += 1
            rows.append(
                "\t".join(
                    [
                        case.name,
                        ",".join(op_types) if op_types else "-",
                        default_opset(case.model),
                        fmt_float(case.rtol),
                        fmt_float(case.atol),
                        status,
                    ]
                )
            )
        with open(tmp / "manifest.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.write("#name\top_types\topset\trtol\tatol\tstatus\n")
            for r in rows:
                f.write(r + "\n")
        (tmp / "STAMP").write_text(stamp)

        # Swap the fresh tree in.
        if out.exists() or out.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", suffix=".tmp", dir=out.parent))
            old.rmdir()
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    say(
        f"onnx_node_cases: onnx {metadata.version('onnx')}: wrote {n_ok} cases, "
        f"skipped {n_skip}"
        + (f", filtered out {n_filtered}" if ops is not None else "")
        + f", {len(all_ops)} op types -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
