//! Face detection with MediaPipe's BlazeFace short-range model (faces within ~2 m).
//!
//! Pre-processing letterboxes the frame into 128×128 and scales pixels to `[-1, 1]`.
//! Post-processing decodes the 896 SSD anchors (MediaPipe's `SsdAnchorsCalculator` options for
//! this model), applies a sigmoid to the score logits, keeps scores ≥ 0.5, blends overlapping
//! boxes with weighted NMS (IoU 0.3) and maps boxes and keypoints back to frame pixels.

use crate::error::VisionError;
use crate::frame::Frame;
use crate::geometry::{BoundingBox, Letterbox, Point, ScoredBox, weighted_nms};
use crate::model::{ModelManifest, OnnxModel};
use image::RgbImage;

/// The manifest name of the model this detector runs.
pub const MODEL_NAME: &str = "blazeface_short";
const INPUT_SIDE: u32 = 128;
const ANCHOR_COUNT: usize = 896;
const VALUES_PER_ANCHOR: usize = 16;
const KEYPOINT_COUNT: usize = 6;
const COORDINATE_SCALE: f32 = 128.0;
const SCORE_CLIPPING: f32 = 100.0;
/// Default minimum detection score (MediaPipe's `min_score_thresh` for this model).
pub const DEFAULT_MIN_SCORE: f32 = 0.5;
const NMS_IOU_THRESHOLD: f32 = 0.3;

/// Names of the six BlazeFace keypoints, in output order.
pub const KEYPOINT_NAMES: [&str; KEYPOINT_COUNT] = [
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_centre",
    "right_ear_tragion",
    "left_ear_tragion",
];

/// One detected face in frame pixel coordinates. Keypoints follow [`KEYPOINT_NAMES`] (the
/// subject's right eye first, which appears on the image's left).
#[derive(Debug, Clone, PartialEq)]
pub struct FaceDetection {
    pub bounds: BoundingBox,
    pub keypoints: [Point; KEYPOINT_COUNT],
    /// Detection confidence in `[0, 1]`.
    pub score: f32,
}

/// An SSD anchor centre in normalised model coordinates (anchor size is fixed at 1).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Anchor {
    x_center: f32,
    y_center: f32,
}

/// MediaPipe's anchors for BlazeFace short range: four layers with strides 8, 16, 16, 16 and two
/// anchors per layer (aspect ratio 1 plus the interpolated scale); layers sharing a stride share a
/// grid, giving 16×16×2 + 8×8×6 = 896 anchors, offset 0.5 cell.
fn blazeface_short_anchors() -> Vec<Anchor> {
    let strides = [8u32, 16, 16, 16];
    let mut anchors = Vec::with_capacity(ANCHOR_COUNT);
    let mut layer = 0;
    while layer < strides.len() {
        let stride = strides[layer];
        let mut anchors_per_cell = 0;
        while layer < strides.len() && strides[layer] == stride {
            anchors_per_cell += 2;
            layer += 1;
        }
        let cells = INPUT_SIDE.div_ceil(stride);
        for row in 0..cells {
            for column in 0..cells {
                for _ in 0..anchors_per_cell {
                    anchors.push(Anchor {
                        x_center: (column as f32 + 0.5) / cells as f32,
                        y_center: (row as f32 + 0.5) / cells as f32,
                    });
                }
            }
        }
    }
    anchors
}

/// Decodes raw regressors and score logits into normalised (0..1 of the model input) boxes.
fn decode(
    anchors: &[Anchor],
    regressors: &[f32],
    logits: &[f32],
    min_score: f32,
) -> Vec<ScoredBox> {
    anchors
        .iter()
        .zip(regressors.chunks_exact(VALUES_PER_ANCHOR))
        .zip(logits)
        .filter_map(|((anchor, raw), logit)| {
            let score = 1.0 / (1.0 + (-logit.clamp(-SCORE_CLIPPING, SCORE_CLIPPING)).exp());
            // NaN logits (a broken model) fail this test too, so they are dropped.
            if score
                .partial_cmp(&min_score)
                .is_none_or(|order| order.is_lt())
            {
                return None;
            }
            let center = Point {
                x: raw[0] / COORDINATE_SCALE + anchor.x_center,
                y: raw[1] / COORDINATE_SCALE + anchor.y_center,
            };
            let bounds = BoundingBox::from_center(
                center,
                raw[2] / COORDINATE_SCALE,
                raw[3] / COORDINATE_SCALE,
            );
            let keypoints = (0..KEYPOINT_COUNT)
                .map(|index| Point {
                    x: raw[4 + 2 * index] / COORDINATE_SCALE + anchor.x_center,
                    y: raw[5 + 2 * index] / COORDINATE_SCALE + anchor.y_center,
                })
                .collect();
            Some(ScoredBox {
                bounds,
                keypoints,
                score,
            })
        })
        .collect()
}

/// Letterboxes `pixels` into the 128×128 model input, normalised to `[-1, 1]`, NHWC, sampling
/// exactly as MediaPipe's `ImageToTensorCalculator` does: output pixel `(u, v)` takes the bilinear
/// interpolation of the source at `letterbox.to_source(u, v)`, with black (0) outside the image.
/// (An area-averaging resize moves BlazeFace's boxes by up to 3 % of the image.)
fn preprocess(pixels: &RgbImage, letterbox: &Letterbox) -> Vec<f32> {
    let side = INPUT_SIDE as usize;
    let (width, height) = (pixels.width() as i64, pixels.height() as i64);
    let raw = pixels.as_raw();
    let sample = |x: i64, y: i64, channel: usize| -> f32 {
        if x < 0 || y < 0 || x >= width || y >= height {
            return 0.0;
        }
        f32::from(raw[((y * width + x) * 3) as usize + channel])
    };
    let mut input = vec![0.0f32; side * side * 3];
    for row in 0..side {
        for column in 0..side {
            let source = letterbox.to_source(Point {
                x: column as f32,
                y: row as f32,
            });
            let (left, top) = (source.x.floor(), source.y.floor());
            let (fraction_x, fraction_y) = (source.x - left, source.y - top);
            let (left, top) = (left as i64, top as i64);
            let base = (row * side + column) * 3;
            for channel in 0..3 {
                let upper = sample(left, top, channel) * (1.0 - fraction_x)
                    + sample(left + 1, top, channel) * fraction_x;
                let lower = sample(left, top + 1, channel) * (1.0 - fraction_x)
                    + sample(left + 1, top + 1, channel) * fraction_x;
                let value = upper * (1.0 - fraction_y) + lower * fraction_y;
                input[base + channel] = value / 127.5 - 1.0;
            }
        }
    }
    input
}

/// BlazeFace short-range detector. Load once; [`Self::detect`] is reentrant.
#[derive(Debug, Clone)]
pub struct FaceDetector {
    model: OnnxModel,
    anchors: Vec<Anchor>,
    min_score: f32,
}

impl FaceDetector {
    /// Loads the model from the manifest (sha256 and shapes checked).
    pub fn load(manifest: &ModelManifest) -> Result<Self, VisionError> {
        Self::from_model(manifest.load(MODEL_NAME)?)
    }

    /// Wraps an already loaded model, checking it is BlazeFace-shaped.
    pub fn from_model(model: OnnxModel) -> Result<Self, VisionError> {
        let entry = model.entry();
        let expected_input = vec![1, INPUT_SIDE as usize, INPUT_SIDE as usize, 3];
        if entry.input.shape != expected_input {
            return Err(VisionError::ModelShapeMismatch {
                name: entry.name.clone(),
                what: "input shape",
                expected: expected_input,
                actual: entry.input.shape.clone(),
            });
        }
        Ok(Self {
            model,
            anchors: blazeface_short_anchors(),
            min_score: DEFAULT_MIN_SCORE,
        })
    }

    /// The loaded model.
    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    /// Changes the minimum detection score (default [`DEFAULT_MIN_SCORE`]).
    pub fn with_min_score(mut self, min_score: f32) -> Self {
        self.min_score = min_score;
        self
    }

    /// Faces in `frame`, best first, in frame pixel coordinates. An image with no face (black,
    /// tiny, grey) yields an empty list.
    pub fn detect(&self, frame: &Frame) -> Result<Vec<FaceDetection>, VisionError> {
        let pixels = frame.pixels();
        let letterbox = Letterbox::fit(pixels.width(), pixels.height(), INPUT_SIDE, INPUT_SIDE);
        let input = preprocess(pixels, &letterbox);
        let outputs = self.model.run(&input)?;
        let (regressors, logits) = self.split_outputs(&outputs)?;
        let decoded = decode(&self.anchors, regressors, logits, self.min_score);
        let side = INPUT_SIDE as f32;
        let to_frame = |point: Point| {
            letterbox.to_source(Point {
                x: point.x * side,
                y: point.y * side,
            })
        };
        Ok(weighted_nms(decoded, NMS_IOU_THRESHOLD)
            .into_iter()
            .map(|detection| {
                let mut keypoints = [Point::default(); KEYPOINT_COUNT];
                for (slot, point) in keypoints.iter_mut().zip(&detection.keypoints) {
                    *slot = to_frame(*point);
                }
                FaceDetection {
                    bounds: detection.bounds.map_corners(to_frame),
                    keypoints,
                    score: detection.score,
                }
            })
            .collect())
    }

    /// The one face in `frame`; an error when there is none or more than one.
    pub fn single_face(&self, frame: &Frame) -> Result<FaceDetection, VisionError> {
        let mut faces = self.detect(frame)?;
        if faces.len() == 1 {
            Ok(faces.remove(0))
        } else {
            Err(VisionError::FaceCount { found: faces.len() })
        }
    }

    /// Finds the regressor (896×16) and score (896×1) outputs by size, whatever their order.
    fn split_outputs<'a>(
        &self,
        outputs: &'a [Vec<f32>],
    ) -> Result<(&'a [f32], &'a [f32]), VisionError> {
        let find = |length: usize| outputs.iter().find(|output| output.len() == length);
        match (find(ANCHOR_COUNT * VALUES_PER_ANCHOR), find(ANCHOR_COUNT)) {
            (Some(regressors), Some(logits)) => Ok((regressors, logits)),
            _ => Err(VisionError::ModelShapeMismatch {
                name: self.model.entry().name.clone(),
                what: "output sizes",
                expected: vec![ANCHOR_COUNT * VALUES_PER_ANCHOR, ANCHOR_COUNT],
                actual: outputs.iter().map(Vec::len).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_match_mediapipe_layout() {
        let anchors = blazeface_short_anchors();
        assert_eq!(anchors.len(), ANCHOR_COUNT);
        // First grid: 16×16 cells, two anchors each, first centre at half a cell.
        assert_eq!(
            anchors[0],
            Anchor {
                x_center: 0.5 / 16.0,
                y_center: 0.5 / 16.0
            }
        );
        assert_eq!(anchors[1], anchors[0]);
        assert_eq!(anchors[2].x_center, 1.5 / 16.0);
        // Second grid starts after 512 anchors: 8×8 cells, six anchors each.
        assert_eq!(
            anchors[512],
            Anchor {
                x_center: 0.5 / 8.0,
                y_center: 0.5 / 8.0
            }
        );
        assert_eq!(anchors[517], anchors[512]);
        assert_eq!(anchors[518].x_center, 1.5 / 8.0);
        assert!(
            anchors
                .iter()
                .all(|anchor| (0.0..1.0).contains(&anchor.x_center)
                    && (0.0..1.0).contains(&anchor.y_center))
        );
    }

    #[test]
    fn decoding_offsets_regressors_from_their_anchor() {
        let anchors = blazeface_short_anchors();
        let mut regressors = vec![0.0f32; ANCHOR_COUNT * VALUES_PER_ANCHOR];
        let mut logits = vec![-10.0f32; ANCHOR_COUNT];
        // Anchor 512 sits at (1/16, 1/16); shift its box right by 8 px and make it 32 px wide.
        let raw = &mut regressors[512 * VALUES_PER_ANCHOR..513 * VALUES_PER_ANCHOR];
        raw[0] = 8.0;
        raw[2] = 32.0;
        raw[3] = 16.0;
        raw[4] = -4.0;
        logits[512] = 2.0;
        let decoded = decode(&anchors, &regressors, &logits, 0.5);
        assert_eq!(decoded.len(), 1);
        let face = &decoded[0];
        assert!((face.score - 0.880_797).abs() < 1e-5);
        assert!((face.bounds.center().x - (0.0625 + 8.0 / 128.0)).abs() < 1e-6);
        assert!((face.bounds.width() - 0.25).abs() < 1e-6);
        assert!((face.bounds.height() - 0.125).abs() < 1e-6);
        assert!((face.keypoints[0].x - (0.0625 - 4.0 / 128.0)).abs() < 1e-6);
    }

    #[test]
    fn preprocessing_letterboxes_and_normalises() {
        let white = RgbImage::from_pixel(256, 128, image::Rgb([255, 255, 255]));
        let letterbox = Letterbox::fit(256, 128, INPUT_SIDE, INPUT_SIDE);
        let input = preprocess(&white, &letterbox);
        let at = |row: usize, column: usize| input[(row * 128 + column) * 3];
        // A 2:1 image fills rows 32..96; rows above and below are black padding.
        assert_eq!(at(0, 64), -1.0);
        assert_eq!(at(31, 64), -1.0);
        assert_eq!(at(32, 64), 1.0);
        assert_eq!(at(95, 0), 1.0);
        assert_eq!(at(96, 64), -1.0);
    }
}
