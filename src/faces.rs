//! `dosewitness faces compare IMG_A IMG_B [--json]`.

use crate::DEFAULT_MODELS_DIR;
use anyhow::Context;
use anyhow::bail;
use dosewitness_vision::face_embedding;
use dosewitness_vision::face_quality::{FaceQuality, QualityProblem};
use dosewitness_vision::{
    FaceDetector, FaceEmbedder, FaceEmbedding, FaceMatch, FaceTemplate, Frame, ModelManifest,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum FacesCommand {
    /// Enrol a face from at least three photos (JPEG/PNG) in DIR; each must show one frontal,
    /// sharp, well-lit face, all of the same person. Writes a template (biometric data: keep it
    /// as protected as the device store).
    Enroll {
        dir: PathBuf,
        /// Where to write the template (default DIR/face-template.json; never overwritten).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_MODELS_DIR)]
        models_dir: PathBuf,
    },
    /// Check whether a photo shows the enrolled person.
    Verify {
        template: PathBuf,
        image: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_MODELS_DIR)]
        models_dir: PathBuf,
    },
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

struct FaceModels {
    detector: FaceDetector,
    embedder: FaceEmbedder,
}

impl FaceModels {
    fn load(models_dir: &Path) -> anyhow::Result<Self> {
        let manifest = ModelManifest::open(models_dir)?;
        Ok(Self {
            detector: FaceDetector::load(&manifest)?,
            embedder: FaceEmbedder::load(&manifest)?,
        })
    }

    /// The descriptor of the one face in the photo at `path`, and the photo's quality problems.
    fn embed(&self, path: &Path) -> anyhow::Result<(FaceEmbedding, Vec<QualityProblem>)> {
        let frame = Frame::from_image_file(path)?;
        let face = self
            .detector
            .single_face(&frame)
            .with_context(|| path.display().to_string())?;
        let chip = face_embedding::face_chip(&frame, &face_embedding::face_region(&face));
        let problems = FaceQuality::measure(&face, &chip, 150).problems();
        Ok((self.embedder.embed(&frame, &face)?, problems))
    }
}

fn print_match(result: &FaceMatch, json: bool) {
    let threshold = face_embedding::SAME_PERSON_MAX_DISTANCE;
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
}

pub fn run(command: FacesCommand) -> anyhow::Result<ExitCode> {
    match command {
        FacesCommand::Compare {
            image_a,
            image_b,
            json,
            models_dir,
        } => {
            let models = FaceModels::load(&models_dir)?;
            let (a, _) = models.embed(&image_a)?;
            let (b, _) = models.embed(&image_b)?;
            print_match(&FaceMatch::between(&a, &b), json);
        }
        FacesCommand::Enroll {
            dir,
            out,
            models_dir,
        } => enroll(&dir, out, &models_dir)?,
        FacesCommand::Verify {
            template,
            image,
            json,
            models_dir,
        } => {
            let models = FaceModels::load(&models_dir)?;
            let text = std::fs::read_to_string(&template)
                .with_context(|| format!("reading {}", template.display()))?;
            let template: FaceTemplate = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a face template", template.display()))?;
            let (probe, _) = models.embed(&image)?;
            print_match(&template.verify(&models.embedder, &probe)?, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn enroll(dir: &Path, out: Option<PathBuf>, models_dir: &Path) -> anyhow::Result<()> {
    let out = out.unwrap_or_else(|| dir.join("face-template.json"));
    if out.exists() {
        bail!("{} already exists; choose another --out", out.display());
    }
    let models = FaceModels::load(models_dir)?;
    let mut photos: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .and_then(|extension| extension.to_str())
                .is_some_and(|extension| {
                    matches!(
                        extension.to_ascii_lowercase().as_str(),
                        "jpg" | "jpeg" | "png"
                    )
                })
        })
        .collect();
    photos.sort();
    let mut accepted = Vec::new();
    for path in &photos {
        let name = path
            .file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
        match models.embed(path) {
            Ok((embedding, problems)) if problems.is_empty() => {
                eprintln!("  {name}: ok");
                accepted.push(embedding);
            }
            Ok((_, problems)) => {
                let advice: Vec<&str> = problems.iter().map(|problem| problem.advice()).collect();
                eprintln!("  {name}: refused: {}", advice.join("; "));
            }
            Err(error) => eprintln!("  {name}: refused: {error:#}"),
        }
    }
    let template = FaceTemplate::enrol(&models.embedder, &accepted)?;
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    let file = file
        .open(&out)
        .with_context(|| format!("creating {}", out.display()))?;
    serde_json::to_writer(file, &template)?;
    println!(
        "enrolled from {} photos; template written to {}",
        accepted.len(),
        out.display()
    );
    Ok(())
}
