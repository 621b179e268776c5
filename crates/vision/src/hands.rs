//! Hands: MediaPipe's palm detection, the hand region it implies, and 21 hand landmarks.
//!
//! Palm detection letterboxes the frame into 192×192 (`[0, 1]`, black padding), decodes 2016
//! SSD anchors (strides 8, 16, 16, 16; box + 7 keypoints) and blends overlaps with weighted NMS.
//! The hand region is MediaPipe's `PalmDetectionDetectionToRoi`: rotated so the wrist
//! (keypoint 0) → middle-finger base (keypoint 2) points up, moved half a palm towards the
//! fingers, 2.6× the palm's longer side. Hand landmarks read a 224×224 crop of that region.

use crate::error::VisionError;
use crate::frame::Frame;
use crate::geometry::{
    BoundingBox, Letterbox, Point, RotatedRect, rotated_crop_into, weighted_nms,
};
use crate::model::{ModelManifest, OnnxModel};
use crate::ssd::{Anchor, SsdLayout, anchors, decode, letterbox_tensor_into};

/// Manifest names of the models (the lite variants: a dose session's hands are close).
pub const PALM_MODEL: &str = "palm_detection_lite";
pub const LANDMARK_MODEL: &str = "hand_landmark_lite";
const PALM_INPUT_SIDE: u32 = 192;
const LANDMARK_INPUT_SIDE: usize = 224;
const PALM_KEYPOINTS: usize = 7;
const LAYOUT: SsdLayout = SsdLayout {
    input_side: PALM_INPUT_SIDE,
    strides: &[8, 16, 16, 16],
    keypoints: PALM_KEYPOINTS,
};
const MIN_PALM_SCORE: f32 = 0.5;
const NMS_IOU_THRESHOLD: f32 = 0.3;
/// Hand presence below this drops the landmarks (MediaPipe's default).
pub const MIN_HAND_PRESENCE: f32 = 0.5;
/// Index of the wrist and of each fingertip among the 21 landmarks.
pub const WRIST: usize = 0;
pub const FINGERTIPS: [usize; 5] = [4, 8, 12, 16, 20];

/// One detected palm in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct PalmDetection {
    pub bounds: BoundingBox,
    /// 0 wrist centre, 1 index-finger base, 2 middle-finger base, 3 ring-finger base, 4 pinky
    /// base, 5–6 thumb.
    pub keypoints: [Point; PALM_KEYPOINTS],
    pub score: f32,
}

/// 21 hand landmarks in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct HandLandmarks {
    pub points: Vec<Point>,
    /// Probability that the region holds a hand.
    pub presence: f32,
    /// Probability that it is a left hand (as MediaPipe labels a mirrored image).
    pub left_handedness: f32,
}

impl HandLandmarks {
    /// The fingertip nearest to `target`, and its distance in pixels.
    pub fn nearest_fingertip(&self, target: Point) -> (usize, f32) {
        FINGERTIPS
            .iter()
            .map(|index| {
                let tip = self.points[*index];
                (
                    *index,
                    ((tip.x - target.x).powi(2) + (tip.y - target.y).powi(2)).sqrt(),
                )
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((FINGERTIPS[0], f32::INFINITY))
    }
}

/// The hand region for a palm, in frame pixels (see the module docs).
pub fn hand_region(palm: &PalmDetection) -> RotatedRect {
    let (wrist, middle) = (palm.keypoints[0], palm.keypoints[2]);
    let angle = normalize_angle(
        std::f32::consts::FRAC_PI_2 - (-(middle.y - wrist.y)).atan2(middle.x - wrist.x),
    );
    let (sin, cos) = angle.sin_cos();
    let height = palm.bounds.height();
    let shift_y = -0.5 * height;
    let center = palm.bounds.center();
    RotatedRect {
        center: Point {
            x: center.x - shift_y * sin,
            y: center.y + shift_y * cos,
        },
        side: palm.bounds.width().max(height) * 2.6,
        angle,
    }
}

fn normalize_angle(angle: f32) -> f32 {
    let tau = std::f32::consts::TAU;
    angle - tau * ((angle + std::f32::consts::PI) / tau).floor()
}

/// Palm detector (lite). Load once; [`Self::detect`] is reentrant.
#[derive(Debug, Clone)]
pub struct PalmDetector {
    model: OnnxModel,
    anchors: Vec<Anchor>,
}

impl PalmDetector {
    pub fn load(manifest: &ModelManifest) -> Result<Self, VisionError> {
        let side = PALM_INPUT_SIDE as usize;
        Ok(Self {
            model: manifest.load_expecting(PALM_MODEL, &[1, side, side, 3])?,
            anchors: anchors(&LAYOUT),
        })
    }

    /// Palms in `frame`, best first.
    pub fn detect(&self, frame: &Frame) -> Result<Vec<PalmDetection>, VisionError> {
        let pixels = frame.pixels();
        let letterbox = Letterbox::fit(
            pixels.width(),
            pixels.height(),
            PALM_INPUT_SIDE,
            PALM_INPUT_SIDE,
        );
        let outputs = self.model.run_with(|input| {
            let side = PALM_INPUT_SIDE as usize;
            letterbox_tensor_into(pixels, &letterbox, side, [0.0, 1.0], input);
        })?;
        let count = self.anchors.len();
        let find = |length: usize| outputs.iter().find(|output| output.len() == length);
        let (Some(regressors), Some(logits)) =
            (find(count * LAYOUT.values_per_anchor()), find(count))
        else {
            return Err(VisionError::ModelShapeMismatch {
                name: PALM_MODEL.to_string(),
                what: "output sizes",
                expected: vec![count * LAYOUT.values_per_anchor(), count],
                actual: outputs.iter().map(Vec::len).collect(),
            });
        };
        let side = PALM_INPUT_SIDE as f32;
        let to_frame = |point: Point| {
            letterbox.to_source(Point {
                x: point.x * side,
                y: point.y * side,
            })
        };
        let decoded = decode(&LAYOUT, &self.anchors, regressors, logits, MIN_PALM_SCORE);
        Ok(weighted_nms(decoded, NMS_IOU_THRESHOLD)
            .into_iter()
            .map(|palm| {
                let mut keypoints = [Point::default(); PALM_KEYPOINTS];
                for (slot, point) in keypoints.iter_mut().zip(&palm.keypoints) {
                    *slot = to_frame(*point);
                }
                PalmDetection {
                    bounds: palm.bounds.map_corners(to_frame),
                    keypoints,
                    score: palm.score,
                }
            })
            .collect())
    }
}

/// Hand landmark model (lite). Load once; [`Self::landmarks`] is reentrant.
#[derive(Debug, Clone)]
pub struct HandLandmarker {
    model: OnnxModel,
}

impl HandLandmarker {
    pub fn load(manifest: &ModelManifest) -> Result<Self, VisionError> {
        Ok(Self {
            model: manifest.load_expecting(
                LANDMARK_MODEL,
                &[1, LANDMARK_INPUT_SIDE, LANDMARK_INPUT_SIDE, 3],
            )?,
        })
    }

    /// The 21 landmarks of the hand in `region` of `frame`.
    pub fn landmarks(
        &self,
        frame: &Frame,
        region: &RotatedRect,
    ) -> Result<HandLandmarks, VisionError> {
        let outputs = self.model.run_with(|input| {
            rotated_crop_into(frame, region, LANDMARK_INPUT_SIDE, 0.0, [0.0, 1.0], input);
        })?;
        // Outputs in manifest order: landmarks (63), hand_flag (1), handedness (1), world (63).
        let [landmarks, flag, handedness, _world] = outputs.as_slice() else {
            return Err(VisionError::ModelShapeMismatch {
                name: LANDMARK_MODEL.to_string(),
                what: "output count",
                expected: vec![4],
                actual: vec![outputs.len()],
            });
        };
        if landmarks.len() != 63 || flag.len() != 1 || handedness.len() != 1 {
            return Err(VisionError::ModelShapeMismatch {
                name: LANDMARK_MODEL.to_string(),
                what: "output sizes",
                expected: vec![63, 1, 1],
                actual: vec![landmarks.len(), flag.len(), handedness.len()],
            });
        }
        let side = LANDMARK_INPUT_SIDE as f32;
        Ok(HandLandmarks {
            points: landmarks
                .chunks_exact(3)
                .map(|xyz| {
                    region.to_source(Point {
                        x: xyz[0] / side,
                        y: xyz[1] / side,
                    })
                })
                .collect(),
            presence: flag[0],
            left_handedness: handedness[0],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palm_anchors_follow_the_192_pixel_layout() {
        let anchors = anchors(&LAYOUT);
        assert_eq!(anchors.len(), 24 * 24 * 2 + 12 * 12 * 6);
        assert_eq!(
            anchors[1152],
            Anchor {
                x_center: 0.5 / 12.0,
                y_center: 0.5 / 12.0
            }
        );
    }

    #[test]
    fn an_upright_hand_region_extends_above_the_palm() {
        // Wrist below the middle-finger base: the fingers point up, no rotation needed.
        let mut keypoints = [Point::default(); PALM_KEYPOINTS];
        keypoints[0] = Point { x: 100.0, y: 200.0 };
        keypoints[2] = Point { x: 100.0, y: 150.0 };
        let palm = PalmDetection {
            bounds: BoundingBox {
                x_min: 70.0,
                y_min: 140.0,
                x_max: 130.0,
                y_max: 200.0,
            },
            keypoints,
            score: 0.9,
        };
        let region = hand_region(&palm);
        assert!(region.angle.abs() < 1e-6, "{region:?}");
        assert!(
            (region.center.x - 100.0).abs() < 1e-4 && (region.center.y - 140.0).abs() < 1e-4,
            "{region:?}"
        );
        assert!((region.side - 156.0).abs() < 1e-3);
        // Fingers pointing right: the crop turns a quarter turn.
        keypoints[2] = Point { x: 150.0, y: 200.0 };
        let sideways = hand_region(&PalmDetection { keypoints, ..palm });
        assert!(
            (sideways.angle - std::f32::consts::FRAC_PI_2).abs() < 1e-5,
            "{sideways:?}"
        );
    }
}
