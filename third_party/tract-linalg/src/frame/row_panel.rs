//! DoseWitness patch: an f32 operand whose rows a kernel reads in place.
//!
//! Channel-last activations (NHWC: what every 1x1 convolution of a TFLite-born
//! model sees) hold one position's K channels contiguously, positions a row
//! stride apart. A packed panel is the transpose of that (`r` values per K), so
//! each such matmul used to copy its whole input first. With this format the
//! kernel gets, per panel of `r` positions, the first row's address and the row
//! stride, and broadcasts element `(j, k)` straight from row `j`.
//!
//! A short last panel is copied into a zero-padded `r`-row buffer, so the
//! kernel always reads `r` whole rows and never past the activation. A layout
//! whose K axis is not contiguous is copied row-major first (same descriptor).

use std::fmt::Display;
use std::sync::Arc;

use tract_data::internal::*;

use crate::WeightType;
use crate::mmm::{EagerPackedInput, MMMInputFormat, MMMInputValue, PackedMatrixStorage};
use crate::strided_panel::NoFact;

/// What an `AddMatMul` passes as its operand pointer when the packing index
/// is the row one. Two machine words: address of the panel's first row, and
/// the byte stride between rows (K values of one row are contiguous).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RowPanelDesc {
    ptr: usize,
    row_byte_stride: usize,
}

/// f32 operand read as `r` contiguous K-rows per panel, without a pack.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct RowMajorPanels {
    r: usize,
}

impl RowMajorPanels {
    pub const fn new(r: usize) -> Self {
        Self { r }
    }

    /// Build the operand from a tensor the caller already owns. `byte_offset`
    /// selects one batch item. No activation bytes are copied when the K axis
    /// is contiguous, except the short last panel.
    pub fn panels_from_arc(
        &self,
        tensor: Arc<Tensor>,
        byte_offset: isize,
        k_axis: usize,
        mn_axis: usize,
    ) -> TractResult<Box<dyn MMMInputValue>> {
        ensure!(k_axis != mn_axis, "k and mn axes are both {k_axis}");
        ensure!(k_axis < tensor.rank() && mn_axis < tensor.rank());
        ensure!(tensor.datum_type() == f32::datum_type(), "row panels are f32 only");
        let k = tensor.shape()[k_axis];
        let mn = tensor.shape()[mn_axis];
        let mn_stride = tensor.strides()[mn_axis];
        if tensor.strides()[k_axis] == 1
            && mn_stride > 0
            && within(&tensor, byte_offset, k, mn, mn_stride)
        {
            let base = unsafe { tensor.as_ptr_unchecked::<u8>() } as usize + byte_offset as usize;
            Ok(Box::new(RowPanelInput::new(*self, tensor, base, k, mn, mn_stride as usize * 4)?))
        } else {
            let view = unsafe {
                TensorView::from_bytes(&tensor, byte_offset, tensor.shape(), tensor.strides())
            };
            self.copied(&view, k_axis, mn_axis)
        }
    }

    /// Fallback for a K axis that is not contiguous: copy to `[mn, k]` first.
    fn copied(
        &self,
        view: &TensorView,
        k_axis: usize,
        mn_axis: usize,
    ) -> TractResult<Box<dyn MMMInputValue>> {
        ensure!(view.datum_type() == f32::datum_type(), "row panels are f32 only");
        let k = view.shape()[k_axis];
        let mn = view.shape()[mn_axis];
        let mut rows = Tensor::zero::<f32>(&[mn, k])?;
        {
            let mut plain = rows.try_as_plain_ram_mut()?;
            let dst = plain.as_slice_mut::<f32>()?;
            // One matmul's view: the other axes sit at their first coordinate.
            let src = unsafe { view.as_ptr_unchecked::<f32>() };
            let (mn_stride, k_stride) = (view.strides()[mn_axis], view.strides()[k_axis]);
            for row in 0..mn {
                for col in 0..k {
                    dst[row * k + col] = unsafe {
                        *src.offset(row as isize * mn_stride + col as isize * k_stride)
                    };
                }
            }
        }
        let rows = Arc::new(rows);
        let base = unsafe { rows.as_ptr_unchecked::<u8>() } as usize;
        Ok(Box::new(RowPanelInput::new(*self, rows, base, k, mn, k * 4)?))
    }
}

/// True when the first and last element of the first and last row land inside
/// the allocation.
fn within(tensor: &Tensor, byte_offset: isize, k: usize, mn: usize, mn_stride: isize) -> bool {
    if k == 0 || mn == 0 {
        return true;
    }
    let bytes = tensor.as_bytes().len() as isize;
    let last = ((mn as isize - 1).saturating_mul(mn_stride)).saturating_add(k as isize - 1);
    byte_offset >= 0 && byte_offset.saturating_add(last.saturating_add(1).saturating_mul(4)) <= bytes
}

impl MMMInputFormat for RowMajorPanels {
    fn prepare_tensor(&self, t: &Tensor, k_axis: usize, mn_axis: usize) -> TractResult<Tensor> {
        let value = self.prepare_one(t, k_axis, mn_axis)?;
        Ok(PackedMatrixStorage::new(value).into_tensor(t.datum_type()))
    }

    fn prepare_one(
        &self,
        t: &Tensor,
        k_axis: usize,
        mn_axis: usize,
    ) -> TractResult<Box<dyn MMMInputValue>> {
        // A borrow: keep our own copy alive.
        self.panels_from_arc(Arc::new(t.clone()), 0, k_axis, mn_axis)
    }

    fn prepare_one_view(
        &self,
        t: &TensorView,
        k_axis: usize,
        mn_axis: usize,
    ) -> TractResult<Box<dyn MMMInputValue>> {
        self.copied(t, k_axis, mn_axis)
    }

    fn precursor(&self) -> WeightType {
        WeightType::Plain(f32::datum_type())
    }

    fn r(&self) -> usize {
        self.r
    }

    fn k_alignment(&self) -> usize {
        1
    }

    fn mem_size(&self, _k: TDim, _mn: TDim) -> TDim {
        0.to_dim()
    }

    fn extract_at_mn_f16(&self, _: &EagerPackedInput, _: usize, _: &mut [f16]) -> TractResult<()> {
        bail!("row f32 panels have no f16 extract")
    }

    fn extract_at_mn_f32(&self, _: &EagerPackedInput, _: usize, _: &mut [f32]) -> TractResult<()> {
        bail!("row f32 panels are not an EagerPackedInput")
    }
}

impl Display for RowMajorPanels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RowsF32[{}]", self.r)
    }
}

/// The operand: one descriptor per panel, and what keeps their bytes alive.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RowPanelInput {
    format: RowMajorPanels,
    /// The activation the full panels point into (or its row-major copy).
    source: Arc<Tensor>,
    /// `r` rows of K values, the short last panel zero-padded.
    tail: Option<Arc<Tensor>>,
    fact: NoFact,
    panels: Vec<RowPanelDesc>,
    k: usize,
    mn: usize,
}

impl RowPanelInput {
    fn new(
        format: RowMajorPanels,
        source: Arc<Tensor>,
        base: usize,
        k: usize,
        mn: usize,
        row_byte_stride: usize,
    ) -> TractResult<Self> {
        let r = format.r;
        let full = mn / r;
        let mut panels: Vec<RowPanelDesc> = (0..full)
            .map(|p| RowPanelDesc { ptr: base + p * r * row_byte_stride, row_byte_stride })
            .collect();
        let mut tail = None;
        if mn % r != 0 || mn == 0 {
            let mut padded = Tensor::zero::<f32>(&[r, k.max(1)])?;
            {
                let mut plain = padded.try_as_plain_ram_mut()?;
                let dst = plain.as_slice_mut::<f32>()?;
                for row in 0..mn % r {
                    let src = (base + (full * r + row) * row_byte_stride) as *const f32;
                    let src = unsafe { std::slice::from_raw_parts(src, k) };
                    dst[row * k..][..k].copy_from_slice(src);
                }
            }
            let padded = Arc::new(padded);
            let ptr = unsafe { padded.as_ptr_unchecked::<u8>() } as usize;
            panels.push(RowPanelDesc { ptr, row_byte_stride: k.max(1) * 4 });
            tail = Some(padded);
        }
        Ok(Self { format, source, tail, fact: NoFact, panels, k, mn })
    }

    /// Bytes from one panel's descriptor to the next: what `panel_bytes` advances by from
    /// panel to panel (the short last panel's included). DoseWitness patch: a kernel's tile
    /// loop steps along a row of tiles by it.
    pub const PANEL_STRIDE: usize = std::mem::size_of::<RowPanelDesc>();

    /// Whether the full panels point into the source activation (no copy).
    pub fn is_view_of(&self, tensor: &Tensor) -> bool {
        std::ptr::eq(&*self.source, tensor)
    }
}

impl MMMInputValue for RowPanelInput {
    fn format(&self) -> &dyn MMMInputFormat {
        &self.format
    }

    fn scratch_panel_buffer_layout(&self) -> Option<std::alloc::Layout> {
        None
    }

    fn panel_bytes(&self, i: usize, _buffer: Option<*mut u8>) -> TractResult<*const u8> {
        self.panels
            .get(i)
            .map(|p| p as *const RowPanelDesc as *const u8)
            .with_context(|| format!("row panel {i} of {}", self.panels.len()))
    }

    fn mn(&self) -> usize {
        self.mn
    }

    fn k(&self) -> usize {
        self.k
    }

    fn exotic_fact(&self) -> &dyn ExoticFact {
        &self.fact
    }

    fn extract_at_mn_f16(&self, _mn: usize, _slice: &mut [f16]) -> TractResult<()> {
        bail!("row f32 panels have no f16 extract")
    }

    fn extract_at_mn_f32(&self, mn: usize, slice: &mut [f32]) -> TractResult<()> {
        ensure!(slice.len() == self.k);
        ensure!(mn < self.mn);
        let desc = &self.panels[mn / self.format.r];
        let row = desc.ptr + (mn % self.format.r) * desc.row_byte_stride;
        let row = unsafe { std::slice::from_raw_parts(row as *const f32, self.k) };
        slice.copy_from_slice(row);
        Ok(())
    }
}

impl Display for RowPanelInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} k={} mn={} {} panels", self.format, self.k, self.mn, self.panels.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(input: &dyn MMMInputValue, panel: usize) -> (usize, usize) {
        let p = input.panel_bytes(panel, None).unwrap() as *const usize;
        unsafe { (*p, *p.add(1)) }
    }

    #[test]
    fn channel_last_rows_are_read_in_place() {
        // 29 positions x 5 channels, channel innermost: two full panels of 12 and a tail of 5.
        let data: Vec<f32> = (0..29 * 5).map(|i| i as f32).collect();
        let tensor = Arc::new(Tensor::from_shape(&[29, 5], &data).unwrap());
        let start = tensor.as_bytes().as_ptr() as usize;
        let input = RowMajorPanels::new(12).panels_from_arc(tensor.clone(), 0, 1, 0).unwrap();
        let rows = input.downcast_ref::<RowPanelInput>().unwrap();
        assert!(rows.is_view_of(&tensor));
        assert_eq!(input.panels_count(), 3);
        assert_eq!(words(&*input, 0), (start, 20));
        assert_eq!(words(&*input, 1), (start + 12 * 20, 20));
        let (tail, stride) = words(&*input, 2);
        assert_ne!(tail, start + 24 * 20, "the short panel must be a padded copy");
        assert_eq!(stride, 20);
        let mut got = [0f32; 5];
        for mn in [0, 13, 28] {
            input.extract_at_mn_f32(mn, &mut got).unwrap();
            assert_eq!(got.to_vec(), data[mn * 5..][..5].to_vec(), "row {mn}");
        }
        // Rows past the end of the tail panel are zeros.
        let padded = unsafe { std::slice::from_raw_parts(tail as *const f32, 12 * 5) };
        assert!(padded[5 * 5..].iter().all(|x| *x == 0.0));
        assert_eq!(padded[..5 * 5], data[24 * 5..]);
    }

    #[test]
    fn k_outer_layout_is_copied_row_major() {
        // [k, mn]: K is not contiguous, so the rows are copied first.
        let data: Vec<f32> = (0..4 * 12).map(|i| i as f32).collect();
        let tensor = Arc::new(Tensor::from_shape(&[4, 12], &data).unwrap());
        let input = RowMajorPanels::new(12).panels_from_arc(tensor.clone(), 0, 0, 1).unwrap();
        let rows = input.downcast_ref::<RowPanelInput>().unwrap();
        assert!(!rows.is_view_of(&tensor));
        assert_eq!(words(&*input, 0).1, 16);
        let mut got = [0f32; 4];
        input.extract_at_mn_f32(7, &mut got).unwrap();
        assert_eq!(got, [7.0, 19.0, 31.0, 43.0]);
    }

    /// The AVX-512 kernels reading row panels (packing 1) give the plain product, with a
    /// per-row bias, a channel-last residual and a ReLU6 fused, on full tiles and on short ones
    /// at both edges, written channel-last as a 1x1 convolution writes it. Columns of full
    /// tiles go through the kernels' tile loop.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_kernels_read_rows_in_place() -> TractResult<()> {
        use crate::mmm::MatMatMul;
        use crate::x86_64::mmm::*;
        let kernels: [&dyn MatMatMul; 8] = [
            &*avx512_mmm_f32_16x12,
            &*avx512_mmm_f32_16x8,
            &*avx512_mmm_f32_32x6,
            &*avx512_mmm_f32_32x5,
            &*avx512_mmm_f32_32x12,
            &*avx512_mmm_f32_16x7,
            &*avx512_mmm_f32_32x7,
            &*avx512_mmm_f32_48x7,
        ];
        for ker in kernels {
            rows_in_place(ker)?;
        }
        Ok(())
    }

    /// The AVX-512 row-panel kernels' tile loop (DoseWitness patch) runs the program once per
    /// tile: a stride on the store pointer moves it by one word per tile, and the count of
    /// tiles left goes down to zero.
    #[cfg(all(target_arch = "x86_64", not(target_env = "msvc")))]
    #[test]
    fn avx512_row_panel_kernels_loop_over_tiles() -> TractResult<()> {
        use crate::mmm::{FusedKerSpec, MatMatMulKer, OutputStoreKer, TileLoop, TileStride};
        use crate::x86_64::mmm::*;
        tile_loop_stores_each_tile(&*avx512_mmm_f32_16x12)?;
        tile_loop_stores_each_tile(&*avx512_mmm_f32_16x8)?;
        tile_loop_stores_each_tile(&*avx512_mmm_f32_32x6)?;
        tile_loop_stores_each_tile(&*avx512_mmm_f32_32x5)?;
        tile_loop_stores_each_tile(&*avx512_mmm_f32_32x12)?;
        tile_loop_stores_each_tile(&*avx512_mmm_f32_16x7)?;
        tile_loop_stores_each_tile(&*avx512_mmm_f32_32x7)?;
        tile_loop_stores_each_tile(&*avx512_mmm_f32_48x7)?;

        fn tile_loop_stores_each_tile<const MR: usize, const NR: usize>(
            ker: &crate::mmm::DynKernel<MR, NR, f32>,
        ) -> TractResult<()> {
            if !ker.runnable() {
                return Ok(());
            }
            let tiles = 5;
            let tile = MR * NR;
            // Each tile clears, adds 2.5 and stores; the stride moves the store a whole tile on.
            let mut out = vec![0f32; tile * tiles];
            let mut specs = vec![
                FusedKerSpec::Clear,
                FusedKerSpec::ScalarAdd(2.5),
                FusedKerSpec::Store(OutputStoreKer {
                    ptr: out.as_mut_ptr() as *mut u8,
                    row_byte_stride: 4,
                    col_byte_stride: 4 * MR as isize,
                    item_size: 4,
                }),
                FusedKerSpec::Done,
            ];
            let word = std::mem::size_of::<usize>();
            let store = TileStride {
                offset: 2 * std::mem::size_of::<FusedKerSpec<f32>>() + word,
                bytes: (tile * 4) as isize,
            };
            let mut lp = TileLoop::new(tiles - 2, &[store]);
            let err = unsafe { ker.kernel_tiles(&mut specs, &mut lp) };
            assert_eq!(err, Some(0), "{}", ker.name());
            assert_eq!(lp.remaining, 0);
            // `remaining + 1` tiles stored, the last slot untouched.
            for (i, v) in out.iter().enumerate() {
                let want = if i < tile * (tiles - 1) { 2.5 } else { 0.0 };
                assert_eq!(*v, want, "{} at {i}", ker.name());
            }
            Ok(())
        }
        Ok(())
    }

    #[cfg(target_arch = "x86_64")]
    fn rows_in_place(ker: &dyn crate::mmm::MatMatMul) -> TractResult<()> {
        use crate::BinOp;
        use crate::mmm::{AsInputValue, FusedSpec};
        if !ker.runnable() {
            return Ok(());
        }
        let r = ker.nr();
        assert_eq!(ker.packings()[1].1.downcast_ref::<RowMajorPanels>(), Some(&RowMajorPanels::new(r)));
        // The last three are one row of tiles for 16-, 32- and 48-row kernels (a tile loop
        // along the row, B panel to B panel).
        for (m, k, n) in [
            (64, 16, r * 9),
            (24, 27, r * 4 + 7),
            (16, 1, 5),
            (40, 96, 29),
            (70, 3, r + 1),
            (16, 24, r * 6 + 3),
            (32, 20, r * 5),
            (48, 8, r * 3 + 1),
        ] {
            // B: n positions of k channels, channel innermost.
            let b_data: Vec<f32> = (0..n * k).map(|i| ((i * 7) % 19) as f32 * 0.1 - 0.9).collect();
            let a_data: Vec<f32> = (0..m * k).map(|i| ((i * 5) % 13) as f32 * 0.2 - 1.1).collect();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.05 - 0.5).collect();
            let b = Arc::new(Tensor::from_shape(&[n, k], &b_data)?);
            let a = Tensor::from_shape(&[m, k], &a_data)?;
            let pa = ker.packings()[1].0.prepare_one(&a, 1, 0)?;
            let pb = RowMajorPanels::new(r).panels_from_arc(b.clone(), 0, 1, 0)?;
            assert!(pb.downcast_ref::<RowPanelInput>().unwrap().is_view_of(&b));
            let bias_t = Tensor::from_shape(&[m], &bias)?;
            let (zero, six) = (tensor0(0f32), tensor0(6f32));
            // A channel-last residual, added before the clamp.
            let residual: Vec<f32> = (0..n * m).map(|i| ((i * 3) % 11) as f32 * 0.1 - 0.4).collect();
            let residual_t = Tensor::from_shape(&[n, m], &residual)?;
            // Output [n, m]: channel-last.
            let mut found = Tensor::zero::<f32>(&[n, m])?;
            unsafe {
                let res = ker.c_view(Some(1), Some(0)).wrap(&residual_t.view());
                let c = ker.c_view(Some(1), Some(0)).wrap(&found.view_mut());
                ker.run(
                    m,
                    n,
                    &[
                        FusedSpec::AddMatMul {
                            a: AsInputValue::Borrowed(&*pa),
                            b: AsInputValue::Borrowed(&*pb),
                            packing: 1,
                        },
                        FusedSpec::BinPerRow(bias_t.view(), BinOp::Add),
                        FusedSpec::AddUnicast(res),
                        FusedSpec::BinScalar(&zero, BinOp::Max),
                        FusedSpec::BinScalar(&six, BinOp::Min),
                        FusedSpec::Store(c),
                    ],
                )?;
            }
            let found = found.to_plain_array_view::<f32>()?;
            let mut clamped = 0;
            for ni in 0..n {
                for mi in 0..m {
                    let mut acc = bias[mi] + residual[ni * m + mi];
                    for ki in 0..k {
                        acc += a_data[mi * k + ki] * b_data[ni * k + ki];
                    }
                    clamped += !(0.0..=6.0).contains(&acc) as usize;
                    let want = acc.clamp(0.0, 6.0);
                    let got = found[[ni, mi]];
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{} {m}x{k}x{n} at n={ni} m={mi}: {got} vs {want}",
                        ker.name()
                    );
                }
            }
            assert!(k == 1 || clamped > 0, "{m}x{k}x{n}: the clamp went untested");
        }
        Ok(())
    }
}
