//! FaceMesh: 468 face landmarks, and the mouth openness the ingestion check needs.
//!
//! The region comes from a BlazeFace detection exactly as MediaPipe's face-landmark graph makes
//! it: centred on the box, 1.5× its longer side, rotated so the eye line (keypoint 0 → 1) is
//! horizontal. The 192×192 crop maps its corner pixels to the region's corners with the border
//! replicated, scaled to `[0, 1]`. Landmarks come back in crop pixels and are projected to frame
//! pixels through the same rotation.

use crate::error::VisionError;
use crate::face_detection::FaceDetection;
use crate::frame::Frame;
use crate::geometry::{Point, RotatedRect, rotated_crop_into};
use crate::model::{ModelManifest, OnnxModel};

/// The manifest name of the model.
pub const MODEL_NAME: &str = "face_mesh";
const INPUT_SIDE: usize = 192;
const LANDMARK_COUNT: usize = 468;
const REGION_SCALE: f32 = 1.5;
/// Inner upper lip, inner lower lip, and the two mouth corners (MediaPipe's mesh indices).
const UPPER_LIP: usize = 13;
const LOWER_LIP: usize = 14;
const MOUTH_LEFT: usize = 61;
const MOUTH_RIGHT: usize = 291;

/// The face's 468 landmarks in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceLandmarks {
    pub points: Vec<Point>,
    /// Probability that the region holds a face, in `[0, 1]`.
    pub presence: f32,
}

impl FaceLandmarks {
    /// Inner-lip gap divided by mouth width: about 0.01 closed, 0.15 or more open.
    pub fn mouth_openness(&self) -> f32 {
        let distance = |a: usize, b: usize| {
            let (p, q) = (self.points[a], self.points[b]);
            ((p.x - q.x).powi(2) + (p.y - q.y).powi(2)).sqrt()
        };
        let width = distance(MOUTH_LEFT, MOUTH_RIGHT);
        if width > 0.0 {
            distance(UPPER_LIP, LOWER_LIP) / width
        } else {
            0.0
        }
    }
}

/// The region FaceMesh reads for a detected face.
pub fn mesh_region(face: &FaceDetection) -> RotatedRect {
    let (right_eye, left_eye) = (face.keypoints[0], face.keypoints[1]);
    RotatedRect {
        center: face.bounds.center(),
        side: face.bounds.width().max(face.bounds.height()) * REGION_SCALE,
        angle: (left_eye.y - right_eye.y).atan2(left_eye.x - right_eye.x),
    }
}

/// The FaceMesh model. Load once; [`Self::landmarks`] is reentrant.
#[derive(Debug, Clone)]
pub struct FaceMesh {
    model: OnnxModel,
}

impl FaceMesh {
    /// Loads the model from the manifest (sha256 and shapes checked).
    pub fn load(manifest: &ModelManifest) -> Result<Self, VisionError> {
        let model = manifest.load_expecting(MODEL_NAME, &[1, INPUT_SIDE, INPUT_SIDE, 3])?;
        Ok(Self { model })
    }

    /// Landmarks of the face in `region` of `frame`.
    pub fn landmarks(
        &self,
        frame: &Frame,
        region: &RotatedRect,
    ) -> Result<FaceLandmarks, VisionError> {
        let outputs = self.model.run_with(|input| {
            rotated_crop_into(frame, region, INPUT_SIDE, 0.0, [0.0, 1.0], input);
        })?;
        let (Some(raw), Some(flag)) = (
            outputs
                .iter()
                .find(|output| output.len() == LANDMARK_COUNT * 3),
            outputs.iter().find(|output| output.len() == 1),
        ) else {
            return Err(VisionError::ModelShapeMismatch {
                name: MODEL_NAME.to_string(),
                what: "output sizes",
                expected: vec![LANDMARK_COUNT * 3, 1],
                actual: outputs.iter().map(Vec::len).collect(),
            });
        };
        let side = INPUT_SIDE as f32;
        let points = raw
            .chunks_exact(3)
            .map(|xyz| {
                region.to_source(Point {
                    x: xyz[0] / side,
                    y: xyz[1] / side,
                })
            })
            .collect();
        Ok(FaceLandmarks {
            points,
            presence: 1.0 / (1.0 + (-flag[0]).exp()),
        })
    }
}
