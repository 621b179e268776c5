//! `dosewitness bench …`: measured figures for the performance targets. Benchmarks, not tests:
//! they print numbers; the issues' targets are compared in the output, never asserted in tests.

use anyhow::Context;
use chrono::{Duration, Utc};
use dosewitness_domain::{
    CheckScores, Clock, DeviceId, DoseEvent, DoseEventId, DoseOutcome, MedicationId, PatientId,
    RegimenId, SystemClock,
};
use dosewitness_store::{DeviceStore, StoreKey};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Time to drain queued signed events from a device store to a loopback backend.
    Sync {
        /// Events to queue before draining.
        #[arg(long, default_value_t = 10_000)]
        events: u32,
        #[arg(long)]
        json: bool,
    },
    /// Per-model latency in tract (load, median, p95; single thread) next to ONNX Runtime on the
    /// same files and inputs, and the per-frame cost of each dose-session phase.
    Vision {
        /// Timed runs per model.
        #[arg(long, default_value_t = 50)]
        runs: u32,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = crate::DEFAULT_MODELS_DIR)]
        models_dir: PathBuf,
        #[arg(long, default_value = crate::DEFAULT_REPLAY_DIR)]
        replay: PathBuf,
        /// Python with onnxruntime (default: the venv `cargo xtask models` creates).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/model-venv/bin/python"))]
        ort_python: PathBuf,
        /// Instead of the benchmark, time every node of one model's tract plan and print the
        /// time per op type (for finding what to optimise).
        #[arg(long, value_name = "MODEL")]
        profile: Option<String>,
        /// With --profile, also list every node with its output shape and parameters.
        #[arg(long, requires = "profile")]
        nodes: bool,
        /// With --profile, evict the caches (64 MiB of writes) before each run, as the other
        /// models do between two runs of one model in a dose session.
        #[arg(long, requires = "profile", conflicts_with = "between")]
        cold: bool,
        /// With --profile, run every other model of the manifest once before each run, as the
        /// benchmark's rounds do: the profile then shows where the model loses time in the
        /// benchmark's conditions (caches, TLB and branch predictors left to other work).
        #[arg(long, requires = "profile")]
        between: bool,
    },
    /// Ingest events/s and batch latency of the clinic backend with concurrent devices, on
    /// SQLite and (with --database-url) PostgreSQL.
    Server(crate::bench_server::ServerBenchArgs),
    /// Signed dose events written per second, SQLCipher vs plain SQLite, and open time.
    Store {
        /// Events to write per store.
        #[arg(long, default_value_t = 2000)]
        events: u32,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Store { events, json } => store(events, json),
        BenchCommand::Server(args) => crate::bench_server::run(args),
        BenchCommand::Sync { events, json } => sync(events, json),
        BenchCommand::Vision {
            runs,
            models_dir,
            profile: Some(name),
            nodes,
            cold,
            between,
            ..
        } => {
            let before = match (cold, between) {
                (true, _) => BeforeEachRun::Evict,
                (_, true) => BeforeEachRun::OtherModels,
                _ => BeforeEachRun::Nothing,
            };
            profile_vision(&models_dir, &name, runs, nodes, before)
        }
        BenchCommand::Vision {
            runs,
            json,
            models_dir,
            replay,
            ort_python,
            profile: None,
            ..
        } => vision(runs, json, &models_dir, &replay, &ort_python),
    }
}

/// A synthetic verified dose event (random ids, no PHI) for benchmarks and crash tests.
pub fn sample_event(index: u32, clock: &dyn Clock) -> DoseEvent {
    let now = clock.now();
    DoseEvent {
        id: DoseEventId::generate(now),
        device_id: DeviceId::generate(now),
        patient_id: PatientId::generate(now),
        regimen_id: RegimenId::generate(now),
        medication_id: MedicationId::generate(now),
        scheduled_at: now - Duration::minutes(i64::from(index % 60)),
        recorded_at: now,
        outcome: DoseOutcome::Verified,
        reasons: Vec::new(),
        scores: CheckScores {
            face_detection: Some(0.93),
            ..CheckScores::default()
        },
    }
}

/// Writes `events` signed events, one durable transaction each; returns the seconds taken.
fn write_events(store: &mut DeviceStore, events: u32, clock: &dyn Clock) -> anyhow::Result<f64> {
    let started = Instant::now();
    for index in 0..events {
        store.append_dose_event(sample_event(index, clock), clock.now())?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn store(events: u32, json: bool) -> anyhow::Result<ExitCode> {
    let clock = SystemClock;
    let directory = tempfile::tempdir().context("creating a temp dir for the benchmark")?;
    let key = StoreKey::generate()?;
    let encrypted_path = directory.path().join("sqlcipher.db");
    let plain_path = directory.path().join("plain.db");

    let mut encrypted = DeviceStore::create(&encrypted_path, &key, clock.now())?;
    let mut plain = DeviceStore::create_plaintext_for_benchmark(&plain_path, clock.now())?;
    // Warm up both (page cache, statement cache), then interleave short rounds, alternating
    // which store goes first, so both share the disk's noise (fsync times vary a lot).
    write_events(&mut encrypted, 50, &clock)?;
    write_events(&mut plain, 50, &clock)?;
    let rounds = 20.min(events.max(1));
    let (mut encrypted_s, mut plain_s) = (0.0, 0.0);
    for round in 0..rounds {
        let batch = events / rounds + u32::from(round < events % rounds);
        if round % 2 == 0 {
            encrypted_s += write_events(&mut encrypted, batch, &clock)?;
            plain_s += write_events(&mut plain, batch, &clock)?;
        } else {
            plain_s += write_events(&mut plain, batch, &clock)?;
            encrypted_s += write_events(&mut encrypted, batch, &clock)?;
        }
    }
    let sqlcipher_events_per_s = f64::from(events) / encrypted_s;
    let plain_events_per_s = f64::from(events) / plain_s;
    let verify_started = Instant::now();
    let verified = encrypted.verify()?;
    let verify_ms = verify_started.elapsed().as_secs_f64() * 1000.0;
    drop(encrypted);
    drop(plain);

    let mut open_ms: Vec<f64> = (0..21)
        .map(|_| {
            let started = Instant::now();
            let store = DeviceStore::open(&encrypted_path, &key)?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            drop(store);
            Ok(elapsed)
        })
        .collect::<anyhow::Result<_>>()?;
    let open_ms_median = median(&mut open_ms);
    let overhead_ratio = plain_events_per_s / sqlcipher_events_per_s;
    let report = serde_json::json!({
        "events": events,
        "sqlcipher_events_per_s": sqlcipher_events_per_s,
        "plain_events_per_s": plain_events_per_s,
        "overhead_ratio": overhead_ratio,
        "open_ms_median": open_ms_median,
        "verify_chain_ms": verify_ms,
        "chain_length": verified,
        "transaction_per_event": true,
        "synchronous": "FULL",
        "targets": {"overhead_ratio_max": 1.15, "sqlcipher_events_per_s_min": 2000.0, "open_ms_max": 20.0},
        "measured_at": Utc::now().to_rfc3339(),
    });
    if json {
        println!("{report}");
    } else {
        println!(
            "bench store: {events} signed dose events per store, one durable transaction each"
        );
        println!("  SQLCipher      {sqlcipher_events_per_s:>10.0} events/s   (target ≥ 2000)");
        println!("  plain SQLite   {plain_events_per_s:>10.0} events/s");
        println!("  overhead       {overhead_ratio:>10.2}×          (target ≤ 1.15)");
        println!("  open, raw key  {open_ms_median:>10.2} ms median (target ≤ 20)");
        println!("  verify chain   {verify_ms:>10.1} ms for {verified} events");
    }
    Ok(ExitCode::SUCCESS)
}

/// The largest absolute difference between two runtimes' outputs, and that difference over the
/// largest magnitude in the reference. Errs when the outputs do not line up.
fn output_difference(ours: &[Vec<f32>], reference: &[Vec<f64>]) -> Result<(f64, f64), String> {
    if ours.len() != reference.len() {
        return Err(format!(
            "{} outputs against {}",
            ours.len(),
            reference.len()
        ));
    }
    let mut largest_difference = 0.0f64;
    let mut largest_reference = 0.0f64;
    for (index, (ours, reference)) in ours.iter().zip(reference).enumerate() {
        if ours.len() != reference.len() {
            return Err(format!(
                "output {index} has {} values against {}",
                ours.len(),
                reference.len()
            ));
        }
        for (&ours, &reference) in ours.iter().zip(reference) {
            let difference = (f64::from(ours) - reference).abs();
            // A NaN on either side is a disagreement, not a zero difference.
            largest_difference = if difference.is_nan() {
                f64::INFINITY
            } else {
                largest_difference.max(difference)
            };
            largest_reference = largest_reference.max(reference.abs());
        }
    }
    Ok((
        largest_difference,
        largest_difference / largest_reference.max(f64::MIN_POSITIVE),
    ))
}

/// A tracked phase's JSON row: frame time median and p95, and which models the frames ran.
fn tracked_phase(
    name: &str,
    timings_ms: &mut [f64],
    work: &dosewitness_vision::tracking::FrameWork,
    note: &str,
) -> serde_json::Value {
    let (median_ms, p95_ms) = median_p95(timings_ms);
    serde_json::json!({
        "name": name,
        "frame_ms": median_ms,
        "frame_p95_ms": p95_ms,
        "frames": timings_ms.len(),
        "tracking": true,
        "runs": {"face_detection": work.face_detections, "face_mesh": work.face_meshes,
                 "palm_detection": work.palm_detections, "hand_landmarks": work.hand_landmarks},
        "note": note,
    })
}

/// The pre-processing a tracked ingestion frame pays before its models run: the face mesh's and
/// the hand landmarker's rotated ROI crops, taken from `frame` turned by 20° as a tilted head or
/// hand would be, and the hand's from past the frame's edges. Median of 50 crops each.
fn crop_timings(frame: &dosewitness_vision::Frame) -> Vec<serde_json::Value> {
    use dosewitness_vision::geometry::{Point, RotatedRect, rotated_crop};
    let (width, height) = (frame.width() as f32, frame.height() as f32);
    let rect = RotatedRect {
        center: Point {
            x: width / 2.0,
            y: height / 2.0,
        },
        side: width.min(height) * 0.8,
        angle: 20f32.to_radians(),
    };
    // A hand held close to the camera: its ROI (twice the hand's extent when tracked, 2.6× the
    // palm from a detection) reaches past the frame on every side, as the ingestion phase's
    // photo does (a 775 px ROI on 640×480).
    let past_frame = RotatedRect {
        side: width.max(height) * 1.2,
        ..rect
    };
    [
        ("face_mesh_roi", 192, rect),
        ("hand_roi", 224, rect),
        ("hand_roi_past_frame", 224, past_frame),
    ]
    .into_iter()
    .map(|(name, side, rect)| {
        let mut timings: Vec<f64> = (0..50)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(rotated_crop(frame, &rect, side, 0.0, [0.0, 1.0]));
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        serde_json::json!({
            "name": name,
            "side": side,
            "ms": median(&mut timings),
            "source": format!("{}×{} frame", frame.width(), frame.height()),
        })
    })
    .collect()
}

/// Median and 95th percentile of `timings_ms` (sorted in place).
fn median_p95(timings_ms: &mut [f64]) -> (f64, f64) {
    let median = median(timings_ms);
    let index = ((timings_ms.len() as f64) * 0.95) as usize;
    let p95 = timings_ms
        .get(index.min(timings_ms.len().saturating_sub(1)))
        .copied();
    (median, p95.unwrap_or(f64::NAN))
}

/// The deterministic input both runtimes get: element i = lo + ((i·7919) mod 256)/255·(hi − lo).
fn deterministic_input(size: usize, range: [f32; 2]) -> Vec<f32> {
    (0..size)
        .map(|index| range[0] + ((index * 7919) % 256) as f32 / 255.0 * (range[1] - range[0]))
        .collect()
}

/// ONNX Runtime in a Python child (`scripts/bench/ort_bench.py --serve`) with every model's
/// session loaded, answering "time NAME for RUNS runs" requests, so the benchmark can interleave
/// tract and ORT rounds and time both runtimes in the same windows of a noisy machine.
struct OrtWorker {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
    /// `{name: {"load_ms", "onnxruntime"}}` as the child reported it.
    ready: serde_json::Value,
}

impl OrtWorker {
    fn start(python: &Path, models_dir: &Path) -> Result<Self, String> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        if !python.is_file() {
            return Err(format!(
                "{} not found; run `cargo xtask models` to create the venv",
                python.display()
            ));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/ort_bench.py");
        let mut child = Command::new(python)
            .arg(&script)
            .arg("--serve")
            .arg("--models")
            .arg(models_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| format!("could not run {}: {error}", python.display()))?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the ONNX Runtime child has no pipes".to_string());
        };
        let mut output = std::io::BufReader::new(output);
        let mut line = String::new();
        output
            .read_line(&mut line)
            .map_err(|error| format!("reading from the ONNX Runtime child: {error}"))?;
        let first: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
            format!("the ONNX Runtime benchmark did not start (it said {line:?}; see above)")
        })?;
        Ok(Self {
            child,
            input,
            output,
            ready: first["ready"].clone(),
        })
    }

    fn time(&mut self, name: &str, runs: u32) -> Result<Vec<f64>, String> {
        let answer = self.ask(&format!("{name} {runs}"), name)?;
        serde_json::from_value(answer)
            .map_err(|_| format!("ONNX Runtime sent no timings for {name}"))
    }

    /// The model's outputs under ONNX Runtime on the same input, flat, in graph order.
    fn outputs(&mut self, name: &str) -> Result<Vec<Vec<f64>>, String> {
        let answer = self.ask(&format!("OUTPUTS {name}"), name)?;
        serde_json::from_value(answer)
            .map_err(|_| format!("ONNX Runtime sent no outputs for {name}"))
    }

    fn ask(&mut self, request: &str, name: &str) -> Result<serde_json::Value, String> {
        use std::io::{BufRead, Write};
        writeln!(self.input, "{request}")
            .and_then(|()| self.input.flush())
            .map_err(|error| format!("writing to the ONNX Runtime child: {error}"))?;
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .map_err(|error| format!("reading from the ONNX Runtime child: {error}"))?;
        serde_json::from_str(&line)
            .map_err(|_| format!("ONNX Runtime failed on {name} (it said {line:?})"))
    }
}

impl Drop for OrtWorker {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = writeln!(self.input);
        let _ = self.child.wait();
    }
}

/// Larger than the last-level caches of the machines we measure on (32 MiB here).
const EVICTION_BYTES: usize = 64 << 20;

/// What `bench vision --profile` does before each timed run of the profiled model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BeforeEachRun {
    Nothing,
    /// 64 MiB of writes (`--cold`).
    Evict,
    /// One run of every other model in the manifest (`--between`).
    OtherModels,
}

/// `bench vision --profile NAME`: per-op (and with `nodes`, per-node) times of one model's plan.
fn profile_vision(
    models_dir: &Path,
    name: &str,
    runs: u32,
    nodes: bool,
    before: BeforeEachRun,
) -> anyhow::Result<ExitCode> {
    let manifest = dosewitness_vision::ModelManifest::open(models_dir)?;
    let model = manifest.load(name)?;
    let entry = model.entry();
    let input = deterministic_input(entry.input.shape.iter().product(), entry.input.range);
    let mut evictor = vec![
        0u8;
        if before == BeforeEachRun::Evict {
            EVICTION_BYTES
        } else {
            0
        }
    ];
    let mut others = Vec::new();
    if before == BeforeEachRun::OtherModels {
        for other in manifest.models.iter().filter(|other| other.name != name) {
            let model = manifest.load(&other.name)?;
            let input = deterministic_input(other.input.shape.iter().product(), other.input.range);
            model.run(&input)?;
            others.push(model);
        }
    }
    let profile = model.profile(&input, runs as usize, || {
        for (index, byte) in evictor.iter_mut().enumerate().step_by(64) {
            *byte = byte.wrapping_add(index as u8);
        }
        std::hint::black_box(&mut evictor);
        for other in &others {
            other.run_with(|_| ())?;
        }
        Ok(())
    })?;
    let total: f64 = profile.ops.iter().map(|share| share.ms).sum();
    if nodes {
        for node in &profile.nodes {
            println!(
                "{:8.3} ms  #{:<4} {:<20} {} -> {}\n             {}",
                node.ms, node.id, node.op, node.name, node.outputs, node.detail
            );
        }
    }
    println!(
        "{name}: {total:.2} ms summed over {} nodes; wall min {:.2} ms, median {:.2} ms ({runs} runs{})",
        profile.nodes.len(),
        profile.wall_min_ms,
        profile.wall_median_ms,
        match before {
            BeforeEachRun::Nothing => "",
            BeforeEachRun::Evict => ", caches evicted before each",
            BeforeEachRun::OtherModels => ", the other models run before each",
        }
    );
    for share in &profile.ops {
        println!(
            "  {:<28} {:>4} nodes {:8.3} ms {:5.1} %",
            share.op,
            share.nodes,
            share.ms,
            share.ms / total * 100.0
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn vision(
    runs: u32,
    json: bool,
    models_dir: &Path,
    replay: &Path,
    ort_python: &Path,
) -> anyhow::Result<ExitCode> {
    use dosewitness_capture::{FrameSource, ReplaySource};
    use dosewitness_vision::{FaceDetector, ModelManifest};

    let manifest = ModelManifest::open(models_dir)?;
    let mut loaded = Vec::new();
    for entry in &manifest.models {
        let started = Instant::now();
        let model = manifest.load(&entry.name)?;
        let load_ms = started.elapsed().as_secs_f64() * 1000.0;
        let input = deterministic_input(entry.input.shape.iter().product(), entry.input.range);
        // The input goes into the model's own input tensor once; the timed runs below leave it
        // there, as ONNX Runtime's timed runs reuse one prepared array (in the dose session,
        // pre-processing writes each crop straight into that tensor).
        model.run(&input)?;
        for _ in 0..4 {
            model.run_with(|_| ())?;
        }
        loaded.push((model, input, load_ms));
    }
    let mut ort = OrtWorker::start(ort_python, models_dir);
    // Rounds interleave the runtimes model by model: this machine's speed drifts by tens of
    // percent over a minute, and a ratio of two medians taken minutes apart mostly measures that.
    let runs = runs.max(1);
    let rounds = runs.min(25);
    let per_round = runs.div_ceil(rounds);
    let mut tract_ms: Vec<Vec<f64>> = vec![Vec::new(); loaded.len()];
    let mut ort_ms: Vec<Vec<f64>> = vec![Vec::new(); loaded.len()];
    for _ in 0..rounds {
        for (index, (model, _, _)) in loaded.iter().enumerate() {
            for _ in 0..per_round {
                let started = Instant::now();
                model.run_with(|_| ())?;
                tract_ms[index].push(started.elapsed().as_secs_f64() * 1000.0);
            }
            if let Ok(worker) = &mut ort {
                match worker.time(&model.entry().name, per_round) {
                    Ok(timings) => ort_ms[index].extend(timings),
                    Err(reason) => ort = Err(reason),
                }
            }
        }
    }
    if let Err(reason) = &ort {
        eprintln!("ONNX Runtime comparison skipped: {reason}");
    }
    // Agreement on the same input: the largest absolute difference between tract's and ONNX
    // Runtime's outputs, and that difference over the largest reference magnitude.
    let mut agreement: Vec<Option<(f64, f64)>> = vec![None; loaded.len()];
    if let Ok(worker) = &mut ort {
        for (slot, (model, input, _)) in agreement.iter_mut().zip(&loaded) {
            let name = &model.entry().name;
            let reference = worker.outputs(name);
            match reference.map(|reference| (model.run(input), reference)) {
                Ok((Ok(ours), reference)) => match output_difference(&ours, &reference) {
                    Ok(difference) => *slot = Some(difference),
                    Err(reason) => eprintln!("{name}: outputs not compared: {reason}"),
                },
                Ok((Err(error), _)) => return Err(error.into()),
                Err(reason) => eprintln!("{name}: outputs not compared: {reason}"),
            }
        }
    }
    let model_rows: Vec<serde_json::Value> = loaded
        .iter()
        .zip(tract_ms.iter_mut().zip(ort_ms.iter_mut()))
        .zip(&agreement)
        .map(|(((model, _, load_ms), (tract, ort_runs)), agreement)| {
            let name = model.entry().name.as_str();
            let (tract_median, tract_p95) = median_p95(tract);
            let ort_stats = (ort.is_ok() && !ort_runs.is_empty()).then(|| median_p95(ort_runs));
            let ort_load = ort
                .as_ref()
                .ok()
                .and_then(|worker| worker.ready[name]["load_ms"].as_f64());
            let tract_min = tract.iter().copied().fold(f64::INFINITY, f64::min);
            let ort_min = ort_runs.iter().copied().fold(f64::INFINITY, f64::min);
            serde_json::json!({
                "name": name,
                "load_ms": load_ms,
                "tract_min_ms": tract_min,
                "ort_min_ms": ort_stats.map(|_| ort_min),
                "ratio_min": ort_stats.map(|_| tract_min / ort_min),
                "tract_ms": tract_median,
                "tract_p95_ms": tract_p95,
                "ort_ms": ort_stats.map(|(median, _)| median),
                "ort_p95_ms": ort_stats.map(|(_, p95)| p95),
                "ort_load_ms": ort_load,
                "ratio": ort_stats.map(|(median, _)| tract_median / median),
                "max_abs_diff": agreement.map(|(absolute, _)| absolute),
                "max_rel_diff": agreement.map(|(_, relative)| relative),
            })
        })
        .collect();
    let ort_version = ort.as_ref().ok().and_then(|worker| {
        worker
            .ready
            .as_object()
            .and_then(|models| models.values().next())
            .and_then(|model| model["onnxruntime"].as_str())
            .map(str::to_string)
    });
    let ort_error = ort.as_ref().err().cloned();
    drop(ort);

    // Phase: face presence, the detector on every replay frame (pre-processing, inference,
    // decoding, NMS), as the dose session runs it.
    let detector = FaceDetector::load(&manifest)?;
    let mut source = ReplaySource::open(replay)?;
    let mut frames = Vec::new();
    while let Some(frame) = source.next_frame()? {
        frames.push(frame);
    }
    let preprocessing = frames.first().map(crop_timings).unwrap_or_default();
    let mut frame_ms = Vec::new();
    for _ in 0..3 {
        for frame in &frames {
            let started = Instant::now();
            detector.detect(frame)?;
            frame_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let (phase_median, phase_p95) = median_p95(&mut frame_ms);
    let mut phases = vec![serde_json::json!({
        "name": "face_presence",
        "frame_ms": phase_median,
        "frame_p95_ms": phase_p95,
        "frames": frame_ms.len(),
        "models": ["blazeface_short"],
        "tracking": false,
    })];

    // Phases with tracking: the face mesh alone, and face + hand as the ingestion check needs.
    let tracker = dosewitness_vision::tracking::Tracker {
        face_detector: detector.clone(),
        face_mesh: dosewitness_vision::FaceMesh::load(&manifest)?,
        palm_detector: dosewitness_vision::PalmDetector::load(&manifest)?,
        hand_landmarker: dosewitness_vision::HandLandmarker::load(&manifest)?,
        palm_detection_interval: 3,
    };
    for (name, with_hand) in [("face_tracked", false), ("ingestion_tracked", true)] {
        let mut timings = Vec::new();
        let mut work = dosewitness_vision::tracking::FrameWork::default();
        for _ in 0..3 {
            let mut state = dosewitness_vision::tracking::TrackingState::default();
            for frame in &frames {
                let started = Instant::now();
                tracker.face(frame, &mut state, &mut work)?;
                if with_hand {
                    tracker.hand(frame, &mut state, &mut work)?;
                }
                timings.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let note = if with_hand {
            "the replay shows no hand: palm detection runs every 3rd frame"
        } else {
            ""
        };
        phases.push(tracked_phase(name, &mut timings, &work, note));
    }
    // Phase: a full ingestion frame with both trackers locked, face mesh on the replay's face and
    // hand landmarks on a real photo of an open hand (no recording here shows both at once). This
    // is the per-frame cost while the patient brings the pill to the mouth.
    let hand_photo =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/hand_open.jpg");
    match dosewitness_vision::Frame::from_image_file(&hand_photo) {
        Ok(hand_frame) => {
            let mut timings = Vec::new();
            let mut work = dosewitness_vision::tracking::FrameWork::default();
            for _ in 0..3 {
                let mut state = dosewitness_vision::tracking::TrackingState::default();
                for (index, frame) in frames.iter().enumerate() {
                    let before = work;
                    let started = Instant::now();
                    tracker.face(frame, &mut state, &mut work)?;
                    tracker.hand(&hand_frame, &mut state, &mut work)?;
                    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                    // The first frame of a pass detects; only tracked frames count.
                    let tracked = work.face_detections == before.face_detections
                        && work.palm_detections == before.palm_detections;
                    if index > 0 && tracked {
                        timings.push(elapsed);
                    }
                }
            }
            if timings.is_empty() {
                eprintln!("phase ingestion_hand_tracked skipped: the trackers never locked");
            } else {
                phases.push(tracked_phase(
                    "ingestion_hand_tracked",
                    &mut timings,
                    &work,
                    "tracked frames only: face mesh on the replay + hand landmarks (lite) on tests/fixtures/images/hand_open.jpg",
                ));
            }
        }
        Err(error) => eprintln!("phase ingestion_hand_tracked skipped: {error}"),
    }

    let report = serde_json::json!({
        "models": model_rows,
        "phases": phases,
        "preprocessing": preprocessing,
        "threads": 1,
        "runs": per_round * rounds,
        "rounds": rounds,
        "onnxruntime": ort_version,
        "ort_error": ort_error,
    });
    if json {
        println!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "bench vision: single thread, {} timed runs per model in {rounds} rounds interleaving tract and ONNX Runtime{}, deterministic input",
        per_round * rounds,
        ort_version
            .as_deref()
            .map(|version| format!(" {version}"))
            .unwrap_or_default()
    );
    println!(
        "  {:<22} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10}",
        "model", "load ms", "tract ms", "p95 ms", "ORT ms", "ratio", "min ratio", "max |Δ|"
    );
    for row in &model_rows {
        let cell = |key: &str| {
            row[key]
                .as_f64()
                .map_or_else(|| "-".to_string(), |value| format!("{value:.2}"))
        };
        println!(
            "  {:<22} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10}",
            row["name"].as_str().unwrap_or("?"),
            cell("load_ms"),
            cell("tract_ms"),
            cell("tract_p95_ms"),
            cell("ort_ms"),
            cell("ratio"),
            cell("ratio_min"),
            row["max_abs_diff"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |value| format!("{value:.1e}"))
        );
    }
    for phase in report["phases"].as_array().into_iter().flatten() {
        println!(
            "  phase {:<18} {:>7.2} ms/frame median, {:>7.2} ms p95{}",
            phase["name"].as_str().unwrap_or("?"),
            phase["frame_ms"].as_f64().unwrap_or(f64::NAN),
            phase["frame_p95_ms"].as_f64().unwrap_or(f64::NAN),
            if phase["tracking"] == true {
                format!("  runs {}", phase["runs"])
            } else {
                String::new()
            },
        );
    }
    for row in report["preprocessing"].as_array().into_iter().flatten() {
        println!(
            "  crop  {:<18} {:>7.3} ms median ({}×{} RGB tensor from the replay's {})",
            row["name"].as_str().unwrap_or("?"),
            row["ms"].as_f64().unwrap_or(f64::NAN),
            row["side"],
            row["side"],
            row["source"].as_str().unwrap_or("?"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn sync(events: u32, json: bool) -> anyhow::Result<ExitCode> {
    use dosewitness_protocol::{DoseEventBatch, EnrolDevice, PROTOCOL_VERSION};
    use dosewitness_sync::{CoordinatorClient, DEFAULT_BATCH_SIZE, DeviceClient, drain_outbox};

    let clock = SystemClock;
    let directory = tempfile::tempdir().context("creating a temp dir for the benchmark")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let timeout = std::time::Duration::from_secs(30);

    // A backend on loopback with one patient, one regimen and an enrolment code.
    let backend = runtime.block_on(dosewitness_server::LoopbackServer::start(
        &directory.path().join("server.db"),
        0,
        std::sync::Arc::new(SystemClock),
    ))?;
    let url = backend.url.clone();
    let (code, plan) = runtime.block_on(async {
        let coordinator = CoordinatorClient::new(&url, backend.admin_token.clone(), timeout)?;
        let site = bench_site(&coordinator, "BENCH").await?;
        bench_patient(&coordinator, site, "B-1", clock.now()).await
    })?;

    // An enrolled device with `events` signed events queued.
    let key = StoreKey::generate()?;
    let mut store = DeviceStore::create(&directory.path().join("device.db"), &key, clock.now())?;
    let enrolment =
        runtime.block_on(DeviceClient::new(&url, None, timeout)?.enrol(&EnrolDevice {
            code,
            public_key: store.identity()?.public_key,
            label: "bench".into(),
        }))?;
    store.save_enrolment(
        enrolment.device_id,
        &url,
        &enrolment.device_token,
        &enrolment.regimens,
        clock.now(),
    )?;
    let queue_started = Instant::now();
    for index in 0..events {
        let mut event = sample_event(index, &clock);
        event.device_id = enrolment.device_id;
        event.patient_id = plan.regimen.patient_id;
        event.regimen_id = plan.regimen.id;
        event.medication_id = plan.medication.id;
        store.append_dose_event(event, clock.now())?;
    }
    let queue_s = queue_started.elapsed().as_secs_f64();
    let first_batch = DoseEventBatch {
        protocol_version: PROTOCOL_VERSION,
        events: store.pending_events(DEFAULT_BATCH_SIZE)?,
    };
    let bytes_per_event =
        serde_json::to_vec(&first_batch)?.len() as f64 / first_batch.events.len().max(1) as f64;

    let client = DeviceClient::new(&url, Some(enrolment.device_token.clone()), timeout)?;
    let started = Instant::now();
    let report = runtime.block_on(drain_outbox(
        &mut store,
        &client,
        enrolment.device_id,
        DEFAULT_BATCH_SIZE,
        || clock.now(),
    ))?;
    let drain_s = started.elapsed().as_secs_f64();
    let events_per_s = f64::from(report.accepted) / drain_s;
    let result = serde_json::json!({
        "events": events,
        "accepted": report.accepted,
        "still_pending": report.still_pending,
        "batches": report.batches,
        "batch_size": DEFAULT_BATCH_SIZE,
        "drain_s": drain_s,
        "events_per_s": events_per_s,
        "bytes_per_event": bytes_per_event,
        "queue_s": queue_s,
        "server_database": "sqlite",
        "target": {"drain_s_max": 5.0, "events": 10_000},
    });
    if json {
        println!("{result}");
    } else {
        println!(
            "bench sync: {events} signed events queued in {queue_s:.1} s, drained to a loopback backend"
        );
        println!("  drain          {drain_s:>8.2} s  (target ≤ 5 s for 10,000)");
        println!(
            "  throughput     {events_per_s:>8.0} events/s over {} batches of {DEFAULT_BATCH_SIZE}",
            report.batches
        );
        println!("  wire size      {bytes_per_event:>8.0} bytes/event (JSON, uncompressed)");
        println!(
            "  accepted       {:>8}   still pending {}",
            report.accepted, report.still_pending
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A new study (code `study_code`) with one site.
pub(crate) async fn bench_site(
    coordinator: &dosewitness_sync::CoordinatorClient,
    study_code: &str,
) -> anyhow::Result<dosewitness_domain::SiteId> {
    use dosewitness_protocol::{CreateSite, CreateStudy};
    let study = coordinator
        .create_study(&CreateStudy {
            code: study_code.into(),
            title: "bench".into(),
        })
        .await?;
    Ok(coordinator
        .create_site(
            study,
            &CreateSite {
                name: "bench".into(),
            },
        )
        .await?)
}

/// A patient at `site` with one daily regimen and a fresh enrolment code.
pub(crate) async fn bench_patient(
    coordinator: &dosewitness_sync::CoordinatorClient,
    site: dosewitness_domain::SiteId,
    subject_code: &str,
    today: chrono::DateTime<Utc>,
) -> anyhow::Result<(String, dosewitness_protocol::RegimenPlan)> {
    use dosewitness_protocol::{CreatePatient, CreateRegimen, NewMedication};
    let patient = coordinator
        .create_patient(
            site,
            &CreatePatient {
                subject_code: subject_code.into(),
                display_name: "Bench".into(),
            },
        )
        .await?;
    let plan = coordinator
        .create_regimen(
            patient,
            &CreateRegimen {
                medication: NewMedication {
                    name: "Bench".into(),
                    strength_mg: 1.0,
                    form: "tablet".into(),
                },
                units_per_dose: 1,
                time_zone: "UTC".into(),
                dose_times: vec![chrono::NaiveTime::MIN],
                window: dosewitness_domain::DoseWindow {
                    before_minutes: 60,
                    after_minutes: 60,
                },
                start_date: today.date_naive(),
                end_date: None,
            },
        )
        .await?;
    let code = coordinator.create_enrolment_code(patient).await?;
    Ok((code.code, plan))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::output_difference;

    #[test]
    fn output_difference_is_the_largest_gap_over_the_largest_reference() {
        let ours = vec![vec![1.0f32, -2.0], vec![10.0]];
        let reference = vec![vec![1.5f64, -2.0], vec![-20.0]];
        let (absolute, relative) = output_difference(&ours, &reference).unwrap();
        assert_eq!(absolute, 30.0);
        assert_eq!(relative, 1.5);
    }

    #[test]
    fn outputs_that_do_not_line_up_or_hold_nan_are_not_agreement() {
        assert!(output_difference(&[vec![1.0]], &[vec![1.0], vec![2.0]]).is_err());
        assert!(output_difference(&[vec![1.0, 2.0]], &[vec![1.0]]).is_err());
        let (absolute, _) = output_difference(&[vec![f32::NAN, 0.0]], &[vec![1.0, 0.5]]).unwrap();
        assert!(absolute.is_infinite());
    }
}
