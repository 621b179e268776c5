//! Where tract spends a model's time: every node of the optimised plan timed on its own, summed
//! per op type. For deciding what to rewrite in `scripts/models/convert.py` or in the patched
//! tract-linalg (`third_party/README.md`); `dosewitness bench vision` is the benchmark, and
//! `dosewitness bench vision --profile NAME` prints this.

use std::collections::BTreeMap;
use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{SimpleState, eval};

use crate::{OnnxModel, VisionError};

/// One op type's share of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpShare {
    /// tract's op name, e.g. `DepthWiseConv` or `OptMatMul`.
    pub op: String,
    /// How many nodes of the plan run this op.
    pub nodes: usize,
    /// Milliseconds per run, summed over those nodes (mean over the timed runs).
    pub ms: f64,
}

/// One node's time, for the verbose listing.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTime {
    pub id: usize,
    pub op: String,
    pub name: String,
    /// The output facts (shape and type) of the node.
    pub outputs: String,
    /// The op's parameters as tract prints them.
    pub detail: String,
    pub ms: f64,
}

/// A model's profile: op shares (largest first), node times in plan order, and whole-run wall
/// times (minimum and median, ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub ops: Vec<OpShare>,
    pub nodes: Vec<NodeTime>,
    pub wall_min_ms: f64,
    pub wall_median_ms: f64,
}

impl OnnxModel {
    /// Runs the model `runs` times (after three warm-ups) on `input`, timing every node.
    /// `before_each` runs before every run, untimed: what a dose session does between two runs
    /// of one model (other models, the camera) leaves the caches and predictors elsewhere, and a
    /// profile of back-to-back runs misses what that costs.
    pub fn profile(
        &self,
        input: &[f32],
        runs: usize,
        mut before_each: impl FnMut() -> Result<(), VisionError>,
    ) -> Result<Profile, VisionError> {
        let failed = |error: TractError| VisionError::Inference {
            name: self.entry().name.clone(),
            reason: format!("{error:#}"),
        };
        let runs = runs.max(1);
        let tensor =
            Arc::new(Tensor::from_shape(&self.entry().input.shape, input).map_err(failed)?);
        let plan = self.plan();
        let mut state = SimpleState::new(plan).map_err(failed)?;
        let mut per_node: BTreeMap<usize, f64> = BTreeMap::new();
        let mut walls = Vec::with_capacity(runs);
        for run in 0..runs + 3 {
            before_each()?;
            let mut times: Vec<(usize, f64)> = Vec::new();
            let wall = Instant::now();
            state
                .run_plan_with_eval(
                    tvec!(TValue::from_const(Arc::clone(&tensor))),
                    |context, op_state, node, inputs| {
                        let started = Instant::now();
                        let result = eval(context, op_state, node, inputs);
                        times.push((node.id, started.elapsed().as_secs_f64() * 1000.0));
                        result
                    },
                )
                .map_err(failed)?;
            if run >= 3 {
                walls.push(wall.elapsed().as_secs_f64() * 1000.0);
                for (id, ms) in times {
                    *per_node.entry(id).or_default() += ms / runs as f64;
                }
            }
        }
        let graph = plan.model();
        let mut per_op: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        let mut nodes = Vec::with_capacity(per_node.len());
        for (&id, &ms) in &per_node {
            let node = &graph.nodes[id];
            let op = node.op().name().to_string();
            let slot = per_op.entry(op.clone()).or_default();
            slot.0 += 1;
            slot.1 += ms;
            let outputs: Vec<String> = node
                .outputs
                .iter()
                .map(|output| format!("{:?}", output.fact))
                .collect();
            nodes.push(NodeTime {
                id,
                op,
                name: node.name.clone(),
                outputs: outputs.join(", "),
                detail: format!("{:?}", node.op()),
                ms,
            });
        }
        let mut ops: Vec<OpShare> = per_op
            .into_iter()
            .map(|(op, (nodes, ms))| OpShare { op, nodes, ms })
            .collect();
        ops.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        walls.sort_by(f64::total_cmp);
        Ok(Profile {
            ops,
            nodes,
            wall_min_ms: walls.first().copied().unwrap_or(f64::NAN),
            wall_median_ms: walls.get(walls.len() / 2).copied().unwrap_or(f64::NAN),
        })
    }
}
