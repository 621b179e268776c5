//! The model manifest (`models/manifest.json`) and loading ONNX files into tract plans.
//!
//! A model is loaded once: its bytes are checked against the manifest's sha256, parsed by tract
//! with the manifest's input shape, optimised, and its output shapes are checked. A missing,
//! altered or wrong-shaped file is an error naming the file, never a panic.

use crate::error::VisionError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::prelude::*;

/// `models/manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelManifest {
    pub models: Vec<ModelEntry>,
    #[serde(skip)]
    directory: PathBuf,
}

/// Where a model came from.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelSource {
    pub registry: String,
    pub package: String,
    pub version: String,
    pub path: String,
}

/// The expected input tensor.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelInput {
    pub name: String,
    pub shape: Vec<usize>,
    pub layout: String,
    pub dtype: String,
    /// The value range pixels are normalised to, e.g. `[-1, 1]`.
    pub range: [f32; 2],
}

/// One expected output tensor.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelOutput {
    pub name: String,
    pub shape: Vec<usize>,
}

/// One model's manifest entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub source: ModelSource,
    pub licence: String,
    pub input: ModelInput,
    pub outputs: Vec<ModelOutput>,
}

impl ModelManifest {
    /// Reads `DIR/manifest.json`.
    pub fn open(directory: &Path) -> Result<Self, VisionError> {
        let path = directory.join("manifest.json");
        let text =
            std::fs::read_to_string(&path).map_err(|error| VisionError::ManifestUnreadable {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        let mut manifest: Self =
            serde_json::from_str(&text).map_err(|error| VisionError::ManifestUnreadable {
                path,
                reason: error.to_string(),
            })?;
        manifest.directory = directory.to_path_buf();
        Ok(manifest)
    }

    /// The entry for `name`.
    pub fn entry(&self, name: &str) -> Result<&ModelEntry, VisionError> {
        self.models
            .iter()
            .find(|entry| entry.name == name)
            .ok_or_else(|| VisionError::ModelNotInManifest {
                name: name.to_string(),
                manifest: self.directory.join("manifest.json"),
            })
    }

    /// Loads `name` and checks that its input shape is `expected_input` (what the calling code's
    /// pre-processing produces).
    pub fn load_expecting(
        &self,
        name: &str,
        expected_input: &[usize],
    ) -> Result<OnnxModel, VisionError> {
        let model = self.load(name)?;
        if model.entry().input.shape != expected_input {
            return Err(VisionError::ModelShapeMismatch {
                name: name.to_string(),
                what: "input shape",
                expected: expected_input.to_vec(),
                actual: model.entry().input.shape.clone(),
            });
        }
        Ok(model)
    }

    /// Loads, checks and optimises the model called `name`.
    pub fn load(&self, name: &str) -> Result<OnnxModel, VisionError> {
        let entry = self.entry(name)?;
        OnnxModel::load(&self.directory.join(&entry.file), entry)
    }
}

/// A loaded, optimised tract plan plus its manifest entry.
///
/// It keeps one tract run state and one input tensor and reuses them for every frame, instead
/// of setting up a fresh state (and its per-node op states) and allocating a fresh input per run:
/// pre-processing writes each frame's pixels straight into the kept input ([`Self::run_with`]),
/// memory the previous run already touched, rather than into a new buffer that is then copied
/// (600 KB for hand landmarks). A clone starts with its own; if two threads run the same
/// instance at once, the one that finds it busy makes a fresh one.
#[derive(Debug)]
pub struct OnnxModel {
    entry: ModelEntry,
    plan: Arc<TypedRunnableModel>,
    session: std::sync::Mutex<Option<Session>>,
}

/// What one run needs besides the plan: tract's run state, and the input tensor. tract drops
/// its references to the input at the end of each run, so between runs the `Arc` is ours alone
/// and the tensor can be written in place.
#[derive(Debug)]
struct Session {
    state: TypedSimpleState,
    input: Arc<Tensor>,
}

impl Clone for OnnxModel {
    fn clone(&self) -> Self {
        Self {
            entry: self.entry.clone(),
            plan: Arc::clone(&self.plan),
            session: std::sync::Mutex::new(None),
        }
    }
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl OnnxModel {
    /// Loads `path`, checking it against `entry` (sha256, input and output shapes).
    pub fn load(path: &Path, entry: &ModelEntry) -> Result<Self, VisionError> {
        let bytes = std::fs::read(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => VisionError::ModelMissing {
                path: path.to_path_buf(),
            },
            _ => VisionError::ModelInvalid {
                path: path.to_path_buf(),
                reason: error.to_string(),
            },
        })?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(&entry.sha256) {
            return Err(VisionError::ModelChecksumMismatch {
                path: path.to_path_buf(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
        Self::from_bytes(&bytes, entry).map_err(|error| match error {
            VisionError::Inference { reason, .. } => VisionError::ModelInvalid {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// Parses and optimises ONNX `bytes` for `entry`, without the checksum check (used by
    /// [`Self::load`] and by tests of malformed models).
    pub fn from_bytes(bytes: &[u8], entry: &ModelEntry) -> Result<Self, VisionError> {
        let invalid = |error: TractError| VisionError::Inference {
            name: entry.name.clone(),
            reason: format!("{error:#}"),
        };
        let mut reader = bytes;
        let input_fact = f32::fact(entry.input.shape.as_slice());
        let plan = tract_onnx::onnx()
            .model_for_read(&mut reader)
            .map_err(invalid)?
            .with_input_fact(0, input_fact.into())
            .map_err(invalid)?
            .into_optimized()
            .map_err(invalid)?
            .into_runnable()
            .map_err(invalid)?;
        let model = Self {
            entry: entry.clone(),
            plan,
            session: std::sync::Mutex::new(None),
        };
        model.check_outputs()?;
        Ok(model)
    }

    fn check_outputs(&self) -> Result<(), VisionError> {
        let graph = self.plan.model();
        let actual_count = graph.outputs.len();
        if actual_count != self.entry.outputs.len() {
            return Err(VisionError::ModelShapeMismatch {
                name: self.entry.name.clone(),
                what: "output count",
                expected: vec![self.entry.outputs.len()],
                actual: vec![actual_count],
            });
        }
        for (index, expected) in self.entry.outputs.iter().enumerate() {
            let fact = graph
                .output_fact(index)
                .map_err(|error| VisionError::Inference {
                    name: self.entry.name.clone(),
                    reason: format!("{error:#}"),
                })?;
            let actual: Vec<usize> = fact
                .shape
                .as_concrete()
                .map(<[usize]>::to_vec)
                .unwrap_or_default();
            if actual != expected.shape {
                return Err(VisionError::ModelShapeMismatch {
                    name: self.entry.name.clone(),
                    what: "output shape",
                    expected: expected.shape.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// The manifest entry this model was loaded from.
    pub fn entry(&self) -> &ModelEntry {
        &self.entry
    }

    /// The optimised tract plan (for [`crate::profile`]).
    pub(crate) fn plan(&self) -> &Arc<TypedRunnableModel> {
        &self.plan
    }

    /// Runs the model on one input tensor laid out as the manifest's input shape and returns
    /// every output flattened, in manifest order.
    pub fn run(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, VisionError> {
        let expected: usize = self.entry.input.shape.iter().product();
        if input.len() != expected {
            return Err(VisionError::Inference {
                name: self.entry.name.clone(),
                reason: format!(
                    "the input holds {} values; the model's input shape {:?} takes {expected}",
                    input.len(),
                    self.entry.input.shape
                ),
            });
        }
        self.run_with(|slot| slot.copy_from_slice(input))
    }

    /// Runs the model on the input `fill` writes, and returns every output flattened, in
    /// manifest order. `fill` gets the model's input tensor (the manifest's input shape,
    /// row-major) as it was left by the previous run on this instance, its input then, so code
    /// that fills every value need not clear it first; a fresh instance's starts as zeros.
    pub fn run_with(&self, fill: impl FnOnce(&mut [f32])) -> Result<Vec<Vec<f32>>, VisionError> {
        let failed = |error: TractError| VisionError::Inference {
            name: self.entry.name.clone(),
            reason: format!("{error:#}"),
        };
        let outputs = match self.session.try_lock() {
            Ok(mut slot) => {
                // Taken out for the run: a run that fails leaves its session behind.
                let mut session = match slot.take() {
                    Some(session) => session,
                    None => self.new_session().map_err(failed)?,
                };
                let outputs = Self::run_session(&mut session, fill).map_err(failed)?;
                *slot = Some(session);
                outputs
            }
            // Busy in another thread (or poisoned by a panic there): a session of our own.
            Err(_) => {
                let mut session = self.new_session().map_err(failed)?;
                Self::run_session(&mut session, fill).map_err(failed)?
            }
        };
        outputs
            .iter()
            .map(|output| {
                let view = output.to_plain_array_view::<f32>().map_err(failed)?;
                Ok(view.iter().copied().collect())
            })
            .collect()
    }

    fn new_session(&self) -> TractResult<Session> {
        Ok(Session {
            state: self.plan.spawn()?,
            input: Arc::new(Tensor::zero::<f32>(&self.entry.input.shape)?),
        })
    }

    fn run_session(
        session: &mut Session,
        fill: impl FnOnce(&mut [f32]),
    ) -> TractResult<TVec<TValue>> {
        // tract let go of the last run's input when that run ended; should anything still hold
        // it, this run writes a copy instead of the tensor under it.
        let mut input = Arc::make_mut(&mut session.input).to_plain_array_view_mut::<f32>()?;
        match input.as_slice_mut() {
            Some(values) => fill(values),
            None => return Err(TractError::msg("the input tensor is not contiguous")),
        }
        drop(input);
        session
            .state
            .run(tvec!(TValue::from_const(Arc::clone(&session.input))))
    }
}
