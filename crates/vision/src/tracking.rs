//! Detect-then-track: detectors run only when the tracked face or hand is lost, and the
//! landmark models read the region derived from the previous frame's landmarks (MediaPipe's
//! `FaceLandmarksToRoi` and `HandLandmarkLandmarksToRoi`). While no hand is tracked, palm
//! detection runs only every `palm_detection_interval` frames.
//!
//! The per-stream state ([`TrackingState`]) lives outside the models, so one set of loaded
//! models serves any number of streams.

use crate::error::VisionError;
use crate::face_detection::FaceDetector;
use crate::face_mesh::{FaceLandmarks, FaceMesh, mesh_region};
use crate::frame::Frame;
use crate::geometry::{Point, RotatedRect};
use crate::hands::{HandLandmarker, HandLandmarks, MIN_HAND_PRESENCE, PalmDetector, hand_region};

/// FaceMesh presence below this drops the track.
pub const MIN_FACE_PRESENCE: f32 = 0.5;
const FACE_REGION_SCALE: f32 = 1.5;
const HAND_REGION_SCALE: f32 = 2.0;
const HAND_REGION_SHIFT_Y: f32 = -0.1;
/// Hand landmarks MediaPipe uses for the next region: wrist, thumb base, and the base two joints
/// of each finger.
const HAND_REGION_LANDMARKS: [usize; 12] = [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18];

/// The region for the next frame from this frame's face landmarks: the landmarks' bounding box,
/// rotated by the eye corners (33 → 263), 1.5× its longer side.
pub fn face_region_from_landmarks(face: &FaceLandmarks) -> RotatedRect {
    let (right, left) = (face.points[33], face.points[263]);
    let angle = (left.y - right.y).atan2(left.x - right.x);
    let (mut x_min, mut y_min, mut x_max, mut y_max) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for point in &face.points {
        x_min = x_min.min(point.x);
        y_min = y_min.min(point.y);
        x_max = x_max.max(point.x);
        y_max = y_max.max(point.y);
    }
    RotatedRect {
        center: Point {
            x: (x_min + x_max) / 2.0,
            y: (y_min + y_max) / 2.0,
        },
        side: (x_max - x_min).max(y_max - y_min) * FACE_REGION_SCALE,
        angle,
    }
}

/// The region for the next frame from this frame's hand landmarks (MediaPipe's rule: rotation
/// wrist → middle of the index/ring/middle bases pointing up, the bounding box of 12 landmarks in
/// the hand's own frame, 2× its longer side, moved 10 % towards the wrist).
pub fn hand_region_from_landmarks(hand: &HandLandmarks) -> RotatedRect {
    let at = |index: usize| hand.points[index];
    let (wrist, index_base, middle_base, ring_base) = (at(0), at(5), at(9), at(13));
    let towards = Point {
        x: ((index_base.x + ring_base.x) / 2.0 + middle_base.x) / 2.0,
        y: ((index_base.y + ring_base.y) / 2.0 + middle_base.y) / 2.0,
    };
    let angle = std::f32::consts::FRAC_PI_2 - (-(towards.y - wrist.y)).atan2(towards.x - wrist.x);
    let (sin, cos) = angle.sin_cos();
    // Bounding box in the hand's frame: rotate points by −angle.
    let (mut x_min, mut y_min, mut x_max, mut y_max) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for index in HAND_REGION_LANDMARKS {
        let point = at(index);
        let (x, y) = (
            point.x * cos + point.y * sin,
            -point.x * sin + point.y * cos,
        );
        x_min = x_min.min(x);
        y_min = y_min.min(y);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let (centre_x, centre_y) = ((x_min + x_max) / 2.0, (y_min + y_max) / 2.0);
    let (width, height) = (x_max - x_min, y_max - y_min);
    // Back to the frame, then shift along the hand's y axis.
    let center = Point {
        x: centre_x * cos - centre_y * sin,
        y: centre_x * sin + centre_y * cos,
    };
    let shift = HAND_REGION_SHIFT_Y * height;
    RotatedRect {
        center: Point {
            x: center.x - shift * sin,
            y: center.y + shift * cos,
        },
        side: width.max(height) * HAND_REGION_SCALE,
        angle,
    }
}

/// Per-stream tracking state.
#[derive(Debug, Clone, Default)]
pub struct TrackingState {
    face: Option<RotatedRect>,
    hand: Option<RotatedRect>,
    /// Frames to skip before the next palm detection while no hand is tracked.
    palm_cooldown: u32,
}

/// What one frame cost: which models ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameWork {
    pub face_detections: u32,
    pub face_meshes: u32,
    pub palm_detections: u32,
    pub hand_landmarks: u32,
}

/// The models a tracked stream uses.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub face_detector: FaceDetector,
    pub face_mesh: FaceMesh,
    pub palm_detector: PalmDetector,
    pub hand_landmarker: HandLandmarker,
    /// While no hand is tracked, run palm detection on every n-th frame only.
    pub palm_detection_interval: u32,
}

impl Tracker {
    /// The face's landmarks in `frame`, tracking from the previous frame when possible.
    pub fn face(
        &self,
        frame: &Frame,
        state: &mut TrackingState,
        work: &mut FrameWork,
    ) -> Result<Option<FaceLandmarks>, VisionError> {
        if let Some(region) = state.face {
            work.face_meshes += 1;
            let landmarks = self.face_mesh.landmarks(frame, &region)?;
            if landmarks.presence >= MIN_FACE_PRESENCE {
                state.face = Some(face_region_from_landmarks(&landmarks));
                return Ok(Some(landmarks));
            }
        }
        work.face_detections += 1;
        let Some(face) = self.face_detector.detect(frame)?.into_iter().next() else {
            state.face = None;
            return Ok(None);
        };
        work.face_meshes += 1;
        let landmarks = self.face_mesh.landmarks(frame, &mesh_region(&face))?;
        if landmarks.presence < MIN_FACE_PRESENCE {
            state.face = None;
            return Ok(None);
        }
        state.face = Some(face_region_from_landmarks(&landmarks));
        Ok(Some(landmarks))
    }

    /// One hand's landmarks in `frame`, tracking from the previous frame when possible.
    pub fn hand(
        &self,
        frame: &Frame,
        state: &mut TrackingState,
        work: &mut FrameWork,
    ) -> Result<Option<HandLandmarks>, VisionError> {
        if let Some(region) = state.hand {
            work.hand_landmarks += 1;
            let landmarks = self.hand_landmarker.landmarks(frame, &region)?;
            if landmarks.presence >= MIN_HAND_PRESENCE {
                state.hand = Some(hand_region_from_landmarks(&landmarks));
                return Ok(Some(landmarks));
            }
            state.hand = None;
        }
        if state.palm_cooldown > 0 {
            state.palm_cooldown -= 1;
            return Ok(None);
        }
        state.palm_cooldown = self.palm_detection_interval.max(1) - 1;
        work.palm_detections += 1;
        let Some(palm) = self.palm_detector.detect(frame)?.into_iter().next() else {
            return Ok(None);
        };
        work.hand_landmarks += 1;
        let landmarks = self.hand_landmarker.landmarks(frame, &hand_region(&palm))?;
        if landmarks.presence < MIN_HAND_PRESENCE {
            return Ok(None);
        }
        state.hand = Some(hand_region_from_landmarks(&landmarks));
        Ok(Some(landmarks))
    }
}
