//! Crash safety of the device store: a child process writing signed dose events is killed with
//! SIGKILL at random moments, many times, on the same store. Every event it reported as
//! committed must be there exactly once, the chain must verify and the store must open.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const BINARY: &str = env!("CARGO_BIN_EXE_dosewitness");
const TRIALS: u64 = 30;

/// xorshift64*, seeded from the clock; the seed is printed so a failure can be replayed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Runs `store export` and returns (sequence, event id) of every stored event, in chain order.
fn export_events(scratch: &std::path::Path, data_dir: &str) -> Vec<(u64, String)> {
    let export = scratch.join(format!("export-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&export);
    let output = Command::new(BINARY)
        .args([
            "store",
            "export",
            "--data-dir",
            data_dir,
            "--out",
            export.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            let sequence = event["record"]["sequence"].as_u64().unwrap();
            (
                sequence,
                event["record"]["event"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn killing_the_writer_never_loses_or_duplicates_a_committed_dose() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (set CRASH_SEED to replay)");
    let mut random = seed;
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().to_str().unwrap().to_string();
    let mut committed: HashMap<String, u64> = HashMap::new();
    let mut kills_mid_run = 0;
    for trial in 0..TRIALS {
        let mut child = Command::new(BINARY)
            .args([
                "store",
                "stress-write",
                "--data-dir",
                &data_dir,
                "--count",
                "100000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Kill anywhere from process start-up to well into the writing.
        let delay = Duration::from_millis(next(&mut random) % 400);
        let started = Instant::now();
        while started.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().unwrap().is_none() {
            kills_mid_run += 1;
        }
        child.kill().ok(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        let lines = reader.join().unwrap();
        if status.success() {
            panic!(
                "trial {trial}: the writer finished 100000 events before being killed; raise --count"
            );
        }
        for line in lines {
            let mut parts = line.split_whitespace();
            assert_eq!(
                parts.next(),
                Some("committed"),
                "unexpected output {line:?}"
            );
            let sequence: u64 = parts.next().unwrap().parse().unwrap();
            let event_id = parts.next().unwrap().to_string();
            assert!(
                committed.insert(event_id, sequence).is_none(),
                "an event id was reported twice"
            );
        }
    }
    assert!(
        kills_mid_run >= TRIALS / 2,
        "only {kills_mid_run} of {TRIALS} kills hit a running writer"
    );
    assert!(
        !committed.is_empty(),
        "no trial committed anything; the writer may be failing to start"
    );

    let verify = Command::new(BINARY)
        .args(["store", "verify", "--data-dir", &data_dir])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "chain does not verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    let exported = export_events(directory.path(), &data_dir);
    let mut stored: HashMap<String, u64> = HashMap::new();
    let mut sequences = Vec::new();
    for (sequence, event_id) in exported {
        assert!(
            stored.insert(event_id, sequence).is_none(),
            "an event is stored twice"
        );
        sequences.push(sequence);
    }
    assert_eq!(
        sequences,
        (1..=sequences.len() as u64).collect::<Vec<_>>(),
        "sequences are gap-free"
    );
    for (event_id, sequence) in &committed {
        assert_eq!(
            stored.get(event_id),
            Some(sequence),
            "committed event {event_id} (sequence {sequence}) is missing"
        );
    }
    eprintln!(
        "{TRIALS} kills ({kills_mid_run} mid-run): {} events reported committed, {} stored",
        committed.len(),
        stored.len()
    );
}

#[test]
fn a_full_disk_stops_the_writer_with_a_clear_error_and_loses_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().to_str().unwrap().to_string();
    let init = Command::new(BINARY)
        .args([
            "store",
            "init",
            "--data-dir",
            &data_dir,
            "--key-store",
            "file",
        ])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    // RLIMIT_FSIZE makes writes past 2 MiB fail with EFBIG, as a full disk would, without
    // needing root; SIGXFSZ is ignored so the write error reaches SQLite.
    let script = format!(
        "trap '' XFSZ; ulimit -f 4096; exec '{BINARY}' store stress-write --data-dir '{data_dir}' --count 100000"
    );
    let output = Command::new("sh").args(["-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the writer should have hit the size limit"
    );
    assert!(
        stderr.contains("the dose was not recorded"),
        "unclear error: {stderr}"
    );
    let reported: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.split_whitespace().nth(2).unwrap().to_string())
        .collect();
    assert!(
        reported.len() > 10,
        "expected some events before the disk filled, got {}",
        reported.len()
    );

    let stored: Vec<String> = export_events(directory.path(), &data_dir)
        .into_iter()
        .map(|(_, event_id)| event_id)
        .collect();
    assert_eq!(stored, reported, "exactly the committed events, in order");
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// Runs the CLI as an unprivileged user when the tests run as root (root ignores permission
/// bits), so a read-only directory is read-only to the writer.
fn unprivileged(arguments: &[&str]) -> Command {
    if running_as_root() {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BINARY])
            .args(arguments);
        command
    } else {
        let mut command = Command::new(BINARY);
        command.args(arguments);
        command
    }
}

#[test]
fn a_read_only_store_directory_is_a_clear_error_and_nothing_changes() {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("data");
    let data = data_dir.to_str().unwrap();
    let init = Command::new(BINARY)
        .args(["store", "init", "--data-dir", data, "--key-store", "file"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let device = data_dir.join("device");
    // Owned by the unprivileged user (when root), then made read-only.
    std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534", data])
        .status()
        .unwrap();
    let root = running_as_root();
    assert!(!root || chown.success());
    std::fs::set_permissions(&device, std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = std::fs::read(device.join("device.db")).unwrap();

    let write = unprivileged(&["store", "stress-write", "--data-dir", data, "--count", "1"])
        .output()
        .unwrap();
    std::fs::set_permissions(&device, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(!write.status.success());
    let message = String::from_utf8_lossy(&write.stderr);
    assert!(
        message.contains("not writable") && message.contains("nothing was changed"),
        "{message}"
    );
    assert!(!String::from_utf8_lossy(&write.stdout).contains("committed"));
    assert_eq!(std::fs::read(device.join("device.db")).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(&device)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "only the store and its key: {leftovers:?}"
    );
}
