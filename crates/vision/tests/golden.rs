//! BlazeFace through tract against MediaPipe's own pipeline (PyPI mediapipe 0.10.14) on real
//! photos and replay frames. The expected detections were produced by
//! `scripts/golden/blazeface_golden.py`, independently of this crate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use dosewitness_vision::{FaceDetector, Frame, ModelManifest};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn detector() -> FaceDetector {
    let manifest = ModelManifest::open(&repo().join("models")).unwrap();
    FaceDetector::load(&manifest).unwrap()
}

fn close(actual: f32, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (f64::from(actual) - expected).abs() <= tolerance,
        "{what}: got {actual}, MediaPipe says {expected} (tolerance {tolerance})"
    );
}

#[test]
fn detections_match_mediapipe_on_real_images() {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("assets/golden/blazeface_short.json")).unwrap(),
    )
    .unwrap();
    let coordinate_tolerance = 0.005;
    let score_tolerance = 0.01;
    let detector = detector();
    let images = golden["images"].as_array().unwrap();
    assert!(
        images.len() >= 6,
        "the golden file should cover the fixture photos"
    );
    let mut faces_compared = 0;
    for image in images {
        let file = image["file"].as_str().unwrap();
        let pixels = image::open(repo().join(file)).unwrap().to_rgb8();
        let (width, height) = (f64::from(pixels.width()), f64::from(pixels.height()));
        let detections = detector.detect(&Frame::new(0, 0, pixels).unwrap()).unwrap();
        let expected = image["detections"].as_array().unwrap();
        assert_eq!(detections.len(), expected.len(), "{file}: face count");
        for (actual, expected) in detections.iter().zip(expected) {
            faces_compared += 1;
            close(
                actual.score,
                expected["score"].as_f64().unwrap(),
                score_tolerance,
                &format!("{file} score"),
            );
            let bounds = &expected["box"];
            let x_min = bounds["xmin"].as_f64().unwrap();
            let y_min = bounds["ymin"].as_f64().unwrap();
            let tolerance_x = coordinate_tolerance * width;
            let tolerance_y = coordinate_tolerance * height;
            close(
                actual.bounds.x_min,
                x_min * width,
                tolerance_x,
                &format!("{file} x_min"),
            );
            close(
                actual.bounds.y_min,
                y_min * height,
                tolerance_y,
                &format!("{file} y_min"),
            );
            close(
                actual.bounds.width(),
                bounds["width"].as_f64().unwrap() * width,
                tolerance_x,
                &format!("{file} width"),
            );
            close(
                actual.bounds.height(),
                bounds["height"].as_f64().unwrap() * height,
                tolerance_y,
                &format!("{file} height"),
            );
            for (index, point) in expected["keypoints"].as_array().unwrap().iter().enumerate() {
                let point = point.as_array().unwrap();
                close(
                    actual.keypoints[index].x,
                    point[0].as_f64().unwrap() * width,
                    tolerance_x,
                    &format!("{file} keypoint {index} x"),
                );
                close(
                    actual.keypoints[index].y,
                    point[1].as_f64().unwrap() * height,
                    tolerance_y,
                    &format!("{file} keypoint {index} y"),
                );
            }
        }
    }
    assert!(faces_compared >= 6, "only {faces_compared} faces compared");
}

#[test]
fn frames_without_faces_find_nothing_and_never_panic() {
    let detector = detector();
    let cases = [
        ("all black", image::RgbImage::new(640, 480)),
        (
            "one pixel",
            image::RgbImage::from_pixel(1, 1, image::Rgb([200, 150, 120])),
        ),
        (
            "grey",
            image::RgbImage::from_pixel(300, 200, image::Rgb([128, 128, 128])),
        ),
        (
            "very wide",
            image::RgbImage::from_pixel(4000, 3, image::Rgb([255, 255, 255])),
        ),
    ];
    for (name, pixels) in cases {
        let faces = detector.detect(&Frame::new(0, 0, pixels).unwrap()).unwrap();
        assert!(faces.is_empty(), "{name}: found {} faces", faces.len());
    }
    // A grey-scale photo still shows its face.
    let grey = image::open(repo().join("tests/fixtures/images/astronaut.png"))
        .unwrap()
        .to_luma8();
    let grey = image::DynamicImage::ImageLuma8(grey).to_rgb8();
    let faces = detector.detect(&Frame::new(0, 0, grey).unwrap()).unwrap();
    assert_eq!(faces.len(), 1);
}
