#!/usr/bin/env python3
"""Golden reference for palm detection + hand landmarks: what MediaPipe Hands finds.

Writes `assets/golden/hands.json` with mediapipe 0.10.14's own
`mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=0)`
(palm_detection_lite + hand_landmark_lite) landmarks (21 points, x and y relative to the
image) and handedness for every photo in tests/fixtures/images/.

The hand photos are Debian `opencv-doc` 4.6.0's `html/handSrc.jpg` and `html/handDst.jpg`
(saved as hand_open.jpg and hand_open2.jpg; see tests/fixtures/README.md).

    target/golden-venv/bin/python scripts/golden/hands_golden.py
"""
import json
from pathlib import Path

import cv2
import mediapipe as mp

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "tests/fixtures/images"
OUT = REPO / "assets/golden/hands.json"


def main():
    results = []
    with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=0) as hands:
        for path in sorted(IMAGES.glob("*")):
            rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            height, width = rgb.shape[:2]
            found = hands.process(rgb)
            entry = {"file": str(path.relative_to(REPO)), "width": width, "height": height, "hands": []}
            for landmarks, handedness in zip(found.multi_hand_landmarks or [], found.multi_handedness or []):
                label = handedness.classification[0]
                entry["hands"].append({
                    "landmarks": [[round(point.x, 6), round(point.y, 6)] for point in landmarks.landmark],
                    "handedness": label.label,
                    "handedness_score": round(label.score, 6),
                })
            results.append(entry)
            print(path.name, len(entry["hands"]))
    OUT.write_text(json.dumps({
        "generator": {"package": "mediapipe", "version": mp.__version__,
                      "api": "mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=0)",
                      "script": "scripts/golden/hands_golden.py"},
        "coordinates": "relative to the original image: x / width, y / height",
        "images": results,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
