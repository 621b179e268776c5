//! Camera frames. A [`Frame`] is immutable and cheap to clone (the pixels are shared).

use crate::error::VisionError;
use image::RgbImage;
use std::sync::Arc;

/// Largest accepted frame side, in pixels. Larger frames are rejected rather than risking
/// unbounded memory on a bad input.
pub const MAX_FRAME_SIDE: u32 = 8192;

/// One RGB frame from a camera or a replay.
#[derive(Debug, Clone)]
pub struct Frame {
    sequence: u64,
    captured_at_ms: u64,
    pixels: Arc<RgbImage>,
}

impl Frame {
    /// A frame with its sequence number and capture time in milliseconds since its source
    /// started. Rejects empty and oversized images.
    pub fn new(sequence: u64, captured_at_ms: u64, pixels: RgbImage) -> Result<Self, VisionError> {
        let (width, height) = pixels.dimensions();
        if width == 0 || height == 0 || width > MAX_FRAME_SIDE || height > MAX_FRAME_SIDE {
            return Err(VisionError::FrameSize {
                width,
                height,
                max: MAX_FRAME_SIDE,
            });
        }
        Ok(Self {
            sequence,
            captured_at_ms,
            pixels: Arc::new(pixels),
        })
    }

    /// Reads a still image (JPEG or PNG) as frame 0.
    pub fn from_image_file(path: &std::path::Path) -> Result<Self, VisionError> {
        let pixels = image::open(path)
            .map_err(|error| VisionError::ImageUnreadable {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?
            .to_rgb8();
        Self::new(0, 0, pixels)
    }

    /// Position of this frame in its source, starting at 0.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Capture time in milliseconds since the source started; strictly increasing per source.
    pub fn captured_at_ms(&self) -> u64 {
        self.captured_at_ms
    }

    /// The pixels.
    pub fn pixels(&self) -> &RgbImage {
        &self.pixels
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.pixels.width()
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.pixels.height()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_huge_frames_are_rejected() {
        assert!(matches!(
            Frame::new(0, 0, RgbImage::new(0, 10)),
            Err(VisionError::FrameSize {
                width: 0,
                height: 10,
                ..
            })
        ));
        assert!(matches!(
            Frame::new(0, 0, RgbImage::new(MAX_FRAME_SIDE + 1, 1)),
            Err(VisionError::FrameSize { .. })
        ));
        let frame = Frame::new(3, 40, RgbImage::new(2, 1)).unwrap();
        assert_eq!(
            (frame.sequence(), frame.captured_at_ms(), frame.width()),
            (3, 40, 2)
        );
    }
}
