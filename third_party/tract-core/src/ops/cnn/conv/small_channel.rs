//! DoseWitness patch: a direct convolution for the first layer of an image model.
//!
//! A first layer reads an image with few channels (RGB) and writes many. Lowered to im2col and
//! a matrix product, its `k` is tiny (27 for 3x3 on RGB) and gathering the patches costs more
//! than the arithmetic: hand landmarks' 3x3 first layer took 1.1 ms that way, palm detection's
//! 5x5 one 1.5 ms. This op computes it directly on the channel-last image instead: each output
//! position keeps its channels in vector registers, and every tap adds its input value times
//! the tap's vector of weights. Four positions along a row share each weight load. Zero
//! padding is skipped tap by tap (no `Pad` pass), and the bias and a following clamp (ReLU,
//! ReLU6) are applied in the registers before the one store.
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
/// the bias packed by [`SmallChannelConv::pack_bias`].
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SmallChannelConv {
    pub geometry: Im2colRows,
    pub output_channels: usize,
    pub output_shape: TVec<usize>,
    post: PostClamp,
}

impl SmallChannelConv {
    pub fn new(geometry: Im2colRows, output_channels: usize, output_shape: TVec<usize>) -> Self {
        SmallChannelConv { geometry, output_channels, output_shape, post: PostClamp::default() }
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

    fn run(&self, image: &[f32], kernel: &[f32], bias: &[f32], output: &mut [f32]) {
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
            unsafe { run(self, bounds, image, kernel, bias, output) };
        } else {
            self.run_portable(image, kernel, bias, output);
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.run_portable(image, kernel, bias, output);
        if bounds.is_none() {
            self.post.apply(output);
        }
    }

    /// The same sums one position and one channel at a time, for hosts without AVX-512.
    fn run_portable(&self, image: &[f32], kernel: &[f32], bias: &[f32], output: &mut [f32]) {
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
    /// `V` is the number of registers per position; values are clamped to `bounds`.
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
                        let value = match self.clamp {
                            Some((lo, hi)) => _mm512_min_ps(_mm512_max_ps(acc[v], lo), hi),
                            None => acc[v],
                        };
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

impl Op for SmallChannelConv {
    fn name(&self) -> StaticName {
        "SmallChannelConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = vec![format!("{:?} -> {} channels", self.geometry, self.output_channels)];
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

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (image, kernel, bias) = args_3!(inputs);
        let g = &self.geometry;
        let padded = self.padded_outputs();
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
            let mut out = output.try_as_plain_ram_mut()?;
            self.run(
                image.as_slice::<f32>()?,
                kernel.as_slice::<f32>()?,
                bias.as_slice::<f32>()?,
                out.as_slice_mut::<f32>()?,
            );
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for SmallChannelConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3 && inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(&self.output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let fma = self.geometry.n() * self.geometry.k() * self.output_channels;
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.to_dim())))
    }

    /// Absorbs a following max/min by scalar constants (ReLU, ReLU6), as `DepthWise` does.
    fn fuse(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
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
        /// a ReLU6.
        #[test]
        fn direct_sums_match_the_plain_convolution(
            h in 1usize..10, w in 1usize..20, c in 1usize..5, kh in 1usize..8, kw in 1usize..8,
            sh in 1usize..4, sw in 1usize..4, pt in 0usize..4, pl in 0usize..4,
            pb in 0usize..4, pr in 0usize..4, m in 1usize..65, relu6 in any::<bool>(),
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
            op.run(&image, packed, packed_bias, &mut got);
            let mut portable = vec![f32::NAN; want.len()];
            op.run_portable(&image, packed, packed_bias, &mut portable);
            op.post.apply(&mut portable);
            for (ix, ((g, p), w)) in got.iter().zip(&portable).zip(&want).enumerate() {
                prop_assert!((g - w).abs() < 1e-4, "run at {}: {} vs {}", ix, g, w);
                prop_assert!((p - w).abs() < 1e-4, "portable at {}: {} vs {}", ix, p, w);
            }
        }
    }
}
