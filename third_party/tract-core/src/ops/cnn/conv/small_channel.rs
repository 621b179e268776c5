//! DoseWitness patch: a direct convolution for the first layer of an image model.
//!
//! A first layer reads an image with few channels (RGB) and writes many. Lowered to im2col and
//! a matrix product, its `k` is tiny (27 for 3x3 on RGB) and gathering the patches costs more
//! than the arithmetic: hand landmarks' 3x3 first layer took 1.1 ms that way, palm detection's
//! 5x5 one 1.5 ms. This op computes it directly on the channel-last image instead: each output
//! position keeps its channels in vector registers, and every tap adds its input value times
//! the tap's vector of weights. Four positions along a row share each weight load. Zero
//! padding is skipped tap by tap (no `Pad` pass), and the bias, a following PReLU and a
//! following clamp (ReLU, ReLU6) are applied in the registers before the one store.
//!
//! `Conv::codegen` picks it on hosts with AVX-512 (the vector loop is written for that); a
//! portable loop computes the same sums elsewhere.

use super::Im2colRows;
use super::depth_wise::PostClamp;
use crate::internal::*;

/// The most input channels this op takes: beyond a few, the kernel's taps are better served
/// by a matrix product.
pub const MAX_SMALL_CHANNELS: usize = 4;

/// Output channels per vector register.
const LANES: usize = 16;

/// The most output channels: four registers per position, four positions at a time.
pub const MAX_SMALL_CHANNEL_OUTPUTS: usize = 4 * LANES;

/// The convolution's geometry (the same one the im2col rows describe), its output channels and
/// shape, and the clamp fused after it. Inputs: the image (`h * w * c` values, channel-last,
/// an optional batch axis of one), the kernel packed by [`SmallChannelConv::pack_kernel`], and
/// the bias packed by [`SmallChannelConv::pack_bias`], and with a fused PReLU its slopes packed
/// the same way.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SmallChannelConv {
    pub geometry: Im2colRows,
    pub output_channels: usize,
    pub output_shape: TVec<usize>,
    /// A PReLU fused after the sum, `x + s·min(x, 0)` per channel: the op then takes the
    /// slopes, padded as the bias is, as a fourth input. Applied before `post`.
    prelu: bool,
    post: PostClamp,
}

impl SmallChannelConv {
    pub fn new(geometry: Im2colRows, output_channels: usize, output_shape: TVec<usize>) -> Self {
        SmallChannelConv {
            geometry,
            output_channels,
            output_shape,
            prelu: false,
            post: PostClamp::default(),
        }
    }

    /// Whether this host runs the vector loop; `Conv::codegen` only picks the op where it does.
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            return true;
        }
        false
    }

    /// Output channels rounded up to whole registers: the packed kernel's row length.
    fn padded_outputs(&self) -> usize {
        self.output_channels.div_ceil(LANES) * LANES
    }

    /// The kernel `[1, o, c, kh * kw]` (a single group) as this op reads it: one row per tap,
    /// taps in `(ky, kx, c)` order, each row the tap's weight for every output channel, zeros
    /// after the last one up to a whole register.
    pub fn pack_kernel(g_o_i_hw: &Tensor) -> TractResult<Tensor> {
        let &[1, o, c, hw] = g_o_i_hw.shape() else {
            bail!("expected a [1, o, c, h*w] kernel, got {:?}", g_o_i_hw.shape())
        };
        let padded = o.div_ceil(LANES) * LANES;
        let view = g_o_i_hw.to_plain_array_view::<f32>()?;
        let mut packed = vec![0f32; hw * c * padded];
        for tap in 0..hw {
            for ci in 0..c {
                for oc in 0..o {
                    packed[(tap * c + ci) * padded + oc] = view[[0, oc, ci, tap]];
                }
            }
        }
        Tensor::from_shape(&[hw * c, padded], &packed)
    }

    /// The bias (one value for every channel, or one per channel) padded with zeros to whole
    /// registers.
    pub fn pack_bias(bias: &Tensor, outputs: usize) -> TractResult<Tensor> {
        let bias = bias.cast_to::<f32>()?;
        let values = bias.to_plain_array_view::<f32>()?;
        let values: Vec<f32> = values.iter().copied().collect();
        let mut packed = vec![0f32; outputs.div_ceil(LANES) * LANES];
        match values.len() {
            1 => packed[..outputs].fill(values[0]),
            n if n == outputs => packed[..outputs].copy_from_slice(&values),
            n => bail!("a bias of {n} values for {outputs} output channels"),
        }
        Tensor::from_shape(&[packed.len()], &packed)
    }

    fn run(
        &self,
        image: &[f32],
        kernel: &[f32],
        bias: &[f32],
        slope: Option<&[f32]>,
        output: &mut [f32],
    ) {
        let bounds = self.post.bounds();
        #[cfg(target_arch = "x86_64")]
        if Self::available() {
            let run = match self.padded_outputs() / LANES {
                1 => avx512::run::<1>,
                2 => avx512::run::<2>,
                3 => avx512::run::<3>,
                _ => avx512::run::<4>,
            };
            // SAFETY: the CPU has AVX-512 (checked above) and eval checked every length.
            unsafe { run(self, bounds, image, kernel, bias, slope, output) };
            if bounds.is_none() {
                self.post.apply(output);
            }
            return;
        }
        self.run_portable(image, kernel, bias, slope, output);
        self.post.apply(output);
    }

    /// The same sums one position and one channel at a time, for hosts without AVX-512, then
    /// the PReLU when there is one (the caller applies `post`).
    fn run_portable(
        &self,
        image: &[f32],
        kernel: &[f32],
        bias: &[f32],
        slope: Option<&[f32]>,
        output: &mut [f32],
    ) {
        let g = &self.geometry;
        let ([h, w], c, [kh, kw]) = (g.input_hw, g.channels, g.kernel_hw);
        let (m, padded) = (self.output_channels, self.padded_outputs());
        for oy in 0..g.output_hw[0] {
            for ox in 0..g.output_hw[1] {
                let out = &mut output[(oy * g.output_hw[1] + ox) * m..][..m];
                out.copy_from_slice(&bias[..m]);
                for ky in 0..kh {
                    let Some(iy) = (oy * g.strides[0] + ky).checked_sub(g.pad_before[0]) else {
                        continue;
                    };
                    for kx in 0..kw {
                        let Some(ix) = (ox * g.strides[1] + kx).checked_sub(g.pad_before[1]) else {
                            continue;
                        };
                        if iy >= h || ix >= w {
                            continue;
                        }
                        for ci in 0..c {
                            let value = image[(iy * w + ix) * c + ci];
                            let weights = &kernel[((ky * kw + kx) * c + ci) * padded..][..m];
                            for (o, weight) in out.iter_mut().zip(weights) {
                                *o += value * weight;
                            }
                        }
                    }
                }
                if let Some(slope) = slope {
                    for (o, &s) in out.iter_mut().zip(slope) {
                        *o += (if *o < 0.0 { *o } else { 0.0 }) * s;
                    }
                }
            }
        }
    }
}

/// The taps of a kernel axis that fall inside the image for an output position whose first
/// tap reads input index `start` (negative in the padding): `lo..hi`, empty when none does.
fn inside(start: isize, kernel: usize, size: usize) -> (usize, usize) {
    let lo = (-start).clamp(0, kernel as isize) as usize;
    let hi = (size as isize - start).clamp(lo as isize, kernel as isize) as usize;
    (lo, hi)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, SmallChannelConv, inside};
    use std::arch::x86_64::*;

    /// Output positions computed together along a row.
    const POSITIONS: usize = 4;

    /// Every output row: the positions whose taps all fall inside the image in blocks of
    /// [`POSITIONS`], those at the left and right edges one at a time with their taps cut.
    /// `V` is the number of registers per position; the PReLU (`slope`) applies first, then the
    /// clamp to `bounds`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `image`, `kernel`, `bias` and `output` hold the geometry's values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn run<const V: usize>(
        op: &SmallChannelConv,
        bounds: Option<[f32; 2]>,
        image: &[f32],
        kernel: &[f32],
        bias: &[f32],
        slope: Option<&[f32]>,
        output: &mut [f32],
    ) {
        let g = &op.geometry;
        let ([h, w], c, [kh, kw]) = (g.input_hw, g.channels, g.kernel_hw);
        let ([sh, sw], [pt, pl], [oh, ow]) = (g.strides, g.pad_before, g.output_hw);
        let m = op.output_channels;
        // Positions whose first tap is at or right of the left edge and whose last tap is left
        // of the right one.
        let interior_lo = pl.div_ceil(sw).min(ow);
        let interior_hi = if w + pl >= kw { ((w + pl - kw) / sw + 1).min(ow) } else { 0 };
        let interior_hi = interior_hi.max(interior_lo);
        let tail = match m % LANES {
            0 => 0xffff,
            r => (1u16 << r) - 1,
        };
        let block = Block::<V> {
            image: image.as_ptr(),
            kernel: kernel.as_ptr(),
            bias: std::array::from_fn(|v| unsafe { _mm512_loadu_ps(bias.as_ptr().add(v * LANES)) }),
            slope: slope.map(|slope| {
                std::array::from_fn(|v| unsafe { _mm512_loadu_ps(slope.as_ptr().add(v * LANES)) })
            }),
            clamp: bounds.map(|[lo, hi]| (_mm512_set1_ps(lo), _mm512_set1_ps(hi))),
            outputs: m,
            row_values: w * c,
            channels: c,
            run: kw * c,
            step: sw * c,
            padded: V * LANES,
            tail,
        };
        let out = output.as_mut_ptr();
        for oy in 0..oh {
            let iy0 = (oy * sh) as isize - pt as isize;
            let (ky_lo, ky_hi) = inside(iy0, kh, h);
            let at = |ox: usize| unsafe { out.add((oy * ow + ox) * m) };
            let x0 = |ox: usize| (ox * sw) as isize - pl as isize;
            for ox in (0..interior_lo).chain(interior_hi..ow) {
                let (kx_lo, kx_hi) = inside(x0(ox), kw, w);
                unsafe { block.positions::<1>(at(ox), iy0, x0(ox), ky_lo..ky_hi, kx_lo..kx_hi) };
            }
            let mut ox = interior_lo;
            while ox + POSITIONS <= interior_hi {
                unsafe { block.positions::<POSITIONS>(at(ox), iy0, x0(ox), ky_lo..ky_hi, 0..kw) };
                ox += POSITIONS;
            }
            for ox in ox..interior_hi {
                unsafe { block.positions::<1>(at(ox), iy0, x0(ox), ky_lo..ky_hi, 0..kw) };
            }
        }
    }

    /// What every block of positions shares.
    struct Block<const V: usize> {
        image: *const f32,
        kernel: *const f32,
        bias: [__m512; V],
        /// PReLU slopes per channel, when one is fused.
        slope: Option<[__m512; V]>,
        /// `max` then `min` with these before the store (ReLU, ReLU6), when any.
        clamp: Option<(__m512, __m512)>,
        /// Output channels (`m`): values between two positions' outputs.
        outputs: usize,
        /// Values per image row (`w * c`).
        row_values: usize,
        channels: usize,
        /// Values per kernel row (`kw * c`): the taps of one kernel row are adjacent in the
        /// image.
        run: usize,
        /// Values between two adjacent output positions' first taps (`stride * c`).
        step: usize,
        /// Values per packed kernel row.
        padded: usize,
        /// Store mask of the last register (the channels past `m` are not written).
        tail: u16,
    }

    impl<const V: usize> Block<V> {
        /// `P` adjacent output positions, the first one's top-left tap at image row `iy0` and
        /// column `x0`, over the kernel rows `ky` and columns `kx` that fall inside the image
        /// (for every one of the `P`); their `m` channels written from `out` on.
        #[inline(always)]
        unsafe fn positions<const P: usize>(
            &self,
            out: *mut f32,
            iy0: isize,
            x0: isize,
            ky: std::ops::Range<usize>,
            kx: std::ops::Range<usize>,
        ) {
            unsafe {
                let mut acc = [self.bias; P];
                let taps = kx.start * self.channels..kx.end * self.channels;
                for ky in ky {
                    let row = (iy0 + ky as isize) as usize * self.row_values;
                    // The first position's (ky, kx = 0) value; with kx cut at the left edge it
                    // lies before the row, but only taps from kx.start on are read.
                    let first =
                        self.image.wrapping_add(row).wrapping_offset(x0 * self.channels as isize);
                    let weights = self.kernel.add(ky * self.run * self.padded);
                    for t in taps.clone() {
                        let wt = weights.add(t * self.padded);
                        let wv: [__m512; V] =
                            std::array::from_fn(|v| _mm512_loadu_ps(wt.add(v * LANES)));
                        for (p, acc) in acc.iter_mut().enumerate() {
                            let x = _mm512_set1_ps(*first.wrapping_add(p * self.step + t));
                            for v in 0..V {
                                acc[v] = _mm512_fmadd_ps(x, wv[v], acc[v]);
                            }
                        }
                    }
                }
                for (p, acc) in acc.iter().enumerate() {
                    let o = out.add(p * self.outputs);
                    for v in 0..V {
                        let mut value = acc[v];
                        if let Some(slope) = &self.slope {
                            // x + s·min(x, 0), rounded as the unfused chain rounds it.
                            let negative = _mm512_min_ps(value, _mm512_setzero_ps());
                            value = _mm512_add_ps(_mm512_mul_ps(negative, slope[v]), value);
                        }
                        if let Some((lo, hi)) = self.clamp {
                            value = _mm512_min_ps(_mm512_max_ps(value, lo), hi);
                        }
                        if v + 1 < V {
                            _mm512_storeu_ps(o.add(v * LANES), value);
                        } else {
                            _mm512_mask_storeu_ps(o.add(v * LANES), self.tail, value);
                        }
                    }
                }
            }
        }
    }
}

impl SmallChannelConv {
    /// When the only successor is the chain `x + s·min(x, 0)` (`OptBinChain` Min, Mul, Add, as
    /// `eval_prelu` runs it) on this op's output, with a zero and one constant slope per output
    /// channel, the op with the PReLU fused and the slopes as its fourth input.
    fn fuse_prelu(
        &self,
        model: &TypedModel,
        node: &TypedNode,
    ) -> TractResult<Option<TypedModelPatch>> {
        use crate::ops::binary::OptBinChain;
        use tract_linalg::BinOp;
        use tract_linalg::multithread::BShare;
        rule_if!(!self.prelu && self.post.describe().is_none());
        let out = OutletId::new(node.id, 0);
        rule_if!(!model.output_outlets()?.contains(&out));
        // The chain reads the output twice (as `x` and as `y`), and nothing else reads it.
        let readers = model.outlet_successors(out);
        rule_if_some!(first = readers.first());
        rule_if!(readers.iter().all(|inlet| inlet.node == first.node));
        let succ = model.node(first.node);
        rule_if_some!(chain = succ.op_as::<OptBinChain>());
        let [min, mul, add] = &*chain.steps else { return Ok(None) };
        rule_if!(
            min.linalg_op == BinOp::Min
                && mul.linalg_op == BinOp::Mul
                && mul.share == BShare::Lockstep
                && add.linalg_op == BinOp::Add
                && add.share == BShare::Lockstep
        );
        rule_if!(succ.inputs.len() == 4 && succ.inputs[0] == out && succ.inputs[3] == out);
        rule_if_some!(zero = model.outlet_fact(succ.inputs[1])?.konst.clone());
        rule_if!(zero.len() == 1 && zero.cast_to_scalar::<f32>()? == 0.0);
        rule_if_some!(slope = model.outlet_fact(succ.inputs[2])?.konst.clone());
        rule_if!(slope.datum_type() == f32::datum_type() && slope.len() == self.output_channels);
        let slope = Self::pack_bias(&slope, self.output_channels)?;
        let mut patch = TypedModelPatch::default();
        let mut inputs = patch.taps(model, &node.inputs)?;
        inputs.push(patch.add_const(format!("{}.prelu_slope", node.name), slope)?);
        let op = SmallChannelConv { prelu: true, ..self.clone() };
        let wire = patch.wire_node(&node.name, op, &inputs)?[0];
        patch.shunt_outside(model, succ.id.into(), wire)?;
        Ok(Some(patch))
    }
}

impl Op for SmallChannelConv {
    fn name(&self) -> StaticName {
        "SmallChannelConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = vec![format!("{:?} -> {} channels", self.geometry, self.output_channels)];
        if self.prelu {
            info.push("then PReLU".to_string());
        }
        info.extend(self.post.describe());
        Ok(info)
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for SmallChannelConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let slope = if self.prelu { Some(inputs.pop().context("PReLU slopes")?) } else { None };
        let (image, kernel, bias) = args_3!(inputs);
        let g = &self.geometry;
        let padded = self.padded_outputs();
        ensure!(slope.as_ref().is_none_or(|s| s.len() == padded), "packed PReLU slopes");
        ensure!(
            image.datum_type() == f32::datum_type()
                && image.len() == g.input_hw[0] * g.input_hw[1] * g.channels,
            "SmallChannelConv expects {:?}x{} f32 values, got {:?}",
            g.input_hw,
            g.channels,
            image
        );
        ensure!(kernel.len() == g.k() * padded && bias.len() == padded, "packed kernel or bias");
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape)? };
        ensure!(output.len() == g.n() * self.output_channels, "output shape");
        {
            let image = image.try_as_plain_ram()?;
            let kernel = kernel.try_as_plain_ram()?;
            let bias = bias.try_as_plain_ram()?;
            let slope = slope.as_ref().map(|s| s.try_as_plain_ram()).transpose()?;
            let slope = slope.as_ref().map(|s| s.as_slice::<f32>()).transpose()?;
            let mut out = output.try_as_plain_ram_mut()?;
            self.run(
                image.as_slice::<f32>()?,
                kernel.as_slice::<f32>()?,
                bias.as_slice::<f32>()?,
                slope,
                out.as_slice_mut::<f32>()?,
            );
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for SmallChannelConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3 + self.prelu as usize);
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(&self.output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let fma = self.geometry.n() * self.geometry.k() * self.output_channels;
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.to_dim())))
    }

    /// Absorbs a following PReLU (palm detection and FaceMesh start with one), or a max/min by
    /// scalar constants (ReLU, ReLU6) as `DepthWise` does.
    fn fuse(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        if let Some(patch) = self.fuse_prelu(model, node)? {
            return Ok(Some(patch));
        }
        rule_if_some!((post, succ) = self.post.absorb(model, node)?);
        let op = SmallChannelConv { post, ..self.clone() };
        let mut patch = TypedModelPatch::default();
        let inputs = patch.taps(model, &node.inputs)?;
        let wire = patch.wire_node(&node.name, op, &inputs)?[0];
        patch.shunt_outside(model, succ.id.into(), wire)?;
        Ok(Some(patch))
    }

    as_op!();
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    /// The convolution summed the plain way, the kernel indexed `[o][c][ky][kx]`.
    fn reference(
        g: &Im2colRows,
        m: usize,
        image: &[f32],
        kernel: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let ([h, w], c, [kh, kw]) = (g.input_hw, g.channels, g.kernel_hw);
        let mut out = vec![];
        for oy in 0..g.output_hw[0] {
            for ox in 0..g.output_hw[1] {
                for o in 0..m {
                    let mut sum = bias[o];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let y = (oy * g.strides[0] + ky) as isize - g.pad_before[0] as isize;
                            let x = (ox * g.strides[1] + kx) as isize - g.pad_before[1] as isize;
                            if !(0..h as isize).contains(&y) || !(0..w as isize).contains(&x) {
                                continue;
                            }
                            for ci in 0..c {
                                sum += image[(y as usize * w + x as usize) * c + ci]
                                    * kernel[((o * c + ci) * kh + ky) * kw + kx];
                            }
                        }
                    }
                    out.push(sum);
                }
            }
        }
        out
    }

    proptest! {
        /// Both loops (AVX-512 where the host has it, and the portable one) against the plain
        /// sum: every kernel size up to 7x7 on 1 to 4 channels, strides 1 to 3, padding up to
        /// past the kernel on each side, 1 to 64 output channels (whole and partial registers),
        /// rows long enough for blocks of positions and short enough for none, with and without
        /// a PReLU and a ReLU6.
        #[test]
        fn direct_sums_match_the_plain_convolution(
            h in 1usize..10, w in 1usize..20, c in 1usize..5, kh in 1usize..8, kw in 1usize..8,
            sh in 1usize..4, sw in 1usize..4, pt in 0usize..4, pl in 0usize..4,
            pb in 0usize..4, pr in 0usize..4, m in 1usize..65, relu6 in any::<bool>(),
            prelu in any::<bool>(),
        ) {
            prop_assume!(h + pt + pb >= kh && w + pl + pr >= kw);
            let geometry = Im2colRows {
                input_hw: [h, w],
                channels: c,
                kernel_hw: [kh, kw],
                strides: [sh, sw],
                pad_before: [pt, pl],
                output_hw: [(h + pt + pb - kh) / sh + 1, (w + pl + pr - kw) / sw + 1],
            };
            let image: Vec<f32> = (0..h * w * c).map(|i| ((i * 7) % 23) as f32 * 0.3 - 3.0).collect();
            let kernel: Vec<f32> =
                (0..m * c * kh * kw).map(|i| ((i * 5) % 11) as f32 * 0.2 - 1.0).collect();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 2.0).collect();
            let mut want = reference(&geometry, m, &image, &kernel, &bias);
            let mut op = SmallChannelConv::new(geometry.clone(), m, tvec![geometry.n(), m]);
            let slope: Vec<f32> = (0..m).map(|i| i as f32 * 0.1 - 2.0).collect();
            let packed_slope = SmallChannelConv::pack_bias(&Tensor::from_shape(&[m], &slope).unwrap(), m).unwrap();
            let packed_slope = packed_slope.try_as_plain_ram().unwrap();
            let packed_slope = packed_slope.as_slice::<f32>().unwrap();
            if prelu {
                op.prelu = true;
                for (v, s) in want.iter_mut().zip(slope.iter().cycle()) {
                    *v += v.min(0.0) * s;
                }
            }
            if relu6 {
                op.post = PostClamp(tvec![(true, 0f32.to_bits()), (false, 6f32.to_bits())]);
                want.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0));
            }
            let g_o_i_hw = Tensor::from_shape(&[1, m, c, kh * kw], &kernel).unwrap();
            let packed = SmallChannelConv::pack_kernel(&g_o_i_hw).unwrap();
            let packed_bias =
                SmallChannelConv::pack_bias(&Tensor::from_shape(&[m], &bias).unwrap(), m).unwrap();
            let packed = packed.try_as_plain_ram().unwrap();
            let packed = packed.as_slice::<f32>().unwrap();
            let packed_bias = packed_bias.try_as_plain_ram().unwrap();
            let packed_bias = packed_bias.as_slice::<f32>().unwrap();
            let mut got = vec![f32::NAN; want.len()];
            let slope = prelu.then_some(packed_slope);
            op.run(&image, packed, packed_bias, slope, &mut got);
            let mut portable = vec![f32::NAN; want.len()];
            op.run_portable(&image, packed, packed_bias, slope, &mut portable);
            op.post.apply(&mut portable);
            for (ix, ((g, p), w)) in got.iter().zip(&portable).zip(&want).enumerate() {
                prop_assert!((g - w).abs() < 1e-4, "run at {}: {} vs {}", ix, g, w);
                prop_assert!((p - w).abs() < 1e-4, "portable at {}: {} vs {}", ix, p, w);
            }
        }
    }

    /// A first layer followed by PReLU as the model converter writes it, `x + s·min(x, 0)`
    /// (palm detection, FaceMesh): the optimised plan fuses the PReLU into `SmallChannelConv`
    /// where the host runs it, leaves no elementwise node, and gives the plain graph's values.
    #[test]
    fn prelu_after_a_first_layer_fuses_and_matches() -> TractResult<()> {
        use crate::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
        use crate::ops::nn::DataFormat;
        // 6x5x32 out, as in the chain test of `binary.rs` (some other sizes leave the
        // per-channel `Mul` unoptimised here, and no chain forms to fuse).
        let (h, w, oc) = (11, 9, 32);
        let filled = |shape: &[usize], f: &dyn Fn(usize) -> f32| {
            let data: Vec<f32> = (0..shape.iter().product()).map(f).collect();
            Tensor::from_shape(shape, &data)
        };
        let input = filled(&[1, h, w, 3], &|i| ((i * 7) % 23) as f32 * 0.3 - 3.0)?;
        let kernel = filled(&[oc, 3, 3, 3], &|i| ((i * 5) % 11) as f32 * 0.2 - 1.0)?;
        let slope = filled(&[1, 1, 1, oc], &|i| i as f32 * 0.05 - 0.6)?;
        let mut model = TypedModel::default();
        let x = model.add_source("input", f32::fact(input.shape()))?;
        let k = model.add_const("kernel", kernel)?;
        let b = model.add_const("bias", filled(&[oc], &|i| i as f32 * 0.1 - 1.0)?)?;
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NHWC,
                kernel_shape: tvec![3, 3],
                padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
                dilations: None,
                strides: Some(tvec![2, 2]),
                input_channels: 3,
                output_channels: oc,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let y = model.wire_node("conv", conv, &[x, k, b])?[0];
        let zero = model.add_const("zero", tensor0(0f32).broadcast_into_rank(4)?)?;
        let slope = model.add_const("slope", slope)?;
        let negative = model.wire_node("min", crate::ops::math::min(), &[y, zero])?[0];
        let scaled = model.wire_node("mul", crate::ops::math::mul(), &[negative, slope])?[0];
        let out = model.wire_node("add", crate::ops::math::add(), &[y, scaled])?;
        model.select_output_outlets(&out)?;
        let plain = model.clone().into_runnable()?.run(tvec!(input.clone().into_tvalue()))?;
        let optimized = model.into_optimized()?;
        let ops: Vec<String> = optimized.nodes().iter().map(|n| n.op.name().to_string()).collect();
        if SmallChannelConv::available() {
            ensure!(ops.iter().any(|o| o == "SmallChannelConv"), "{ops:?}");
            ensure!(!ops.iter().any(|o| o.contains("Chain") || o.contains("Min")), "{ops:?}");
        }
        let fast = optimized.into_runnable()?.run(tvec!(input.into_tvalue()))?;
        let (want, got) =
            (plain[0].to_plain_array_view::<f32>()?, fast[0].to_plain_array_view::<f32>()?);
        ensure!(want.shape() == got.shape());
        ensure!(want.iter().any(|v| *v < -0.5) && want.iter().any(|v| *v > 0.5));
        for (g, w) in got.iter().zip(want.iter()) {
            ensure!((g - w).abs() < 1e-4, "{g} vs {w}");
        }
        Ok(())
    }
}
