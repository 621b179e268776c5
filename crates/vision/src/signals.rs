//! Signals the dose session reads, derived from landmarks (pure functions, frame pixels).
//!
//! - Head pose: roll from the eye line; yaw and pitch estimated from where the nose tip sits
//!   between the cheeks and between the eyes and the chin (2-D approximations, degrees).
//! - Eye aspect ratio per eye (Soukupová & Čech): about 0.25–0.35 open, below ~0.15 closed.
//! - Mouth openness (inner-lip gap ÷ mouth width) and the lip region.
//! - Open palm (all five fingers extended) and the nearest fingertip's distance to the mouth
//!   in face widths.

use crate::face_mesh::FaceLandmarks;
use crate::geometry::{BoundingBox, Point};
use crate::hands::{FINGERTIPS, HandLandmarks, WRIST};

// MediaPipe FaceMesh indices.
const RIGHT_EYE: [usize; 6] = [33, 160, 158, 133, 153, 144];
const LEFT_EYE: [usize; 6] = [362, 385, 387, 263, 373, 380];
const NOSE_TIP: usize = 1;
const FOREHEAD: usize = 10;
const CHIN: usize = 152;
const RIGHT_CHEEK: usize = 234;
const LEFT_CHEEK: usize = 454;
const MOUTH_CENTRE: [usize; 2] = [13, 14];
/// Outer lip contour (upper and lower).
const LIPS: [usize; 20] = [
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146,
];
/// The joint below each fingertip (IP for the thumb, PIP for the others).
const FINGER_MIDDLE_JOINTS: [usize; 5] = [3, 6, 10, 14, 18];

fn distance(a: Point, b: Point) -> f32 {
    ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt()
}

/// Head pose in degrees. Roll is positive when the head tilts toward the image's right
/// shoulder (clockwise on screen); yaw is positive when the nose points to the image's right;
/// pitch is positive when the nose points down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadPose {
    pub yaw_deg: f32,
    pub pitch_deg: f32,
    pub roll_deg: f32,
}

/// Face signals from one frame's landmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceSignals {
    pub pose: HeadPose,
    pub right_eye_aspect_ratio: f32,
    pub left_eye_aspect_ratio: f32,
    pub mouth_openness: f32,
    pub mouth_centre: Point,
    pub lip_region: BoundingBox,
    /// Cheek-to-cheek width in pixels: the unit for hand-to-mouth distances.
    pub face_width: f32,
}

fn eye_aspect_ratio(face: &FaceLandmarks, eye: [usize; 6]) -> f32 {
    let point = |index: usize| face.points[eye[index]];
    let width = distance(point(0), point(3));
    if width <= 0.0 {
        return 0.0;
    }
    (distance(point(1), point(5)) + distance(point(2), point(4))) / (2.0 * width)
}

/// Derives the face signals from 468 FaceMesh landmarks.
pub fn face_signals(face: &FaceLandmarks) -> FaceSignals {
    let at = |index: usize| face.points[index];
    let (right_eye, left_eye) = (at(RIGHT_EYE[0]), at(LEFT_EYE[3]));
    let roll = (left_eye.y - right_eye.y).atan2(left_eye.x - right_eye.x);
    // Work in the head's own frame (undo roll) for yaw and pitch.
    let (sin, cos) = (-roll).sin_cos();
    let level = |point: Point| Point {
        x: point.x * cos - point.y * sin,
        y: point.x * sin + point.y * cos,
    };
    let (nose, right_cheek, left_cheek) = (
        level(at(NOSE_TIP)),
        level(at(RIGHT_CHEEK)),
        level(at(LEFT_CHEEK)),
    );
    let (forehead, chin) = (level(at(FOREHEAD)), level(at(CHIN)));
    let face_width = distance(at(RIGHT_CHEEK), at(LEFT_CHEEK));
    let half_width = (left_cheek.x - right_cheek.x).abs().max(1e-6) / 2.0;
    let centre_x = (left_cheek.x + right_cheek.x) / 2.0;
    let yaw = ((nose.x - centre_x) / half_width).clamp(-1.0, 1.0).asin();
    let half_height = (chin.y - forehead.y).abs().max(1e-6) / 2.0;
    // The nose tip sits slightly above the face's vertical middle when level: offset 0.1.
    let pitch = (((nose.y - (forehead.y + chin.y) / 2.0) / half_height) + 0.1)
        .clamp(-1.0, 1.0)
        .asin();
    let mut lip_region = BoundingBox {
        x_min: f32::MAX,
        y_min: f32::MAX,
        x_max: f32::MIN,
        y_max: f32::MIN,
    };
    for index in LIPS {
        let point = at(index);
        lip_region.x_min = lip_region.x_min.min(point.x);
        lip_region.y_min = lip_region.y_min.min(point.y);
        lip_region.x_max = lip_region.x_max.max(point.x);
        lip_region.y_max = lip_region.y_max.max(point.y);
    }
    let (upper, lower) = (at(MOUTH_CENTRE[0]), at(MOUTH_CENTRE[1]));
    FaceSignals {
        pose: HeadPose {
            yaw_deg: yaw.to_degrees(),
            pitch_deg: pitch.to_degrees(),
            roll_deg: roll.to_degrees(),
        },
        right_eye_aspect_ratio: eye_aspect_ratio(face, RIGHT_EYE),
        left_eye_aspect_ratio: eye_aspect_ratio(face, LEFT_EYE),
        mouth_openness: face.mouth_openness(),
        mouth_centre: Point {
            x: (upper.x + lower.x) / 2.0,
            y: (upper.y + lower.y) / 2.0,
        },
        lip_region,
        face_width,
    }
}

/// True when all five fingers are extended: each fingertip is farther from the wrist than the
/// joint below it.
pub fn is_open_palm(hand: &HandLandmarks) -> bool {
    let wrist = hand.points[WRIST];
    FINGERTIPS
        .iter()
        .zip(FINGER_MIDDLE_JOINTS)
        .all(|(tip, joint)| {
            distance(hand.points[*tip], wrist) > distance(hand.points[joint], wrist)
        })
}

/// Distance from the nearest fingertip to the mouth centre, in face widths.
pub fn fingertip_to_mouth(hand: &HandLandmarks, face: &FaceSignals) -> f32 {
    let (_, pixels) = hand.nearest_fingertip(face.mouth_centre);
    pixels / face.face_width.max(1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hand(points: Vec<Point>) -> HandLandmarks {
        HandLandmarks {
            points,
            presence: 1.0,
            left_handedness: 0.5,
        }
    }

    /// A schematic upright hand: wrist at the origin, fingers up; `curl` folds the fingertips
    /// back below their middle joints.
    fn schematic_hand(curl: bool) -> HandLandmarks {
        let mut points = vec![Point::default(); 21];
        for finger in 0..5 {
            let x = finger as f32 * 10.0 - 20.0;
            for joint in 0..4 {
                let y = -30.0 - joint as f32 * 10.0;
                points[1 + finger * 4 + joint] = Point { x, y };
            }
            if curl {
                points[4 + finger * 4] = Point { x, y: -25.0 };
            }
        }
        hand(points)
    }

    #[test]
    fn open_and_closed_hands_are_told_apart() {
        assert!(is_open_palm(&schematic_hand(false)));
        assert!(!is_open_palm(&schematic_hand(true)));
    }

    #[test]
    fn fingertip_distance_is_measured_in_face_widths() {
        let hand = schematic_hand(false);
        let face = FaceSignals {
            pose: HeadPose {
                yaw_deg: 0.0,
                pitch_deg: 0.0,
                roll_deg: 0.0,
            },
            right_eye_aspect_ratio: 0.3,
            left_eye_aspect_ratio: 0.3,
            mouth_openness: 0.2,
            // Fingertips sit at x = -20, -10, 0, 10, 20 and y = -60; the mouth is 5 px from two.
            mouth_centre: Point { x: 5.0, y: -60.0 },
            lip_region: BoundingBox::default(),
            face_width: 200.0,
        };
        assert!((fingertip_to_mouth(&hand, &face) - 5.0 / 200.0).abs() < 1e-6);
        let far = FaceSignals {
            mouth_centre: Point { x: 0.0, y: -460.0 },
            ..face
        };
        assert!((fingertip_to_mouth(&hand, &far) - 2.0).abs() < 1e-6);
    }
}
