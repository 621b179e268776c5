//! Frame sources for the dose session.
//!
//! [`FrameSource`] is the seam between the camera and everything above it. This crate ships the
//! [`ReplaySource`], which plays a recorded clip (`replay.json` + JPEG/PNG frames) with its
//! original capture times, deterministically; it is what tests and the demo use on machines
//! without a camera. The live camera source (nokhwa) arrives with the patient app and will be the
//! default there; a replay is never the default source of the app.

use dosewitness_vision::{Frame, VisionError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Errors reading frames. They name files, never image content.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("replay manifest {path} could not be read: {reason}")]
    ReplayManifest { path: PathBuf, reason: String },
    #[error("replay {path} lists no frames")]
    EmptyReplay { path: PathBuf },
    #[error("replay {path}: capture times must strictly increase (frame {index} at {t_ms} ms)")]
    TimesNotIncreasing {
        path: PathBuf,
        index: usize,
        t_ms: u64,
    },
    #[error("replay frame {path} could not be read: {reason}")]
    UnreadableFrame { path: PathBuf, reason: String },
    #[error("replay frame {path} is not a usable frame")]
    InvalidFrame { path: PathBuf, source: VisionError },
}

/// A source of frames with strictly increasing capture times.
pub trait FrameSource: Send + std::fmt::Debug {
    /// The next frame, or `None` when the source has ended.
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError>;
    /// A short description for progress output (no PHI): e.g. `replay "demo" (40 frames)`.
    fn describe(&self) -> String;
}

#[derive(Debug, Clone, Deserialize)]
struct ReplayFrameEntry {
    file: String,
    t_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct ReplayManifest {
    name: String,
    frames: Vec<ReplayFrameEntry>,
}

/// Plays a recorded clip from a directory holding `replay.json` and its frame images.
#[derive(Debug)]
pub struct ReplaySource {
    directory: PathBuf,
    manifest: ReplayManifest,
    position: usize,
}

impl ReplaySource {
    /// Opens the replay in `directory`, validating its manifest (frames are read lazily).
    pub fn open(directory: &Path) -> Result<Self, CaptureError> {
        let path = directory.join("replay.json");
        let text =
            std::fs::read_to_string(&path).map_err(|error| CaptureError::ReplayManifest {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        let manifest: ReplayManifest =
            serde_json::from_str(&text).map_err(|error| CaptureError::ReplayManifest {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        if manifest.frames.is_empty() {
            return Err(CaptureError::EmptyReplay { path });
        }
        for (index, pair) in manifest.frames.windows(2).enumerate() {
            if pair[1].t_ms <= pair[0].t_ms {
                return Err(CaptureError::TimesNotIncreasing {
                    path,
                    index: index + 1,
                    t_ms: pair[1].t_ms,
                });
            }
        }
        Ok(Self {
            directory: directory.to_path_buf(),
            manifest,
            position: 0,
        })
    }

    /// Number of frames in the replay.
    pub fn len(&self) -> usize {
        self.manifest.frames.len()
    }

    /// True when the replay has no frames (never, for an opened replay).
    pub fn is_empty(&self) -> bool {
        self.manifest.frames.is_empty()
    }

    /// The replay's name from its manifest.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

impl FrameSource for ReplaySource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let Some(entry) = self.manifest.frames.get(self.position) else {
            return Ok(None);
        };
        let path = self.directory.join(&entry.file);
        let sequence = self.position as u64;
        self.position += 1;
        let pixels = image::open(&path)
            .map_err(|error| CaptureError::UnreadableFrame {
                path: path.clone(),
                reason: error.to_string(),
            })?
            .to_rgb8();
        Frame::new(sequence, entry.t_ms, pixels)
            .map(Some)
            .map_err(|source| CaptureError::InvalidFrame { path, source })
    }

    fn describe(&self) -> String {
        format!(
            "replay {:?} ({} frames)",
            self.manifest.name,
            self.manifest.frames.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_replay(directory: &Path, manifest: &str) {
        std::fs::write(directory.join("replay.json"), manifest).unwrap();
    }

    #[test]
    fn plays_frames_in_order_with_their_capture_times() {
        let directory = tempfile::tempdir().unwrap();
        for (index, shade) in [10u8, 200].iter().enumerate() {
            image::RgbImage::from_pixel(4, 3, image::Rgb([*shade; 3]))
                .save(directory.path().join(format!("f{index}.png")))
                .unwrap();
        }
        write_replay(
            directory.path(),
            r#"{"name":"t","frames":[{"file":"f0.png","t_ms":0},{"file":"f1.png","t_ms":33}]}"#,
        );
        let mut replay = ReplaySource::open(directory.path()).unwrap();
        assert_eq!(replay.len(), 2);
        let first = replay.next_frame().unwrap().unwrap();
        let second = replay.next_frame().unwrap().unwrap();
        assert_eq!((first.sequence(), first.captured_at_ms()), (0, 0));
        assert_eq!((second.sequence(), second.captured_at_ms()), (1, 33));
        assert_eq!(second.pixels().get_pixel(0, 0)[0], 200);
        assert!(replay.next_frame().unwrap().is_none());
    }

    #[test]
    fn a_corrupt_frame_is_an_error_naming_the_file() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(
            directory.path().join("bad.jpg"),
            b"\xff\xd8 not really a jpeg",
        )
        .unwrap();
        write_replay(
            directory.path(),
            r#"{"name":"t","frames":[{"file":"bad.jpg","t_ms":0}]}"#,
        );
        let mut replay = ReplaySource::open(directory.path()).unwrap();
        let error = replay.next_frame().unwrap_err();
        assert!(
            matches!(error, CaptureError::UnreadableFrame { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("bad.jpg"), "{error}");
    }

    #[test]
    fn bad_manifests_are_rejected() {
        let directory = tempfile::tempdir().unwrap();
        assert!(matches!(
            ReplaySource::open(directory.path()),
            Err(CaptureError::ReplayManifest { .. })
        ));
        write_replay(directory.path(), r#"{"name":"t","frames":[]}"#);
        assert!(matches!(
            ReplaySource::open(directory.path()),
            Err(CaptureError::EmptyReplay { .. })
        ));
        write_replay(
            directory.path(),
            r#"{"name":"t","frames":[{"file":"a","t_ms":5},{"file":"b","t_ms":5}]}"#,
        );
        assert!(matches!(
            ReplaySource::open(directory.path()),
            Err(CaptureError::TimesNotIncreasing { index: 1, .. })
        ));
    }
}
