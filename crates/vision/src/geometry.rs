//! Pure geometry: points, boxes, letterboxing and weighted non-maximum suppression.

/// A point in pixel or normalised coordinates (the caller's contract says which).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// An axis-aligned box with `x_min <= x_max` and `y_min <= y_max`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BoundingBox {
    pub x_min: f32,
    pub y_min: f32,
    pub x_max: f32,
    pub y_max: f32,
}

impl BoundingBox {
    /// A box from its centre and size.
    pub fn from_center(center: Point, width: f32, height: f32) -> Self {
        Self {
            x_min: center.x - width / 2.0,
            y_min: center.y - height / 2.0,
            x_max: center.x + width / 2.0,
            y_max: center.y + height / 2.0,
        }
    }

    pub fn width(&self) -> f32 {
        (self.x_max - self.x_min).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y_max - self.y_min).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    pub fn center(&self) -> Point {
        Point {
            x: (self.x_min + self.x_max) / 2.0,
            y: (self.y_min + self.y_max) / 2.0,
        }
    }

    /// Intersection over union; 0 when either box is empty.
    pub fn iou(&self, other: &Self) -> f32 {
        let intersection = Self {
            x_min: self.x_min.max(other.x_min),
            y_min: self.y_min.max(other.y_min),
            x_max: self.x_max.min(other.x_max),
            y_max: self.y_max.min(other.y_max),
        }
        .area();
        let union = self.area() + other.area() - intersection;
        if union <= 0.0 {
            0.0
        } else {
            intersection / union
        }
    }

    /// Maps both corners through `map`.
    pub fn map_corners(&self, map: impl Fn(Point) -> Point) -> Self {
        let top_left = map(Point {
            x: self.x_min,
            y: self.y_min,
        });
        let bottom_right = map(Point {
            x: self.x_max,
            y: self.y_max,
        });
        Self {
            x_min: top_left.x,
            y_min: top_left.y,
            x_max: bottom_right.x,
            y_max: bottom_right.y,
        }
    }
}

/// Fitting a `source` image into a `target` square or rectangle while keeping its aspect ratio,
/// centred, with padding on two sides (as MediaPipe's `keep_aspect_ratio`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Target pixels per source pixel.
    pub scale: f32,
    /// Padding left of the scaled image, in target pixels.
    pub pad_x: f32,
    /// Padding above the scaled image, in target pixels.
    pub pad_y: f32,
    pub target_width: u32,
    pub target_height: u32,
}

impl Letterbox {
    /// The letterbox that fits `source_width`×`source_height` into `target_width`×`target_height`.
    /// Both sizes must be non-zero.
    pub fn fit(
        source_width: u32,
        source_height: u32,
        target_width: u32,
        target_height: u32,
    ) -> Self {
        let scale = (target_width as f32 / source_width.max(1) as f32)
            .min(target_height as f32 / source_height.max(1) as f32);
        let scaled_width = source_width as f32 * scale;
        let scaled_height = source_height as f32 * scale;
        Self {
            scale,
            pad_x: (target_width as f32 - scaled_width) / 2.0,
            pad_y: (target_height as f32 - scaled_height) / 2.0,
            target_width,
            target_height,
        }
    }

    /// Source pixel coordinates → target pixel coordinates.
    pub fn to_target(&self, point: Point) -> Point {
        Point {
            x: point.x * self.scale + self.pad_x,
            y: point.y * self.scale + self.pad_y,
        }
    }

    /// The grid that samples the source for each target pixel: target `(u, v)` reads
    /// [`Self::to_source`]`(u, v)`.
    pub fn sample_grid(&self) -> SampleGrid {
        SampleGrid {
            origin: self.to_source(Point { x: 0.0, y: 0.0 }),
            column: Point {
                x: 1.0 / self.scale,
                y: 0.0,
            },
            row: Point {
                x: 0.0,
                y: 1.0 / self.scale,
            },
        }
    }

    /// Target pixel coordinates → source pixel coordinates (inverse of [`Self::to_target`]).
    pub fn to_source(&self, point: Point) -> Point {
        Point {
            x: (point.x - self.pad_x) / self.scale,
            y: (point.y - self.pad_y) / self.scale,
        }
    }
}

/// A square region of interest rotated by `angle` radians about its centre, as MediaPipe crops
/// faces and hands. Crop coordinates are normalised: `(0, 0)` is the crop's top-left corner and
/// `(1, 1)` its bottom-right, in the crop's own (rotated) frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotatedRect {
    pub center: Point,
    /// Side length in source pixels.
    pub side: f32,
    /// Rotation of the crop's x axis from the source's x axis, radians (positive turns x toward y).
    pub angle: f32,
}

impl RotatedRect {
    /// Normalised crop coordinates → source pixel coordinates.
    pub fn to_source(&self, crop: Point) -> Point {
        let (sin, cos) = self.angle.sin_cos();
        let x = (crop.x - 0.5) * self.side;
        let y = (crop.y - 0.5) * self.side;
        Point {
            x: self.center.x + x * cos - y * sin,
            y: self.center.y + x * sin + y * cos,
        }
    }

    /// The grid of a `side`×`side` crop of this rectangle: crop pixel `(u, v)` samples
    /// `to_source((u + offset) / side, (v + offset) / side) − offset` (see [`rotated_crop`]).
    pub fn sample_grid(&self, side: usize, offset: f32) -> SampleGrid {
        let (sin, cos) = self.angle.sin_cos();
        let step = self.side / side as f32;
        // The crop's first pixel in the rectangle's own frame, then rotated into the source.
        let first = offset * step - 0.5 * self.side;
        SampleGrid {
            origin: Point {
                x: self.center.x + first * cos - first * sin - offset,
                y: self.center.y + first * sin + first * cos - offset,
            },
            column: Point {
                x: step * cos,
                y: step * sin,
            },
            row: Point {
                x: -step * sin,
                y: step * cos,
            },
        }
    }

    /// Source pixel coordinates → normalised crop coordinates (inverse of [`Self::to_source`]).
    pub fn to_crop(&self, source: Point) -> Point {
        let (sin, cos) = self.angle.sin_cos();
        let x = source.x - self.center.x;
        let y = source.y - self.center.y;
        Point {
            x: (x * cos + y * sin) / self.side + 0.5,
            y: (-x * sin + y * cos) / self.side + 0.5,
        }
    }
}

/// What a bilinear sample outside the image reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Border {
    /// Black (0), as MediaPipe's letterbox padding.
    Zero,
    /// The nearest edge pixel, as MediaPipe's ROI crops.
    Replicate,
}

/// Where a tensor's pixel grid lands in the source image: tensor pixel `(u, v)` samples the source
/// at `origin + u·column + v·row` (source pixel centres at integer coordinates). Every crop the
/// models take (letterbox, rotated ROI) is affine, so one grid describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleGrid {
    pub origin: Point,
    /// Source step for one tensor column.
    pub column: Point,
    /// Source step for one tensor row.
    pub row: Point,
}

/// Sample coordinates are fixed-point with this many fractional bits: a crop steps across the
/// source by integer adds (no float-to-integer conversion per pixel), and 224 steps drift by
/// less than 1e-5 pixel.
const FRACTION_BITS: u32 = 24;
/// Bilinear weights keep the top 16 of those bits.
const WEIGHT_BITS: u32 = 16;

/// `value` source pixels in fixed point. Clamped to ±1e6 pixels, far outside any frame (the
/// border rule answers the same there), so stepping a whole crop cannot overflow; NaN reads 0.
fn fixed(value: f64) -> i64 {
    (value.clamp(-1.0e6, 1.0e6) * f64::from(1u32 << FRACTION_BITS)).round() as i64
}

/// A `side`×`side` NHWC RGB tensor: pixel `(u, v)` is the bilinear sample of `pixels` at
/// `grid`'s point for `(u, v)`, mapped from 0..255 to `range`. The one resampler behind every
/// model input, so all models see identically sampled pixels. Coordinates and weights are
/// fixed-point (see [`FRACTION_BITS`]): a weight is off by at most 2^-17, so a value by at most
/// 0.01 of a level from the exact bilinear sample (the tests hold it to 0.05 against an f32 walk).
pub fn resample(
    pixels: &image::RgbImage,
    side: usize,
    border: Border,
    range: [f32; 2],
    grid: SampleGrid,
) -> Vec<f32> {
    let mut tensor = vec![0.0f32; side * side * 3];
    resample_into(pixels, side, border, range, grid, &mut tensor);
    tensor
}

/// [`resample`] into `tensor`, a model's input ([`crate::model::OnnxModel::run_with`]), which
/// holds exactly `side`×`side`×3 values (checked in debug builds; the loaders check each model's
/// input shape against its pre-processing). Every value is written.
pub fn resample_into(
    pixels: &image::RgbImage,
    side: usize,
    border: Border,
    range: [f32; 2],
    grid: SampleGrid,
    tensor: &mut [f32],
) {
    debug_assert_eq!(tensor.len(), side * side * 3);
    let (width, height) = (i64::from(pixels.width()), i64::from(pixels.height()));
    let raw = pixels.as_raw();
    let level = |x: i64, y: i64, channel: usize| -> f32 {
        let (x, y) = match border {
            Border::Replicate => (x.clamp(0, width - 1), y.clamp(0, height - 1)),
            Border::Zero if x < 0 || y < 0 || x >= width || y >= height => return 0.0,
            Border::Zero => (x, y),
        };
        f32::from(raw[((y * width + x) * 3) as usize + channel])
    };
    let per_level = (range[1] - range[0]) / 255.0;
    // An interior sample is a level times 2^(2·WEIGHT_BITS) after both interpolations.
    let per_fixed_level = per_level / (1u64 << (2 * WEIGHT_BITS)) as f32;
    let weight_scale = 1.0 / (1u32 << WEIGHT_BITS) as f32;
    let row_bytes = (width * 3) as usize;
    let (step_x, step_y) = (
        fixed(f64::from(grid.column.x)),
        fixed(f64::from(grid.column.y)),
    );
    if side == 0 {
        return;
    }
    // Replicating the border is the same as clamping the sample point into the image: a point
    // up to a pixel past an edge reads two copies of the edge pixel, and so does the edge itself.
    // A clamped point is interpolated like any interior one (a point on the last row or column
    // takes its lower neighbour at full weight), so a crop reaching past the frame — a hand
    // held close fills it — costs no more than one inside. Images under 2×2 keep the border rule.
    let clamp = (border == Border::Replicate && width >= 2 && height >= 2)
        .then_some(((width - 1) << FRACTION_BITS, (height - 1) << FRACTION_BITS));
    let fraction =
        |value: i64| ((value >> (FRACTION_BITS - WEIGHT_BITS)) & ((1 << WEIGHT_BITS) - 1)) as i32;
    let inside =
        |left: i64, top: i64| left >= 0 && top >= 0 && left + 1 < width && top + 1 < height;
    for (row, out_row) in tensor.chunks_exact_mut(side * 3).enumerate() {
        let (mut x, mut y) = (
            fixed(f64::from(grid.origin.x) + row as f64 * f64::from(grid.row.x)),
            fixed(f64::from(grid.origin.y) + row as f64 * f64::from(grid.row.y)),
        );
        for out in out_row.chunks_exact_mut(3) {
            // Arithmetic shifts floor, also left of and above the image.
            let (mut left, mut top) = (x >> FRACTION_BITS, y >> FRACTION_BITS);
            let (mut fx, mut fy) = (fraction(x), fraction(y));
            if let Some((max_x, max_y)) = clamp
                && !inside(left, top)
            {
                let (clamped_x, clamped_y) = (x.clamp(0, max_x), y.clamp(0, max_y));
                (left, top) = (clamped_x >> FRACTION_BITS, clamped_y >> FRACTION_BITS);
                (fx, fy) = (fraction(clamped_x), fraction(clamped_y));
                // On the last column or row: interpolate from the neighbour before it, at full
                // weight on the edge pixel (exact in the integer path below).
                if left == width - 1 {
                    (left, fx) = (width - 2, 1 << WEIGHT_BITS);
                }
                if top == height - 1 {
                    (top, fy) = (height - 2, 1 << WEIGHT_BITS);
                }
            }
            (x, y) = (x + step_x, y + step_y);
            if inside(left, top) {
                // All four neighbours inside: integer interpolation, one conversion per value.
                let start = (top * width + left) as usize * 3;
                let upper_row = &raw[start..start + 6];
                let lower_row = &raw[start + row_bytes..start + row_bytes + 6];
                for (channel, value) in out.iter_mut().enumerate() {
                    let across = |taps: &[u8]| {
                        let (a, b) = (i32::from(taps[channel]), i32::from(taps[channel + 3]));
                        (a << WEIGHT_BITS) + (b - a) * fx
                    };
                    let (upper, lower) =
                        (i64::from(across(upper_row)), i64::from(across(lower_row)));
                    let sample = (upper << WEIGHT_BITS) + (lower - upper) * i64::from(fy);
                    *value = range[0] + sample as f32 * per_fixed_level;
                }
                continue;
            }
            let (fx, fy) = (fx as f32 * weight_scale, fy as f32 * weight_scale);
            for (channel, value) in out.iter_mut().enumerate() {
                let upper =
                    level(left, top, channel) * (1.0 - fx) + level(left + 1, top, channel) * fx;
                let lower = level(left, top + 1, channel) * (1.0 - fx)
                    + level(left + 1, top + 1, channel) * fx;
                *value = range[0] + (upper * (1.0 - fy) + lower * fy) * per_level;
            }
        }
    }
}

/// Samples `rect` from `frame` into a `side`×`side` NHWC RGB crop with values in `range`,
/// replicating the border. Crop pixel `(u, v)` samples the source at
/// `rect.to_source((u + offset) / side, (v + offset) / side) − offset`: `offset` 0.5 maps pixel
/// centres to pixel centres; 0 maps the crop's corner pixels to the rectangle's corners, as
/// MediaPipe's `ImageToTensorCalculator` (OpenCV `warpAffine`) does.
pub fn rotated_crop(
    frame: &crate::frame::Frame,
    rect: &RotatedRect,
    side: usize,
    offset: f32,
    range: [f32; 2],
) -> Vec<f32> {
    let mut crop = vec![0.0f32; side * side * 3];
    rotated_crop_into(frame, rect, side, offset, range, &mut crop);
    crop
}

/// [`rotated_crop`] into `crop`, a model's input ([`resample_into`]).
pub fn rotated_crop_into(
    frame: &crate::frame::Frame,
    rect: &RotatedRect,
    side: usize,
    offset: f32,
    range: [f32; 2],
    crop: &mut [f32],
) {
    resample_into(
        frame.pixels(),
        side,
        Border::Replicate,
        range,
        rect.sample_grid(side, offset),
        crop,
    );
}

/// A scored box with keypoints, the unit of non-maximum suppression.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredBox {
    pub bounds: BoundingBox,
    pub keypoints: Vec<Point>,
    pub score: f32,
}

/// MediaPipe's weighted NMS ("blending"): take the best remaining box, gather every remaining
/// box overlapping it by more than `iou_threshold` (itself included), and output their
/// score-weighted average with the best box's score. Clusters are disjoint, so each input box
/// contributes to exactly one output.
pub fn weighted_nms(mut boxes: Vec<ScoredBox>, iou_threshold: f32) -> Vec<ScoredBox> {
    boxes.retain(|candidate| candidate.score.is_finite());
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut output = Vec::new();
    while !boxes.is_empty() {
        let best = boxes[0].clone();
        let (cluster, rest): (Vec<ScoredBox>, Vec<ScoredBox>) = boxes
            .into_iter()
            .partition(|candidate| best.bounds.iou(&candidate.bounds) > iou_threshold);
        boxes = rest;
        let cluster = if cluster.is_empty() {
            vec![best.clone()]
        } else {
            cluster
        };
        let total: f32 = cluster.iter().map(|member| member.score).sum();
        if total <= 0.0 {
            output.push(best);
            continue;
        }
        let weighted = |value: &dyn Fn(&ScoredBox) -> f32| {
            cluster
                .iter()
                .map(|member| value(member) * member.score)
                .sum::<f32>()
                / total
        };
        let bounds = BoundingBox {
            x_min: weighted(&|member| member.bounds.x_min),
            y_min: weighted(&|member| member.bounds.y_min),
            x_max: weighted(&|member| member.bounds.x_max),
            y_max: weighted(&|member| member.bounds.y_max),
        };
        let keypoints = (0..best.keypoints.len())
            .map(|index| Point {
                x: weighted(&|member| member.keypoints.get(index).map_or(0.0, |point| point.x)),
                y: weighted(&|member| member.keypoints.get(index).map_or(0.0, |point| point.y)),
            })
            .collect();
        output.push(ScoredBox {
            bounds,
            keypoints,
            score: best.score,
        });
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn boxed(x: f32, y: f32, size: f32, score: f32) -> ScoredBox {
        ScoredBox {
            bounds: BoundingBox {
                x_min: x,
                y_min: y,
                x_max: x + size,
                y_max: y + size,
            },
            keypoints: vec![Point { x, y }],
            score,
        }
    }

    /// Bilinear sampling as written before the fixed-point sampler: every tap through the border
    /// rule, in f32, with `f32::floor` and `RotatedRect::to_source` per pixel.
    fn reference_crop(
        pixels: &image::RgbImage,
        rect: &RotatedRect,
        side: usize,
        offset: f32,
        border: Border,
    ) -> Vec<f32> {
        let (width, height) = (i64::from(pixels.width()), i64::from(pixels.height()));
        let sample = |x: i64, y: i64, channel: usize| -> f32 {
            let (x, y) = match border {
                Border::Replicate => (x.clamp(0, width - 1), y.clamp(0, height - 1)),
                Border::Zero if x < 0 || y < 0 || x >= width || y >= height => return 0.0,
                Border::Zero => (x, y),
            };
            f32::from(pixels.as_raw()[((y * width + x) * 3) as usize + channel])
        };
        let mut out = Vec::new();
        for row in 0..side {
            for column in 0..side {
                let source = rect.to_source(Point {
                    x: (column as f32 + offset) / side as f32,
                    y: (row as f32 + offset) / side as f32,
                });
                let (x, y) = (source.x - offset, source.y - offset);
                let (left, top) = (x.floor(), y.floor());
                let (fx, fy) = (x - left, y - top);
                let (left, top) = (left as i64, top as i64);
                for channel in 0..3 {
                    let upper = sample(left, top, channel) * (1.0 - fx)
                        + sample(left + 1, top, channel) * fx;
                    let lower = sample(left, top + 1, channel) * (1.0 - fx)
                        + sample(left + 1, top + 1, channel) * fx;
                    out.push((upper * (1.0 - fy) + lower * fy) / 255.0);
                }
            }
        }
        out
    }

    proptest! {
        /// The fixed-point sampler (its interior fast path, the sample grid) samples what the
        /// per-pixel f32 border-rule walk samples, inside, across and outside the image.
        #[test]
        fn rotated_crop_matches_the_reference_sampler(
            cx in -40.0f32..90.0, cy in -40.0f32..70.0, side in 2.0f32..120.0,
            angle in -3.2f32..3.2, offset in prop::sample::select(vec![0.0f32, 0.5]),
        ) {
            let pixels = image::RgbImage::from_fn(50, 30, |x, y| {
                image::Rgb([(x * 5) as u8, (y * 8) as u8, ((x * y) % 251) as u8])
            });
            let frame = crate::frame::Frame::new(0, 0, pixels.clone()).unwrap();
            let rect = RotatedRect { center: Point { x: cx, y: cy }, side, angle };
            let ours = rotated_crop(&frame, &rect, 16, offset, [0.0, 1.0]);
            let reference = reference_crop(&pixels, &rect, 16, offset, Border::Replicate);
            for (index, (a, b)) in ours.iter().zip(&reference).enumerate() {
                // 0.05 of a level: the fixed-point weights are finer than that, and the
                // reference's own f32 rounding of the sample point is most of what is left.
                prop_assert!((a - b).abs() <= 0.05 / 255.0, "value {index}: {a} vs {b}");
            }
        }
    }

    /// A grid on whole pixels reads the pixels themselves, the last row and column included,
    /// and past the image the nearest edge pixel (the clamped sample point takes the integer path).
    #[test]
    fn whole_pixel_grids_read_pixels_and_replicate_the_edges() {
        let pixels = image::RgbImage::from_fn(6, 5, |x, y| {
            image::Rgb([
                (x * 40 + 3) as u8,
                (y * 50 + 1) as u8,
                ((x + 2 * y) * 17) as u8,
            ])
        });
        let grid = SampleGrid {
            origin: Point { x: -3.0, y: -4.0 },
            column: Point { x: 1.0, y: 0.0 },
            row: Point { x: 0.0, y: 1.0 },
        };
        let side = 13;
        let crop = resample(&pixels, side, Border::Replicate, [0.0, 255.0], grid);
        for v in 0..side {
            for u in 0..side {
                let (x, y) = ((u as i64 - 3).clamp(0, 5), (v as i64 - 4).clamp(0, 4));
                let expected = pixels.get_pixel(x as u32, y as u32).0;
                for channel in 0..3 {
                    let value = crop[(v * side + u) * 3 + channel];
                    assert!(
                        (value - f32::from(expected[channel])).abs() < 1e-3,
                        "({u}, {v}) channel {channel}: {value} vs {}",
                        expected[channel]
                    );
                }
            }
        }
    }

    /// A rectangle no tracker should produce (NaN centre, infinite or huge side, NaN angle)
    /// still yields a crop of edge pixels in range, not a panic or an overflow: the fixed-point
    /// grid clamps its coordinates far outside the frame.
    #[test]
    fn degenerate_rectangles_crop_edge_pixels_without_panicking() {
        let pixels =
            image::RgbImage::from_fn(8, 6, |x, y| image::Rgb([(x * 30) as u8, (y * 40) as u8, 7]));
        let frame = crate::frame::Frame::new(0, 0, pixels).unwrap();
        let far = Point {
            x: 1.0e30,
            y: -1.0e30,
        };
        for rect in [
            RotatedRect {
                center: Point {
                    x: f32::NAN,
                    y: 3.0,
                },
                side: 10.0,
                angle: 0.3,
            },
            RotatedRect {
                center: Point { x: 4.0, y: 3.0 },
                side: f32::INFINITY,
                angle: 0.3,
            },
            RotatedRect {
                center: far,
                side: 1.0e30,
                angle: 1.0,
            },
            RotatedRect {
                center: Point { x: 4.0, y: 3.0 },
                side: 10.0,
                angle: f32::NAN,
            },
        ] {
            let crop = rotated_crop(&frame, &rect, 224, 0.0, [-1.0, 1.0]);
            assert_eq!(crop.len(), 224 * 224 * 3);
            assert!(crop.iter().all(|v| (-1.0..=1.0).contains(v)), "{rect:?}");
        }
        // Far to the right and above: every sample replicates the top-right pixel.
        let crop = rotated_crop(
            &frame,
            &RotatedRect {
                center: far,
                side: 1.0,
                angle: 0.0,
            },
            4,
            0.0,
            [0.0, 255.0],
        );
        assert!(
            crop.chunks(3).all(|rgb| rgb == [210.0, 0.0, 7.0]),
            "{crop:?}"
        );
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = boxed(0.0, 0.0, 2.0, 1.0).bounds;
        let b = boxed(1.0, 0.0, 2.0, 1.0).bounds;
        assert!((a.iou(&b) - 2.0 / 6.0).abs() < 1e-6);
        assert_eq!(a.iou(&boxed(5.0, 5.0, 1.0, 1.0).bounds), 0.0);
        assert_eq!(a.iou(&a), 1.0);
    }

    #[test]
    fn weighted_nms_blends_a_cluster_and_keeps_separate_faces() {
        let output = weighted_nms(
            vec![
                boxed(0.0, 0.0, 10.0, 0.9),
                boxed(1.0, 0.0, 10.0, 0.1),
                boxed(50.0, 50.0, 10.0, 0.6),
            ],
            0.3,
        );
        assert_eq!(output.len(), 2);
        assert_eq!(output[0].score, 0.9);
        assert!(
            (output[0].bounds.x_min - 0.1).abs() < 1e-5,
            "{:?}",
            output[0].bounds
        );
        assert_eq!(output[1].bounds.x_min, 50.0);
    }

    proptest! {
        #[test]
        fn letterbox_round_trips(
            source_width in 1u32..4000, source_height in 1u32..4000,
            target in 16u32..512, fx in 0.0f32..1.0, fy in 0.0f32..1.0,
        ) {
            let letterbox = Letterbox::fit(source_width, source_height, target, target);
            let point = Point { x: fx * source_width as f32, y: fy * source_height as f32 };
            let inside = letterbox.to_target(point);
            prop_assert!(inside.x >= -1e-3 && inside.x <= target as f32 + 1e-3);
            prop_assert!(inside.y >= -1e-3 && inside.y <= target as f32 + 1e-3);
            let back = letterbox.to_source(inside);
            let tolerance = 1e-3 * source_width.max(source_height) as f32;
            prop_assert!((back.x - point.x).abs() <= tolerance, "{:?} vs {:?}", back, point);
            prop_assert!((back.y - point.y).abs() <= tolerance, "{:?} vs {:?}", back, point);
        }

        #[test]
        fn rotated_crops_round_trip(
            cx in -500.0f32..500.0, cy in -500.0f32..500.0, side in 1.0f32..400.0,
            angle in -3.2f32..3.2, u in 0.0f32..1.0, v in 0.0f32..1.0,
        ) {
            let rect = RotatedRect { center: Point { x: cx, y: cy }, side, angle };
            let crop = Point { x: u, y: v };
            let back = rect.to_crop(rect.to_source(crop));
            prop_assert!((back.x - u).abs() < 1e-3 && (back.y - v).abs() < 1e-3, "{:?} -> {:?}", crop, back);
            // The crop centre is the rect's centre, and corners lie side/√2 from it.
            let center = rect.to_source(Point { x: 0.5, y: 0.5 });
            prop_assert!((center.x - cx).abs() < 1e-3 && (center.y - cy).abs() < 1e-3);
            let corner = rect.to_source(Point { x: 0.0, y: 0.0 });
            let distance = ((corner.x - cx).powi(2) + (corner.y - cy).powi(2)).sqrt();
            prop_assert!((distance - side / 2f32.sqrt()).abs() < 1e-2 * side.max(1.0));
        }

        #[test]
        fn nms_keeps_the_best_and_never_invents_boxes(
            raw in proptest::collection::vec((0.0f32..100.0, 0.0f32..100.0, 1.0f32..40.0, 0.01f32..1.0), 1..40),
            threshold in 0.1f32..0.9,
        ) {
            let boxes: Vec<ScoredBox> = raw.iter().map(|(x, y, size, score)| boxed(*x, *y, *size, *score)).collect();
            let best = boxes.iter().map(|candidate| candidate.score).fold(f32::MIN, f32::max);
            let output = weighted_nms(boxes.clone(), threshold);
            prop_assert!(!output.is_empty() && output.len() <= boxes.len());
            prop_assert_eq!(output[0].score, best);
            // Every output score is an input score, and outputs come best first.
            for survivor in &output {
                prop_assert!(boxes.iter().any(|candidate| candidate.score == survivor.score));
            }
            prop_assert!(output.windows(2).all(|pair| pair[0].score >= pair[1].score));
            // Cluster leaders (the unblended best boxes) overlap each other by at most the threshold.
            let leaders: Vec<&ScoredBox> = output.iter()
                .filter_map(|survivor| boxes.iter().find(|candidate| candidate.score == survivor.score))
                .collect();
            for (index, first) in leaders.iter().enumerate() {
                for second in &leaders[index + 1..] {
                    if first.score != second.score {
                        prop_assert!(first.bounds.iou(&second.bounds) <= threshold + 1e-6);
                    }
                }
            }
        }
    }
}
