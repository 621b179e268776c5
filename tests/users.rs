//! `dosewitness users`: the first admin account and API tokens, made on the backend's database.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn dosewitness(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dosewitness"))
        .args(args)
        .env_remove("DOSEWITNESS_DATA_DIR")
        .env_remove("DOSEWITNESS_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_first_admin_and_its_token_come_from_the_command_line() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().to_str().unwrap();
    let add = |username: &str, password: &str| {
        dosewitness(
            &[
                "users",
                "add",
                "--data-dir",
                data_dir,
                "--username",
                username,
                "--role",
                "admin",
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        )
    };
    let weak = add("first.admin", "short");
    assert!(!weak.status.success());
    assert!(
        text(&weak.stderr).contains("at least 12 characters"),
        "{}",
        text(&weak.stderr)
    );

    let made = add("first.admin", "correct horse battery staple");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let taken = add("first.admin", "another long passphrase");
    assert!(!taken.status.success());
    assert!(
        text(&taken.stderr).contains("taken"),
        "{}",
        text(&taken.stderr)
    );

    let token = dosewitness(
        &[
            "users",
            "token",
            "--data-dir",
            data_dir,
            "--username",
            "first.admin",
            "--label",
            "ops",
        ],
        None,
    );
    assert!(token.status.success(), "{}", text(&token.stderr));
    let token = text(&token.stdout);
    assert!(
        token.trim().starts_with("dwt_") && token.trim().len() == 68,
        "{token}"
    );

    let unknown = dosewitness(
        &[
            "users",
            "token",
            "--data-dir",
            data_dir,
            "--username",
            "nobody",
            "--label",
            "ops",
        ],
        None,
    );
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("no account"),
        "{}",
        text(&unknown.stderr)
    );

    let scope = dosewitness(
        &[
            "users",
            "add",
            "--data-dir",
            data_dir,
            "--username",
            "coord",
            "--role",
            "coordinator",
            "--scope",
            "study:not-an-id",
        ],
        None,
    );
    assert!(!scope.status.success());
    assert!(
        text(&scope.stderr).contains("not a valid id"),
        "{}",
        text(&scope.stderr)
    );

    let list = dosewitness(&["users", "list", "--data-dir", data_dir], None);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let listed = text(&list.stdout);
    assert!(
        listed.contains("first.admin") && listed.contains("\"admin\""),
        "{listed}"
    );
    assert!(
        !listed.contains("argon2") && !listed.contains("horse"),
        "{listed}"
    );
}
