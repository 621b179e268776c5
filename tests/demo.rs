//! The README's main command, end to end through the real binary: real model, real SQLCipher
//! store, real HTTP between device and backend on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_dosewitness");
const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
const REPLAY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/replays/demo");

/// Runs the CLI with `arguments` and waits for it.
fn dosewitness(arguments: &[&str]) -> Output {
    Command::new(BINARY)
        .args(arguments)
        .output()
        .expect("the binary runs")
}

fn demo(arguments: &[&str]) -> Output {
    dosewitness(&[&["demo"], arguments].concat())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn the_demo_verifies_a_dose_and_reads_adherence_back() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("run");
    let output = demo(&["--data-dir", data_dir.to_str().unwrap()]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("Dose outcome:   verified"), "{stdout}");
    assert!(
        stdout.contains("Adherence:      100% (1 of 1 doses verified on time"),
        "{stdout}"
    );
    assert!(stdout.contains("hash chain verified"), "{stdout}");
    for step in ["[1/9]", "[5/9]", "[9/9]"] {
        assert!(
            stderr.contains(step),
            "progress step {step} missing:\n{stderr}"
        );
    }

    // The device store is a real SQLCipher file: no plaintext schema or clinical words on disk.
    let store = data_dir.join("device").join("device.db");
    let bytes = std::fs::read(&store).unwrap();
    assert!(
        !bytes.starts_with(b"SQLite format 3"),
        "the device store must be encrypted"
    );
    for needle in [&b"CREATE TABLE"[..], b"verified", b"Metformin"] {
        assert!(
            !contains(&bytes, needle),
            "plaintext {:?} in the device store",
            text(needle)
        );
    }

    // The CLI can reopen it and verify the chain independently.
    let verify = dosewitness(&["store", "verify", "--data-dir", data_dir.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert!(
        text(&verify.stdout).contains("chain verified: 1 signed dose event"),
        "{}",
        text(&verify.stdout)
    );
    let info = dosewitness(&["store", "info", "--data-dir", data_dir.to_str().unwrap()]);
    assert!(
        text(&info.stdout).contains("pending sync:    0"),
        "{}",
        text(&info.stdout)
    );
}

#[test]
fn an_altered_model_file_stops_the_demo_with_a_clear_message() {
    let directory = tempfile::tempdir().unwrap();
    let models = directory.path().join("models");
    copy_dir(Path::new(MODELS), &models);
    let onnx = models.join("blazeface_short.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&onnx, bytes).unwrap();
    let data_dir = directory.path().join("run");
    let output = demo(&[
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--models-dir",
        models.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("Load the on-device models") && stderr.contains("sha256"),
        "{stderr}"
    );
    assert!(stderr.contains("blazeface_short.onnx"), "{stderr}");
    assert!(
        !data_dir.join("device").join("device.db").exists(),
        "no store is created after a model failure"
    );

    std::fs::remove_file(&onnx).unwrap();
    let output = demo(&[
        "--data-dir",
        directory.path().join("run2").to_str().unwrap(),
        "--models-dir",
        models.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("missing"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn an_unreadable_replay_frame_is_named() {
    let directory = tempfile::tempdir().unwrap();
    let replay = directory.path().join("replay");
    copy_dir(Path::new(REPLAY), &replay);
    std::fs::write(replay.join("frame_0001.jpg"), b"\xff\xd8\xff truncated").unwrap();
    let data_dir = directory.path().join("run");
    let output = demo(&[
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--replay",
        replay.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("Run the dose session") && stderr.contains("frame_0001.jpg"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_and_an_unusable_data_dir_are_reported() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = occupied.local_addr().unwrap().port().to_string();
    let directory = tempfile::tempdir().unwrap();
    let output = demo(&[
        "--data-dir",
        directory.path().join("run").to_str().unwrap(),
        "--port",
        &port,
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("in use"),
        "{stderr}"
    );

    let blocker: PathBuf = directory.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let output = demo(&["--data-dir", blocker.join("data").to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--data-dir") && stderr.contains("a-file"),
        "{stderr}"
    );

    let used = directory.path().join("used");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("something"), b"keep me").unwrap();
    let output = demo(&["--data-dir", used.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("not empty"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(std::fs::read(used.join("something")).unwrap(), b"keep me");
}

#[test]
fn a_passphrase_store_is_created_and_unlocked_through_the_cli() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().to_str().unwrap();
    let run = |arguments: &[&str], passphrase: &str| {
        Command::new(BINARY)
            .args(arguments)
            .env("DW_TEST_PASSPHRASE", passphrase)
            .output()
            .unwrap()
    };
    let init = run(
        &[
            "store",
            "init",
            "--data-dir",
            data_dir,
            "--passphrase-env",
            "DW_TEST_PASSPHRASE",
        ],
        "a long passphrase",
    );
    assert!(init.status.success(), "{}", text(&init.stderr));
    assert!(
        !directory.path().join("device/store.key").exists(),
        "passphrase mode writes no key file"
    );
    let info = run(
        &[
            "store",
            "info",
            "--data-dir",
            data_dir,
            "--passphrase-env",
            "DW_TEST_PASSPHRASE",
        ],
        "a long passphrase",
    );
    assert!(
        text(&info.stdout).contains("dose events:     0"),
        "{}",
        text(&info.stderr)
    );
    let wrong = run(
        &[
            "store",
            "info",
            "--data-dir",
            data_dir,
            "--passphrase-env",
            "DW_TEST_PASSPHRASE",
        ],
        "another passphrase",
    );
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("could not be decrypted"),
        "{}",
        text(&wrong.stderr)
    );
    let again = run(&["store", "init", "--data-dir", data_dir], "");
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn faces_compare_tells_same_from_different_people() {
    let photo = |name: &str| {
        format!(
            "{}/tests/fixtures/images/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    let compare = |a: &str, b: &str| {
        let output = dosewitness(&["faces", "compare", &photo(a), &photo(b), "--json"]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let same = compare("obama.jpg", "obama2.jpg");
    assert_eq!(same["same_person"], true, "{same}");
    let different = compare("obama3.jpg", "biden.jpg");
    assert_eq!(different["same_person"], false, "{different}");
    assert!(same["score"].as_f64().unwrap() > different["score"].as_f64().unwrap());

    let output = dosewitness(&["faces", "compare", &photo("obama.jpg"), &photo("black.png")]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("black.png")
            && text(&output.stderr).contains("found 0 faces"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn faces_enroll_and_verify_through_the_cli() {
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    let directory = tempfile::tempdir().unwrap();
    let enrolment = directory.path().join("photos");
    std::fs::create_dir_all(&enrolment).unwrap();
    for name in ["obama.jpg", "obama2.jpg", "obama3.jpg", "black.png"] {
        std::fs::copy(photos.join(name), enrolment.join(name)).unwrap();
    }
    let template = directory.path().join("template.json");
    let output = dosewitness(&[
        "faces",
        "enroll",
        enrolment.to_str().unwrap(),
        "--out",
        template.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("black.png: refused"),
        "{}",
        text(&output.stderr)
    );
    assert!(
        text(&output.stdout).contains("enrolled from 3 photos"),
        "{}",
        text(&output.stdout)
    );
    let verify = |image: &str| {
        let output = dosewitness(&[
            "faces",
            "verify",
            template.to_str().unwrap(),
            photos.join(image).to_str().unwrap(),
            "--json",
        ]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    assert_eq!(verify("obama2.jpg")["same_person"], true);
    assert_eq!(verify("biden.jpg")["same_person"], false);

    // Two people in one enrolment are refused, and an existing template is never overwritten.
    std::fs::remove_file(enrolment.join("obama3.jpg")).unwrap();
    std::fs::copy(photos.join("biden.jpg"), enrolment.join("biden.jpg")).unwrap();
    let output = dosewitness(&[
        "faces",
        "enroll",
        enrolment.to_str().unwrap(),
        "--out",
        directory.path().join("t2.json").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("do not show the same person"),
        "{}",
        text(&output.stderr)
    );
    let output = dosewitness(&[
        "faces",
        "enroll",
        enrolment.to_str().unwrap(),
        "--out",
        template.to_str().unwrap(),
    ]);
    assert!(
        text(&output.stderr).contains("already exists"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn seed_fills_a_backend_with_varied_adherence() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().to_str().unwrap();
    for _ in 0..2 {
        let output = dosewitness(&[
            "seed",
            "--data-dir",
            data_dir,
            "--patients",
            "6",
            "--days",
            "14",
        ]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let stdout = text(&output.stdout);
        // 6 patients × 14 days × 2 doses, every one accepted by the server's chain checks.
        assert!(stdout.contains("168 signed dose events"), "{stdout}");
        let bands = stdout
            .lines()
            .find(|line| line.starts_with("adherence bands:"))
            .unwrap();
        assert!(
            bands.matches(' ').count() >= 4,
            "expected at least two bands: {bands}"
        );
    }
    assert!(directory.path().join("server/server.db").exists());
}
