//! Transparent huge pages for the heap of the commands that run the vision models (Linux with
//! glibc). A tracked ingestion frame touches two models' packed weights and a dozen activation
//! buffers, a few MB spread over ~100 MB of heap in 4 KiB pages; a model run that follows other
//! work (the other model, the camera, the store) pays a TLB miss on most of them. glibc backs its
//! heap with 2 MiB pages when started with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (it then
//! `madvise`s its memory, which the default `madvise` THP mode honours), and a tunable is only
//! read at start-up, so these commands restart themselves once with it. Measured on the EPYC
//! (docs/measuring-speed.md): hand landmarks 4.76–4.89 → 4.55–4.62 ms in `bench vision`.
//!
//! `DOSEWITNESS_HUGE_PAGES=0` (or `off`) keeps the process as started, and tunables the user set
//! are left alone. Elsewhere (macOS, Windows, musl) this does nothing.

use std::ffi::{OsStr, OsString};

/// Set to `0` or `off` to run without the restart.
pub const OPT_OUT: &str = dosewitness_hotmem::HUGE_PAGES_OPT_OUT;

/// The glibc tunable that makes malloc ask for transparent huge pages.
const HUGE_PAGE_TUNABLE: &str = "glibc.malloc.hugetlb=1";

/// The `GLIBC_TUNABLES` value to restart with, given the current one and the opt-out variable;
/// `None` to run on as started. A process that already has tunables (our own restart included,
/// so it never loops) keeps them.
pub fn restart_tunables(tunables: Option<&OsStr>, opt_out: Option<&OsStr>) -> Option<OsString> {
    if dosewitness_hotmem::huge_pages_opted_out(opt_out) {
        return None;
    }
    match tunables {
        None => Some(HUGE_PAGE_TUNABLE.into()),
        Some(_) => None,
    }
}

/// Replaces this process with itself under [`restart_tunables`]'s value, when there is one.
/// Returns only when no restart was needed or `exec` failed (the error, for the log): the
/// command then runs as it would have, on 4 KiB pages.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn restart_with_huge_pages() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    let value = restart_tunables(
        std::env::var_os("GLIBC_TUNABLES").as_deref(),
        std::env::var_os(OPT_OUT).as_deref(),
    )?;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => return Some(error),
    };
    Some(
        std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", value)
            .exec(),
    )
}

/// No glibc here: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn restart_with_huge_pages() -> Option<std::io::Error> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_once_and_only_when_nothing_is_set() {
        assert_eq!(
            restart_tunables(None, None),
            Some(OsString::from("glibc.malloc.hugetlb=1"))
        );
        // The restarted process (and a user's own tunables) keep what they have.
        assert_eq!(
            restart_tunables(Some(OsStr::new("glibc.malloc.hugetlb=1")), None),
            None
        );
        assert_eq!(
            restart_tunables(Some(OsStr::new("glibc.malloc.arena_max=2")), None),
            None
        );
        for opt_out in ["0", "off", "OFF"] {
            assert_eq!(restart_tunables(None, Some(OsStr::new(opt_out))), None);
        }
        assert!(restart_tunables(None, Some(OsStr::new("1"))).is_some());
    }
}
