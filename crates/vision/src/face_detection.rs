//! Face detection with MediaPipe's BlazeFace short-range model (faces within ~2 m).
//!
//! Pre-processing letterboxes the frame into 128×128 and scales pixels to `[-1, 1]`.
//! Post-processing decodes the 896 SSD anchors (MediaPipe's `SsdAnchorsCalculator` options for
//! this model), applies a sigmoid to the score logits, keeps scores ≥ 0.5, blends overlapping
//! boxes with weighted NMS (IoU 0.3) and maps boxes and keypoints back to frame pixels.

use crate::error::VisionError;
use crate::frame::Frame;
use crate::geometry::{BoundingBox, Letterbox, Point, weighted_nms};
use crate::model::{ModelManifest, OnnxModel};
use crate::ssd::{Anchor, SsdLayout, anchors, decode, letterbox_tensor_into};

/// The manifest name of the model this detector runs.
pub const MODEL_NAME: &str = "blazeface_short";
const INPUT_SIDE: u32 = 128;
const ANCHOR_COUNT: usize = 896;
const VALUES_PER_ANCHOR: usize = 16;
const KEYPOINT_COUNT: usize = 6;
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

/// BlazeFace short range's SSD layout: strides 8, 16, 16, 16 on a 128-px input, giving
/// 16×16×2 + 8×8×6 = 896 anchors, with six keypoints.
const LAYOUT: SsdLayout = SsdLayout {
    input_side: INPUT_SIDE,
    strides: &[8, 16, 16, 16],
    keypoints: KEYPOINT_COUNT,
};

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
        let side = INPUT_SIDE as usize;
        Ok(Self {
            model: manifest.load_expecting(MODEL_NAME, &[1, side, side, 3])?,
            anchors: anchors(&LAYOUT),
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
        let outputs = self.model.run_with(|input| {
            letterbox_tensor_into(pixels, &letterbox, INPUT_SIDE as usize, [-1.0, 1.0], input);
        })?;
        let (regressors, logits) = self.split_outputs(&outputs)?;
        let decoded = decode(&LAYOUT, &self.anchors, regressors, logits, self.min_score);
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
    use crate::ssd::letterbox_tensor;

    #[test]
    fn anchors_match_mediapipe_layout() {
        let anchors = anchors(&LAYOUT);
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
        let anchors = anchors(&LAYOUT);
        let mut regressors = vec![0.0f32; ANCHOR_COUNT * VALUES_PER_ANCHOR];
        let mut logits = vec![-10.0f32; ANCHOR_COUNT];
        // Anchor 512 sits at (1/16, 1/16); shift its box right by 8 px and make it 32 px wide.
        let raw = &mut regressors[512 * VALUES_PER_ANCHOR..513 * VALUES_PER_ANCHOR];
        raw[0] = 8.0;
        raw[2] = 32.0;
        raw[3] = 16.0;
        raw[4] = -4.0;
        logits[512] = 2.0;
        let decoded = decode(&LAYOUT, &anchors, &regressors, &logits, 0.5);
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
        let white = image::RgbImage::from_pixel(256, 128, image::Rgb([255, 255, 255]));
        let letterbox = Letterbox::fit(256, 128, INPUT_SIDE, INPUT_SIDE);
        let input = letterbox_tensor(&white, &letterbox, 128, [-1.0, 1.0]);
        let at = |row: usize, column: usize| input[(row * 128 + column) * 3];
        // A 2:1 image fills rows 32..96; rows above and below are black padding.
        assert_eq!(at(0, 64), -1.0);
        assert_eq!(at(31, 64), -1.0);
        assert_eq!(at(32, 64), 1.0);
        assert_eq!(at(95, 0), 1.0);
        assert_eq!(at(96, 64), -1.0);
    }
}
