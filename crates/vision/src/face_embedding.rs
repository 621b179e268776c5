//! Face identity with dlib's face-recognition ResNet (128-d descriptors), as ported by face-api.
//!
//! Pre-processing cuts a 150×150 chip from the frame: a square 1.25× the BlazeFace box, centred
//! on it and rotated so the eye line is horizontal, sampled bilinearly with the border
//! replicated, as raw 0–255 RGB (the model subtracts its own mean). Post-processing compares
//! descriptors by Euclidean distance; dlib's calibrated rule is "same person below 0.6".

use crate::error::VisionError;
use crate::face_detection::FaceDetection;
use crate::frame::Frame;
use crate::geometry::{RotatedRect, rotated_crop_into};
use crate::model::{ModelManifest, OnnxModel};

/// The manifest name of the model.
pub const MODEL_NAME: &str = "dlib_face_embedder";
const CHIP_SIDE: usize = 150;
const CROP_SCALE: f32 = 1.25;
/// dlib's decision threshold on the Euclidean distance of two descriptors.
pub const SAME_PERSON_MAX_DISTANCE: f64 = 0.6;

/// A 128-d face descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceEmbedding(pub Vec<f32>);

impl FaceEmbedding {
    /// Euclidean distance between two descriptors.
    pub fn distance(&self, other: &Self) -> f64 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// Cosine similarity between two descriptors.
    pub fn cosine(&self, other: &Self) -> f64 {
        let dot: f64 = self
            .0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let norm = |values: &[f32]| {
            values
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let denominator = norm(&self.0) * norm(&other.0);
        if denominator == 0.0 {
            0.0
        } else {
            dot / denominator
        }
    }
}

/// The result of comparing two faces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceMatch {
    /// `1 − distance / 1.2`, clamped to `[0, 1]`: 1 for identical descriptors, 0.5 exactly at
    /// dlib's threshold.
    pub score: f64,
    pub distance: f64,
    pub cosine: f64,
    pub same_person: bool,
}

impl FaceMatch {
    /// Compares two descriptors at dlib's threshold.
    pub fn between(a: &FaceEmbedding, b: &FaceEmbedding) -> Self {
        let distance = a.distance(b);
        Self {
            score: (1.0 - distance / (2.0 * SAME_PERSON_MAX_DISTANCE)).clamp(0.0, 1.0),
            distance,
            cosine: a.cosine(b),
            same_person: distance < SAME_PERSON_MAX_DISTANCE,
        }
    }
}

/// Fewest photos an enrolment accepts.
pub const MIN_ENROLMENT_PHOTOS: usize = 3;

/// An enrolled patient's face template: the descriptors of the enrolment photos. Biometric data:
/// stored encrypted with the device store, never logged.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceTemplate {
    pub format: u32,
    /// The manifest name and sha256 of the model that made the descriptors; a template is only
    /// comparable with descriptors from the same model.
    pub model: String,
    pub model_sha256: String,
    pub descriptors: Vec<Vec<f32>>,
}

impl std::fmt::Debug for FaceTemplate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "FaceTemplate({} descriptors, model {})",
            self.descriptors.len(),
            self.model
        )
    }
}

/// Why an enrolment was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnrolmentError {
    #[error("{found} usable photos; enrolment needs at least {MIN_ENROLMENT_PHOTOS}")]
    TooFewPhotos { found: usize },
    #[error(
        "photos {first} and {second} do not show the same person (descriptor distance {distance:.2})"
    )]
    NotOnePerson {
        first: usize,
        second: usize,
        distance: f64,
    },
    #[error(
        "the template was made with model {template_model} ({template_sha256}); this device runs {model_sha256}: enrol again"
    )]
    ModelMismatch {
        template_model: String,
        template_sha256: String,
        model_sha256: String,
    },
}

impl FaceTemplate {
    /// Builds a template from the descriptors of at least three photos that all match each
    /// other.
    pub fn enrol(
        embedder: &FaceEmbedder,
        photos: &[FaceEmbedding],
    ) -> Result<Self, EnrolmentError> {
        if photos.len() < MIN_ENROLMENT_PHOTOS {
            return Err(EnrolmentError::TooFewPhotos {
                found: photos.len(),
            });
        }
        for (first, a) in photos.iter().enumerate() {
            for (offset, b) in photos[first + 1..].iter().enumerate() {
                let distance = a.distance(b);
                if distance >= SAME_PERSON_MAX_DISTANCE {
                    return Err(EnrolmentError::NotOnePerson {
                        first,
                        second: first + 1 + offset,
                        distance,
                    });
                }
            }
        }
        let entry = embedder.model.entry();
        Ok(Self {
            format: 1,
            model: entry.name.clone(),
            model_sha256: entry.sha256.clone(),
            descriptors: photos.iter().map(|photo| photo.0.clone()).collect(),
        })
    }

    /// The mean descriptor.
    fn mean(&self) -> FaceEmbedding {
        let count = self.descriptors.len().max(1) as f32;
        let mut mean = vec![0.0f32; self.descriptors.first().map_or(0, Vec::len)];
        for descriptor in &self.descriptors {
            for (sum, value) in mean.iter_mut().zip(descriptor) {
                *sum += value / count;
            }
        }
        FaceEmbedding(mean)
    }

    /// Compares a new descriptor with the template (its mean descriptor), after checking that
    /// both came from the same model.
    pub fn verify(
        &self,
        embedder: &FaceEmbedder,
        probe: &FaceEmbedding,
    ) -> Result<FaceMatch, EnrolmentError> {
        let entry = embedder.model.entry();
        if self.model != entry.name || !self.model_sha256.eq_ignore_ascii_case(&entry.sha256) {
            return Err(EnrolmentError::ModelMismatch {
                template_model: self.model.clone(),
                template_sha256: self.model_sha256.clone(),
                model_sha256: entry.sha256.clone(),
            });
        }
        Ok(FaceMatch::between(&self.mean(), probe))
    }
}

/// The region the embedder looks at for `face`: 1.25× its box, rotated by the eye line.
pub fn face_region(face: &FaceDetection) -> RotatedRect {
    let (right_eye, left_eye) = (face.keypoints[0], face.keypoints[1]);
    RotatedRect {
        center: face.bounds.center(),
        side: face.bounds.width().max(face.bounds.height()) * CROP_SCALE,
        angle: (left_eye.y - right_eye.y).atan2(left_eye.x - right_eye.x),
    }
}

/// Samples the 150×150 chip of `region` from `frame`: NHWC raw 0–255, bilinear, border
/// replicated, pixel centres mapped to pixel centres.
pub fn face_chip(frame: &Frame, region: &RotatedRect) -> Vec<f32> {
    let mut chip = vec![0.0f32; CHIP_SIDE * CHIP_SIDE * 3];
    face_chip_into(frame, region, &mut chip);
    chip
}

/// [`face_chip`] into `chip`, the embedder's input.
fn face_chip_into(frame: &Frame, region: &RotatedRect, chip: &mut [f32]) {
    rotated_crop_into(frame, region, CHIP_SIDE, 0.5, [0.0, 255.0], chip);
}

/// The face embedder. Load once; [`Self::embed`] is reentrant.
#[derive(Debug, Clone)]
pub struct FaceEmbedder {
    model: OnnxModel,
}

impl FaceEmbedder {
    /// Loads the model from the manifest (sha256 and shapes checked).
    pub fn load(manifest: &ModelManifest) -> Result<Self, VisionError> {
        let model = manifest.load_expecting(MODEL_NAME, &[1, CHIP_SIDE, CHIP_SIDE, 3])?;
        Ok(Self { model })
    }

    /// The descriptor of `face` in `frame`.
    pub fn embed(&self, frame: &Frame, face: &FaceDetection) -> Result<FaceEmbedding, VisionError> {
        let region = face_region(face);
        let mut outputs = self
            .model
            .run_with(|chip| face_chip_into(frame, &region, chip))?;
        let embedding = outputs.pop().unwrap_or_default();
        if embedding.len() != 128 || embedding.iter().any(|value| !value.is_finite()) {
            return Err(VisionError::Inference {
                name: MODEL_NAME.to_string(),
                reason: format!("expected 128 finite values, got {}", embedding.len()),
            });
        }
        Ok(FaceEmbedding(embedding))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{BoundingBox, Point};

    #[test]
    fn the_region_is_levelled_by_the_eye_line() {
        let mut keypoints = [Point::default(); 6];
        keypoints[0] = Point { x: 40.0, y: 50.0 };
        keypoints[1] = Point { x: 60.0, y: 70.0 };
        let face = FaceDetection {
            bounds: BoundingBox {
                x_min: 20.0,
                y_min: 30.0,
                x_max: 80.0,
                y_max: 90.0,
            },
            keypoints,
            score: 0.9,
        };
        let region = face_region(&face);
        assert!((region.angle - std::f32::consts::FRAC_PI_4).abs() < 1e-6);
        assert_eq!(region.center, Point { x: 50.0, y: 60.0 });
        assert!((region.side - 75.0).abs() < 1e-6);
        // Both eyes land on one horizontal line of the chip.
        let (right, left) = (region.to_crop(keypoints[0]), region.to_crop(keypoints[1]));
        assert!((right.y - left.y).abs() < 1e-5 && right.x < left.x);
    }

    #[test]
    fn distance_and_score_follow_dlib_threshold() {
        let a = FaceEmbedding(vec![0.0; 128]);
        let mut b = a.clone();
        b.0[0] = 0.6;
        let at_threshold = FaceMatch::between(&a, &b);
        assert!((at_threshold.score - 0.5).abs() < 1e-6, "{at_threshold:?}");
        assert!(
            !at_threshold.same_person,
            "the threshold itself is 'different'"
        );
        b.0[0] = 0.3;
        assert!(FaceMatch::between(&a, &b).same_person);
        assert_eq!(FaceMatch::between(&a, &a).score, 1.0);
    }
}
