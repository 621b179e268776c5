//! `dosewitness faces compare IMG_A IMG_B [--json]`.

use crate::DEFAULT_MODELS_DIR;
use anyhow::Context;
use dosewitness_vision::{FaceDetector, FaceEmbedder, FaceMatch, Frame, ModelManifest};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum FacesCommand {
    /// Decide whether two photos show the same person (exactly one face each).
    Compare {
        image_a: PathBuf,
        image_b: PathBuf,
        /// Print one JSON object: {"score", "same_person", "distance", "cosine", "threshold"}.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_MODELS_DIR)]
        models_dir: PathBuf,
    },
}

pub fn run(command: FacesCommand) -> anyhow::Result<ExitCode> {
    let FacesCommand::Compare {
        image_a,
        image_b,
        json,
        models_dir,
    } = command;
    let manifest = ModelManifest::open(&models_dir)?;
    let detector = FaceDetector::load(&manifest)?;
    let embedder = FaceEmbedder::load(&manifest)?;
    let embed = |path: &Path| -> anyhow::Result<_> {
        let frame = Frame::from_image_file(path)?;
        let face = detector
            .single_face(&frame)
            .with_context(|| path.display().to_string())?;
        Ok(embedder.embed(&frame, &face)?)
    };
    let result = FaceMatch::between(&embed(&image_a)?, &embed(&image_b)?);
    let threshold = dosewitness_vision::face_embedding::SAME_PERSON_MAX_DISTANCE;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "score": result.score,
                "same_person": result.same_person,
                "distance": result.distance,
                "cosine": result.cosine,
                "threshold": {"max_distance": threshold, "min_score": 0.5},
            })
        );
    } else {
        println!(
            "{} (score {:.3}; descriptor distance {:.3}, same person below {threshold})",
            if result.same_person {
                "same person"
            } else {
                "different people"
            },
            result.score,
            result.distance,
        );
    }
    Ok(ExitCode::SUCCESS)
}
