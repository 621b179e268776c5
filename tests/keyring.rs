#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The store key in a real OS keyring: a private D-Bus session bus with GNOME Keyring's Secret
//! Service on it (`cargo xtask test` installs `gnome-keyring`), driven through the CLI.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_dosewitness");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A session bus and a Secret Service on it, private to one test; both are killed on drop.
struct SecretService {
    bus: Child,
    keyring: Child,
    address: String,
    _home: tempfile::TempDir,
}

impl SecretService {
    fn start() -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon runs (Debian package dbus; cargo xtask test installs it)");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let address = address.trim().to_string();
        let runtime = home.path().join("run");
        std::fs::create_dir_all(&runtime).unwrap();
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_DATA_HOME", home.path().join("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "gnome-keyring-daemon runs (Debian package gnome-keyring; cargo xtask test \
                 installs it)",
            );
        // The login keyring's password, then end of input: the keyring is created unlocked.
        let mut stdin = keyring.stdin.take().unwrap();
        stdin.write_all(b"test-login-password").unwrap();
        drop(stdin);
        let service = Self {
            bus,
            keyring,
            address,
            _home: home,
        };
        service.wait_until_registered();
        service
    }

    fn wait_until_registered(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = Command::new("dbus-send")
                .args([
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
                .output()
                .unwrap();
            if text(&reply.stdout).contains("boolean true") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Secret Service never appeared on the bus"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run(&self, arguments: &[&str]) -> Output {
        dosewitness_with_bus(&self.address, arguments)
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        let _ = self.keyring.kill();
        let _ = self.keyring.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

fn dosewitness_with_bus(address: &str, arguments: &[&str]) -> Output {
    Command::new(BINARY)
        .args(arguments)
        .env("DBUS_SESSION_BUS_ADDRESS", address)
        .output()
        .unwrap()
}

fn files_under(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_store_keyed_in_the_os_keyring_opens_rekeys_and_verifies() {
    let service = SecretService::start();
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().to_str().unwrap();

    let init = service.run(&["store", "init", "--data-dir", data_dir]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    assert!(
        text(&init.stdout).contains("OS keyring entry org.dosewitness.device-store/store-"),
        "{}",
        text(&init.stdout)
    );
    let device = directory.path().join("device");
    assert_eq!(
        files_under(&device),
        vec!["device.db".to_string(), "store.keyring".to_string()],
        "no key file: the key is only in the keyring"
    );

    let info = service.run(&["store", "info", "--data-dir", data_dir]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    assert!(text(&info.stdout).contains("schema version:"));

    let before = std::fs::read(device.join("device.db")).unwrap();
    let rekey = service.run(&["store", "rekey", "--data-dir", data_dir]);
    assert!(rekey.status.success(), "{}", text(&rekey.stderr));
    let verify = service.run(&["store", "verify", "--data-dir", data_dir]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    let after = std::fs::read(device.join("device.db")).unwrap();
    assert_ne!(before, after, "every page was re-encrypted");
}

#[test]
fn a_keyring_without_the_entry_is_a_clear_error_and_the_store_is_untouched() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().to_str().unwrap();
    {
        let service = SecretService::start();
        let init = service.run(&["store", "init", "--data-dir", data_dir]);
        assert!(init.status.success(), "{}", text(&init.stderr));
    }
    // Another session (a reset keyring, another user): the entry is not there.
    let other = SecretService::start();
    let store = directory.path().join("device/device.db");
    let before = std::fs::read(&store).unwrap();
    let info = other.run(&["store", "info", "--data-dir", data_dir]);
    assert!(!info.status.success());
    assert!(
        text(&info.stderr).contains("no such entry"),
        "{}",
        text(&info.stderr)
    );
    assert_eq!(std::fs::read(&store).unwrap(), before);
}

#[test]
fn without_a_keyring_init_says_what_to_choose_and_creates_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().to_str().unwrap();
    let missing_bus = format!("unix:path={}/no-bus", directory.path().display());
    let init = dosewitness_with_bus(&missing_bus, &["store", "init", "--data-dir", data_dir]);
    assert!(!init.status.success());
    let message = text(&init.stderr);
    assert!(
        message.contains("OS keyring") && message.contains("--key-store file"),
        "{message}"
    );
    assert!(!directory.path().join("device/device.db").exists());
    assert!(!directory.path().join("device/store.keyring").exists());
}
