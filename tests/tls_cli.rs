//! `dosewitness serve --tls-cert --tls-key` and `dosewitness sync --pin-certificate`: the
//! binary serving HTTPS on loopback, and its errors for missing or half-given TLS settings.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_dosewitness");

fn dosewitness(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_remove("DOSEWITNESS_DATA_DIR")
        .env_remove("DOSEWITNESS_DATABASE_URL")
        .env_remove("DOSEWITNESS_TLS_CERT")
        .env_remove("DOSEWITNESS_TLS_KEY")
        .env_remove("DOSEWITNESS_PIN_CERTIFICATE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn serve_needs_both_tls_files_and_names_the_one_it_cannot_read() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().to_str().unwrap();
    let certificate = directory.path().join("server.crt");
    let certificate = certificate.to_str().unwrap();

    let half = dosewitness(&["serve", "--data-dir", data_dir, "--tls-cert", certificate]);
    assert!(!half.status.success());
    assert!(
        text(&half.stderr).contains("--tls-key"),
        "{}",
        text(&half.stderr)
    );

    let missing = dosewitness(&[
        "serve",
        "--data-dir",
        data_dir,
        "--tls-cert",
        certificate,
        "--tls-key",
        certificate,
    ]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains(&format!("could not read {certificate}")),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn sync_names_a_pinned_certificate_it_cannot_read() {
    let directory = tempfile::tempdir().unwrap();
    let pin = directory.path().join("pin.pem");
    let output = dosewitness(&[
        "sync",
        "--data-dir",
        directory.path().to_str().unwrap(),
        "--pin-certificate",
        pin.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains(&format!("the pinned certificate {}", pin.display())),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn serve_with_a_certificate_speaks_https_and_stops_on_interrupt() {
    let directory = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let certificate_path = directory.path().join("server.crt");
    let key_path = directory.path().join("server.key");
    std::fs::write(&certificate_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    let mut server = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(directory.path())
        .arg("--tls-cert")
        .arg(&certificate_path)
        .arg("--tls-key")
        .arg(&key_path)
        .env_remove("DOSEWITNESS_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve exited early"
        );
    }
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("https://"))
        .unwrap_or_else(|| panic!("no https:// address in {line:?}"))
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");

    // A pinned client gets an answer from the router over TLS: 401 for an unknown device.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tls = dosewitness_sync::TlsPolicy::pinned_file(&certificate_path).unwrap();
    let client = dosewitness_sync::DeviceClient::with_tls(
        &url,
        Some("not-a-token".into()),
        Duration::from_secs(10),
        &tls,
    )
    .unwrap();
    let error = runtime
        .block_on(client.regimens(dosewitness_domain::DeviceId::generate(chrono::Utc::now())))
        .unwrap_err();
    assert!(
        matches!(
            error,
            dosewitness_sync::SyncError::Rejected { status: 401, .. }
        ),
        "{error:?}"
    );

    // Ctrl-C (SIGINT) shuts it down gracefully, with success.
    let interrupted = Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            server.kill().unwrap();
            panic!("the server did not stop within 10 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
