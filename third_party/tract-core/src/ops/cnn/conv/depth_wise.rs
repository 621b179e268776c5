use crate::internal::*;
use crate::ops::cnn::Patch;
use crate::ops::cnn::patches::ZoneScanner;
use crate::ops::nn::DataShape;
use num_traits::Zero;

/// Largest zone `process_zone_any` hands to the vectorised kernel; 9x9 is 81 taps and 11x11
/// is 121. The taps live in stack arrays of this size, two per call.
const MAX_VECTORISED_TAPS: usize = 128;

#[derive(Debug, Clone, new, Hash, PartialEq, Eq)]
pub struct DepthWise {
    patch: Patch,
    input_shape: DataShape,
    output_shape: DataShape,
    /// Scalar max/min steps fused after the convolution (DoseWitness patch).
    #[new(default)]
    post: PostClamp,
    /// The channel-last zone walk, laid out on the first evaluation (DoseWitness patch).
    #[new(default)]
    walk: WalkCache,
}

/// A [`ZoneWalk`] made once per op: it depends on the patch alone. Not part of the op's
/// identity (equal ops compare and hash equal whatever they have cached), nor of its debug
/// form beyond a count (a walk lists every run: kilobytes per op in a profile's node list).
#[derive(Clone, Default)]
struct WalkCache(std::sync::OnceLock<std::sync::Arc<ZoneWalk>>);

impl std::fmt::Debug for WalkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(walk) => write!(f, "{} zones, {} runs", walk.zones.len(), walk.runs.len()),
            None => write!(f, "not walked yet"),
        }
    }
}

impl WalkCache {
    fn get(&self, patch: &Patch) -> &ZoneWalk {
        self.0.get_or_init(|| std::sync::Arc::new(ZoneWalk::new(patch)))
    }
}

impl PartialEq for WalkCache {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for WalkCache {}

impl std::hash::Hash for WalkCache {
    fn hash<H: std::hash::Hasher>(&self, _state: &mut H) {}
}

/// `x > lo ? x : lo`, then `x < hi ? x : hi`: one `maxps` and one `minps` per vector.
fn clamp(values: &mut [f32], lo: f32, hi: f32) {
    crate::ops::vector::with_avx(|| {
        for v in values {
            let x = if *v > lo { *v } else { lo };
            *v = if x < hi { x } else { hi };
        }
    })
}

/// Max/min with scalar constants, applied in order to each output row while
/// it is still in cache (DoseWitness patch). A ReLU6 after a depthwise
/// convolution costs a full pass over the activation otherwise. Each step is
/// `(is_max, f32 bits)`, kept as bits so the op stays `Hash + Eq`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, Default)]
pub struct PostClamp(pub(super) TVec<(bool, u32)>);

impl PostClamp {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// "then max(0), min(6)" for an op's `info`, nothing when there are no steps.
    pub(super) fn describe(&self) -> Option<String> {
        let steps: Vec<String> = self
            .0
            .iter()
            .map(|(is_max, bits)| {
                format!("{}({})", if *is_max { "max" } else { "min" }, f32::from_bits(*bits))
            })
            .collect();
        (!steps.is_empty()).then(|| format!("then {}", steps.join(", ")))
    }

    /// When `node`'s only successor is a max/min by scalar f32 constants (`OptBinByScalar`,
    /// or a chain of them), these steps followed by that successor's, and the successor, whose
    /// output the fused op then takes over.
    pub(super) fn absorb<'m>(
        &self,
        model: &'m TypedModel,
        node: &TypedNode,
    ) -> TractResult<Option<(PostClamp, &'m TypedNode)>> {
        use crate::ops::binary::{OptBinByScalar, OptBinChain};
        use tract_linalg::BinOp;
        rule_if!(model.outlet_fact(node.inputs[0])?.datum_type == f32::datum_type());
        rule_if!(!model.output_outlets()?.contains(&OutletId::new(node.id, 0)));
        rule_if_some!(succ = model.single_succ(node.id)?);
        rule_if!(succ.inputs.first() == Some(&OutletId::new(node.id, 0)));
        let steps: TVec<(BinOp, usize)> = if let Some(op) = succ.op_as::<OptBinByScalar>() {
            tvec![(op.linalg_op, 1)]
        } else if let Some(chain) = succ.op_as::<OptBinChain>() {
            chain.steps.iter().enumerate().map(|(ix, step)| (step.linalg_op, ix + 1)).collect()
        } else {
            return Ok(None);
        };
        rule_if!(succ.inputs.len() == steps.len() + 1);
        let mut post = self.0.clone();
        for (op, input) in steps {
            let is_max = match op {
                BinOp::Max => true,
                BinOp::Min => false,
                _ => return Ok(None),
            };
            rule_if_some!(bound = model.outlet_fact(succ.inputs[input])?.konst.clone());
            rule_if!(bound.len() == 1 && bound.datum_type() == f32::datum_type());
            post.push((is_max, bound.cast_to_scalar::<f32>()?.to_bits()));
        }
        Ok(Some((PostClamp(post), succ)))
    }

    /// `f32::max`/`min` would keep their NaN rule (`cmpunord` + blend per vector, 8 % of
    /// hand landmarks' time); `x > bound ? x : bound` is one `maxps` and gives the same
    /// result for every number (a NaN input yields `bound`, as `f32::max` does). A
    /// max-then-min pair (ReLU6) runs as one pass, with AVX where the CPU has it.
    pub(super) fn apply(&self, values: &mut [f32]) {
        if let [(true, lo), (false, hi)] = self.0.as_slice() {
            return clamp(values, f32::from_bits(*lo), f32::from_bits(*hi));
        }
        for &(is_max, bits) in &self.0 {
            let bound = f32::from_bits(bits);
            if is_max {
                values.iter_mut().for_each(|v| *v = if *v > bound { *v } else { bound });
            } else {
                values.iter_mut().for_each(|v| *v = if *v < bound { *v } else { bound });
            }
        }
    }

    /// The steps as one `[lo, hi]` clamp with `maxps`/`minps` semantics, where they are one: a
    /// max then a min (ReLU6), or a lone max (ReLU, `hi` = +∞). A lone min is not: with `lo` =
    /// −∞ a NaN would come out −∞ instead of the bound.
    pub(super) fn bounds(&self) -> Option<[f32; 2]> {
        match self.0.as_slice() {
            [(true, lo), (false, hi)] => Some([f32::from_bits(*lo), f32::from_bits(*hi)]),
            [(true, lo)] => Some([f32::from_bits(*lo), f32::INFINITY]),
            _ => None,
        }
    }

    /// Applies to a whole tensor of `T` when it is f32 (the only type the fuse
    /// rule accepts).
    unsafe fn apply_to<T: Datum>(&self, ptr: *mut T, len: usize) {
        if !self.is_empty() && T::datum_type() == f32::datum_type() {
            self.apply(unsafe { std::slice::from_raw_parts_mut(ptr as *mut f32, len) });
        }
    }
}

impl Op for DepthWise {
    fn name(&self) -> StaticName {
        "DepthWiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = vec![format!("{:?}", self.patch)];
        info.extend(self.post.describe());
        Ok(info)
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for DepthWise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let dt = inputs[0].datum_type();
        #[cfg(target_arch = "aarch64")]
        if dt == f16::datum_type() && tract_linalg::arm64::has_fp16() {
            return unsafe {
                eval_t_aarch64fp16::<f16>(
                    self,
                    inputs,
                    |a, b| tract_linalg::arm64::add_f16(a, b),
                    |a, b| tract_linalg::arm64::mul_f16(a, b),
                )
            };
        }
        dispatch_floatlike!(Self::eval_gen(dt)(self, inputs))
    }
}

impl DepthWise {
    fn eval_gen<T: Datum + Copy + num_traits::Zero + ndarray::LinalgScalar>(
        &self,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        unsafe { eval_t_generic::<T>(self, inputs, |a, b| a + b, |a, b| a * b) }
    }

    fn zone_scanners(&self) -> Vec<ZoneScanner<'_>> {
        self.patch.zones.iter().map(|zone| ZoneScanner::new(zone, &self.patch)).collect()
    }
}

impl TypedOp for DepthWise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        anyhow::ensure!(inputs.len() == 3);
        anyhow::ensure!(
            self.input_shape.c() == self.output_shape.c(),
            "DepthWiseConv must have same input and output channels"
        );
        anyhow::ensure!(
            self.input_shape.c().to_dim() == inputs[2].shape.volume(),
            "DepthWiseConv data has {} channels, bias has {}",
            self.input_shape.c(),
            inputs[2].shape.len()
        );
        Ok(tvec!(inputs[0].datum_type.fact(&self.output_shape.shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let [_input, kernel, _bias] = inputs else {
            bail!("Depthwise expects three inputs");
        };
        let n_output_points = self.patch.output_shape.iter().cloned().product::<usize>();
        Ok(tvec!((
            Cost::FMA(inputs[0].datum_type),
            kernel.shape.volume() * self.input_shape.n().unwrap_or(&1) * n_output_points
        )))
    }

    /// DoseWitness patch: absorb a following max/min by scalar constants (the
    /// ReLU6 of MobileNet blocks), one successor at a time.
    fn fuse(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        rule_if_some!((post, succ) = self.post.absorb(model, node)?);
        let op = DepthWise { post, ..self.clone() };
        let mut patch = TypedModelPatch::default();
        let inputs = patch.taps(model, &node.inputs)?;
        let wire = patch.wire_node(&node.name, op, &inputs)?[0];
        patch.shunt_outside(model, succ.id.into(), wire)?;
        Ok(Some(patch))
    }

    as_op!();
}

/// DoseWitness patch: the channel-last zone walk, laid out once per op as the list of kernel
/// calls it makes (one per run of output positions) with each zone's
/// taps, instead of collecting tap lists and stepping zone scanners on every evaluation. Each
/// zone's taps come in rows along the axis its runs step on, the order in which the AVX-512
/// kernel sees that neighbouring outputs share inputs (its grid path).
#[derive(Debug)]
struct ZoneWalk {
    /// Per zone, its kernel tap indices and their input offsets.
    zones: Vec<(TVec<usize>, TVec<isize>)>,
    runs: Vec<ZoneRun>,
}

/// One kernel call of the walk: `len` output positions of `zone`, from these offsets.
#[derive(Debug)]
struct ZoneRun {
    zone: usize,
    input: isize,
    output: isize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
}

impl ZoneWalk {
    fn new(patch: &Patch) -> ZoneWalk {
        let mut zones = Vec::with_capacity(patch.zones.len());
        let mut runs = vec![];
        let kernel_shape = &patch.spec.kernel_shape;
        for (index, zone) in patch.zones.iter().enumerate() {
            let mut visitor = ZoneScanner::new(zone, patch);
            // Taps in rows along the axis the zone's runs step on (row-major when that is the
            // last axis), so the kernel sees neighbouring outputs share inputs also on runs down
            // a column (the left and right border zones).
            let inner = visitor.inner_loop_axis;
            let mut taps: Vec<(usize, isize)> = zone.values_offsets.to_vec();
            let rank = kernel_shape.len();
            taps.sort_by_cached_key(|&(tap, _)| {
                // The tap's kernel coordinates, the run's axis moved last, as one number.
                let mut coords: TVec<usize> = tvec![0; rank];
                let mut rest = tap;
                for (axis, &dim) in kernel_shape.iter().enumerate().rev() {
                    coords[axis] = rest % dim.max(1);
                    rest /= dim.max(1);
                }
                let mut key = 0;
                for axis in (0..rank).filter(|&axis| axis != inner).chain([inner]) {
                    key = key * kernel_shape[axis].max(1) + coords[axis];
                }
                key
            });
            zones.push((
                taps.iter().map(|pair| pair.0).collect(),
                taps.iter().map(|pair| pair.1).collect(),
            ));
            while !visitor.done {
                runs.push(ZoneRun {
                    zone: index,
                    input: visitor.input_center_offset,
                    output: visitor.output_offset,
                    len: visitor.inner_loop_len,
                    in_stride: visitor.inner_loop_input_full_stride,
                    out_stride: visitor.inner_loop_output_stride,
                });
                // SAFETY: the scanner was made for this zone and patch, so its coordinates have
                // the patch's rank, which is all `next_non_inner_axis` indexes unchecked.
                unsafe { visitor.next_non_inner_axis() };
            }
        }
        ZoneWalk { zones, runs }
    }
}

macro_rules! impl_eval {
    ($(#[$meta: meta])* $suffix: ident ) => {
        pastey::paste! {
            $(#[$meta])*
            unsafe fn [<eval_t_ $suffix>]<T: Datum + Copy + num_traits::Zero + ndarray::LinalgScalar>(
                dw: &DepthWise,
                inputs: TVec<TValue>,
                add: impl Fn(T, T) -> T + Copy + Send + Sync + 'static,
                mul: impl Fn(T, T) -> T + Copy + Send + Sync + 'static,
            ) -> TractResult<TVec<TValue>> {
                let (img, kernel, bias) = args_3!(inputs);
                let mut output = unsafe { Tensor::uninitialized::<T>(&dw.output_shape.shape)? };
                let iptr = img.as_ptr::<T>()?;
                let optr = output.as_ptr_mut::<T>()?;
                let k_stride_i = kernel.strides()[1];
                let n = *dw.input_shape.n().unwrap_or(&1);
                let n_stride_i = *dw.input_shape.n_stride().unwrap_or(&0) as isize;
                let n_stride_o = *dw.output_shape.n_stride().unwrap_or(&0) as isize;
                let c_stride_i = *dw.input_shape.c_stride() as isize;
                let c_stride_o = *dw.output_shape.c_stride() as isize;
                let bias = bias.as_ptr::<T>()?;
                let kptr = kernel.as_ptr::<T>()?;
                let c = *dw.input_shape.c() as isize;
                if dw.input_shape.fmt.c_is_last() {
                    // Every output position holds all channels contiguously, so channel blocks
                    // are disjoint across the whole image: each chunk of blocks runs the full zone
                    // walk on its own channel range. A block spans at least one cache line.
                    let channels = *dw.input_shape.c();
                    let block = (64 / T::datum_type().size_of()).max(16);
                    let (i_base, k_base, b_base, o_base) =
                        (iptr as usize, kptr as usize, bias as usize, optr as usize);
                    let total = output.len();
                    tract_linalg::multithread::par_chunks_mut(
                        &mut vec![(); channels.div_ceil(block)],
                        1,
                        total,
                        |first, blocks| {
                            let c0 = first * block;
                            let c1 = channels.min((first + blocks.len()) * block);
                            unsafe {
                                [<eval_c_inner_ $suffix>](
                                    dw,
                                    n,
                                    n_stride_i,
                                    n_stride_o,
                                    k_stride_i,
                                    i_base as *const T,
                                    k_base as *const T,
                                    b_base as *const T,
                                    o_base as *mut T,
                                    add,
                                    mul,
                                    c0,
                                    c1,
                                )
                            };
                            Ok(())
                        },
                    )?;
                    return Ok(tvec!(output.into_tvalue()));
                }
                // The (n, c) planes are disjoint and each is contiguous, so when the output is
                // laid out that way the channels split across the executor with no other
                // change: every output element keeps the arithmetic it has serially, and the
                // value it has serially. Small planes stay on the inline path -- the
                // element threshold in `par_chunks_mut` is what decides, not this call site.
                let total = output.len();
                let planes = n * c as usize;
                let plane = if planes > 0 { total / planes } else { 0 };
                if plane == 0
                    || total % plane != 0
                    || *dw.output_shape.w_stride() != 1
                    || c_stride_o != plane as isize
                {
                    unsafe {
                        let mut scanners = dw.zone_scanners();
                        for n in 0..n as isize {
                            let iptr = iptr.offset(n_stride_i * n);
                            let optr = optr.offset(n_stride_o * n);
                            for scanner in &mut scanners {
                                [<process_zone_ $suffix>](
                                    scanner, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias,
                                    optr, add, mul, 0, c,
                                )
                            }
                        }
                    }
                    unsafe { dw.post.apply_to(optr, output.len()) };
                    return Ok(tvec!(output.into_tvalue()));
                }
                let i_base = iptr as usize;
                let k_base = kptr as usize;
                let b_base = bias as usize;
                let c_us = c as usize;
                tract_linalg::multithread::par_chunks_mut(
                    unsafe { output.as_slice_mut_unchecked::<T>() },
                    plane,
                    total,
                    |first, chunk| {
                        // `par_chunks_mut` calls the body inline, with the whole slice, when the
                        // executor is single-threaded (a one-thread pool included) or the work is
                        // under its element threshold. Keep the per-zone shape there: the channels
                        // loop inside it, so one `ZoneScanner` covers a whole zone rather than one
                        // channel of it -- the difference was a 63% tax on small planes, which is
                        // a third of the frame on the streaming models.
                        if first == 0 && chunk.len() == total {
                            let mut scanners = dw.zone_scanners();
                            unsafe {
                                for ni in 0..n as isize {
                                    let iptr = (i_base as *const T).offset(n_stride_i * ni);
                                    let optr = chunk.as_mut_ptr().offset(n_stride_o * ni);
                                    for scanner in &mut scanners {
                                        [<process_zone_ $suffix>](
                                            scanner,
                                            c_stride_i,
                                            c_stride_o,
                                            k_stride_i,
                                            iptr,
                                            k_base as *const T,
                                            b_base as *const T,
                                            optr,
                                            add,
                                            mul,
                                            0,
                                            c,
                                        )
                                    }
                                }
                            }
                            return Ok(());
                        }
                        let mut scanners = dw.zone_scanners();
                        for (ix, out) in chunk.chunks_mut(plane).enumerate() {
                            let row = first + ix;
                            let (ni, ci) = (row / c_us, row % c_us);
                            unsafe {
                                let iptr = (i_base as *const T)
                                    .offset(n_stride_i * ni as isize + c_stride_i * ci as isize);
                                let optr = out.as_mut_ptr();
                                for scanner in &mut scanners {
                                    [<process_zone_ $suffix>](
                                        scanner,
                                        0,
                                        0,
                                        k_stride_i,
                                        iptr,
                                        k_base as *const T,
                                        b_base as *const T,
                                        optr,
                                        add,
                                        mul,
                                        ci as isize,
                                        ci as isize + 1,
                                    )
                                }
                            }
                        }
                        Ok(())
                    },
                )?;
                unsafe { dw.post.apply_to(optr, output.len()) };
                Ok(tvec!(output.into_tvalue()))
            }

            /// Channel-last eval of channels `c0..c1`: the channel is the contiguous dim on both
            /// input and output, so one output position is a run of channel values and the tap
            /// offsets of `zone.values_offsets` already step over whole channel vectors. `kptr`
            /// is a `[1, HW, C]` kernel, `k_stride_i` (`C`) its per-tap stride.
            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<eval_c_inner_ $suffix>]<T: Datum + Copy + Zero>(
                dw: &DepthWise,
                n: usize,
                n_stride_i: isize,
                n_stride_o: isize,
                k_stride_i: isize,
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                add: impl Fn(T, T) -> T + Copy + 'static,
                mul: impl Fn(T, T) -> T + Copy + 'static,
                c0: usize,
                c1: usize,
                ) { unsafe {
                let is_f32 = T::datum_type() == f32::datum_type();
                // A clamp the kernel can apply before its stores costs no second pass.
                let clamping = dw.post.bounds().filter(|_| is_f32).and_then(|bounds| {
                    tract_linalg::routines::depthwise_c_clamp_f32().map(|ker| (ker, bounds))
                });
                let ker = if is_f32 && clamping.is_none() {
                    tract_linalg::routines::depthwise_c_f32()
                } else {
                    None
                };
                let (iptr, kptr, bias, optr) =
                    (iptr.add(c0), kptr.add(c0), bias.add(c0), optr.add(c0));
                let width = c1 - c0;
                let walk = dw.walk.get(&dw.patch);
                for ni in 0..n as isize {
                    let iptr = iptr.offset(n_stride_i * ni);
                    let optr = optr.offset(n_stride_o * ni);
                    for run in &walk.runs {
                        let (tap_indices, offsets) = &walk.zones[run.zone];
                        let (iptr, optr) = (iptr.offset(run.input), optr.offset(run.output));
                        if let Some((ker, bounds)) = clamping {
                            ker(
                                iptr as *const f32,
                                optr as *mut f32,
                                kptr as *const f32,
                                tap_indices,
                                offsets,
                                bias as *const f32,
                                width,
                                k_stride_i as usize,
                                run.len,
                                run.in_stride,
                                run.out_stride,
                                bounds,
                            );
                        } else if let Some(ker) = ker {
                            ker(
                                iptr as *const f32,
                                optr as *mut f32,
                                kptr as *const f32,
                                tap_indices,
                                offsets,
                                bias as *const f32,
                                width,
                                k_stride_i as usize,
                                run.len,
                                run.in_stride,
                                run.out_stride,
                            );
                        } else {
                            // Taps outer, channels inner: every inner loop is contiguous.
                            for i in 0..run.len as isize {
                                let iptr = iptr.offset(run.in_stride * i);
                                let out = std::slice::from_raw_parts_mut(
                                    optr.offset(run.out_stride * i),
                                    width,
                                );
                                out.copy_from_slice(std::slice::from_raw_parts(bias, width));
                                for (&kix, &off) in tap_indices.iter().zip(offsets) {
                                    let k = std::slice::from_raw_parts(
                                        kptr.offset(k_stride_i * kix as isize),
                                        width,
                                    );
                                    let x = std::slice::from_raw_parts(iptr.offset(off), width);
                                    for c in 0..width {
                                        out[c] = add(out[c], mul(k[c], x[c]));
                                    }
                                }
                            }
                        }
                        if !dw.post.is_empty() && clamping.is_none() {
                            for i in 0..run.len as isize {
                                dw.post.apply_to(optr.offset(run.out_stride * i), width);
                            }
                        }
                    }
                }
            }}

            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<process_zone_ $suffix>]<T: Datum + Copy + Zero>(
                visitor: &mut ZoneScanner,
                c_stride_i: isize,
                c_stride_o: isize,
                k_stride_i: isize,
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                add: impl Fn(T, T) -> T + Copy + 'static,
                mul: impl Fn(T, T) -> T + Copy + 'static,
                c_start: isize,
                c_end: isize,
                ) { unsafe {
                /*
                   if zone.values_offsets.len() == 2 {
                   self.process_zone_n::<T, 2, 4>(
                   zone, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr,
                   )
                   } else if zone.values_offsets.len() == 3 {
                   dw.process_zone_n::<T, 3, 4>(
                   zone, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr,
                   )
                   } else */
                match visitor.zone.values_offsets.len() {
                    1 => [<process_zone_n_ $suffix>]::<T, 1, 4>(
                        visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr, add,
                        mul, c_start, c_end,
                    ),
                    2 => [<process_zone_n_ $suffix>]::<T, 2, 4>(
                        visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr, add,
                        mul, c_start, c_end,
                    ),
                    3 => [<process_zone_n_ $suffix>]::<T, 3, 4>(
                        visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr, add,
                        mul, c_start, c_end,
                    ),
                    4 => [<process_zone_n_ $suffix>]::<T, 4, 4>(
                        visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr, add,
                        mul, c_start, c_end,
                    ),
                    // Without a vectorised kernel the zone keeps the plain inline walk:
                    // routed through `process_zone_any` it runs measurably slower on wasm.
                    _ if T::datum_type() == f32::datum_type()
                        && tract_linalg::routines::depthwise_w_f32().is_some()
                        && c_stride_o != 1 =>
                    {
                        [<process_zone_any_ $suffix>](
                            visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr,
                            add, mul, c_start, c_end,
                        )
                    }
                    // A call covering many channels amortises a fresh scanner. A single-channel
                    // call (the parallel path, one per plane) reuses the caller's allocation, but
                    // walks it as a local: through `&mut` the inner loop runs measurably slower.
                    _ if c_end - c_start > 1 => visitor.zone.visit_output(visitor.patch, |visitor| {
                        for c in c_start..c_end {
                            let iptr = iptr.offset(c_stride_i * c);
                            let optr = optr.offset(c_stride_o * c);
                            let kptr = kptr.offset(k_stride_i * c);
                            [<inner_loop_ $suffix>]::<T>(iptr, kptr, bias, optr, c, visitor, add, mul)
                        }
                    }),
                    _ => [<process_zone_one_channel_ $suffix>](
                        visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr, add,
                        mul, c_start,
                    ),
                }
            }}

            /// One channel of a generic (more than four taps) zone, the parallel path's per-plane
            /// call. The caller's scanner is walked as a local, its buffer moved out and back:
            /// through `&mut` the inner loop runs measurably slower.
            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<process_zone_one_channel_ $suffix>]<T: Datum + Copy + Zero>(
                visitor: &mut ZoneScanner,
                c_stride_i: isize,
                c_stride_o: isize,
                k_stride_i: isize,
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                add: impl Fn(T, T) -> T + Copy + 'static,
                mul: impl Fn(T, T) -> T + Copy + 'static,
                c: isize,
                ) { unsafe {
                let mut local = ZoneScanner {
                    output_coords: std::mem::take(&mut visitor.output_coords),
                    inner_loop_output_range: visitor.inner_loop_output_range.clone(),
                    ..*visitor
                };
                local.reset();
                while !local.done() {
                    let iptr = iptr.offset(c_stride_i * c);
                    let optr = optr.offset(c_stride_o * c);
                    let kptr = kptr.offset(k_stride_i * c);
                    [<inner_loop_ $suffix>]::<T>(iptr, kptr, bias, optr, c, &local, add, mul);
                    local.next();
                }
                visitor.output_coords = local.output_coords;
            }}

            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<process_zone_n_ $suffix>]<T: Datum + Copy + Zero, const N: usize, const UNROLL: usize>(
                visitor: &mut ZoneScanner,
                c_stride_i: isize,
                c_stride_o: isize,
                k_stride_i: isize,
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                add: impl Fn(T, T) -> T,
                mul: impl Fn(T, T) -> T,
                c_start: isize,
                c_end: isize,
                ) { unsafe {
                let zone = visitor.zone;
                let mut ioffset = [0isize; N];
                for i in 0..N {
                    ioffset[i] = zone.values_offsets[i].1;
                }
                let mut k = [T::zero(); N];
                let ker = if T::datum_type() == f32::datum_type() {
                    tract_linalg::routines::depthwise_w_f32()
                } else {
                    None
                };
                for c in c_start..c_end {
                    visitor.reset();
                    let iptr = iptr.offset(c_stride_i * c);
                    let optr = optr.offset(c_stride_o * c);
                    for n in 0..N {
                        k[n] = *kptr.offset(k_stride_i * c).add(zone.values_offsets[n].0);
                    }
                    let bias = *bias.offset(c);
                    while !visitor.done {
                        let iptr = iptr.offset(visitor.input_center_offset);
                        let optr = optr.offset(visitor.output_offset);
                        if let Some(ker) = ker
                            && visitor.inner_loop_output_stride == 1
                            && visitor.inner_loop_input_full_stride >= 1
                        {
                            let k_f32 = *(&k as *const [T; N] as *const [f32; N]);
                            ker(
                                iptr as *const f32,
                                optr as *mut f32,
                                &k_f32,
                                &ioffset,
                                *(&bias as *const T as *const f32),
                                visitor.inner_loop_len,
                                visitor.inner_loop_input_full_stride,
                            );
                            visitor.next_non_inner_axis();
                            continue;
                        }
                        let mut i = 0isize;
                        while i + (UNROLL as isize) < visitor.inner_loop_len as isize {
                            let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
                            let optr = optr.offset(visitor.inner_loop_output_stride * i);
                            let mut iptrs = [std::ptr::null(); UNROLL];
                            for u in 0..UNROLL {
                                iptrs[u] = iptr.offset(visitor.inner_loop_input_full_stride * u as isize);
                            }
                            let mut optrs = [std::ptr::null_mut(); UNROLL];
                            for u in 0..UNROLL {
                                optrs[u] = optr.offset(visitor.inner_loop_output_stride * u as isize);
                            }
                            let mut is = [[T::zero(); N]; UNROLL];
                            for u in 0..UNROLL {
                                for n in 0..N {
                                    is[u][n] = *iptrs[u].offset(ioffset[n]);
                                }
                            }
                            let mut ps = [[T::zero(); N]; UNROLL];
                            for u in 0..UNROLL {
                                for n in 0..N {
                                    ps[u][n] = mul(is[u][n], k[n]);
                                }
                            }
                            for u in 0..UNROLL {
                                let mut sum = bias;
                                for n in 0..N {
                                    sum = add(sum, ps[u][n]);
                                }
                                *optrs[u] = sum;
                            }
                            i += UNROLL as isize;
                        }
                        while i < visitor.inner_loop_len as isize {
                            let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
                            let optr = optr.offset(visitor.inner_loop_output_stride * i);
                            let mut is = [T::zero(); N];
                            for n in 0..N {
                                is[n] = *iptr.offset(ioffset[n]);
                            }
                            let mut p = [T::zero(); N];
                            for n in 0..N {
                                p[n] = mul(is[n], k[n]);
                            }
                            let mut sum = bias;
                            for n in 0..N {
                                sum = add(sum, p[n]);
                            }
                            *optr = sum;
                            i += 1;
                        }
                        visitor.next_non_inner_axis()
                    }
                }
            }}

            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<process_zone_any_ $suffix>]<T: Datum + Copy + Zero>(
                scanner: &mut ZoneScanner,
                c_stride_i: isize,
                c_stride_o: isize,
                k_stride_i: isize,
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                add: impl Fn(T, T) -> T + Copy,
                mul: impl Fn(T, T) -> T + Copy,
                c_start: isize,
                c_end: isize,
                ) { unsafe {
                // A zone whose tap count the const-generic paths cannot name -- which is every
                // 3x3 and 5x5 convolution, at nine and twenty-five taps -- still walks the same
                // inner loop, so hand it the whole tap list. The kernel takes the count at
                // runtime; it was the compile-time count that kept this on the scalar path.
                let ker = if T::datum_type() == f32::datum_type() {
                    tract_linalg::routines::depthwise_w_f32()
                } else {
                    None
                };
                let zone = scanner.zone;
                let taps = zone.values_offsets.len();
                let Some(ker) = ker.filter(|_| taps <= MAX_VECTORISED_TAPS) else {
                    zone.visit_output(scanner.patch, |visitor| {
                        for c in c_start..c_end {
                            let iptr = iptr.offset(c_stride_i * c);
                            let optr = optr.offset(c_stride_o * c);
                            let kptr = kptr.offset(k_stride_i * c);
                            [<inner_loop_ $suffix>]::<T>(iptr, kptr, bias, optr, c, visitor, add, mul)
                        }
                    });
                    return;
                };
                let mut k = [T::zero(); MAX_VECTORISED_TAPS];
                let mut ioffset = [0isize; MAX_VECTORISED_TAPS];
                for (ix, (_, offset)) in zone.values_offsets.iter().enumerate() {
                    ioffset[ix] = *offset;
                }
                let ioffset = &ioffset[..taps];
                // Walked as a local, as in `process_zone`'s single-channel arm.
                let mut visitor = ZoneScanner {
                    output_coords: std::mem::take(&mut scanner.output_coords),
                    inner_loop_output_range: scanner.inner_loop_output_range.clone(),
                    ..*scanner
                };
                for c in c_start..c_end {
                    let iptr = iptr.offset(c_stride_i * c);
                    let optr = optr.offset(c_stride_o * c);
                    let kptr = kptr.offset(k_stride_i * c);
                    for (ix, (ker_ix, _)) in zone.values_offsets.iter().enumerate() {
                        k[ix] = *kptr.add(*ker_ix);
                    }
                    // `T` is f32 on the only path that gets here, checked above: the kernel reads
                    // the taps and the bias as f32, so re-read the buffers rather than convert.
                    let k_f32 = std::slice::from_raw_parts(k.as_ptr() as *const f32, taps);
                    let bias_t = *bias.offset(c);
                    let bias_f32 = *(bias as *const T as *const f32).offset(c);
                    visitor.reset();
                    while !visitor.done {
                        let iptr = iptr.offset(visitor.input_center_offset);
                        let optr = optr.offset(visitor.output_offset);
                        if visitor.inner_loop_output_stride == 1
                            && visitor.inner_loop_input_full_stride >= 1
                        {
                            ker(
                                iptr as *const f32,
                                optr as *mut f32,
                                k_f32,
                                ioffset,
                                bias_f32,
                                visitor.inner_loop_len,
                                visitor.inner_loop_input_full_stride,
                            );
                            visitor.next_non_inner_axis();
                            continue;
                        }
                        let mut i = 0isize;
                        while i < visitor.inner_loop_len as isize {
                            let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
                            let optr = optr.offset(visitor.inner_loop_output_stride * i);
                            let mut sum = bias_t;
                            for n in 0..taps {
                                sum = add(sum, mul(k[n], *iptr.offset(ioffset[n])));
                            }
                            *optr = sum;
                            i += 1;
                        }
                        visitor.next_non_inner_axis()
                    }
                }
                scanner.output_coords = visitor.output_coords;
            }}

            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<inner_loop_ $suffix>]<T: Datum + Copy>(
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                c: isize,
                visitor: &ZoneScanner,
                add: impl Fn(T, T) -> T,
                mul: impl Fn(T, T) -> T,
                ) { unsafe {
                let mut sum = *bias.offset(c);
                let mut iter = visitor.valid_offsets_ker_in();
                if iter.size_hint() == (3, Some(3)) {
                    let (ix, v) = iter.next().unwrap();
                    let k0 = *kptr.add(ix);
                    let i0 = *iptr.offset(v);
                    let (ix, v) = iter.next().unwrap();
                    let k1 = *kptr.add(ix);
                    let i1 = *iptr.offset(v);
                    let (ix, v) = iter.next().unwrap();
                    let k2 = *kptr.add(ix);
                    let i2 = *iptr.offset(v);
                    sum = add(add(add(sum, mul(k0, i0)), mul(k1, i1)), mul(k2, i2));
                } else {
                    for (ix, v) in iter {
                        let k = *kptr.add(ix);
                        let i = *iptr.offset(v);
                        sum = add(sum, mul(k, i));
                    }
                }
                let optr = optr.offset(visitor.output_offset);
                *optr = sum;
            }}
        }
    }
}

impl_eval!(generic);
impl_eval! {
#[target_feature(enable = "fp16")]
#[cfg(target_arch = "aarch64")]
aarch64fp16
}

//#[target_feature(enable = "fp16")] impl_eval!(aarch64fp16);

/* partial alternative impl that may be relevant when simd gets better */

/*
#[inline(never)]
unsafe fn process_zone_4_f32(
&self,
zone: &Zone,
c_stride_i: isize,
c_stride_o: isize,
k_stride_i: isize,
iptr: *const f32,
kptr: *const f32,
bias: *const f32,
optr: *mut f32,
) {
use std::simd::*;
let mut visitor = ZoneScanner::new(zone, &self.patch);
let ioffset0 = zone.values_offsets[0].1;
let ioffset1 = zone.values_offsets[1].1;
let ioffset2 = zone.values_offsets[2].1;
let ioffset3 = zone.values_offsets[3].1;
for c in 0..*self.input_shape.c() as isize {
visitor.reset();
let kptr = kptr.offset(k_stride_i * c);
let iptr = iptr.offset(c_stride_i * c);
let optr = optr.offset(c_stride_o * c);
let k0 = *kptr.offset(zone.values_offsets[0].0 as isize);
let k1 = *kptr.offset(zone.values_offsets[1].0 as isize);
let k2 = *kptr.offset(zone.values_offsets[2].0 as isize);
let k3 = *kptr.offset(zone.values_offsets[3].0 as isize);
let k0 = f32x4::splat(k0);
let k1 = f32x4::splat(k1);
let k2 = f32x4::splat(k2);
let k3 = f32x4::splat(k3);
let bias = f32x4::splat(*bias.offset(c));
while !visitor.done {
let iptr = iptr.offset(visitor.input_center_offset);
let optr = optr.offset(visitor.output_offset);
let mut i  = 0;
while i + 4 <
for i in 0..visitor.inner_loop_len as isize {
let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
let optr = optr.offset(visitor.inner_loop_output_stride * i);
let i0 = *iptr.offset(ioffset0);
let i1 = *iptr.offset(ioffset1);
let i2 = *iptr.offset(ioffset2);
let i3 = *iptr.offset(ioffset3);
let i = f32x4::from_array([i0, i1, i2, i3]);
let p = (i * k).reduce_sum();
let sum = bias + p;
     *optr = sum
     }
     visitor.next_non_inner_axis()
     }
     }
     }
     */

/*
#[inline(never)]
unsafe fn process_zone_4_f32(
&self,
zone: &Zone,
c_stride_i: isize,
c_stride_o: isize,
k_stride_i: isize,
iptr: *const f32,
kptr: *const f32,
bias: *const f32,
optr: *mut f32,
) {
use std::simd::*;
let mut visitor = ZoneScanner::new(zone, &self.patch);
let ioffset0 = zone.values_offsets[0].1;
let ioffset1 = zone.values_offsets[1].1;
let ioffset2 = zone.values_offsets[2].1;
let ioffset3 = zone.values_offsets[3].1;
for c in 0..*self.input_shape.c() as isize {
visitor.reset();
let kptr = kptr.offset(k_stride_i * c);
let iptr = iptr.offset(c_stride_i * c);
let optr = optr.offset(c_stride_o * c);
let k0 = *kptr.offset(zone.values_offsets[0].0 as isize);
let k1 = *kptr.offset(zone.values_offsets[1].0 as isize);
let k2 = *kptr.offset(zone.values_offsets[2].0 as isize);
let k3 = *kptr.offset(zone.values_offsets[3].0 as isize);
let k = f32x4::from_array([k0, k1, k2, k3]);
let bias = *bias.offset(c);
while !visitor.done {
let iptr = iptr.offset(visitor.input_center_offset);
let optr = optr.offset(visitor.output_offset);
for i in 0..visitor.inner_loop_len as isize {
let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
let optr = optr.offset(visitor.inner_loop_output_stride * i);
let i0 = *iptr.offset(ioffset0);
let i1 = *iptr.offset(ioffset1);
let i2 = *iptr.offset(ioffset2);
let i3 = *iptr.offset(ioffset3);
let i = f32x4::from_array([i0, i1, i2, i3]);
let p = (i * k).reduce_sum();
let sum = bias + p;
     *optr = sum
     }
     visitor.next_non_inner_axis()
     }
     }
     }
     */

/*
#[inline(never)]
unsafe fn process_zone_4<T: Datum + Copy + ndarray::LinalgScalar>(
&self,
zone: &Zone,
c_stride_i: isize,
c_stride_o: isize,
k_stride_i: isize,
iptr: *const T,
kptr: *const T,
bias: *const T,
optr: *mut T,
) {
let mut visitor = ZoneScanner::new(zone, &self.patch);
let ioffset0 = zone.values_offsets[0].1;
let ioffset1 = zone.values_offsets[1].1;
let ioffset2 = zone.values_offsets[2].1;
let ioffset3 = zone.values_offsets[3].1;
for c in 0..*self.input_shape.c() as isize {
visitor.reset();
let kptr = kptr.offset(k_stride_i * c);
let iptr = iptr.offset(c_stride_i * c);
let optr = optr.offset(c_stride_o * c);
let k0 = *kptr.offset(zone.values_offsets[0].0 as isize);
let k1 = *kptr.offset(zone.values_offsets[1].0 as isize);
let k2 = *kptr.offset(zone.values_offsets[2].0 as isize);
let k3 = *kptr.offset(zone.values_offsets[3].0 as isize);
let bias = *bias.offset(c);
while !visitor.done {
let iptr = iptr.offset(visitor.input_center_offset);
let optr = optr.offset(visitor.output_offset);
for i in 0..visitor.inner_loop_len as isize {
let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
let optr = optr.offset(visitor.inner_loop_output_stride * i);
let i0 = *iptr.offset(ioffset0);
let i1 = *iptr.offset(ioffset1);
let i2 = *iptr.offset(ioffset2);
let i3 = *iptr.offset(ioffset3);
let p0 = i0 * k0;
let p1 = i1 * k1;
let p2 = i2 * k2;
let p3 = i3 * k3;
let sum = bias + p0 + p1 + p2 + p3;
     *optr = sum
     }
     visitor.next_non_inner_axis()
     }
     }
     }
     */

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cnn::conv::{BlockedConv, Conv, KernelFormat};
    use crate::ops::cnn::{PaddingSpec, PoolSpec};
    use crate::ops::nn::DataFormat;

    #[allow(clippy::too_many_arguments)]
    fn run_dw(
        fmt: DataFormat,
        c: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        pad: PaddingSpec,
        stride: (usize, usize),
    ) {
        run_dw_dt(f32::datum_type(), fmt, c, h, w, kh, kw, pad, stride)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_dw_dt(
        dt: DatumType,
        fmt: DataFormat,
        c: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        pad: PaddingSpec,
        stride: (usize, usize),
    ) {
        run_dw_batch(1, dt, fmt, c, h, w, kh, kw, pad, stride)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_dw_batch(
        n: usize,
        dt: DatumType,
        fmt: DataFormat,
        c: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        pad: PaddingSpec,
        stride: (usize, usize),
    ) {
        let x: Vec<f32> = (0..n * c * h * w).map(|i| ((i as f32 * 0.137).sin()) * 0.7).collect();
        let kernel: Vec<f32> = (0..c * kh * kw).map(|i| ((i as f32 * 0.091).cos()) * 0.3).collect();
        let bias: Vec<f32> = (0..c).map(|i| (i as f32 * 0.05) - 0.1).collect();

        let c_last = fmt.c_is_last();
        let x_shape = if c_last { [n, h, w, c] } else { [n, c, h, w] };
        let mut model = TypedModel::default();
        let xv = model.add_source("x", dt.fact(x_shape)).unwrap();
        let k = Tensor::from_shape(&[c, 1, kh, kw], &kernel).unwrap();
        let kv = model.add_const("k", k.cast_to_dt(dt).unwrap().into_owned()).unwrap();
        let b = Tensor::from_shape(&[c], &bias).unwrap();
        let bv = model.add_const("b", b.cast_to_dt(dt).unwrap().into_owned()).unwrap();
        let pool_spec = PoolSpec {
            data_format: fmt,
            kernel_shape: tvec!(kh, kw),
            padding: pad.clone(),
            dilations: None,
            strides: Some(tvec!(stride.0, stride.1)),
            input_channels: c,
            output_channels: c,
        };
        let computed = pool_spec.computed_padding(&[h, w]);
        let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: c, q_params: None };
        let out = model.wire_node("dw", conv, &[xv, kv, bv]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let model = model.into_decluttered().unwrap().into_optimized().unwrap();
        if kw == 1 && model.nodes.iter().any(|node| node.op_as::<BlockedConv>().is_some()) {
            // `BlockedConv` claims kw=1 NCHW f32 wherever it is enabled -- by default on
            // wasm, opt-in elsewhere -- so this shape does not reach DepthWise there.
            // `blocked_conv_matches_reference` covers it.
            return;
        }
        assert!(
            model.nodes.iter().any(|node| node.op_as::<DepthWise>().is_some()),
            "expected DepthWiseConv, got {}",
            model.nodes.iter().map(|node| node.op().name()).collect::<Vec<_>>().join(",")
        );
        let runnable = model.into_runnable().unwrap();
        let input = Tensor::from_shape(&x_shape, &x).unwrap();
        let input = input.cast_to_dt(dt).unwrap().into_owned();
        let got = runnable.run(tvec![input.into_tvalue()]).unwrap();
        let got = got[0].cast_to::<f32>().unwrap().into_owned();
        let got = got.to_plain_array_view::<f32>().unwrap();
        let oshape = got.shape();
        let (oh, ow) = if c_last { (oshape[1], oshape[2]) } else { (oshape[2], oshape[3]) };
        let (ph, pw) = (computed[0].pad_before as isize, computed[1].pad_before as isize);
        let mut max_abs = 0f32;
        for b in 0..n {
            for oc in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias[oc];
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = oy as isize * stride.0 as isize + ky as isize - ph;
                                let ix = ox as isize * stride.1 as isize + kx as isize - pw;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                let xv = if c_last {
                                    x[(((b * h + iy) * w) + ix) * c + oc]
                                } else {
                                    x[(((b * c + oc) * h + iy) * w) + ix]
                                };
                                let kv = kernel[((oc * kh + ky) * kw) + kx];
                                acc += xv * kv;
                            }
                        }
                        let g = if c_last { got[[b, oy, ox, oc]] } else { got[[b, oc, oy, ox]] };
                        max_abs = max_abs.max((g - acc).abs());
                    }
                }
            }
        }
        // f16 accumulates every tap in f16, so its error grows with the tap count; f32 sums in
        // whatever order the kernel takes the taps (by rows along a run), up to an ulp a tap.
        let tolerance = if dt == f16::datum_type() {
            3e-3 * (kh * kw) as f32
        } else {
            1e-5f32.max(1e-6 * (kh * kw) as f32)
        };
        assert!(
            max_abs < tolerance,
            "DepthWise {dt:?} {fmt:?} mismatch c={c} {h}x{w} k={kh}x{kw} stride={stride:?} pad={pad:?}: max_abs={max_abs}"
        );
    }

    /// DoseWitness patch: an op's debug form (what a profile's node list prints) counts its
    /// cached walk instead of listing every run of it.
    #[test]
    fn depthwise_debug_form_counts_its_walk() -> TractResult<()> {
        let (c, h, w) = (8, 9, 9);
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, h, w, c]))?;
        let k = model.add_const("k", Tensor::from_shape(&[c, 1, 3, 3], &vec![0.5f32; c * 9])?)?;
        let b = model.add_const("b", Tensor::from_shape(&[c], &vec![0.25f32; c])?)?;
        let pool_spec = PoolSpec {
            data_format: DataFormat::NHWC,
            kernel_shape: tvec!(3, 3),
            padding: PaddingSpec::SameUpper,
            dilations: None,
            strides: None,
            input_channels: c,
            output_channels: c,
        };
        let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: c, q_params: None };
        let out = model.wire_node("dw", conv, &[x, k, b])?;
        model.select_output_outlets(&out)?;
        let runnable = model.into_decluttered()?.into_optimized()?.into_runnable()?;
        let shown = || -> TractResult<String> {
            let dw = runnable.model().nodes.iter().find_map(|node| node.op_as::<DepthWise>());
            Ok(format!("{:?}", dw.context("no DepthWise in the optimised model")?))
        };
        assert!(shown()?.contains("walk: not walked yet"), "{}", shown()?);
        runnable.run(tvec![Tensor::zero::<f32>(&[1, h, w, c])?.into_tvalue()])?;
        // A 3x3 window with one pixel of padding: four corners, four sides and the interior.
        let walked = shown()?;
        assert!(walked.contains("walk: 9 zones, "), "{walked}");
        assert!(!walked.contains("ZoneRun"), "{walked}");
        Ok(())
    }

    /// DoseWitness patch: a ReLU6 (max 0, min 6) after a depthwise conv fuses
    /// into it, in both layouts, and gives the unfused graph's values.
    #[test]
    fn relu6_fuses_into_depthwise() {
        // ReLU6 (max then min) and a plain ReLU (a lone max): channel-last, both take the
        // clamping kernel where this machine has one.
        for (fmt, relu6) in [
            (DataFormat::NHWC, true),
            (DataFormat::NCHW, true),
            (DataFormat::NHWC, false),
            (DataFormat::NCHW, false),
        ] {
            let (c, h, w) = (24usize, 9usize, 13usize);
            let x_shape = if fmt.c_is_last() { [1, h, w, c] } else { [1, c, h, w] };
            let x: Vec<f32> = (0..c * h * w).map(|i| (i as f32 * 0.37).sin() * 20.0).collect();
            let kernel: Vec<f32> = (0..c * 9).map(|i| (i as f32 * 0.091).cos()).collect();
            let mut model = TypedModel::default();
            let xv = model.add_source("x", f32::fact(x_shape)).unwrap();
            let kv =
                model.add_const("k", Tensor::from_shape(&[c, 1, 3, 3], &kernel).unwrap()).unwrap();
            let bv =
                model.add_const("b", Tensor::from_shape(&[c], &vec![0.5f32; c]).unwrap()).unwrap();
            let pool_spec = PoolSpec {
                data_format: fmt,
                kernel_shape: tvec!(3, 3),
                padding: PaddingSpec::SameUpper,
                dilations: None,
                strides: Some(tvec!(2, 2)),
                input_channels: c,
                output_channels: c,
            };
            let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: c, q_params: None };
            let wire = model.wire_node("dw", conv, &[xv, kv, bv]).unwrap();
            let zero = model.add_const("zero", tensor0(0.0f32)).unwrap();
            let six = model.add_const("six", tensor0(6.0f32)).unwrap();
            let wire = crate::ops::change_axes::wire_with_rank_broadcast(
                "relu",
                &mut model,
                crate::ops::math::max(),
                &[wire[0], zero],
            )
            .unwrap();
            let wire = if relu6 {
                crate::ops::change_axes::wire_with_rank_broadcast(
                    "relu6",
                    &mut model,
                    crate::ops::math::min(),
                    &[wire[0], six],
                )
                .unwrap()
            } else {
                wire
            };
            let (steps, top) = if relu6 { (2, 6.0) } else { (1, f32::INFINITY) };
            model.select_output_outlets(&wire).unwrap();
            let input = Tensor::from_shape(&x_shape, &x).unwrap().into_tvalue();
            let plain = model.clone().into_runnable().unwrap().run(tvec![input.clone()]).unwrap();
            let optimized = model.into_decluttered().unwrap().into_optimized().unwrap();
            let fused = optimized
                .nodes
                .iter()
                .filter_map(|node| node.op_as::<DepthWise>())
                .any(|dw| dw.post.0.len() == steps);
            assert!(
                fused,
                "{fmt:?}: no fused DepthWise in {}",
                optimized.nodes.iter().map(|n| n.op().name()).collect::<Vec<_>>().join(",")
            );
            let got = optimized.into_runnable().unwrap().run(tvec![input]).unwrap();
            let got = got[0].to_plain_array_view::<f32>().unwrap().to_owned();
            let want = plain[0].to_plain_array_view::<f32>().unwrap().to_owned();
            assert!(got.iter().all(|v| (0.0..=top).contains(v)));
            assert!(want.iter().any(|v| *v == 0.0));
            assert_eq!(want.iter().any(|v| *v == 6.0), relu6);
            // Nine taps of up to 20 each: a few f32 ulps of 180, fused multiply-adds rounding
            // differently from the plain sum.
            let max_abs =
                got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(max_abs < 5e-5, "{fmt:?} relu6 {relu6}: max_abs {max_abs}");
        }
    }

    #[test]
    fn depthwise_multithreaded_matches_reference() {
        let pool = tract_linalg::multithread::Executor::multithread(4);
        tract_linalg::multithread::multithread_tract_scope(pool, || {
            run_dw(DataFormat::NCHW, 32, 64, 80, 3, 3, PaddingSpec::Valid, (1, 1));
            run_dw(DataFormat::NCHW, 32, 200, 24, 3, 3, PaddingSpec::SameUpper, (1, 1));
            run_dw(DataFormat::NCHW, 32, 70, 70, 5, 5, PaddingSpec::SameUpper, (1, 1));
            run_dw(DataFormat::NCHW, 20, 91, 91, 3, 3, PaddingSpec::SameUpper, (2, 2));
            run_dw(DataFormat::NCHW, 7, 130, 129, 3, 3, PaddingSpec::Valid, (1, 1));
            run_dw_batch(
                3,
                f32::datum_type(),
                DataFormat::NCHW,
                11,
                64,
                70,
                3,
                3,
                PaddingSpec::SameUpper,
                (1, 1),
            );
            run_dw_batch(
                2,
                f32::datum_type(),
                DataFormat::NCHW,
                5,
                120,
                100,
                5,
                5,
                PaddingSpec::Valid,
                (1, 1),
            );
        });
    }

    #[test]
    fn depthwise_contig_w_matches_reference() {
        // 48 kHz-like: NCHW, H=1, long W, kw=3. Inner loop is W.
        run_dw(DataFormat::NCHW, 16, 1, 64, 1, 3, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NCHW, 32, 1, 481, 1, 3, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NCHW, 8, 1, 17, 1, 3, PaddingSpec::SameUpper, (1, 1));
        // kw=1: taps a row apart, output still contiguous along W.
        run_dw(DataFormat::NCHW, 8, 12, 20, 3, 1, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NCHW, 4, 9, 9, 3, 3, PaddingSpec::Valid, (1, 1));
        // 5x5 / 5x1 / 3x5: tap counts past the compile-time paths, so the inner loop runs
        // through the whole-tap-count kernel rather than a fallback.
        run_dw(DataFormat::NCHW, 16, 40, 40, 5, 5, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NCHW, 64, 20, 20, 5, 5, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NCHW, 8, 24, 24, 5, 5, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NCHW, 8, 12, 20, 5, 1, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NCHW, 8, 12, 20, 3, 5, PaddingSpec::Valid, (1, 1));
        // 49, 81 and 121 taps take the vectorised kernel; 169 is past the limit and stays scalar.
        run_dw(DataFormat::NCHW, 8, 30, 30, 7, 7, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NCHW, 8, 30, 30, 9, 9, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NCHW, 8, 30, 30, 11, 11, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NCHW, 8, 30, 30, 13, 13, PaddingSpec::SameUpper, (1, 1));
        // Encoder DW: stride 2 / 3 along W (vld2 / vld3 path).
        run_dw(DataFormat::NCHW, 64, 1, 481, 1, 3, PaddingSpec::SameUpper, (1, 3));
        run_dw(DataFormat::NCHW, 64, 1, 161, 1, 3, PaddingSpec::SameUpper, (1, 2));
        run_dw(DataFormat::NCHW, 16, 1, 64, 1, 3, PaddingSpec::Valid, (1, 2));
    }

    #[test]
    fn depthwise_nhwc_f16_matches_reference() {
        let f16 = f16::datum_type();
        run_dw_dt(f16, DataFormat::NHWC, 3, 9, 9, 3, 3, PaddingSpec::Valid, (1, 1));
        run_dw_dt(f16, DataFormat::NHWC, 33, 12, 14, 3, 3, PaddingSpec::SameUpper, (1, 1));
        run_dw_dt(f16, DataFormat::NHWC, 64, 11, 13, 5, 5, PaddingSpec::SameUpper, (2, 2));
    }

    #[test]
    fn depthwise_nhwc_multithreaded_matches_reference() {
        let pool = tract_linalg::multithread::Executor::multithread(4);
        tract_linalg::multithread::multithread_tract_scope(pool, || {
            for dt in [f32::datum_type(), f16::datum_type()] {
                run_dw_dt(dt, DataFormat::NHWC, 64, 30, 30, 3, 3, PaddingSpec::SameUpper, (1, 1));
                run_dw_dt(dt, DataFormat::NHWC, 33, 40, 40, 3, 3, PaddingSpec::Valid, (1, 1));
                run_dw_dt(dt, DataFormat::NHWC, 200, 20, 20, 5, 5, PaddingSpec::SameUpper, (2, 2));
                run_dw_dt(dt, DataFormat::NHWC, 80, 25, 27, 3, 3, PaddingSpec::SameUpper, (2, 1));
            }
        });
    }

    #[test]
    fn depthwise_nhwc_mobilenet_windows_match_reference() {
        // Hand-landmark-like layers: 5x5 and 3x3 windows on small images with many channels, so
        // the walk runs in channel blocks (whole and part-filled), the kernel's grid path takes
        // the rows and the side zones' column runs, and corners are single positions.
        for (c, side, k, stride) in [
            (144, 28, 5, 1),
            (672, 7, 5, 1),
            (384, 14, 5, 2),
            (96, 9, 3, 1),
            (24, 17, 3, 2),
            (48, 6, 5, 1),
            (40, 20, 5, 1),
        ] {
            run_dw(DataFormat::NHWC, c, side, side, k, k, PaddingSpec::SameUpper, (stride, stride));
            run_dw_batch(
                2,
                f32::datum_type(),
                DataFormat::NHWC,
                c,
                side,
                side + 3,
                k,
                k,
                PaddingSpec::SameUpper,
                (stride, stride),
            );
        }
    }

    #[test]
    fn depthwise_nhwc_matches_reference() {
        // DFN3-like depthwise convs: 1x3 along a long axis, strided or not.
        run_dw(DataFormat::NHWC, 3, 9, 9, 3, 3, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NHWC, 64, 100, 32, 1, 3, PaddingSpec::SameUpper, (1, 2));
        run_dw(DataFormat::NHWC, 64, 100, 16, 1, 3, PaddingSpec::SameUpper, (1, 2));
        run_dw(DataFormat::NHWC, 64, 100, 8, 1, 3, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NHWC, 64, 100, 8, 1, 1, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NHWC, 64, 100, 96, 5, 1, PaddingSpec::SameUpper, (1, 1));
        // Odd channel counts and small shapes: vector tails, narrow zones.
        run_dw(DataFormat::NHWC, 17, 12, 20, 3, 3, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NHWC, 8, 1, 64, 1, 3, PaddingSpec::Valid, (1, 3));
        run_dw(DataFormat::NHWC, 4, 1, 17, 1, 3, PaddingSpec::SameUpper, (1, 1));
    }
}
