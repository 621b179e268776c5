//! Errors of the vision crate. They name files and models, never image content.

use std::path::PathBuf;

/// Everything that can go wrong loading models or perceiving a frame.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("model manifest {path} could not be read: {reason}")]
    ManifestUnreadable { path: PathBuf, reason: String },
    #[error("model {name:?} is not listed in the manifest {manifest}")]
    ModelNotInManifest { name: String, manifest: PathBuf },
    #[error("model file {path} is missing; run `cargo xtask models` to regenerate models/")]
    ModelMissing { path: PathBuf },
    #[error(
        "model file {path} has sha256 {actual}, but the manifest expects {expected}: the file is \
         corrupt or was replaced; restore it from git or run `cargo xtask models`"
    )]
    ModelChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model file {path} is not a usable ONNX model: {reason}")]
    ModelInvalid { path: PathBuf, reason: String },
    #[error("model {name:?} has {what} {actual:?}, but {expected:?} was expected")]
    ModelShapeMismatch {
        name: String,
        what: &'static str,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("inference with model {name:?} failed: {reason}")]
    Inference { name: String, reason: String },
    #[error("image {path} could not be read: {reason}")]
    ImageUnreadable { path: PathBuf, reason: String },
    #[error("found {found} faces where exactly one is needed")]
    FaceCount { found: usize },
    #[error("frame is {width}x{height} pixels; frames must be between 1x1 and {max}x{max}")]
    FrameSize { width: u32, height: u32, max: u32 },
}
