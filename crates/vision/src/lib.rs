//! On-device perception for DoseWitness, run by tract-onnx. The only crate that depends on tract.
//!
//! - [`frame`]: immutable camera frames with capture times.
//! - [`geometry`]: boxes, points, letterboxing and weighted non-maximum suppression (pure).
//! - [`model`]: the model manifest and loading ONNX files with sha256 and shape checks.
//! - [`face_detection`]: BlazeFace short range: SSD anchors, decoding, weighted NMS.
//! - [`face_embedding`]: dlib's 128-d face descriptors on eye-levelled chips, and matching.
//! - [`face_mesh`]: 468 face landmarks on MediaPipe's rotated region; mouth openness.
//! - [`hands`]: palm detection, MediaPipe's hand region, 21 hand landmarks, fingertip distances.
//! - [`signals`]: head pose, eye aspect ratio, mouth openness, lip region, open palm,
//!   fingertip-to-mouth distance in face widths.
//! - [`liveness`]: passive liveness from non-rigid motion plus a blink, a moving mouth or a head turn.
//! - [`tracking`]: detect-then-track for face and hand, with palm-detection scheduling.
//! - [`face_quality`]: enrolment photo checks (frontal, sharp, lit).
//! - [`dose_session`]: the dose session's state machine over per-frame observations.
//! - [`profile`]: per-op timing of a loaded model's tract plan (`bench vision --profile`).
//!
//! Each model stage is pure pre-processing → tract `run` → pure post-processing; the loaded plan
//! is owned by the model's struct and reused for every frame.

pub mod dose_session;
pub mod error;
pub mod face_detection;
pub mod face_embedding;
pub mod face_mesh;
pub mod face_quality;
pub mod frame;
pub mod geometry;
pub mod hands;
pub mod liveness;
pub mod model;
pub mod profile;
pub mod signals;
pub mod ssd;
pub mod tracking;

pub use error::VisionError;
pub use face_detection::{FaceDetection, FaceDetector};
pub use face_embedding::{EnrolmentError, FaceEmbedder, FaceEmbedding, FaceMatch, FaceTemplate};
pub use face_mesh::{FaceLandmarks, FaceMesh};
pub use frame::Frame;
pub use geometry::{BoundingBox, Letterbox, Point, RotatedRect};
pub use hands::{HandLandmarker, HandLandmarks, PalmDetection, PalmDetector};
pub use model::{ModelEntry, ModelManifest, OnnxModel};
