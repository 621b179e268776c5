#!/usr/bin/env python3
"""Where ONNX Runtime spends its time on one model, per node and per kind of node.

The counterpart of `dosewitness bench vision --profile MODEL --nodes` on the tract side: runs
MODEL (a name from models/manifest.json) single-threaded with ORT's profiler on, drops the warm-up
runs, and prints the median time per node grouped by kind (1x1, depthwise and other
convolutions, told apart from the optimised graph ORT writes), then the slowest nodes. Use it to
see which layers hold the tract/ORT gap. Run it with the model venv:

    target/model-venv/bin/python scripts/bench/ort_profile.py hand_landmark_lite

ORT rewrites NHWC convolutions to its blocked NCHWc layout; its node names say so (`_nchwc`).
Profiling adds a little overhead per node, so totals run slightly above `bench vision`'s.
"""
import argparse
import collections
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]


def node_kinds(optimized: Path) -> dict:
    """Each node's kind ("Conv 1x1", "Conv depthwise", ...), in the optimised graph's order."""
    kinds = {}
    for node in onnx.load(str(optimized)).graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kind = node.op_type
        if "Conv" in node.op_type:
            kernel = list(attrs.get("kernel_shape") or [])
            if attrs.get("group", 1) > 1:
                kind += " depthwise"
            elif kernel == [1, 1]:
                kind += " 1x1"
            else:
                kind += f" {kernel}"
        kinds[node.name] = kind
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model name from models/manifest.json")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument(
        "--order",
        action="store_true",
        help="list every node in execution order (to set beside `bench vision --profile --nodes`)",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="evict the caches (64 MiB of writes) before each run, like `bench vision --profile --cold`",
    )
    args = parser.parse_args()

    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    entries = manifest["models"] if isinstance(manifest, dict) else manifest
    entry = next((e for e in entries if e["name"] == args.model), None)
    if entry is None:
        names = ", ".join(e["name"] for e in entries)
        raise SystemExit(f"no model {args.model!r} in models/manifest.json (have: {names})")

    work = Path(tempfile.mkdtemp(prefix="ort-profile-"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_profiling = True
    options.profile_file_prefix = str(work / "profile")
    options.optimized_model_filepath = str(work / "optimized.onnx")
    session = ort.InferenceSession(
        str(ROOT / "models" / entry["file"]), options, providers=["CPUExecutionProvider"]
    )
    feed = {}
    rng = np.random.default_rng(7)
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feed[inp.name] = rng.random(shape, dtype=np.float32)
    evictor = np.zeros(64 << 20 if args.cold else 0, dtype=np.uint8)
    for _ in range(args.warmup + args.runs):
        evictor[::64] += 1
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())

    times = collections.defaultdict(list)
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            times[name[: -len("_kernel_time")]].append(event["dur"] / 1000.0)
    kinds = node_kinds(work / "optimized.onnx")
    medians = {n: statistics.median(v[args.warmup :] or v) for n, v in times.items()}
    by_kind = collections.Counter()
    for name, ms in medians.items():
        by_kind[kinds.get(name, "?")] += ms
    total = sum(medians.values())
    print(f"{args.model}: {total:.3f} ms summed over {len(medians)} nodes (ORT {ort.__version__})")
    for kind, ms in by_kind.most_common():
        print(f"  {kind:28s} {ms:7.3f} ms {100 * ms / total:5.1f} %")
    if args.order:
        shown = [n for n in kinds if n in medians] + [n for n in medians if n not in kinds]
    else:
        shown = sorted(medians, key=lambda n: -medians[n])[: args.top]
    for name in shown:
        print(f"  {medians[name]:7.3f} ms  {kinds.get(name, '?'):20s} {name[:90]}")


if __name__ == "__main__":
    main()
