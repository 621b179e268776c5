#!/usr/bin/env python3
"""Golden reference for FaceMesh: what MediaPipe itself finds on the fixture photos.

Writes `assets/golden/face_mesh.json` with mediapipe 0.10.14's own
`mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
refine_landmarks=False)` landmarks (468 points, x and y relative to the image)
for every photo in tests/fixtures/images/ that shows a face, plus the mouth
openness (inner-lip gap 13-14 divided by mouth width 61-291).

    target/golden-venv/bin/python scripts/golden/face_mesh_golden.py
"""
import json
from pathlib import Path

import cv2
import mediapipe as mp

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "tests/fixtures/images"
OUT = REPO / "assets/golden/face_mesh.json"


def openness(points):
    def distance(a, b):
        return ((points[a][0] - points[b][0]) ** 2 + (points[a][1] - points[b][1]) ** 2) ** 0.5
    return distance(13, 14) / distance(61, 291)


def main():
    results = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as mesh:
        for path in sorted(IMAGES.glob("*")):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            height, width = rgb.shape[:2]
            found = mesh.process(rgb).multi_face_landmarks
            entry = {"file": str(path.relative_to(REPO)), "width": width, "height": height, "faces": 0}
            if found:
                landmarks = found[0].landmark
                pixels = [(point.x * width, point.y * height) for point in landmarks]
                entry.update({
                    "faces": len(found),
                    "landmarks": [[round(point.x, 6), round(point.y, 6)] for point in landmarks],
                    "mouth_openness": round(openness(pixels), 6),
                })
            results.append(entry)
            print(path.name, entry["faces"], entry.get("mouth_openness"))
    OUT.write_text(json.dumps({
        "generator": {"package": "mediapipe", "version": mp.__version__,
                      "api": "mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)",
                      "script": "scripts/golden/face_mesh_golden.py"},
        "coordinates": "relative to the original image: x / width, y / height",
        "mouth_openness": "distance(13, 14) / distance(61, 291) in pixels",
        "images": results,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
