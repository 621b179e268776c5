#!/usr/bin/env python3
"""ONNX Runtime side of `dosewitness bench vision`.

Runs every model in models/manifest.json single-threaded with ONNX Runtime on the same
deterministic input the Rust side feeds tract (element i = range_lo + (i * 7919 % 256) / 255 *
(range_hi - range_lo)), and prints one JSON object: {name: {"load_ms", "median_ms", "p95_ms",
"runs"}}. Run it with the venv `cargo xtask models` creates (it has onnxruntime).

With --serve it loads every session, prints one line {"ready": {name: {"load_ms", "onnxruntime"}}}
and then answers lines "NAME RUNS" on stdin with a JSON list of RUNS timings (ms), and lines
"OUTPUTS NAME" with the model's outputs on that input (a JSON list of flat lists, in graph order),
until an empty line or end of input. `dosewitness bench vision` uses this to interleave tract and ONNX Runtime
rounds, so both runtimes are timed in the same windows of a noisy machine.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def deterministic_input(shape, value_range):
    count = int(np.prod(shape))
    index = np.arange(count, dtype=np.int64)
    low, high = value_range
    values = low + ((index * 7919) % 256).astype(np.float32) / 255.0 * (high - low)
    return values.astype(np.float32).reshape(shape)


def session_for(models, entry):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    started = time.perf_counter()
    session = ort.InferenceSession(str(Path(models) / entry["file"]), options, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - started) * 1000
    feed = {entry["input"]["name"]: deterministic_input(entry["input"]["shape"], entry["input"]["range"])}
    for _ in range(5):
        session.run(None, feed)
    return session, feed, load_ms


def timed(session, feed, runs):
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def serve(args, manifest):
    sessions = {}
    ready = {}
    for entry in manifest["models"]:
        if args.only and entry["name"] not in args.only:
            continue
        session, feed, load_ms = session_for(args.models, entry)
        sessions[entry["name"]] = (session, feed)
        ready[entry["name"]] = {"load_ms": load_ms, "onnxruntime": ort.__version__}
    print(json.dumps({"ready": ready}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            break
        if words[0] == "OUTPUTS":
            session, feed = sessions[words[1]]
            outputs = session.run(None, feed)
            print(json.dumps([np.asarray(o, dtype=np.float64).ravel().tolist() for o in outputs]), flush=True)
            continue
        name, runs = words[0], int(words[1])
        session, feed = sessions[name]
        print(json.dumps(timed(session, feed, runs)), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="models")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--serve", action="store_true")
    args = parser.parse_args()
    manifest = json.loads((Path(args.models) / "manifest.json").read_text())
    if args.serve:
        serve(args, manifest)
        return
    results = {}
    for entry in manifest["models"]:
        if args.only and entry["name"] not in args.only:
            continue
        session, feed, load_ms = session_for(args.models, entry)
        timings = timed(session, feed, args.runs)
        timings.sort()
        results[entry["name"]] = {
            "load_ms": load_ms,
            "median_ms": statistics.median(timings),
            "p95_ms": timings[min(len(timings) - 1, int(0.95 * len(timings)))],
            "runs": args.runs,
            "onnxruntime": ort.__version__,
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
