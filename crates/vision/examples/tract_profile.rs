//! Where tract spends a model's time: the optimised graph's nodes timed one by one (each node's
//! eval, summed per op type), plus the wall time of whole runs. For finding what to rewrite in
//! `scripts/models/convert.py`; `dosewitness bench vision` is the benchmark.
//!
//! `cargo run --release --example tract_profile -- MODELS_DIR NAME [RUNS]`; `VERBOSE=1` also
//! prints every node with its output shape, `VERY=1` with it the op's parameters.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Instant;
use tract_onnx::prelude::*;

fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().collect();
    let directory = std::path::Path::new(arguments.get(1).map_or("models", String::as_str));
    let name = arguments.get(2).map_or("blazeface_short", String::as_str);
    let runs: usize = arguments.get(3).map_or(Ok(20), |runs| runs.parse())?;
    let verbose = std::env::var_os("VERBOSE").is_some();
    let manifest = dosewitness_vision::ModelManifest::open(directory)?;
    let entry = manifest.entry(name)?;
    let mut reader = std::fs::File::open(directory.join(&entry.file))?;
    let model = tract_onnx::onnx()
        .model_for_read(&mut reader)?
        .with_input_fact(0, f32::fact(entry.input.shape.as_slice()).into())?
        .into_optimized()?;
    let plan = model.into_runnable()?;
    let count: usize = entry.input.shape.iter().product();
    // The deterministic input of `dosewitness bench vision`.
    let [low, high] = entry.input.range;
    let input: Vec<f32> = (0..count)
        .map(|index| low + ((index * 7919) % 256) as f32 / 255.0 * (high - low))
        .collect();
    let tensor = Tensor::from_shape(&entry.input.shape, &input)?;
    let mut state = tract_onnx::tract_core::plan::SimpleState::new(&plan)?;
    let mut per_node: BTreeMap<usize, f64> = BTreeMap::new();
    let mut walls = Vec::new();
    for run in 0..runs + 3 {
        let wall = Instant::now();
        let mut times: Vec<(usize, f64)> = Vec::new();
        state.run_plan_with_eval(
            tvec!(tensor.clone().into()),
            |context, op_state, node, inputs| {
                let started = Instant::now();
                let result = tract_onnx::tract_core::plan::eval(context, op_state, node, inputs);
                times.push((node.id, started.elapsed().as_secs_f64() * 1000.0));
                result
            },
        )?;
        if run >= 3 {
            walls.push(wall.elapsed().as_secs_f64() * 1000.0);
            for (id, ms) in times {
                *per_node.entry(id).or_default() += ms / runs as f64;
            }
        }
    }
    let graph = plan.model();
    let mut per_op: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut total = 0.0;
    for (id, ms) in &per_node {
        let node = &graph.nodes[*id];
        let op = node.op().name().to_string();
        let slot = per_op.entry(op).or_default();
        slot.0 += ms;
        slot.1 += 1;
        total += ms;
        if verbose {
            let outputs: Vec<String> = node
                .outputs
                .iter()
                .map(|output| format!("{:?}", output.fact))
                .collect();
            println!(
                "{ms:8.3} ms  #{id:<4} {:<24} {} -> {}",
                node.op().name(),
                node.name,
                outputs.join(", ")
            );
            if std::env::var_os("VERY").is_some() {
                println!("             {:?}", node.op());
            }
        }
    }
    let mut ops: Vec<_> = per_op.into_iter().collect();
    ops.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    walls.sort_by(f64::total_cmp);
    println!(
        "{name}: {total:.2} ms summed over {} nodes; wall min {:.2} median {:.2}",
        graph.nodes.len(),
        walls.first().copied().unwrap_or(f64::NAN),
        walls.get(walls.len() / 2).copied().unwrap_or(f64::NAN)
    );
    for (op, (ms, nodes)) in ops {
        println!(
            "  {op:<28} {nodes:>4} nodes {ms:8.3} ms {:5.1} %",
            ms / total * 100.0
        );
    }
    Ok(())
}
