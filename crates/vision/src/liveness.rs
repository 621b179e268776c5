//! Passive liveness over a dose session: a live face moves non-rigidly (blinks, talks, turns);
//! a photo or a screen held to the camera moves only rigidly (shift, scale, in-plane turn).
//!
//! [`LivenessTracker`] accumulates per-frame face landmarks and signals and decides *live* when
//! it has seen a blink, or the mouth opening and closing, or the head turning — each backed by
//! non-rigid motion of the landmarks (the residual after the best similarity transform between
//! frames), which a moved photo does not produce.

use crate::face_mesh::FaceLandmarks;
use crate::geometry::Point;
use crate::signals::FaceSignals;

/// Eye aspect ratio below which an eye counts as closed, and above which as open.
pub const EYES_CLOSED_BELOW: f32 = 0.18;
pub const EYES_OPEN_ABOVE: f32 = 0.24;
/// Change of mouth openness that counts as the mouth moving.
pub const MOUTH_MOVEMENT: f32 = 0.15;
/// Range of head yaw, in degrees, that counts as the head turning.
pub const HEAD_TURN_DEG: f32 = 15.0;
/// Non-rigid residual (share of the face width) a live face reaches at least once.
pub const NON_RIGID_MIN: f32 = 0.025;

/// What the session has seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LivenessEvidence {
    pub frames: u32,
    pub blink_seen: bool,
    pub mouth_range: f32,
    pub yaw_range_deg: f32,
    /// Largest landmark residual between consecutive frames after removing the best similarity
    /// transform, as a share of the face width.
    pub non_rigid_max: f32,
}

impl LivenessEvidence {
    /// Live when non-rigid motion was seen together with a blink, a moving mouth or a head turn.
    pub fn is_live(&self) -> bool {
        self.non_rigid_max >= NON_RIGID_MIN
            && (self.blink_seen
                || self.mouth_range >= MOUTH_MOVEMENT
                || self.yaw_range_deg >= HEAD_TURN_DEG)
    }

    /// A score in `[0, 1]` for the dose event: how far past the thresholds the evidence went.
    pub fn score(&self) -> f64 {
        if !self.is_live() {
            return 0.0;
        }
        let strongest = [
            if self.blink_seen { 1.0 } else { 0.0 },
            f64::from(self.mouth_range / (2.0 * MOUTH_MOVEMENT)),
            f64::from(self.yaw_range_deg / (2.0 * HEAD_TURN_DEG)),
        ]
        .into_iter()
        .fold(0.0, f64::max);
        (0.5 + strongest / 2.0).min(1.0)
    }
}

/// Accumulates liveness evidence frame by frame.
#[derive(Debug, Clone, Default)]
pub struct LivenessTracker {
    evidence: LivenessEvidence,
    previous: Option<Vec<Point>>,
    eyes_were_open: bool,
    eyes_closed_since_open: bool,
    mouth: Option<(f32, f32)>,
    yaw: Option<(f32, f32)>,
}

impl LivenessTracker {
    /// Adds one frame's landmarks and the signals derived from them.
    pub fn observe(&mut self, landmarks: &FaceLandmarks, signals: &FaceSignals) {
        self.evidence.frames += 1;
        let eyes = (signals.left_eye_aspect_ratio + signals.right_eye_aspect_ratio) / 2.0;
        if eyes > EYES_OPEN_ABOVE {
            if self.eyes_closed_since_open {
                self.evidence.blink_seen = true;
            }
            self.eyes_were_open = true;
            self.eyes_closed_since_open = false;
        } else if eyes < EYES_CLOSED_BELOW && self.eyes_were_open {
            self.eyes_closed_since_open = true;
        }
        let widen = |range: Option<(f32, f32)>, value: f32| {
            Some(range.map_or((value, value), |(low, high)| {
                (low.min(value), high.max(value))
            }))
        };
        self.mouth = widen(self.mouth, signals.mouth_openness);
        self.yaw = widen(self.yaw, signals.pose.yaw_deg);
        self.evidence.mouth_range = self.mouth.map_or(0.0, |(low, high)| high - low);
        self.evidence.yaw_range_deg = self.yaw.map_or(0.0, |(low, high)| high - low);
        if let Some(previous) = &self.previous {
            let residual =
                similarity_residual(previous, &landmarks.points) / signals.face_width.max(1e-6);
            self.evidence.non_rigid_max = self.evidence.non_rigid_max.max(residual);
        }
        self.previous = Some(landmarks.points.clone());
    }

    /// The evidence so far.
    pub fn evidence(&self) -> LivenessEvidence {
        self.evidence
    }
}

/// Root-mean-square distance between `to` and `from` mapped by the least-squares similarity
/// transform (scale, rotation, translation) from `from` to `to`.
pub fn similarity_residual(from: &[Point], to: &[Point]) -> f32 {
    let count = from.len().min(to.len());
    if count == 0 {
        return 0.0;
    }
    let mean = |points: &[Point]| {
        let (x, y) = points[..count].iter().fold((0.0f64, 0.0f64), |(x, y), p| {
            (x + f64::from(p.x), y + f64::from(p.y))
        });
        (x / count as f64, y / count as f64)
    };
    let ((fx, fy), (tx, ty)) = (mean(from), mean(to));
    // Complex least squares: to − t̄ ≈ a · (from − f̄) with a = Σ conj(f)·t / Σ |f|².
    let (mut real, mut imaginary, mut norm) = (0.0f64, 0.0f64, 0.0f64);
    for (source, target) in from[..count].iter().zip(&to[..count]) {
        let (ax, ay) = (f64::from(source.x) - fx, f64::from(source.y) - fy);
        let (bx, by) = (f64::from(target.x) - tx, f64::from(target.y) - ty);
        real += ax * bx + ay * by;
        imaginary += ax * by - ay * bx;
        norm += ax * ax + ay * ay;
    }
    if norm == 0.0 {
        return 0.0;
    }
    let (a, b) = (real / norm, imaginary / norm);
    let squared: f64 = from[..count]
        .iter()
        .zip(&to[..count])
        .map(|(source, target)| {
            let (ax, ay) = (f64::from(source.x) - fx, f64::from(source.y) - fy);
            let (px, py) = (a * ax - b * ay + tx, b * ax + a * ay + ty);
            (px - f64::from(target.x)).powi(2) + (py - f64::from(target.y)).powi(2)
        })
        .sum();
    (squared / count as f64).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_similarity_transform_leaves_no_residual(
            points in proptest::collection::vec((-100.0f32..100.0, -100.0f32..100.0), 3..40),
            scale in 0.5f32..2.0, angle in -3.0f32..3.0, dx in -50.0f32..50.0, dy in -50.0f32..50.0,
        ) {
            let from: Vec<Point> = points.iter().map(|(x, y)| Point { x: *x, y: *y }).collect();
            let (sin, cos) = angle.sin_cos();
            let to: Vec<Point> = from.iter().map(|p| Point {
                x: scale * (p.x * cos - p.y * sin) + dx,
                y: scale * (p.x * sin + p.y * cos) + dy,
            }).collect();
            prop_assert!(similarity_residual(&from, &to) < 1e-2);
        }
    }

    #[test]
    fn moving_one_point_leaves_a_residual() {
        let from = vec![
            Point { x: 0.0, y: 0.0 },
            Point { x: 10.0, y: 0.0 },
            Point { x: 0.0, y: 10.0 },
            Point { x: 10.0, y: 10.0 },
        ];
        let mut to = from.clone();
        to[3].x += 4.0;
        assert!(similarity_residual(&from, &to) > 0.5);
    }
}
