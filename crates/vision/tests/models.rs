//! Loading models: every way a model file can be wrong gets its own clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use dosewitness_vision::model::sha256_hex;
use dosewitness_vision::{ModelManifest, OnnxModel, VisionError};
use std::path::Path;

fn manifest() -> ModelManifest {
    ModelManifest::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")).unwrap()
}

#[test]
fn the_shipped_model_loads_and_runs_with_the_manifest_shapes() {
    let model = manifest().load("blazeface_short").unwrap();
    let outputs = model.run(&vec![0.0; 128 * 128 * 3]).unwrap();
    let sizes: Vec<usize> = outputs.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![896 * 16, 896]);
    assert!(outputs.iter().flatten().all(|value| value.is_finite()));
}

#[test]
fn a_model_keeps_its_input_between_runs_and_refuses_a_wrong_sized_one() {
    let model = manifest().load("blazeface_short").unwrap();
    let size = 128 * 128 * 3;
    let mut seen = Vec::new();
    model.run_with(|input| seen = input.to_vec()).unwrap();
    assert_eq!(
        seen,
        vec![0.0; size],
        "a fresh model's input starts as zeros"
    );

    let ramp: Vec<f32> = (0..size)
        .map(|index| (index % 255) as f32 / 127.5 - 1.0)
        .collect();
    let copied = model.run(&ramp).unwrap();
    // Filled in place, the same input gives the same outputs as the copied one, and the next
    // fill sees it.
    let in_place = model
        .run_with(|input| {
            seen = input.to_vec();
            input.copy_from_slice(&ramp);
        })
        .unwrap();
    assert_eq!(seen, ramp);
    assert_eq!(in_place, copied);
    // A clone has a session (and an input) of its own.
    model
        .clone()
        .run_with(|input| seen = input.to_vec())
        .unwrap();
    assert_eq!(seen, vec![0.0; size]);

    let error = model.run(&ramp[..size - 1]).unwrap_err();
    assert!(matches!(error, VisionError::Inference { .. }), "{error}");
    assert!(error.to_string().contains("49151"), "{error}");
}

#[test]
fn every_model_in_the_manifest_loads_in_tract_and_runs() {
    let manifest = manifest();
    assert!(!manifest.models.is_empty());
    for entry in &manifest.models {
        let model = manifest
            .load(&entry.name)
            .unwrap_or_else(|error| panic!("{}: {error}", entry.name));
        let input_size: usize = entry.input.shape.iter().product();
        let outputs = model
            .run(&vec![0.5; input_size])
            .unwrap_or_else(|error| panic!("{}: {error}", entry.name));
        let sizes: Vec<usize> = outputs.iter().map(Vec::len).collect();
        let expected: Vec<usize> = entry
            .outputs
            .iter()
            .map(|output| output.shape.iter().product())
            .collect();
        assert_eq!(sizes, expected, "{}", entry.name);
        assert!(
            outputs.iter().flatten().all(|value| value.is_finite()),
            "{} produced a non-finite value",
            entry.name
        );
    }
}

#[test]
fn altered_missing_truncated_and_misdescribed_models_are_refused() {
    let manifest = manifest();
    let entry = manifest.entry("blazeface_short").unwrap().clone();
    let original = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models")
            .join(&entry.file),
    )
    .unwrap();
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("model.onnx");

    let mut altered = original.clone();
    altered[original.len() / 3] ^= 1;
    std::fs::write(&path, &altered).unwrap();
    let error = OnnxModel::load(&path, &entry).unwrap_err();
    assert!(
        matches!(error, VisionError::ModelChecksumMismatch { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("model.onnx"), "{error}");

    let error = OnnxModel::load(&directory.path().join("absent.onnx"), &entry).unwrap_err();
    assert!(matches!(error, VisionError::ModelMissing { .. }), "{error}");
    assert!(error.to_string().contains("cargo xtask models"), "{error}");

    // A truncated file whose checksum was (wrongly) recorded still fails as an invalid model.
    let truncated = &original[..original.len() / 2];
    std::fs::write(&path, truncated).unwrap();
    let mut truncated_entry = entry.clone();
    truncated_entry.sha256 = sha256_hex(truncated);
    let error = OnnxModel::load(&path, &truncated_entry).unwrap_err();
    assert!(matches!(error, VisionError::ModelInvalid { .. }), "{error}");

    let error = OnnxModel::from_bytes(b"", &entry).unwrap_err();
    assert!(
        matches!(
            error,
            VisionError::Inference { .. } | VisionError::ModelInvalid { .. }
        ),
        "{error}"
    );

    // The right file described with the wrong output shape.
    let mut wrong_shape = entry.clone();
    wrong_shape.outputs[0].shape = vec![1, 100, 16];
    std::fs::write(&path, &original).unwrap();
    let error = OnnxModel::load(&path, &wrong_shape).unwrap_err();
    assert!(
        matches!(error, VisionError::ModelShapeMismatch { .. }),
        "{error}"
    );

    // A model whose input is not what the pre-processing produces.
    let error = manifest
        .load_expecting("blazeface_short", &[1, 192, 192, 3])
        .unwrap_err();
    assert!(
        matches!(
            &error,
            VisionError::ModelShapeMismatch {
                what: "input shape",
                ..
            }
        ),
        "{error}"
    );

    let error = manifest.load("no_such_model").unwrap_err();
    assert!(
        matches!(error, VisionError::ModelNotInManifest { .. }),
        "{error}"
    );
}
