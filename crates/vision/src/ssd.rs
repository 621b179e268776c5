//! Pure pieces shared by MediaPipe's SSD detectors (BlazeFace, palm detection): the letterboxed
//! input tensor, anchor generation and decoding of regressors + score logits.

use crate::geometry::{Border, BoundingBox, Letterbox, Point, ScoredBox, resample, resample_into};
use image::RgbImage;

/// The layout of one SSD model's anchors and outputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsdLayout {
    /// Square input side in pixels; also the regressors' coordinate scale.
    pub input_side: u32,
    /// Layer strides; consecutive equal strides share one grid (two anchors per layer per cell:
    /// aspect ratio 1 plus the interpolated scale; anchor size fixed at 1).
    pub strides: &'static [u32],
    pub keypoints: usize,
}

impl SsdLayout {
    /// Values per anchor in the regressor output: box (4) + 2 per keypoint.
    pub fn values_per_anchor(&self) -> usize {
        4 + 2 * self.keypoints
    }
}

/// An anchor centre in normalised model coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub x_center: f32,
    pub y_center: f32,
}

/// MediaPipe's `SsdAnchorsCalculator` with `fixed_anchor_size`, offsets 0.5 and
/// `interpolated_scale_aspect_ratio` 1.
pub fn anchors(layout: &SsdLayout) -> Vec<Anchor> {
    let mut anchors = Vec::new();
    let mut layer = 0;
    while layer < layout.strides.len() {
        let stride = layout.strides[layer];
        let mut anchors_per_cell = 0;
        while layer < layout.strides.len() && layout.strides[layer] == stride {
            anchors_per_cell += 2;
            layer += 1;
        }
        let cells = layout.input_side.div_ceil(stride);
        for row in 0..cells {
            for column in 0..cells {
                for _ in 0..anchors_per_cell {
                    anchors.push(Anchor {
                        x_center: (column as f32 + 0.5) / cells as f32,
                        y_center: (row as f32 + 0.5) / cells as f32,
                    });
                }
            }
        }
    }
    anchors
}

const SCORE_CLIPPING: f32 = 100.0;

/// Decodes regressors and score logits into boxes in normalised model coordinates, keeping
/// scores ≥ `min_score` (sigmoid of the logit clipped to ±100; NaN scores are dropped).
pub fn decode(
    layout: &SsdLayout,
    anchors: &[Anchor],
    regressors: &[f32],
    logits: &[f32],
    min_score: f32,
) -> Vec<ScoredBox> {
    let scale = layout.input_side as f32;
    anchors
        .iter()
        .zip(regressors.chunks_exact(layout.values_per_anchor()))
        .zip(logits)
        .filter_map(|((anchor, raw), logit)| {
            let score = 1.0 / (1.0 + (-logit.clamp(-SCORE_CLIPPING, SCORE_CLIPPING)).exp());
            if score
                .partial_cmp(&min_score)
                .is_none_or(|order| order.is_lt())
            {
                return None;
            }
            let center = Point {
                x: raw[0] / scale + anchor.x_center,
                y: raw[1] / scale + anchor.y_center,
            };
            let bounds = BoundingBox::from_center(center, raw[2] / scale, raw[3] / scale);
            let keypoints = (0..layout.keypoints)
                .map(|index| Point {
                    x: raw[4 + 2 * index] / scale + anchor.x_center,
                    y: raw[5 + 2 * index] / scale + anchor.y_center,
                })
                .collect();
            Some(ScoredBox {
                bounds,
                keypoints,
                score,
            })
        })
        .collect()
}

/// Letterboxes `pixels` into a `side`×`side` NHWC tensor with values mapped from 0..255 to
/// `range`, sampling exactly as MediaPipe's `ImageToTensorCalculator`: tensor pixel `(u, v)`
/// takes the bilinear interpolation of the source at `letterbox.to_source(u, v)`, with black
/// (0, i.e. `range[0]`) outside the image. (An area-averaging resize moves BlazeFace's boxes by
/// up to 3 % of the image.)
pub fn letterbox_tensor(
    pixels: &RgbImage,
    letterbox: &Letterbox,
    side: usize,
    range: [f32; 2],
) -> Vec<f32> {
    resample(pixels, side, Border::Zero, range, letterbox.sample_grid())
}

/// [`letterbox_tensor`] into `tensor`, a model's input ([`crate::geometry::resample_into`]).
pub fn letterbox_tensor_into(
    pixels: &RgbImage,
    letterbox: &Letterbox,
    side: usize,
    range: [f32; 2],
    tensor: &mut [f32],
) {
    resample_into(
        pixels,
        side,
        Border::Zero,
        range,
        letterbox.sample_grid(),
        tensor,
    );
}
