//! Face identity on real photos through the real models. Same/different expectations come from
//! the photos' subjects (three photos of one person, one of another), not from this code; the
//! descriptor values were checked once against face-api's own JavaScript (models/README.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use dosewitness_vision::{
    FaceDetector, FaceEmbedder, FaceEmbedding, FaceMatch, Frame, ModelManifest, VisionError,
};
use std::path::Path;

fn photo(name: &str) -> Frame {
    Frame::from_image_file(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/images")
            .join(name),
    )
    .unwrap()
}

fn models() -> (FaceDetector, FaceEmbedder) {
    let manifest =
        ModelManifest::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")).unwrap();
    (
        FaceDetector::load(&manifest).unwrap(),
        FaceEmbedder::load(&manifest).unwrap(),
    )
}

fn embed(detector: &FaceDetector, embedder: &FaceEmbedder, name: &str) -> FaceEmbedding {
    let frame = photo(name);
    let face = detector.single_face(&frame).unwrap();
    embedder.embed(&frame, &face).unwrap()
}

#[test]
fn the_same_person_matches_and_a_different_person_does_not() {
    let (detector, embedder) = models();
    let obama =
        ["obama.jpg", "obama2.jpg", "obama3.jpg"].map(|name| embed(&detector, &embedder, name));
    let biden = embed(&detector, &embedder, "biden.jpg");
    for (index, first) in obama.iter().enumerate() {
        for second in &obama[index + 1..] {
            let result = FaceMatch::between(first, second);
            assert!(
                result.same_person,
                "same person judged different: {result:?}"
            );
        }
        let result = FaceMatch::between(first, &biden);
        assert!(
            !result.same_person,
            "different people judged the same: {result:?}"
        );
        assert!(result.score < 0.5);
    }
    // The descriptor is stable for the same image and unit-scale (dlib descriptors have norm ≈ 1).
    let again = embed(&detector, &embedder, "obama.jpg");
    assert!(FaceMatch::between(&obama[0], &again).distance < 1e-5);
    let norm = obama[0]
        .0
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((0.3..3.0).contains(&norm), "descriptor norm {norm}");
}

#[test]
fn a_mirrored_photo_still_matches_its_original() {
    let (detector, embedder) = models();
    let original = photo("obama.jpg");
    let mirrored = Frame::new(1, 0, image::imageops::flip_horizontal(original.pixels())).unwrap();
    let a = embedder
        .embed(&original, &detector.single_face(&original).unwrap())
        .unwrap();
    let b = embedder
        .embed(&mirrored, &detector.single_face(&mirrored).unwrap())
        .unwrap();
    let result = FaceMatch::between(&a, &b);
    assert!(result.same_person, "{result:?}");
}

#[test]
fn images_without_exactly_one_face_are_refused_by_name() {
    let (detector, _) = models();
    let error = detector.single_face(&photo("black.png")).unwrap_err();
    assert!(
        matches!(error, VisionError::FaceCount { found: 0 }),
        "{error}"
    );
    let error = Frame::from_image_file(Path::new("/nonexistent/face.jpg")).unwrap_err();
    assert!(
        matches!(error, VisionError::ImageUnreadable { .. })
            && error.to_string().contains("face.jpg")
    );
}

#[test]
fn quality_measurements_of_the_fixture_photos() {
    let (detector, _) = models();
    for name in [
        "obama.jpg",
        "obama2.jpg",
        "obama3.jpg",
        "biden.jpg",
        "astronaut.png",
    ] {
        let frame = photo(name);
        let face = detector.single_face(&frame).unwrap();
        let chip = dosewitness_vision::face_embedding::face_chip(
            &frame,
            &dosewitness_vision::face_embedding::face_region(&face),
        );
        let quality = dosewitness_vision::face_quality::FaceQuality::measure(&face, &chip, 150);
        eprintln!("{name}: {quality:?}");
        assert!(
            quality.problems().is_empty(),
            "{name}: {:?} {quality:?}",
            quality.problems()
        );
    }
}
