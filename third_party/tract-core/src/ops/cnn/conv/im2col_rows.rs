//! DoseWitness patch (third_party/README.md): im2col into rows, for channel-last convolutions
//! with few input channels (a network's first layer on an RGB image).
//!
//! Each output position gets one row of `kh * kw * c` values in `(ky, kx, c)` order. In a
//! channel-last image the `kw * c` values of one kernel row lie next to each other, so a row is
//! `kh` short copies, with zeros where the kernel hangs over the border (the padding needs no
//! `Pad` pass). The rows are built per panel, when the matmul asks for it, into the scratch
//! buffer the matmul keeps per thread (a few KiB, in L1), and read there by the kernels that take
//! row panels (`tract_linalg::row_panel`). Writing all rows out first cost more in memory
//! traffic than it saved here. The lazy im2col path instead gathers every value on its own into
//! the kernel's packed (transposed) layout.

use crate::internal::*;
use crate::ops::matmul::pack::DynPackedExoticFact;
use tract_linalg::mmm::{MMMInputFormat, MMMInputValue, PackedMatrixStorage};
use tract_linalg::row_panel::RowMajorPanels;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Im2colRows {
    /// Input height and width.
    pub input_hw: [usize; 2],
    /// Input channels (the innermost axis).
    pub channels: usize,
    pub kernel_hw: [usize; 2],
    pub strides: [usize; 2],
    /// Zero rows above and zero columns left of the image.
    pub pad_before: [usize; 2],
    pub output_hw: [usize; 2],
}

impl Im2colRows {
    /// Values per output row: `kh * kw * c`.
    pub fn k(&self) -> usize {
        self.kernel_hw[0] * self.kernel_hw[1] * self.channels
    }

    /// Output positions: `oh * ow`.
    pub fn n(&self) -> usize {
        self.output_hw[0] * self.output_hw[1]
    }

    /// Fills `rows` with the rows of output positions `first..`, one per `k` values; rows past
    /// the last position are zeros. `input` is the channel-last image (`h * w * c`).
    pub fn fill(&self, input: &[f32], first: usize, rows: &mut [f32]) {
        // The runs of 5x5 and 7x7 kernels on RGB, the layers the conv path sends here.
        match self.kernel_hw[1] * self.channels {
            15 => self.fill_n::<15>(input, first, rows),
            21 => self.fill_n::<21>(input, first, rows),
            _ => self.fill_n::<0>(input, first, rows),
        }
    }

    /// `RUN` is `kw * c` when known at compile time (the copies then inline), or 0.
    fn fill_n<const RUN: usize>(&self, input: &[f32], first: usize, rows: &mut [f32]) {
        let [h, w] = self.input_hw;
        let kw = self.kernel_hw[1];
        let [sh, sw] = self.strides;
        let [pt, pl] = self.pad_before;
        let ow = self.output_hw[1];
        let c = self.channels;
        let run = kw * c;
        debug_assert!(RUN == 0 || RUN == run);
        debug_assert_eq!(input.len(), h * w * c);
        for (pos, row) in (first..).zip(rows.chunks_exact_mut(self.k())) {
            if pos >= self.n() {
                row.fill(0.0);
                continue;
            }
            let (oy, ox) = (pos / ow, pos % ow);
            let x0 = (ox * sw) as isize - pl as isize;
            for (ky, seg) in row.chunks_exact_mut(run).enumerate() {
                let y = (oy * sh + ky) as isize - pt as isize;
                if y < 0 || y >= h as isize {
                    seg.fill(0.0);
                } else if x0 >= 0 && x0 as usize + kw <= w {
                    let src = &input[(y as usize * w + x0 as usize) * c..][..run];
                    if RUN > 0 {
                        seg[..RUN].copy_from_slice(&src[..RUN]);
                    } else {
                        seg.copy_from_slice(src);
                    }
                } else {
                    for (kx, cell) in seg.chunks_exact_mut(c).enumerate() {
                        let x = x0 + kx as isize;
                        if x < 0 || x >= w as isize {
                            cell.fill(0.0);
                        } else {
                            cell.copy_from_slice(&input[(y as usize * w + x as usize) * c..][..c]);
                        }
                    }
                }
            }
        }
    }
}

/// The op: its output is the lazy operand ([`Im2colRowsInput`]) a matmul reads `r`-row panels
/// of.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LazyIm2colRows {
    pub geometry: Im2colRows,
    /// Rows per panel: the matmul kernel's `nr`.
    pub r: usize,
}

impl Op for LazyIm2colRows {
    fn name(&self) -> StaticName {
        "LazyIm2colRows".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "input {:?}x{}, kernel {:?}, strides {:?}, pad before {:?} -> {} rows of {}, {} per panel",
            self.geometry.input_hw,
            self.geometry.channels,
            self.geometry.kernel_hw,
            self.geometry.strides,
            self.geometry.pad_before,
            self.geometry.n(),
            self.geometry.k(),
            self.r
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for LazyIm2colRows {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let [h, w] = self.geometry.input_hw;
        ensure!(
            input.datum_type() == f32::datum_type()
                && input.len() == h * w * self.geometry.channels,
            "Im2colRows expects {h}x{w}x{} f32 values, got {:?}",
            self.geometry.channels,
            input
        );
        // panel_bytes reads the image's bytes directly, as the lazy im2col does.
        ensure!(input.as_plain_ram_storage().is_some(), "Im2colRows needs the image in RAM");
        let value = Im2colRowsInput {
            tensor: input,
            geometry: self.geometry.clone(),
            format: RowMajorPanels::new(self.r),
            r: self.r,
        };
        let values: TVec<Box<dyn MMMInputValue>> = tvec!(Box::new(value) as Box<dyn MMMInputValue>);
        let output =
            PackedMatrixStorage::new_batched(&[1, 1], values).into_tensor(f32::datum_type());
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for LazyIm2colRows {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        let exotic_fact = DynPackedExoticFact {
            k: self.geometry.k().to_dim(),
            mn: self.geometry.n().to_dim(),
            packers: vec![Box::new(RowMajorPanels::new(self.r)) as Box<dyn MMMInputFormat>],
        };
        Ok(tvec!(f32::fact([1, 1]).with_exotic_fact(exotic_fact)))
    }

    as_op!();
}

/// Where a panel's rows go in the matmul's scratch buffer: after the two-word row descriptor,
/// on the next cache line.
const ROWS_OFFSET: usize = 64;

/// The lazy operand: the image and the geometry; each panel is built on request.
#[derive(Clone, Debug)]
struct Im2colRowsInput {
    tensor: TValue,
    geometry: Im2colRows,
    format: RowMajorPanels,
    r: usize,
}

/// The operand owns no buffer of its own (its panels live in the matmul's scratch).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct NoBuffer;

impl ExoticFact for NoBuffer {
    fn buffer_sizes(&self) -> TVec<TDim> {
        tvec!(0.to_dim())
    }
}

impl std::fmt::Display for Im2colRowsInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "im2col rows {:?}, {} per panel", self.geometry, self.r)
    }
}

impl std::hash::Hash for Im2colRowsInput {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.tensor.as_bytes(), &self.geometry, self.r).hash(state);
    }
}

impl PartialEq for Im2colRowsInput {
    fn eq(&self, other: &Self) -> bool {
        self.geometry == other.geometry
            && self.r == other.r
            && self.tensor.as_bytes() == other.tensor.as_bytes()
    }
}
impl Eq for Im2colRowsInput {}

impl MMMInputValue for Im2colRowsInput {
    fn format(&self) -> &dyn MMMInputFormat {
        &self.format
    }

    fn scratch_panel_buffer_layout(&self) -> Option<std::alloc::Layout> {
        std::alloc::Layout::from_size_align(ROWS_OFFSET + self.r * self.geometry.k() * 4, 64).ok()
    }

    fn panel_bytes(&self, i: usize, buffer: Option<*mut u8>) -> TractResult<*const u8> {
        let buffer = buffer.context("im2col rows need a scratch buffer")?;
        let k = self.geometry.k();
        unsafe {
            // SAFETY: the scratch buffer has the layout above: ROWS_OFFSET bytes, then r * k f32.
            let rows = buffer.add(ROWS_OFFSET) as *mut f32;
            let rows = std::slice::from_raw_parts_mut(rows, self.r * k);
            self.geometry.fill(self.tensor.as_slice_unchecked::<f32>(), i * self.r, rows);
            // The row panel descriptor (tract_linalg::row_panel): first row, row byte stride.
            let desc = buffer as *mut usize;
            *desc = rows.as_ptr() as usize;
            *desc.add(1) = k * 4;
        }
        Ok(buffer)
    }

    fn mn(&self) -> usize {
        self.geometry.n()
    }

    fn k(&self) -> usize {
        self.geometry.k()
    }

    fn exotic_fact(&self) -> &dyn ExoticFact {
        &NoBuffer
    }

    fn extract_at_mn_f16(&self, _mn: usize, _slice: &mut [f16]) -> TractResult<()> {
        bail!("im2col rows are f32 only")
    }

    fn extract_at_mn_f32(&self, mn: usize, slice: &mut [f32]) -> TractResult<()> {
        ensure!(mn < self.geometry.n() && slice.len() == self.geometry.k());
        let input = self.tensor.try_as_plain_ram()?;
        self.geometry.fill(input.as_slice::<f32>()?, mn, slice);
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    /// The value `fill` must put at row (oy, ox), column (ky, kx, c).
    fn reference(op: &Im2colRows, input: &[f32]) -> Vec<f32> {
        let [h, w] = op.input_hw;
        let [kh, kw] = op.kernel_hw;
        let c = op.channels;
        let mut out = vec![];
        for oy in 0..op.output_hw[0] {
            for ox in 0..op.output_hw[1] {
                for ky in 0..kh {
                    for kx in 0..kw {
                        for ci in 0..c {
                            let y = (oy * op.strides[0] + ky) as isize - op.pad_before[0] as isize;
                            let x = (ox * op.strides[1] + kx) as isize - op.pad_before[1] as isize;
                            let inside =
                                (0..h as isize).contains(&y) && (0..w as isize).contains(&x);
                            out.push(if inside {
                                input[(y as usize * w + x as usize) * c + ci]
                            } else {
                                0.0
                            });
                        }
                    }
                }
            }
        }
        out
    }

    proptest! {
        /// Every kernel width and channel count (the specialised runs 15 and 21 and the generic
        /// one), strides 1-3, padding on either side up to past the kernel: the rows hold
        /// the reference gather, zeros outside the image.
        #[test]
        fn rows_match_the_reference_gather(
            h in 1usize..9, w in 1usize..9, c in 1usize..5, kh in 1usize..6, kw in 1usize..8,
            sh in 1usize..4, sw in 1usize..4, pt in 0usize..4, pl in 0usize..4,
            pb in 0usize..4, pr in 0usize..4,
        ) {
            prop_assume!(h + pt + pb >= kh && w + pl + pr >= kw);
            let op = Im2colRows {
                input_hw: [h, w],
                channels: c,
                kernel_hw: [kh, kw],
                strides: [sh, sw],
                pad_before: [pt, pl],
                output_hw: [(h + pt + pb - kh) / sh + 1, (w + pl + pr - kw) / sw + 1],
            };
            let input: Vec<f32> = (0..h * w * c).map(|i| i as f32 + 1.0).collect();
            // Panels of 5 rows, the last one short (zero rows past the end).
            let mut want = reference(&op, &input);
            want.resize(op.n().div_ceil(5) * 5 * op.k(), 0.0);
            for (panel, rows) in want.chunks(5 * op.k()).enumerate() {
                let mut got = vec![f32::NAN; 5 * op.k()];
                op.fill(&input, panel * 5, &mut got);
                prop_assert_eq!(&got[..], rows);
            }
        }
    }
}
