//! Enrolment photo checks: one face, frontal enough, sharp, well lit. Measured on the same
//! eye-levelled chip the embedder sees, so a photo that passes is one the embedder can use.

use crate::face_detection::FaceDetection;

/// Measurements of one enrolment candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceQuality {
    /// Horizontal offset of the nose tip from the eyes' midpoint, in eye distances (0 frontal;
    /// about ±0.5 at a 45° turn).
    pub yaw_offset: f32,
    /// Variance of the Laplacian of the grey chip (higher is sharper).
    pub sharpness: f32,
    /// Mean grey level of the chip, 0–255.
    pub brightness: f32,
}

/// Why a photo was refused for enrolment. Codes are stable for the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityProblem {
    NotFrontal,
    Blurred,
    TooDark,
    TooBright,
}

impl QualityProblem {
    /// A sentence for people.
    pub fn advice(self) -> &'static str {
        match self {
            Self::NotFrontal => "the face is turned away; look straight at the camera",
            Self::Blurred => "the photo is blurred; hold still and clean the lens",
            Self::TooDark => "the photo is too dark; add light in front of the face",
            Self::TooBright => "the photo is over-exposed; avoid direct light on the face",
        }
    }
}

/// Limits for enrolment photos.
pub const MAX_YAW_OFFSET: f32 = 0.35;
pub const MIN_SHARPNESS: f32 = 40.0;
pub const MIN_BRIGHTNESS: f32 = 40.0;
pub const MAX_BRIGHTNESS: f32 = 215.0;

impl FaceQuality {
    /// Measures `face` and its 150×150 RGB `chip` (raw 0–255, as the embedder's input).
    pub fn measure(face: &FaceDetection, chip: &[f32], chip_side: usize) -> Self {
        let (right_eye, left_eye, nose) = (face.keypoints[0], face.keypoints[1], face.keypoints[2]);
        let eye_distance =
            ((left_eye.x - right_eye.x).powi(2) + (left_eye.y - right_eye.y).powi(2)).sqrt();
        // Project the nose onto the eye line so head roll does not read as yaw.
        let (ux, uy) = (
            (left_eye.x - right_eye.x) / eye_distance.max(1e-6),
            (left_eye.y - right_eye.y) / eye_distance.max(1e-6),
        );
        let mid = (
            (right_eye.x + left_eye.x) / 2.0,
            (right_eye.y + left_eye.y) / 2.0,
        );
        let along = (nose.x - mid.0) * ux + (nose.y - mid.1) * uy;
        let grey: Vec<f32> = chip
            .chunks_exact(3)
            .map(|rgb| 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])
            .collect();
        let brightness = grey.iter().sum::<f32>() / grey.len().max(1) as f32;
        let mut laplacians = Vec::with_capacity(grey.len());
        for row in 1..chip_side.saturating_sub(1) {
            for column in 1..chip_side.saturating_sub(1) {
                let at = |r: usize, c: usize| grey[r * chip_side + c];
                laplacians.push(
                    at(row - 1, column)
                        + at(row + 1, column)
                        + at(row, column - 1)
                        + at(row, column + 1)
                        - 4.0 * at(row, column),
                );
            }
        }
        let mean = laplacians.iter().sum::<f32>() / laplacians.len().max(1) as f32;
        let sharpness = laplacians
            .iter()
            .map(|value| (value - mean).powi(2))
            .sum::<f32>()
            / laplacians.len().max(1) as f32;
        Self {
            yaw_offset: along / eye_distance.max(1e-6),
            sharpness,
            brightness,
        }
    }

    /// The problems that make this photo unfit for enrolment (empty when it is fit).
    pub fn problems(&self) -> Vec<QualityProblem> {
        let mut problems = Vec::new();
        if self.yaw_offset.abs() > MAX_YAW_OFFSET || !self.yaw_offset.is_finite() {
            problems.push(QualityProblem::NotFrontal);
        }
        if self.sharpness < MIN_SHARPNESS {
            problems.push(QualityProblem::Blurred);
        }
        if self.brightness < MIN_BRIGHTNESS {
            problems.push(QualityProblem::TooDark);
        } else if self.brightness > MAX_BRIGHTNESS {
            problems.push(QualityProblem::TooBright);
        }
        problems
    }
}
