//! Terminal output for long-running commands: numbered steps with timings, on stderr, so
//! stdout stays clean for results.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The header of the step in progress, so progress lines can redraw it.
static CURRENT_STEP: Mutex<String> = Mutex::new(String::new());

fn set_current_step(header: &str) {
    if let Ok(mut current) = CURRENT_STEP.lock() {
        header.clone_into(&mut current);
    }
}

/// One finished step, for the closing summary.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub name: &'static str,
    pub detail: String,
    pub elapsed: Duration,
}

/// Runs and reports numbered steps.
#[derive(Debug)]
pub struct Steps {
    total: usize,
    done: Vec<StepRecord>,
}

impl Steps {
    pub fn new(total: usize) -> Self {
        Self {
            total,
            done: Vec::new(),
        }
    }

    /// Runs `work` as the next step. On success prints its detail and time; on failure names
    /// the step in the error.
    pub fn run<T>(
        &mut self,
        name: &'static str,
        work: impl FnOnce() -> anyhow::Result<(T, String)>,
    ) -> anyhow::Result<T> {
        let number = self.done.len() + 1;
        let header = format!("[{number}/{}] {name} … ", self.total);
        eprint!("{header}");
        let _ = std::io::stderr().flush();
        set_current_step(&header);
        let started = Instant::now();
        match work() {
            Ok((value, detail)) => {
                let elapsed = started.elapsed();
                eprintln!("ok ({}) {detail}", format_duration(elapsed));
                self.done.push(StepRecord {
                    name,
                    detail,
                    elapsed,
                });
                Ok(value)
            }
            Err(error) => {
                eprintln!("FAILED");
                Err(error.context(format!("step {number} ({name}) failed")))
            }
        }
    }

    pub fn records(&self) -> &[StepRecord] {
        &self.done
    }
}

pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_secs_f64() * 1000.0;
    if millis < 1000.0 {
        format!("{millis:.0} ms")
    } else {
        format!("{:.2} s", millis / 1000.0)
    }
}

/// Redraws the current step's line with `text` after its header, e.g.
/// `[6/9] Run the dose session … frame 12/40 · 1 face · 3.1 ms`. Only on a terminal: logs and
/// pipes get the step lines alone.
pub fn progress_line(text: &str) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let header = CURRENT_STEP
        .lock()
        .map(|header| header.clone())
        .unwrap_or_default();
    eprint!("\r\x1b[2K{header}{text}");
    let _ = std::io::stderr().flush();
}

/// Restores the current step's header after progress lines.
pub fn progress_done() {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let header = CURRENT_STEP
        .lock()
        .map(|header| header.clone())
        .unwrap_or_default();
    eprint!("\r\x1b[2K{header}");
    let _ = std::io::stderr().flush();
}
