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

To find the layers that hold a gap, profile both runtimes in the same condition and set them side
by side (`--between` is the benchmark's condition: every other model runs before each run):

    target/release/dosewitness bench vision --profile hand_landmark_lite --nodes --between > tract.txt
    target/model-venv/bin/python scripts/bench/ort_profile.py hand_landmark_lite --between --against tract.txt
"""
import argparse
import collections
import json
import re
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


def single_thread_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def random_feed(session: ort.InferenceSession) -> dict:
    feed = {}
    rng = np.random.default_rng(7)
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feed[inp.name] = rng.random(shape, dtype=np.float32)
    return feed


def plain_session(entry: dict) -> tuple:
    """A session of another manifest model, without profiling, and its input (`--between`)."""
    session = ort.InferenceSession(
        str(ROOT / "models" / entry["file"]),
        single_thread_options(),
        providers=["CPUExecutionProvider"],
    )
    return session, random_feed(session)


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
    parser.add_argument(
        "--between",
        action="store_true",
        help="run every other model in the manifest once before each run, like "
        "`bench vision --profile --between` (the benchmark's condition)",
    )
    parser.add_argument(
        "--against",
        metavar="TRACT_PROFILE",
        type=Path,
        help="the saved output of `dosewitness bench vision --profile MODEL --nodes` (same "
        "condition): set each 1x1 and depthwise convolution beside tract's, layer by layer",
    )
    args = parser.parse_args()

    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    entries = manifest["models"] if isinstance(manifest, dict) else manifest
    entry = next((e for e in entries if e["name"] == args.model), None)
    if entry is None:
        names = ", ".join(e["name"] for e in entries)
        raise SystemExit(f"no model {args.model!r} in models/manifest.json (have: {names})")

    work = Path(tempfile.mkdtemp(prefix="ort-profile-"))
    options = single_thread_options()
    options.enable_profiling = True
    options.profile_file_prefix = str(work / "profile")
    options.optimized_model_filepath = str(work / "optimized.onnx")
    session = ort.InferenceSession(
        str(ROOT / "models" / entry["file"]), options, providers=["CPUExecutionProvider"]
    )
    feed = random_feed(session)
    evictor = np.zeros(64 << 20 if args.cold else 0, dtype=np.uint8)
    others = [plain_session(e) for e in entries if e is not entry] if args.between else []
    for _ in range(args.warmup + args.runs):
        evictor[::64] += 1
        for other, other_feed in others:
            other.run(None, other_feed)
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
    if args.against:
        in_order = [n for n in kinds if n in medians]
        compare(args.against.read_text(), [(kinds[n], medians[n]) for n in in_order])


# Which tract node kind runs which ORT node kind; both run a model's convolutions in graph order.
PAIRED_KINDS = {
    "OptMatMul": ("Conv 1x1", "Gemm", "FusedGemm"),
    "DepthWiseConv": ("Conv depthwise",),
}


def compare(tract_profile: str, ort_nodes: list) -> None:
    """Tract's nodes of each kind in PAIRED_KINDS beside ORT's, in order, with their difference."""
    lines = tract_profile.splitlines()
    node = re.compile(r"\s+([\d.]+) ms\s+#(\d+)\s+(\S+)\s+.* -> (\S+)")
    tract = collections.defaultdict(list)
    for index, line in enumerate(lines):
        found = node.match(line)
        if found and found.group(3) in PAIRED_KINDS:
            detail = lines[index + 1] if index + 1 < len(lines) else ""
            window = re.search(r"kernel: ([\d,]+) strides: ([\d,]+)", detail)
            k = re.search(r"k: Val\((\d+)\)", detail)
            tile = re.search(r"mmm: \[\w+_f32_(\w+)\]", detail)
            shape = (f"{window.group(1)} s{window.group(2)}" if window else "") + (
                f"K={k.group(1)} {tile.group(1) if tile else ''}" if k else ""
            )
            tract[found.group(3)].append(
                (float(found.group(1)), f"#{found.group(2)}", found.group(4), shape)
            )
    for kind, ort_kinds in PAIRED_KINDS.items():
        ours = tract[kind]
        theirs = [ms for k, ms in ort_nodes if k in ort_kinds]
        if len(ours) != len(theirs):
            print(f"\n{kind}: tract has {len(ours)} nodes, ORT {len(theirs)}: not set side by side")
            continue
        print(f"\n{kind} beside ORT {'/'.join(ort_kinds)}: tract {sum(t[0] for t in ours):.3f} ms, "
              f"ORT {sum(theirs):.3f} ms")
        for (ms, label, shape, detail), ort_ms in zip(ours, theirs):
            print(f"  {label:6s}{shape:18s}{detail:20s} tract {ms:6.3f}  ORT {ort_ms:6.3f}  "
                  f"{ms - ort_ms:+.3f}")


if __name__ == "__main__":
    main()
