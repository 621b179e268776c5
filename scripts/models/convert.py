#!/usr/bin/env python3
"""Fetch, convert and verify DoseWitness's pretrained models.

Run through `cargo xtask models`, which does:

    python3 -m venv target/model-venv
    target/model-venv/bin/pip install -r scripts/models/requirements.txt
    target/model-venv/bin/python scripts/models/convert.py --work target/model-work --out models

For every row of MODELS this script
  1. downloads the pinned source package from its registry into --work
     (skipped when the file is already there; its sha256 is checked either way),
  2. extracts the model file and checks its sha256,
  3. converts it to ONNX with tf2onnx (opset 13) into --work and rewrites the
     graph into an equivalent one tract runs faster (rewrite_for_tract: PRelu);
     face-api's weights-only embedder: builds the ONNX graph here from its weights,
  4. runs the fresh ONNX model in onnxruntime and the source model in its own
     runtime (tf.lite.Interpreter for .tflite; face-api's own JavaScript in Node,
     with tfjs installed into --work by npm, for face-api) on real fixture images plus one
     seeded random tensor, prints the max abs difference and fails if it is
     above REF_ATOL (+ REF_RTOL x |value| for huge values),
  5. compares with the committed `<out>/<name>.onnx`: tf2onnx does not produce
     identical bytes from run to run, so a committed file is kept when its
     sha256 matches models/manifest.json, it has the same ops as the fresh conversion
     and its outputs match it within KEEP_ATOL (+ KEEP_RTOL x |value|); otherwise the
     fresh file replaces it,
  6. writes `<out>/manifest.json` and `<out>/README.md` (both generated from
     this table; edit the table, not the outputs).

`--check` does steps 1-5 without writing anything and exits non-zero when a
committed model is missing, its sha256 differs from the manifest, its ops or outputs
differ from a fresh conversion, or the manifest/README would change.

Adding a model = adding a row to MODELS (and, for a new registry or format, a
fetcher in fetch_artifact / a converter in convert_model / a reference runner
in run_reference).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OPSET = 13
# Tolerances are |a - b| <= ATOL + RTOL * |reference|, element-wise. The relative
# term matters only for huge outputs: letterboxed images drive some anchors'
# logits/regressors in the padding bars to ~1e4, where one float32 ULP is already
# ~1e-3 and two correct runtimes differ by ~1e-6 relative. For outputs of normal
# size (|x| <= 100) this is a plain absolute test against ATOL.
REF_ATOL, REF_RTOL = 1e-3, 1e-5  # fresh ONNX (onnxruntime) vs the source model in its own runtime
KEEP_ATOL, KEEP_RTOL = 1e-4, 1e-5  # committed ONNX vs fresh ONNX, both in onnxruntime

# Real images every model is checked on (committed fixtures, see tests/fixtures/README.md).
CHECK_IMAGES = [
    "tests/fixtures/images/astronaut.png",
    "tests/fixtures/images/obama.jpg",
    "tests/fixtures/images/biden.jpg",
]


@dataclasses.dataclass(frozen=True)
class Source:
    registry: str  # "PyPI" or "npm"
    package: str
    version: str
    path: str  # path of the model file inside the package
    path_sha256: str  # sha256 of that model file
    artifact_glob: str  # file name pattern of the downloaded package file
    artifact_sha256: str  # sha256 of the downloaded package file
    pip_args: tuple = ()  # extra `pip download` arguments (PyPI only)
    extra_paths: tuple = ()  # (path, sha256) of further files the converter/reference needs


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    source: Source
    licence: str
    fmt: str  # "tflite", or "faceapi-recognition" (graph built here from face-api's weights)
    input_shape: tuple  # as the ONNX graph has it
    layout: str
    value_range: tuple  # what pixel 0..255 maps to
    readme: str  # model-specific markdown (normalisation, output layout, decode)
    # Tensor names the converter gives the ONNX graph: (source name, ONNX name) for the
    # input, and the same pairs for every output in the order the ONNX graph lists
    # them. Empty: keep the source model's names and order.
    input_rename: tuple = ()
    output_renames: tuple = ()


# pip download of a CPython 3.11 manylinux x86_64 wheel, whatever machine runs this.
CP311_LINUX_WHEEL = (
    "--only-binary=:all:",
    "--platform", "manylinux_2_17_x86_64",
    "--python-version", "3.11",
    "--implementation", "cp",
    "--abi", "cp311",
)

MEDIAPIPE_0_10_14 = dict(
    registry="PyPI",
    package="mediapipe",
    version="0.10.14",
    artifact_glob="mediapipe-0.10.14-cp311-cp311-manylinux*_x86_64.whl",
    artifact_sha256="a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4",
    pip_args=CP311_LINUX_WHEEL,
)

BLAZEFACE_SHORT_README = """\
**Input.** RGB, NHWC `1x128x128x3` f32, pixel `p` (0..255) mapped to `p / 127.5 - 1`
(range [-1, 1]). MediaPipe builds this tensor with `ImageToTensorCalculator`
(`output_tensor_width/height: 128`, `keep_aspect_ratio: true`,
`border_mode: BORDER_ZERO`, `output_tensor_float_range {min: -1 max: 1}`), i.e.
**letterbox**, not stretch: the whole image is scaled by `128 / max(w, h)`,
centred, and the padding bars are pixel value 0 before normalisation, so
**-1.0 in the tensor**. Exact sampling (OpenCV `warpPerspective`, `INTER_LINEAR`,
uint8 result, then `p / 127.5 - 1`): with `side = max(w, h)`,
`left = (w - side) / 2`, `top = (h - side) / 2`, tensor pixel `(i, j)` takes the
bilinear sample of the image at `x = left + i * side / 128`,
`y = top + j * side / 128` (pixel centres at integer coordinates; samples
outside the image count as 0). There is no area averaging, even for large
downscales. A float port of exactly this reproduces MediaPipe's detections to
<= 6e-4 (coordinates) / 2e-3 (score) on the fixtures; an area-averaging resize
instead moves them by up to 0.03 / 0.04 (see `assets/golden/blazeface_short.json`,
`reimplementation_check`).

**Outputs** (ONNX order): `regressors` `1x896x16` and `classificators` `1x896x1`.
Row `i` belongs to anchor `i`. Regressor layout per anchor, in 128-px input units,
relative to the anchor centre: `[cx, cy, w, h, kp0x, kp0y, ..., kp5x, kp5y]`
(x before y: `reverse_output_order: true`). Keypoints: 0 right eye, 1 left eye,
2 nose tip, 3 mouth centre, 4 right ear tragion, 5 left ear tragion ("right" is
the subject's right: image-left in a frontal, unmirrored photo).
`classificators` are logits.

**Anchors** (`SsdAnchorsCalculator`): `input_size 128x128`, `num_layers: 4`,
`strides: [8, 16, 16, 16]`, `aspect_ratios: [1.0]`,
`interpolated_scale_aspect_ratio: 1.0`, `anchor_offset_x/y: 0.5`,
`fixed_anchor_size: true` (`min_scale 0.1484375`, `max_scale 0.75` are then
unused: every anchor has w = h = 1). Consecutive layers with the same stride are
merged, so: stride 8 -> 16x16 grid x 2 anchors = 512, then stride 16 -> 8x8 grid
x 6 anchors = 384; total 896. Order: stride-8 block first, then row (y) major,
then column (x), then the anchors of that cell. Anchor centre =
`((x + 0.5) / grid_w, (y + 0.5) / grid_h)` in [0, 1] tensor coordinates.

**Decode** (`TensorsToDetectionsCalculator`): `num_boxes 896`, `num_coords 16`,
`box_coord_offset 0`, `keypoint_coord_offset 4`, `num_keypoints 6`,
`num_values_per_keypoint 2`, `x_scale = y_scale = w_scale = h_scale = 128`,
no exponential on box size:
`cx = r[0] / 128 + anchor.cx`, `cy = r[1] / 128 + anchor.cy`, `w = r[2] / 128`,
`h = r[3] / 128`, `kp_x = r[4 + 2k] / 128 + anchor.cx`,
`kp_y = r[5 + 2k] / 128 + anchor.cy` (anchor w = h = 1).
Score: `sigmoid(clamp(logit, -100, 100))` (`sigmoid_score: true`,
`score_clipping_thresh: 100`); drop anchors whose score is below `min_score_thresh`
**0.5** (the graph default; the Python solution API overrides it with
`min_detection_confidence`, default also 0.5).

**Suppression** (`NonMaxSuppressionCalculator`): `algorithm: WEIGHTED`,
`overlap_type: INTERSECTION_OVER_UNION`, `min_suppression_threshold: 0.3`, no
cap on the number of detections. Sort by score; take the best remaining one;
every remaining detection with IoU > 0.3 to it (itself included) is merged into
one detection whose box corners and keypoints are the score-weighted means and
whose score is the best one's; repeat on the rest. Done in tensor coordinates,
then `DetectionProjectionCalculator` maps boxes (corners, then axis-aligned
hull) and keypoints back through the letterbox into [0, 1] coordinates of the
original image: `x_img = (left + x_t * side) / w`, `y_img = (top + y_t * side) / h`.
Results may fall slightly outside [0, 1].

All of the above is read from mediapipe 0.10.14's own expanded graph
(`face_detection_short_range_cpu.binarypb` -> `FaceDetectionShortRange` ->
`FaceDetection`, expanded with `ValidatedGraphConfig`); the golden file
`assets/golden/blazeface_short.json` records the same parameters as read by
`scripts/golden/blazeface_golden.py`, and that script checks that a numpy
re-implementation of this recipe on the ONNX model reproduces MediaPipe's
detections.
"""

MEDIAPIPE_FACE_DETECTION_NPM = dict(
    registry="npm",
    package="@mediapipe/face_detection",
    version="0.4.1657300184",
    artifact_glob="mediapipe-face_detection-0.4.1657300184.tgz",
    artifact_sha256="a118cde74923dc4435257fbfbb613464a0f58d115dff6314d4ff96c8aebf6419",
)

# How MediaPipe cuts a rotated ROI out of the image and maps landmarks back (shared by
# face_mesh and the hand landmark models).
ROI_README = """\
**ROI rectangles.** A ROI is MediaPipe's `NormalizedRect`: centre `(xc, yc)`, size
`(w, h)` as fractions of the image width `W` / height `H`, and `rotation` θ in
radians. Every rotation in this section is `θ = normalize(target - atan2(-(y1 - y0) * H, (x1 - x0) * W))`
for a start point `(x0, y0)` and an end point `(x1, y1)` in image-normalised
coordinates, `normalize` wrapping into [-π, π) (y points down, so a positive θ
turns the crop clockwise on screen). `RectTransformationCalculator` then moves and
grows the rect: `xc += (W*w*shift_x*cos θ - H*h*shift_y*sin θ) / W`,
`yc += (W*w*shift_x*sin θ + H*h*shift_y*cos θ) / H`; with `square_long`,
`side = max(w*W, h*H)`, `w = side / W`, `h = side / H`; finally `w *= scale_x`,
`h *= scale_y` (so the ROI is square in pixels).

**Crop** (`ImageToTensorCalculator` with a `NORM_RECT`): the ROI in pixels has
centre `(xc*W, yc*H)` and size `(w*W, h*H)`; tensor pixel `(i, j)` of an `N x N`
tensor, with `u = i / N`, `v = j / N`, takes the bilinear sample of the image at
`centre + [[cos θ, -sin θ], [sin θ, cos θ]] . ((u - 0.5) * w*W, (v - 0.5) * h*H)`
(pixel centres at integer coordinates, as in blazeface_short's letterbox);
`border_mode` is unset, which MediaPipe treats as **replicate** (edge pixels
continue outside the image: hand ROIs are often larger than the frame). OpenCV
`warpAffine(..., INTER_LINEAR | WARP_INVERSE_MAP, BORDER_REPLICATE)` with exactly
this matrix reproduces MediaPipe (see the end-to-end check below).

**Back to the image** (`LandmarkProjectionCalculator`): for a landmark `(x, y, z)`
normalised to the crop (`[0, 1]` across it), `dx = x - 0.5`, `dy = y - 0.5`,
`X = xc + (cos θ * dx - sin θ * dy) * w`, `Y = yc + (sin θ * dx + cos θ * dy) * h`,
`Z = z * w` (image-normalised).
"""

BLAZEFACE_FULL_README = """\
**Which file.** mediapipe 0.10.14's own full-range graph loads
`face_detection_full_range_sparse.tflite` from the wheel; that file stores sparse
tensors tf2onnx cannot convert, so this row takes the dense
`face_detection_full_range.tflite` from the npm package. It is a **different
checkpoint**, not a densified copy of the wheel's file: same architecture, tensor
layout and decode, different weights. Checked once by hand (2026-11, not a
committed script) on the five fixture photos: the decode below applied to the
wheel's sparse model (run in the tflite interpreter) reproduces mediapipe 0.10.14's
`FaceDetection(model_selection=1)` detections within 6e-7 (box, keypoints, score),
which verifies the parameters; applied to this model it finds the same single face
per photo, with box/keypoints within 0.031 and score within 0.07 of MediaPipe's.
So MediaPipe's full-range output is not a golden for this file; its decode is.

**Input.** RGB, NHWC `1x192x192x3` f32, `p / 127.5 - 1` (range [-1, 1]),
letterboxed exactly as blazeface_short but to 192: `ImageToTensorCalculator`
`output_tensor_width/height: 192`, `keep_aspect_ratio: true`,
`border_mode: BORDER_ZERO` (padding is -1.0 in the tensor),
`output_tensor_float_range {min: -1 max: 1}`.

**Outputs** (ONNX order): `regressors` `1x2304x16` and `classificators` `1x2304x1`
(logits). Row `i` belongs to anchor `i`; per anchor, in 192-px input units,
relative to the anchor centre: `[cx, cy, w, h, kp0x, kp0y, ..., kp5x, kp5y]`
(`reverse_output_order: true`), the same six keypoints as blazeface_short.

**Anchors** (`SsdAnchorsCalculator`): `input_size 192x192`, `num_layers: 1`,
`strides: [4]`, `aspect_ratios: [1.0]`, `interpolated_scale_aspect_ratio: 0.0`
(no extra anchor per cell), `anchor_offset_x/y: 0.5`, `fixed_anchor_size: true`
(`min_scale 0.1484375`, `max_scale 0.75` unused; w = h = 1). One 48x48 grid x 1
anchor = 2304, row (y) major, then column (x); anchor centre
`((x + 0.5) / 48, (y + 0.5) / 48)`.

**Decode** (`TensorsToDetectionsCalculator`): `num_boxes 2304`, `num_coords 16`,
`box_coord_offset 0`, `keypoint_coord_offset 4`, `num_keypoints 6`,
`num_values_per_keypoint 2`, `x_scale = y_scale = w_scale = h_scale = 192`, no
exponential on box size: `cx = r[0] / 192 + anchor.cx`, `cy = r[1] / 192 + anchor.cy`,
`w = r[2] / 192`, `h = r[3] / 192`, `kp = r[4 + 2k .. 5 + 2k] / 192 + anchor centre`.
Score `sigmoid(clamp(logit, -100, 100))`; `min_score_thresh` **0.6** in the
graph (the Python solution API replaces it with `min_detection_confidence`,
default 0.5).

**Suppression**: `NonMaxSuppressionCalculator` `algorithm: WEIGHTED`,
`overlap_type: INTERSECTION_OVER_UNION`, `min_suppression_threshold: 0.3`, no cap;
then `DetectionProjectionCalculator` back through the letterbox, both exactly as
in blazeface_short.

Read from mediapipe 0.10.14's expanded `face_detection_full_range_cpu.binarypb`
(`FaceDetectionFullRangeCpu` -> `FaceDetectionFullRange` -> `FaceDetection`,
`ValidatedGraphConfig`).
"""

FACE_MESH_README = """\
**Input.** RGB, NHWC `1x192x192x3` f32, `p / 255` (range [0, 1]): a rotated
square crop of the face ROI (`ImageToTensorCalculator`
`output_tensor_width/height: 192`, `keep_aspect_ratio: false`, border unset =
replicate, `output_tensor_float_range {min: 0 max: 1}`), **not** the whole image.

**Face ROI from a detection** (`FaceDetectionFrontDetectionToRoi`, run on
blazeface_short detections): `DetectionsToRectsCalculator` (`conversion_mode`
default) takes the detection's relative box as the rect and the rotation from
keypoint 0 (right eye) to keypoint 1 (left eye), target angle **0 deg**;
`RectTransformationCalculator` `scale_x = scale_y = 1.5`, no shift,
`square_long: true`.

**Face ROI from the previous frame's landmarks** (`FaceLandmarkLandmarksToRoi`):
`LandmarksToDetectionCalculator` (box = bounds of all 468 projected landmarks),
rotation from landmark **33** to landmark **263**, target angle **0 deg**, then
the same `scale 1.5`, no shift, `square_long`. Detection runs only while fewer
than `num_faces` faces are tracked; `AssociationNormRectCalculator`
(`min_similarity_threshold: 0.5`) merges detection and landmark ROIs.

**Outputs** (ONNX order):
- `landmarks` `1x1x1x1404`: 468 x `(x, y, z)` in 192-px crop units.
  `TensorsToLandmarksCalculator` (`num_landmarks: 468`, `input_image_width/height: 192`,
  `normalize_z` 1): `x / 192`, `y / 192`, `z / 192` normalise them to the crop,
  then the projection below maps them to the image.
- `face_flag` `1x1x1x1`: a **logit**; face presence = `sigmoid(face_flag)`
  (`TensorsToFloatsCalculator` `activation: SIGMOID`), landmarks are dropped below
  **0.5** (`ThresholdingCalculator`; the Python solution API sets it from
  `min_tracking_confidence`, default 0.5).

{roi}
Read from mediapipe 0.10.14's expanded `face_landmark_front_cpu.binarypb`
(`FaceLandmarkFrontCpu` with `FaceDetectionShortRangeCpu`,
`FaceDetectionFrontDetectionToRoi`, `FaceLandmarkCpu`, `FaceLandmarkLandmarksToRoi`;
`with_attention` off, i.e. this model, not `face_landmark_with_attention.tflite`).
The formulas for `RectTransformationCalculator`, `DetectionsToRectsCalculator`'s
rotation and `LandmarkProjectionCalculator` are MediaPipe's calculator code (the
graph holds only their options).

**End-to-end check** (once by hand, 2026-11, not a committed script): this recipe
(blazeface_short ONNX + its decode -> ROI from detection -> crop -> this model ->
`sigmoid`/projection) reproduces mediapipe 0.10.14's
`FaceMesh(static_image_mode=True, refine_landmarks=False)` on all five fixture
photos within 1.5e-5 (x, y) and 3.4e-5 (z), image-normalised; the same crop without
the rotation is off by up to 5.7e-3. Landmark 33 lies just outside blazeface
keypoint 0 (right eye) and 263 just outside keypoint 1 (left eye): the outer eye
corners.
""".replace("{roi}", ROI_README)

PALM_README = """\
**Input.** RGB, NHWC `1x192x192x3` f32, `p / 255` (range [0, 1]), letterboxed like
blazeface_short but to 192: `ImageToTensorCalculator`
`output_tensor_width/height: 192`, `keep_aspect_ratio: true`,
`border_mode: BORDER_ZERO` (padding is **0.0** in the tensor here),
`output_tensor_float_range {min: 0 max: 1}`.

**Outputs** (ONNX order): `regressors` `1x2016x18` and `classificators` `1x2016x1`
(logits). Per anchor, in 192-px input units, relative to the anchor centre:
`[cx, cy, w, h, kp0x, kp0y, ..., kp6x, kp6y]` (`reverse_output_order: true`: x
first), 7 keypoints. The graph uses keypoints 0 and 2 for the hand's rotation
(MediaPipe's documentation calls them the wrist centre and the middle-finger MCP;
the other five are not used by the graph).

**Anchors** (`SsdAnchorsCalculator`): `input_size 192x192`, `num_layers: 4`,
`strides: [8, 16, 16, 16]`, `aspect_ratios: [1.0]`,
`interpolated_scale_aspect_ratio: 1.0` (the proto default; the graph does not set
it), `anchor_offset_x/y: 0.5`, `fixed_anchor_size: true` (`min_scale 0.1484375`,
`max_scale 0.75` unused; w = h = 1). Same-stride layers merge: stride 8 -> 24x24
grid x 2 anchors = 1152, then stride 16 -> 12x12 grid x 6 anchors = 864; total
2016 = `num_boxes`. Order and centres as in blazeface_short:
`((x + 0.5) / grid_w, (y + 0.5) / grid_h)`.

**Decode** (`TensorsToDetectionsCalculator`): `num_boxes 2016`, `num_coords 18`,
`box_coord_offset 0`, `keypoint_coord_offset 4`, `num_keypoints 7`,
`num_values_per_keypoint 2`, `x_scale = y_scale = w_scale = h_scale = 192`, no
exponential on box size (`cx = r[0] / 192 + anchor.cx`, ..., as blazeface_full).
Score `sigmoid(clamp(logit, -100, 100))`, `min_score_thresh` **0.5** (the Python
Hands API sets it from `min_detection_confidence`, default 0.5).

**Suppression**: `NonMaxSuppressionCalculator` `algorithm: WEIGHTED`,
`overlap_type: INTERSECTION_OVER_UNION`, `min_suppression_threshold: 0.3`, no cap;
`DetectionLetterboxRemovalCalculator` maps boxes and keypoints out of the
letterbox (same result as blazeface_short's projection); then
`ClipDetectionVectorSizeCalculator` keeps the first `num_hands` (Python
`max_num_hands`, default 2).

**Palm -> hand ROI** (`PalmDetectionDetectionToRoi`; formulas in hand_landmark_lite):
`DetectionsToRectsCalculator` rect = the palm box, rotation from keypoint **0** to
keypoint **2**, target angle **90 deg**; `RectTransformationCalculator`
`scale_x = scale_y = 2.6`, `shift_x 0`, `shift_y -0.5` (half the palm box height
along the rotated y axis, i.e. towards the fingers), `square_long: true`. Palm
detection runs only while fewer than `num_hands` hands are tracked.

Read from mediapipe 0.10.14's expanded `hand_landmark_tracking_cpu.binarypb`
(`HandLandmarkTrackingCpu` -> `PalmDetectionCpu`, `PalmDetectionDetectionToRoi`);
`model_complexity` 0 selects `palm_detection_lite.tflite`, 1 (the default)
`palm_detection_full.tflite`, with identical pre/post-processing.

**End-to-end check** (once by hand, 2026-11, not a committed script) on Debian
`opencv-doc` 4.6.0's `handSrc.jpg` / `handDst.jpg` (real open hands, 640x480),
lite and full: this decode (2016 anchors as above, weighted NMS, letterbox
removal) on the ONNX outputs reproduces MediaPipe's `palm_detections` within
3e-7 (box, keypoints, score), and the ROI formula its
`hand_rects_from_palm_detections` within 5e-7.
"""

HAND_LANDMARK_README = """\
**Input.** RGB, NHWC `1x224x224x3` f32, `p / 255` (range [0, 1]): a rotated
square crop of the hand ROI (`ImageToTensorCalculator`
`output_tensor_width/height: 224`, `keep_aspect_ratio: true` (no effect: the ROI
is square in pixels), border unset = replicate, `output_tensor_float_range {min: 0 max: 1}`).
The ROI comes from a palm detection (see palm_detection_lite: rotation keypoint 0
-> 2, target 90 deg, scale 2.6, shift_y -0.5, square_long) or from the previous
frame's landmarks (below).

**Outputs** (ONNX order):
- `landmarks` `1x63`: 21 x `(x, y, z)` in 224-px crop units.
  `TensorsToLandmarksCalculator` (`num_landmarks: 21`, `input_image_width/height: 224`,
  `normalize_z: 0.4`): `x / 224`, `y / 224`, `z / 224 / 0.4`; then
  `LandmarkLetterboxRemovalCalculator` (identity for a square ROI) and the
  projection below. Landmark order (MediaPipe's documented one): 0 wrist, 1-4
  thumb (CMC, MCP, IP, tip), 5-8 index (MCP, PIP, DIP, tip), 9-12 middle,
  13-16 ring, 17-20 pinky.
- `hand_flag` `1x1`: hand presence, already a **probability** (the model ends in
  a sigmoid; `TensorsToFloatsCalculator` has no activation); landmarks are dropped
  below **0.5** (`ThresholdingCalculator`; the Python Hands API sets it from
  `min_tracking_confidence`, default 0.5).
- `handedness` `1x1`: a probability (sigmoid in the model) of label 0 of
  `handedness.txt` = **"Left"**; "Right" scores `1 - handedness`
  (`TensorsToClassificationCalculator` `binary_classification: true`, `top_k: 1`).
  MediaPipe's documentation says the label assumes a mirrored (selfie) image; not
  checked here.
- `world_landmarks` `1x63`: 21 x `(x, y, z)` 3-D, not image-normalised
  (`TensorsToLandmarksCalculator` without image size); MediaPipe documents them as
  metres around the hand's centre (not checked here).
  `WorldLandmarkProjectionCalculator` rotates `(x, y)` by the ROI rotation.

**Hand ROI from the previous frame's landmarks** (`HandLandmarkLandmarksToRoi`):
`HandLandmarksToRectCalculator` (its rules are compiled in, not graph options;
from MediaPipe's calculator code) uses landmarks {0, 1, 2, 3, 5, 6, 9, 10, 13, 14,
17, 18}: rotation from landmark 0 (wrist) to `((lm5 + lm13) / 2 + lm9) / 2`
(index/ring/middle MCP), target angle **90 deg**; the rect is the bounding box of
those 12 points in the frame rotated by -θ (its centre rotated back);
then `RectTransformationCalculator` `scale_x = scale_y = 2.0`, `shift_y -0.1`,
`square_long: true`. `AssociationNormRectCalculator`
(`min_similarity_threshold: 0.5`) merges these with palm ROIs.

{roi}
Read from mediapipe 0.10.14's expanded `hand_landmark_tracking_cpu.binarypb`
(`HandLandmarkTrackingCpu` -> `HandLandmarkCpu`, `HandLandmarkLandmarksToRoi`);
`model_complexity` 0 selects `hand_landmark_lite.tflite`, 1 (the default)
`hand_landmark_full.tflite`, with identical pre/post-processing.

**End-to-end check** (once by hand, 2026-11, not a committed script) on Debian
`opencv-doc` 4.6.0's `handSrc.jpg` / `handDst.jpg`, lite and full, static mode:
palm ONNX -> ROI -> crop -> this model -> decode/projection reproduces MediaPipe's
`multi_hand_landmarks` within 9e-5 (x, y) / 1.2e-4 (z), the rotated
`world_landmarks` within 3e-4, the handedness label and score (`handedness` =
score of "Left"; both hands came out "Right" at 0.62-0.93), and the
landmarks -> next-ROI rule above reproduces `hand_rects_from_landmarks` within
1.5e-4.
""".replace("{roi}", ROI_README)


FACE_EMBEDDER_README = """\
**Which model.** dlib's face-recognition ResNet (the network of dlib's
`dnn_face_recognition_ex.cpp`, weights trained by Davis King; face-api's
TUTORIAL.md: 99.38% on LFW), as ported to TensorFlow.js by face-api. The package
ships **weights only** (`face_recognition_model.bin`, 6.4 MB, 109 of 117 tensors
uint8-quantised with a per-tensor `scale` and `min`, listed in
`model/face_recognition_model-weights_manifest.json`, sha256
`cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b`). This script
dequantises them exactly as tfjs does (`q * scale + min` in double, stored as
f32) and builds the ONNX graph itself (`build_faceapi_recognition`) from
face-api's source in the same package (`src/faceRecognitionNet/*.ts`). The
quantised tensors stay uint8 in the ONNX file, each followed by constant
`Cast -> Mul(scale) -> Add(min)` nodes that runtimes fold at load time
(6.5 MB instead of 22.5 MB as float32; `FACEAPI_STORE_UINT8` in the script). The
package is MIT (c) Vladimir Mandic; the weights are dlib's, which the dlib-models
repository releases as public domain (not re-checked here).

**Input.** RGB, NHWC `1x150x150x3` f32, **raw pixel values 0..255**: the graph
itself subtracts face-api's mean RGB `(122.782, 117.001, 104.298)` and divides by
255. face-api makes the 150x150 tensor from a face crop with
`toBatchTensor(150, true)`: pad the shorter side with zeros to a square
(centred), then `tf.image.resizeBilinear(alignCorners: false, halfPixelCenters: false)`.
dlib's own recipe is a 150x150 chip aligned on 5 face landmarks with 25% padding;
a square crop around the face, rotated by the eye line, works (figures below).

**Output.** `embedding` `1x128`: the face descriptor, not normalised. dlib's rule
of thumb: same person when the Euclidean distance is below 0.6.

**Graph** (`FaceRecognitionNet.forwardInput`): `(x - mean) / 255`; `conv32_down`
7x7 stride 2 valid, 32 channels; max-pool 3x3 stride 2 valid; residual blocks
`conv32_1..3`, `conv64_down`, `conv64_1..3`, `conv128_down`, `conv128_1..2`,
`conv256_down`, `conv256_1..2`, `conv256_down_out`; mean over H and W (256);
`fc` 256x128 matrix product. Every conv is conv + bias, then a per-channel scale
layer (`x * weights + biases`), then ReLU except a block's second conv. Plain
blocks: 3x3 'same' conv, 3x3 'same' conv, add the input, ReLU. `_down` blocks: 3x3
stride 2 **valid** conv, 3x3 'same' conv; the shortcut is a 2x2 stride 2 average
pool of the input, zero-padded on the channel axis to the new width; where the
pool's output is one larger than the conv's (8 -> 3 vs 4, 4 -> 1 vs 2) the conv
branch gets a zero row and column at the bottom/right; add, ReLU. Spatial sizes:
150 -> 72 -> 35 -> 17 -> 8 -> 4 -> 2.

**Reference runtime.** face-api's own code (`dist/face-api.node-wasm.js`,
`faceRecognitionNet.loadFromDisk` + `computeFaceDescriptor`) on tfjs' pure-JS CPU
backend in Node, with `@tensorflow/tfjs@4.22.0` (face-api's own version) installed
into `--work/faceapi-node` by npm: this row's check needs `node` and `npm`.

**End-to-end check** (once by hand, 2026-11, not a committed script): 150x150
crops of the fixture photos, square around the blazeface_short box (1.0x and
1.25x its size), rotated by the eye line (keypoint 0 -> 1), bilinear, replicate
border. ONNX vs face-api's JS on those 8 crops: max abs diff 3.9e-6 (float32
dequantisation of the weights; 3.0e-7 with them expanded in double). Cosine /
Euclidean distance, 1.25x crops: obama~obama2 0.930 / 0.521, obama~obama3
0.943 / 0.482, obama2~obama3 0.953 / 0.437 (same person); obama~biden
0.829 / 0.831, obama2~biden 0.865 / 0.735, obama3~biden 0.891 / 0.670
(different). 1.0x crops: same 0.941-0.950 / 0.439-0.481, different
0.806-0.855 / 0.744-0.872. Every same pair is below dlib's 0.6, every different
pair above.
"""

HAND_LANDMARK_OUTPUTS = (("Identity", "landmarks"), ("Identity_1", "hand_flag"),
                         ("Identity_2", "handedness"), ("Identity_3", "world_landmarks"))


def mediapipe_wheel_model(name, path, path_sha256, input_shape, value_range, readme, outputs):
    return Model(
        name=name,
        source=Source(path=path, path_sha256=path_sha256, **MEDIAPIPE_0_10_14),
        licence="Apache-2.0",
        fmt="tflite",
        input_shape=input_shape,
        layout="NHWC",
        value_range=value_range,
        readme=readme,
        input_rename=("input_1", "input"),
        output_renames=outputs,
    )


MODELS = [
    Model(
        name="blazeface_short",
        source=Source(
            path="mediapipe/modules/face_detection/face_detection_short_range.tflite",
            path_sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
            **MEDIAPIPE_0_10_14,
        ),
        licence="Apache-2.0",
        fmt="tflite",
        input_shape=(1, 128, 128, 3),
        layout="NHWC",
        value_range=(-1.0, 1.0),
        readme=BLAZEFACE_SHORT_README,
    ),
    Model(
        name="blazeface_full",
        source=Source(
            path="face_detection_full_range.tflite",
            path_sha256="99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
            **MEDIAPIPE_FACE_DETECTION_NPM,
        ),
        licence="Apache-2.0",
        fmt="tflite",
        input_shape=(1, 192, 192, 3),
        layout="NHWC",
        value_range=(-1.0, 1.0),
        readme=BLAZEFACE_FULL_README,
        input_rename=("input", "input"),
        output_renames=(("reshaped_regressor_face_4", "regressors"),
                        ("reshaped_classifier_face_4", "classificators")),
    ),
    mediapipe_wheel_model(
        "face_mesh", "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        (1, 192, 192, 3), (0.0, 1.0), FACE_MESH_README,
        (("conv2d_21", "landmarks"), ("conv2d_31", "face_flag")),
    ),
    mediapipe_wheel_model(
        "palm_detection_lite", "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
        "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18",
        (1, 192, 192, 3), (0.0, 1.0), PALM_README,
        (("Identity", "regressors"), ("Identity_1", "classificators")),
    ),
    mediapipe_wheel_model(
        "palm_detection_full", "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
        (1, 192, 192, 3), (0.0, 1.0), "Same input, outputs, anchors, decode and ROI as palm_detection_lite "
        "(the graph's `model_complexity` 1, its default).\n",
        (("Identity", "regressors"), ("Identity_1", "classificators")),
    ),
    mediapipe_wheel_model(
        "hand_landmark_lite", "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
        "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6",
        (1, 224, 224, 3), (0.0, 1.0), HAND_LANDMARK_README,
        HAND_LANDMARK_OUTPUTS,
    ),
    mediapipe_wheel_model(
        "hand_landmark_full", "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
        "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
        (1, 224, 224, 3), (0.0, 1.0), "Same input, outputs, decode and ROI as hand_landmark_lite "
        "(the graph's `model_complexity` 1, its default).\n",
        HAND_LANDMARK_OUTPUTS,
    ),
    Model(
        name="dlib_face_embedder",
        source=Source(
            registry="npm",
            package="@vladmandic/face-api",
            version="1.7.15",
            path="model/face_recognition_model-weights_manifest.json",
            path_sha256="cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
            artifact_glob="vladmandic-face-api-1.7.15.tgz",
            artifact_sha256="0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
            extra_paths=(
                ("model/face_recognition_model.bin",
                 "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589"),
                ("dist/face-api.node-wasm.js",  # the reference runtime
                 "4cc67548193dfd0542da43d722f1cdcd015b7e867083e8f7627d3b36e52b47ce"),
            ),
        ),
        licence="MIT (package); weights from dlib, see README",
        fmt="faceapi-recognition",
        input_shape=(1, 150, 150, 3),
        layout="NHWC",
        value_range=(0.0, 255.0),
        readme=FACE_EMBEDDER_README,
    ),
]


# --------------------------------------------------------------------------- utils

def log(msg: str) -> None:
    print(msg, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd: list, **kw) -> None:
    log("+ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


class Failure(Exception):
    pass


# ------------------------------------------------------------------------ fetching

def fetch_artifact(src: Source, work: Path) -> Path:
    """Downloads the package file into work/downloads (skipped if present)."""
    dl = work / "downloads"
    dl.mkdir(parents=True, exist_ok=True)

    def find():
        hits = sorted(p for p in dl.iterdir() if fnmatch.fnmatch(p.name, src.artifact_glob))
        return hits[0] if hits else None

    path = find()
    if path is None:
        if src.registry == "PyPI":
            run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                 *src.pip_args, f"{src.package}=={src.version}", "-d", dl])
        elif src.registry == "npm":
            # The registry's own tarball, unchanged (scoped names become scope-name-version.tgz);
            # run inside dl as well, for npm versions without --pack-destination.
            run(["npm", "pack", "--silent", f"{src.package}@{src.version}", "--pack-destination", dl], cwd=dl)
        else:
            raise Failure(f"unknown registry {src.registry}")
        path = find()
        if path is None:
            raise Failure(f"download of {src.package}=={src.version} gave no file matching {src.artifact_glob}")
    else:
        log(f"using cached {path}")
    got = sha256_file(path)
    if got != src.artifact_sha256:
        raise Failure(f"{path.name}: sha256 {got}, expected {src.artifact_sha256}")
    return path


def extract_member(artifact: Path, src: Source, work: Path) -> Path:
    """Extracts src.path (returned) and src.extra_paths, checking every sha256."""
    for path, sha in src.extra_paths:
        extract_one(artifact, dataclasses.replace(src, path=path, path_sha256=sha, extra_paths=()), work)
    return extract_one(artifact, src, work)


def extract_one(artifact: Path, src: Source, work: Path) -> Path:
    dest = work / "extract" / f"{src.package.replace('/', '_')}-{src.version}" / src.path
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        name = artifact.name
        if name.endswith(".whl") or name.endswith(".zip"):
            with zipfile.ZipFile(artifact) as z, open(dest, "wb") as out:
                out.write(z.read(src.path))
        elif name.endswith(".tgz") or name.endswith(".tar.gz"):
            with tarfile.open(artifact) as t:
                member = src.path if src.registry != "npm" else f"package/{src.path}"
                f = t.extractfile(member)
                if f is None:
                    raise Failure(f"{member} is not a file in {name}")
                dest.write_bytes(f.read())
        else:
            raise Failure(f"don't know how to open {name}")
    got = sha256_file(dest)
    if got != src.path_sha256:
        raise Failure(f"{src.path}: sha256 {got}, expected {src.path_sha256}")
    return dest


# ---------------------------------------------------------------------- converting

def convert_model(m: Model, source_file: Path, work: Path) -> Path:
    out = work / "convert" / f"{m.name}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    if m.fmt == "tflite":
        names = []
        if m.input_rename or m.output_renames:
            (src_in, dst_in), outs = m.input_rename, m.output_renames
            names = ["--inputs", src_in, "--rename-inputs", dst_in,
                     "--outputs", ",".join(s for s, _ in outs), "--rename-outputs", ",".join(d for _, d in outs)]
        run([sys.executable, "-m", "tf2onnx.convert", "--tflite", source_file,
             "--output", out, "--opset", str(OPSET), *names])
        rewrite_for_tract(out)
    elif m.fmt == "faceapi-recognition":
        log(f"+ build_faceapi_recognition({source_file.name}) -> {out}")
        build_faceapi_recognition(source_file, out, m.input_shape)
    else:
        raise Failure(f"{m.name}: no converter for format {m.fmt}")
    import onnx

    onnx.checker.check_model(onnx.load(str(out)))
    return out


# ------------------------------------------------------------- rewrites for tract

def rewrite_for_tract(path: Path) -> None:
    """Rewrites tf2onnx's graph at `path` in place into an equivalent one tract runs faster.

    PRelu(x, s) becomes x + (s - 1) * min(x, 0): equal for x >= 0 (x + 0) and for x < 0
    ((1 + s - 1) * x, up to float32 rounding). tract 0.23.9 expands PRelu into three separate
    passes over the tensor (Mul, a scalar Greater producing a bool tensor, Iff); the form here
    is one fused Min+Mul pass and one Add (face_mesh: about 3.5 ms -> 1.3 ms of tract's time;
    ONNX Runtime runs the rewritten graph no slower either).
    The per-channel slope `s - 1` is precomputed, so nothing is computed twice at run time.
    Initializers no node reads any more are dropped. The rewritten graph is checked against
    the source model like any conversion (REF_ATOL)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    nodes, rewritten = [], 0
    zero = "tract_rewrite/zero"
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        x, slope = node.input
        if slope not in initializers:
            raise Failure(f"{path.name}: PRelu {node.name} has a computed slope; no rewrite for that")
        prefix = f"{node.name or node.output[0]}/tract_rewrite"
        slope_minus_one = numpy_helper.to_array(initializers[slope]).astype(np.float32) - np.float32(1)
        graph.initializer.append(numpy_helper.from_array(slope_minus_one, f"{prefix}/slope_minus_one"))
        nodes += [
            helper.make_node("Min", [x, zero], [f"{prefix}/negative"], name=f"{prefix}/min"),
            helper.make_node("Mul", [f"{prefix}/negative", f"{prefix}/slope_minus_one"],
                             [f"{prefix}/scaled"], name=f"{prefix}/mul"),
            helper.make_node("Add", [x, f"{prefix}/scaled"], [node.output[0]], name=f"{prefix}/add"),
        ]
        rewritten += 1
    if rewritten:
        graph.initializer.append(numpy_helper.from_array(np.array(0, np.float32), zero))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for initializer in unused:
        graph.initializer.remove(initializer)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    log(f"  rewrote {path.name} for tract: {rewritten} PRelu, {len(unused)} unused initializers dropped")


def op_counts(path: Path) -> dict:
    """{op type: count} of an ONNX graph: what a rewrite in this script changes."""
    import collections
    import onnx

    return dict(sorted(collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node).items()))


# --------------------------------------------------------- face-api face recognition

FACEAPI_MEAN_RGB = (122.782, 117.001, 104.298)  # FaceRecognitionNet.forwardInput
# Keep face-api's uint8-quantised tensors as uint8 in the ONNX file, each followed by
# Cast -> Mul(scale) -> Add(min) on constants (runtimes fold these at load time): 6.5 MB
# instead of 22.5 MB with every weight expanded to float32. Outputs differ from face-api's
# (which dequantises in double precision) by float32 rounding only: max abs diff ~4e-6 on
# the check images (3e-7 with this False). Flip it and delete the committed file to change.
FACEAPI_STORE_UINT8 = True


def faceapi_weights(manifest_path: Path) -> dict:
    """{name: (float32 array, uint8 array or None, scale, min)}: the float32 array exactly as
    tfjs' io.decodeWeights yields it (uint8-quantised entries become q * scale + min, computed
    in double, stored as float32), and for quantised entries the raw uint8 values."""
    import numpy as np

    (group,) = json.loads(manifest_path.read_text())
    blob = b"".join((manifest_path.parent / p).read_bytes() for p in group["paths"])
    out, pos = {}, 0
    for w in group["weights"]:
        n = int(np.prod(w["shape"]))
        if w["dtype"] != "float32":
            raise Failure(f"{w['name']}: dtype {w['dtype']}")
        q = w.get("quantization")
        if q is None:
            a = np.frombuffer(blob, "<f4", n, pos).copy()
            out[w["name"]] = (a.reshape(w["shape"]), None, None, None)
            pos += 4 * n
        elif q["dtype"] == "uint8":
            raw = np.frombuffer(blob, np.uint8, n, pos).copy()
            a = (raw.astype(np.float64) * q["scale"] + q["min"]).astype(np.float32)
            out[w["name"]] = (a.reshape(w["shape"]), raw.reshape(w["shape"]), q["scale"], q["min"])
            pos += n
        else:
            raise Failure(f"{w['name']}: quantisation {q['dtype']}")
    if pos != len(blob):
        raise Failure(f"{manifest_path.name}: {len(blob) - pos} bytes of weights left over")
    return out


def build_faceapi_recognition(manifest_path: Path, out: Path, input_shape: tuple) -> None:
    """ONNX graph of face-api's FaceRecognitionNet (src/faceRecognitionNet/*.ts in the same
    npm package: dlib's ResNet-29 face descriptor), with its weights. Mirrors forwardInput:
    (x - meanRgb) / 255, convDown 7x7/2 valid, maxPool 3/2 valid, residual blocks whose
    'down' variant adds avgPool 2/2 of the input zero-padded to the new channel count (and
    the conv branch zero-padded by one row/column at the bottom/right where avgPool's output
    is larger), mean over H and W, matMul fc. Each conv is conv + bias, then the scale layer
    (x * weights + biases), then ReLU unless it is a block's second conv."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    wts = faceapi_weights(manifest_path)
    used = set()
    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(n, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def w(key):
        return wts[key][0]

    def param(key, layout=lambda a: a):
        """The weight `key` as a graph tensor, `layout` (a transpose/reshape) applied."""
        used.add(key)
        values, raw, scale, minimum = wts[key]
        if raw is None or not FACEAPI_STORE_UINT8:
            return const(key, np.ascontiguousarray(layout(values)))
        q = node("Cast", [const(f"{key}/uint8", np.ascontiguousarray(layout(raw)))], to=TensorProto.FLOAT)
        q = node("Mul", [q, const(f"{key}/scale", np.array(scale, np.float32))])
        return node("Add", [q, const(f"{key}/min", np.array(minimum, np.float32))])

    def node(op, inputs, **attrs):
        o = name(op.lower())
        nodes.append(helper.make_node(op, inputs, [o], name=o, **attrs))
        return o

    shapes = {}  # tensor -> (C, H, W)

    def conv_layer(x, prefix, stride, relu, padding):
        f = w(f"{prefix}/conv/filters")  # HWIO
        kh, kw, cin, cout = f.shape
        c, h, wd = shapes[x]
        assert cin == c, (prefix, cin, c)
        if padding == "same":  # tfjs 'same' at stride 1: (k - 1) / 2 each side
            assert stride == 1 and kh % 2 == 1
            pads = [kh // 2, kw // 2, kh // 2, kw // 2]
            oh, ow = h, wd
        else:
            pads = [0, 0, 0, 0]
            oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
        y = node("Conv", [x, param(f"{prefix}/conv/filters", lambda a: a.transpose(3, 2, 0, 1)),
                          param(f"{prefix}/conv/bias")],
                 kernel_shape=[kh, kw], strides=[stride, stride], pads=pads)
        per_channel = lambda a: a.reshape(1, cout, 1, 1)  # noqa: E731
        y = node("Mul", [y, param(f"{prefix}/scale/weights", per_channel)])
        y = node("Add", [y, param(f"{prefix}/scale/biases", per_channel)])
        shapes[y] = (cout, oh, ow)
        if relu:
            y = node("Relu", [y])
            shapes[y] = (cout, oh, ow)
        return y

    def residual(x, prefix, down):
        y = conv_layer(x, f"{prefix}/conv1", 2 if down else 1, True, "valid" if down else "same")
        y = conv_layer(y, f"{prefix}/conv2", 1, False, "same")
        if down:
            c, h, wd = shapes[x]
            p = node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
            shapes[p] = (c, h // 2, wd // 2)
            cy, hy, wy = shapes[y]
            if (hy, wy) != shapes[p][1:]:
                dh, dw = shapes[p][1] - hy, shapes[p][2] - wy
                assert dh == 1 and dw == 1, (prefix, shapes[p], shapes[y])
                y2 = node("Pad", [y, const(name("pads"), np.array([0, 0, 0, 0, 0, 0, dh, dw], np.int64))])
                shapes[y2] = (cy, hy + dh, wy + dw)
                y = y2
            if c != cy:
                p2 = node("Pad", [p, const(name("pads"), np.array([0, 0, 0, 0, 0, cy - c, 0, 0], np.int64))])
                shapes[p2] = (cy,) + shapes[p][1:]
                p = p2
            x = p
        s = node("Add", [y, x])
        shapes[s] = shapes[y]
        r = node("Relu", [s])
        shapes[r] = shapes[y]
        return r

    n, h, wd, c = input_shape
    x = node("Sub", ["input", const("mean_rgb", np.array(FACEAPI_MEAN_RGB, np.float32))])
    x = node("Div", [x, const("255", np.array(255.0, np.float32))])
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    shapes[x] = (c, h, wd)
    x = conv_layer(x, "conv32_down", 2, True, "valid")
    c, h, wd = shapes[x]
    y = node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])
    shapes[y] = (c, (h - 3) // 2 + 1, (wd - 3) // 2 + 1)
    x = y
    for prefix, down in (("conv32_1", 0), ("conv32_2", 0), ("conv32_3", 0),
                         ("conv64_down", 1), ("conv64_1", 0), ("conv64_2", 0), ("conv64_3", 0),
                         ("conv128_down", 1), ("conv128_1", 0), ("conv128_2", 0),
                         ("conv256_down", 1), ("conv256_1", 0), ("conv256_2", 0), ("conv256_down_out", 1)):
        x = residual(x, prefix, bool(down))
    x = node("ReduceMean", [x], axes=[2, 3], keepdims=0)
    nodes.append(helper.make_node("MatMul", [x, param("fc")], ["embedding"], name="fc"))
    if used != set(wts):
        raise Failure(f"unused face-api weights: {sorted(set(wts) - used)}")
    graph = helper.make_graph(
        nodes, "faceapi_face_recognition",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [n, w("fc").shape[1]])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="DoseWitness scripts/models/convert.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))


# face-api's own JavaScript (the package's dist/face-api.node-wasm.js: FaceRecognitionNet,
# its weight loader and preprocessing) on tfjs' pure-JS CPU backend, in Node. Needs `node`
# and `npm` on PATH; the tfjs version is face-api 1.7.15's own (devDependencies ^4.22.0).
FACEAPI_NODE_PACKAGES = ("@tensorflow/tfjs@4.22.0", "@tensorflow/tfjs-backend-wasm@4.22.0")
FACEAPI_REFERENCE_JS = r"""// Written by scripts/models/convert.py. argv: face-api dist file, model dir,
// input (N x H x W x 3 float32, raw pixels), output (N x D float32 descriptors), H, W.
const fs = require('fs');
const [distFile, modelDir, inFile, outFile, h, w] = process.argv.slice(2);
const faceapi = require(distFile);
const tf = faceapi.tf;
(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
  const net = faceapi.nets.faceRecognitionNet;
  await net.loadFromDisk(modelDir);
  const buf = fs.readFileSync(inFile);
  const all = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const per = Number(h) * Number(w) * 3;
  const outs = [];
  for (let i = 0; i < all.length / per; i++) {
    const t = tf.tensor3d(all.slice(i * per, (i + 1) * per), [Number(h), Number(w), 3], 'float32');
    outs.push(await net.computeFaceDescriptor(t));
    t.dispose();
  }
  const out = new Float32Array(outs.length * outs[0].length);
  outs.forEach((d, i) => out.set(d, i * d.length));
  fs.writeFileSync(outFile, Buffer.from(out.buffer));
  console.log(`face-api ${faceapi.version}, tfjs ${tf.version_core}, backend ${tf.getBackend()}: ${outs.length} inputs`);
})().catch((e) => { console.error(e); process.exit(1); });
"""


def faceapi_reference(m: Model, source_file: Path, inputs, work: Path) -> list:
    import numpy as np

    node_dir = work / "faceapi-node"
    stamp = node_dir / "installed.txt"
    wanted = "\n".join(FACEAPI_NODE_PACKAGES) + "\n"
    if not stamp.exists() or stamp.read_text() != wanted:
        node_dir.mkdir(parents=True, exist_ok=True)
        (node_dir / "package.json").write_text('{"name": "dosewitness-faceapi-reference", "private": true}\n')
        run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--silent",
             *FACEAPI_NODE_PACKAGES], cwd=node_dir)
        stamp.write_text(wanted)
    js = node_dir / "reference.cjs"
    js.write_text(FACEAPI_REFERENCE_JS)
    package_root = source_file.parents[1]  # <package>/model/<weights manifest>
    dist = package_root / "dist/face-api.node-wasm.js"
    n, h, w, c = m.input_shape
    np.concatenate([x for _, x in inputs]).astype("<f4").tofile(node_dir / "in.f32")
    out_file = node_dir / "out.f32"
    if out_file.exists():
        out_file.unlink()
    run(["node", js, dist, source_file.parent, node_dir / "in.f32", out_file, h, w],
        env={**os.environ, "NODE_PATH": str(node_dir / "node_modules")})
    ref = np.fromfile(out_file, "<f4").reshape(len(inputs), -1)
    return [{"embedding": ref[i:i + 1].copy()} for i in range(len(inputs))]


# ------------------------------------------------------------------------ checking

def check_inputs(m: Model):
    """(label, NHWC float32 tensor) pairs: real images, letterboxed, plus one random tensor."""
    import numpy as np
    from PIL import Image

    n, h, w, c = m.input_shape
    assert m.layout == "NHWC" and n == 1 and c == 3, "only 1xHxWx3 inputs are handled so far"
    lo, hi = m.value_range
    inputs = []
    for rel in CHECK_IMAGES:
        p = REPO / rel
        if not p.exists():
            log(f"  (check image {rel} missing, skipped)")
            continue
        img = Image.open(p).convert("RGB")
        s = min(w / img.width, h / img.height)
        nw, nh = max(1, round(img.width * s)), max(1, round(img.height * s))
        canvas = Image.new("RGB", (w, h), (0, 0, 0))
        canvas.paste(img.resize((nw, nh), Image.BILINEAR), ((w - nw) // 2, (h - nh) // 2))
        x = np.asarray(canvas, dtype=np.float32) / 255.0 * (hi - lo) + lo
        inputs.append((rel, x[None].astype(np.float32)))
    if not inputs:
        raise Failure("none of the check images exist: " + ", ".join(CHECK_IMAGES))
    rng = np.random.default_rng(20261128)
    inputs.append(("random", rng.uniform(lo, hi, size=m.input_shape).astype(np.float32)))
    return inputs


def run_reference(m: Model, source_file: Path, inputs, work: Path) -> list:
    """[{output name: array}] from the source model in its own runtime."""
    if m.fmt == "faceapi-recognition":
        return faceapi_reference(m, source_file, inputs, work)
    if m.fmt != "tflite":
        raise Failure(f"{m.name}: no reference runtime for {m.fmt}")
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=str(source_file))
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    outs = interp.get_output_details()
    results = []
    for _, x in inputs:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        results.append({o["name"]: interp.get_tensor(o["index"]).copy() for o in outs})
    return results


def run_onnx(path: Path, inputs) -> tuple:
    """(output names in graph order, [[array per output]])."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    names = [o.name for o in sess.get_outputs()]
    return names, [sess.run(names, {inp.name: x}) for _, x in inputs]


def diff_stats(a_list, b_list, atol: float, rtol: float) -> dict:
    """Max abs diff overall and where |b| <= 100, max relative diff where |b| > 100, and whether
    every element satisfies |a - b| <= atol + rtol * |b| (b = reference)."""
    import numpy as np

    st = {"max_abs": 0.0, "max_abs_normal": 0.0, "max_rel": 0.0, "ok": True}
    for a, b in zip(a_list, b_list):
        for x, y in zip(a, b):
            if x.shape != y.shape:
                return {"max_abs": float("inf"), "max_abs_normal": float("inf"),
                        "max_rel": float("inf"), "ok": False}
            x, y = x.astype(np.float64), y.astype(np.float64)
            d, mag = np.abs(x - y), np.abs(y)
            st["max_abs"] = max(st["max_abs"], float(d.max()))
            normal = mag <= 100.0
            if normal.any():
                st["max_abs_normal"] = max(st["max_abs_normal"], float(d[normal].max()))
            if (~normal).any():
                st["max_rel"] = max(st["max_rel"], float((d[~normal] / mag[~normal]).max()))
            st["ok"] = st["ok"] and bool(np.all(d <= atol + rtol * mag))
    return st


def fmt_stats(st: dict) -> str:
    return (f"max abs diff {st['max_abs']:.3g} (where |ref| <= 100: {st['max_abs_normal']:.3g}), "
            f"max rel diff where |ref| > 100: {st['max_rel']:.3g}")


def io_spec(m: Model, onnx_path: Path) -> dict:
    import onnx

    g = onnx.load(str(onnx_path)).graph
    inits = {i.name for i in g.initializer}
    ins = [i for i in g.input if i.name not in inits]
    if len(ins) != 1:
        raise Failure(f"{m.name}: expected one input, found {[i.name for i in ins]}")

    def shape(v):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        if any(d is None for d in dims):
            raise Failure(f"{m.name}: {v.name} has a symbolic shape")
        return dims

    if m.input_rename and ins[0].name != m.input_rename[1]:
        raise Failure(f"{m.name}: input is called {ins[0].name}, the table says {m.input_rename[1]}")
    if ins[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise Failure(f"{m.name}: input is not float32")
    if tuple(shape(ins[0])) != tuple(m.input_shape):
        raise Failure(f"{m.name}: input shape {shape(ins[0])}, table says {m.input_shape}")
    return {
        "input": {
            "name": ins[0].name,
            "shape": shape(ins[0]),
            "layout": m.layout,
            "dtype": "f32",
            "range": [float(m.value_range[0]), float(m.value_range[1])],
        },
        "outputs": [{"name": o.name, "shape": shape(o)} for o in g.output],
    }


def manifest_entry(m: Model, onnx_path: Path) -> dict:
    spec = io_spec(m, onnx_path)
    return {
        "name": m.name,
        "file": f"{m.name}.onnx",
        "sha256": sha256_file(onnx_path),
        "source": {
            "registry": m.source.registry,
            "package": m.source.package,
            "version": m.source.version,
            "path": m.source.path,
        },
        "licence": m.licence,
        "input": spec["input"],
        "outputs": spec["outputs"],
    }


# ------------------------------------------------------------------------- README

def render_readme(entries: list) -> str:
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    by_name = {m.name: m for m in MODELS}
    lines = [
        "# models/",
        "",
        "Pretrained models DoseWitness runs with tract. **Generated** by",
        "`scripts/models/convert.py` (run it through `cargo xtask models`); edit the",
        "table in that script, not this file. `manifest.json` beside it is what the",
        "Rust loader reads.",
        "",
        "Every model comes from a pinned package version on a public registry, is",
        f"converted with tf2onnx {tf2onnx.__version__} (opset {OPSET}; tensorflow {tf.__version__},",
        f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}) or, for weights-only packages, built",
        "as an ONNX graph by the script itself, and is checked in onnxruntime against the",
        f"original model in its own runtime (the tflite interpreter; face-api's own JavaScript for",
        "dlib_face_embedder) on real images: every output element within",
        f"{REF_ATOL:g} + {REF_RTOL:g} x |reference| (the relative term only matters for the huge",
        "values some anchors produce over letterbox padding). tf2onnx does not write",
        "identical bytes twice, so reproducing compares ops and outputs (within",
        f"{KEEP_ATOL:g} + {KEEP_RTOL:g} x |x|) instead of bytes and keeps the committed file when they match.",
        "",
        "**Rewritten for tract.** After tf2onnx, every `PRelu(x, s)` is replaced by the equivalent",
        "`x + (s - 1) * min(x, 0)` (`rewrite_for_tract` in the script): tract 0.23.9 runs PRelu as",
        "three separate passes (a multiply, a comparison into a bool tensor, a select), the",
        "rewritten form as one fused min-multiply pass and one add. The check above runs on the",
        "rewritten graph. Models without PRelu are unchanged.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "cargo xtask models            # = the three commands below",
        "python3 -m venv target/model-venv",
        "target/model-venv/bin/pip install -r scripts/models/requirements.txt",
        "target/model-venv/bin/python scripts/models/convert.py --work target/model-work --out models",
        "# verify only (non-zero exit on any mismatch, writes nothing):",
        "target/model-venv/bin/python scripts/models/convert.py --work target/model-work --out models --check",
        "```",
        "",
    ]
    for e in entries:
        m = by_name[e["name"]]
        src = e["source"]
        shp = "x".join(str(d) for d in e["input"]["shape"])
        outs = "<br>".join(
            f"`{o['name']}` {'x'.join(str(d) for d in o['shape'])}" for o in e["outputs"]
        )
        lines += [
            f"## {e['name']}",
            "",
            "| | |",
            "|---|---|",
            f"| file | `{e['file']}` |",
            f"| source | {src['registry']} `{src['package']}=={src['version']}` "
            f"(`{m.source.artifact_glob}`, sha256 `{m.source.artifact_sha256}`) |",
            f"| path in package | `{src['path']}` (sha256 `{m.source.path_sha256}`) |",
            f"| licence | {e['licence']} |",
            f"| sha256 (ONNX) | `{e['sha256']}` |",
            f"| input | `{e['input']['name']}` {shp} {e['input']['layout']} {e['input']['dtype']}, "
            f"range [{e['input']['range'][0]:g}, {e['input']['range'][1]:g}] |",
            f"| outputs (graph order) | {outs} |",
            *([f"| names in the source model | " + ", ".join(
                f"`{d}` = `{s}`" for s, d in (m.input_rename, *m.output_renames)) + " |"]
              if m.input_rename else []),
            "",
            m.readme.rstrip(),
            "",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def process(m: Model, work: Path, out: Path, manifest: dict, check: bool) -> tuple:
    """Returns (manifest entry to write, list of problems)."""
    problems = []
    log(f"== {m.name}: {m.source.registry} {m.source.package}=={m.source.version} {m.source.path}")
    artifact = fetch_artifact(m.source, work)
    source_file = extract_member(artifact, m.source, work)
    fresh = convert_model(m, source_file, work)

    inputs = check_inputs(m)
    ref = run_reference(m, source_file, inputs, work)
    names, fresh_out = run_onnx(fresh, inputs)
    renamed = dict(m.output_renames)
    ref = [{renamed.get(k, k): v for k, v in r.items()} for r in ref]
    if m.output_renames and names != [d for _, d in m.output_renames]:
        raise Failure(f"{m.name}: ONNX outputs are {names}, the table says {[d for _, d in m.output_renames]}")
    if set(names) != set(ref[0]):
        raise Failure(f"{m.name}: ONNX outputs {names} do not match the source model's {list(ref[0])}")
    ref_out = [[r[n] for n in names] for r in ref]
    st = diff_stats(fresh_out, ref_out, REF_ATOL, REF_RTOL)
    log(f"  onnxruntime vs {m.fmt} on {len(inputs)} inputs ({', '.join(l for l, _ in inputs)}): {fmt_stats(st)}")
    for (label, _), f, r in zip(inputs, fresh_out, ref_out):
        log(f"    {label}: {fmt_stats(diff_stats([f], [r], REF_ATOL, REF_RTOL))}")
    if not st["ok"]:
        raise Failure(f"{m.name}: converted model differs from the source model by more than "
                      f"{REF_ATOL:g} + {REF_RTOL:g}*|ref|")

    committed = out / f"{m.name}.onnx"
    old = next((e for e in manifest.get("models", []) if e.get("name") == m.name), None)
    keep = False
    if committed.exists():
        sha = sha256_file(committed)
        if old is None:
            problems.append(f"{m.name}: {committed} has no manifest entry")
        elif old.get("sha256") != sha:
            problems.append(f"{m.name}: sha256 of {committed} is {sha}, manifest says {old.get('sha256')}")
        elif op_counts(committed) != op_counts(fresh):
            # Same numbers from a different graph (e.g. before a rewrite above) is not a reproduction.
            problems.append(f"{m.name}: committed graph has ops {op_counts(committed)}, "
                            f"a fresh conversion {op_counts(fresh)}")
        else:
            _, committed_out = run_onnx(committed, inputs)
            st = diff_stats(committed_out, fresh_out, KEEP_ATOL, KEEP_RTOL)
            log(f"  committed vs fresh conversion: {fmt_stats(st)}")
            if st["ok"]:
                keep = True
            else:
                problems.append(f"{m.name}: committed model differs from a fresh conversion ({fmt_stats(st)})")
    else:
        problems.append(f"{m.name}: {committed} is missing")

    if keep:
        log(f"  keeping committed {committed.name} (sha256 {sha256_file(committed)})")
        entry = manifest_entry(m, committed)
    elif check:
        entry = old
    else:
        for p in problems:
            log(f"  {p}")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fresh, committed)
        entry = manifest_entry(m, committed)
        log(f"  wrote {committed} (sha256 {entry['sha256']})")
        problems = []
    if entry is not None and old is not None and entry != old:
        problems.append(f"{m.name}: manifest entry would change")
    return entry, problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "target/model-work")
    ap.add_argument("--out", type=Path, default=REPO / "models")
    ap.add_argument("--check", action="store_true", help="verify only; exit 1 on any mismatch")
    ap.add_argument("--only", action="append", help="process only this model (repeatable)")
    args = ap.parse_args()
    work, out = args.work.resolve(), args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"models": []}

    entries, problems = {}, []
    try:
        for m in MODELS:
            if args.only and m.name not in args.only:
                continue
            entry, probs = process(m, work, out, manifest, args.check)
            problems += probs
            if entry is not None:
                entries[m.name] = entry
    except (Failure, subprocess.CalledProcessError) as e:
        log(f"FAILED: {e}")
        return 1

    # Table order first, then entries for models no longer (or not now) processed.
    order = [m.name for m in MODELS]
    old_entries = {e["name"]: e for e in manifest.get("models", [])}
    merged = {**old_entries, **entries}
    rows = [merged[n] for n in order if n in merged] + [e for n, e in merged.items() if n not in order]
    new_manifest = {"models": rows}
    manifest_text = json.dumps(new_manifest, indent=2) + "\n"
    readme_text = render_readme([e for e in rows if e["name"] in order])
    readme_path = out / "README.md"

    if args.check:
        if not manifest_path.exists() or manifest_path.read_text() != manifest_text:
            problems.append(f"{manifest_path} would change")
        if not readme_path.exists() or readme_path.read_text() != readme_text:
            problems.append(f"{readme_path} would change")
        for p in problems:
            log(f"MISMATCH: {p}")
        log("check " + ("FAILED" if problems else "passed"))
        return 1 if problems else 0

    out.mkdir(parents=True, exist_ok=True)
    for path, text in ((manifest_path, manifest_text), (readme_path, readme_text)):
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            log(f"wrote {path}")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
