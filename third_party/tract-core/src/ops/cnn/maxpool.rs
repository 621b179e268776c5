use crate::internal::*;
use ndarray::prelude::*;

use crate::ops::cnn::pools::{ConcretePoolGeometry, PoolGeometry, PoolSpec};
use crate::ops::nn::DataFormat;

#[derive(Debug, Clone, new, Hash, PartialEq, Eq)]
pub struct MaxPool {
    pub pool_spec: PoolSpec,
    pub with_index_outputs: Option<DatumType>,
}

impl Op for MaxPool {
    fn name(&self) -> StaticName {
        "MaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(self.pool_spec.info())
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let shape: TVec<TDim> = inputs[0].shape().iter().map(|d| d.to_dim()).collect();
        self.to_optimized(&shape)?.eval(_ctx, inputs)
    }
}

impl TypedOp for MaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut facts = self.pool_spec.output_facts(inputs)?;
        if let Some(idt) = self.with_index_outputs {
            facts.push(facts[0].clone());
            facts[1].datum_type = idt;
        }
        Ok(facts)
    }

    fn declutter(
        &self,
        model: &TypedModel,
        node: &TypedNode,
    ) -> TractResult<Option<TypedModelPatch>> {
        if self.with_index_outputs.is_some()
            && node.outputs[1].successors.len() == 0
            && !model.output_outlets()?.contains(&OutletId::new(node.id, 1))
        {
            let op = Self { with_index_outputs: None, ..self.clone() };
            let mut patch = TypedModelPatch::default();
            let mut wire = patch.tap_model(model, node.inputs[0])?;
            wire = patch.wire_node(&node.name, op, &[wire])?[0];
            patch.shunt_outside(model, node.id.into(), wire)?;
            return Ok(Some(patch));
        }
        let fact = model.outlet_fact(node.inputs[0])?;
        if let Some(pool_spec) = self.pool_spec.declutter(&fact.shape)? {
            return Ok(Some(TypedModelPatch::replace_single_op(
                model,
                node,
                &node.inputs,
                Self { pool_spec, ..self.clone() },
            )?));
        }
        Ok(None)
    }

    /// DoseWitness patch: a max-pool follows its input between channel-first
    /// and channel-last, so it no longer blocks the depthwise convolutions'
    /// channel-last suggestion. Only the format swap is handled; index
    /// outputs encode flat positions in the old layout and stay put.
    fn change_axes(
        &self,
        model: &TypedModel,
        node: &TypedNode,
        io: InOut,
        change: &AxisOp,
    ) -> TractResult<Option<AxisChangeConsequence>> {
        rule_if!(io == InOut::In(0) || io == InOut::Out(0));
        rule_if!(self.with_index_outputs.is_none());
        rule_if!(crate::ops::cnn::pools::TRACT_POOL_AXIS_CHANGES.get());
        let full_input_shape = model.outlet_fact(node.inputs[0])?.shape.to_tvec();
        let shape = self.pool_spec.data_format.shape(full_input_shape.clone())?;
        let rank = full_input_shape.len();
        let (new_format, axis_move) = match self.pool_spec.data_format {
            DataFormat::NCHW => (DataFormat::NHWC, AxisOp::Move(shape.c_axis(), rank - 1)),
            DataFormat::CHW => (DataFormat::HWC, AxisOp::Move(shape.c_axis(), rank - 1)),
            DataFormat::NHWC => (DataFormat::NCHW, AxisOp::Move(shape.c_axis(), 1)),
            DataFormat::HWC => (DataFormat::CHW, AxisOp::Move(shape.c_axis(), 0)),
        };
        rule_if!(*change == axis_move);
        let mut op = self.clone();
        op.pool_spec.data_format = new_format;
        Ok(Some(AxisChangeConsequence {
            substitute_op: Some(Box::new(op)),
            wire_changes: tvec!((InOut::In(0), change.clone()), (InOut::Out(0), change.clone())),
        }))
    }

    /// Lower to `OptMaxPool` with the geometry pre-resolved to `Concrete` when the
    /// input shape is fixed, so the `Patch` is built once here rather than per eval.
    /// Symbolic shapes are left as `MaxPool`.
    fn codegen(
        &self,
        model: &TypedModel,
        node: &TypedNode,
    ) -> TractResult<Option<TypedModelPatch>> {
        let fact = model.outlet_fact(node.inputs[0])?;
        if fact.shape.as_concrete().is_none() {
            return Ok(None);
        }
        let mut op = self.to_optimized(&fact.shape.to_tvec())?;
        op.geometry = op.geometry.optimize_if(fact.shape.as_concrete())?;
        Ok(Some(TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?))
    }

    as_op!();
}

impl MaxPool {
    fn to_optimized(&self, input_shape: &[TDim]) -> TractResult<OptMaxPool> {
        Ok(OptMaxPool {
            pool_spec: self.pool_spec.clone(),
            with_index_outputs: self.with_index_outputs,
            geometry: self.pool_spec.compute_geo(input_shape)?,
        })
    }
}

#[derive(Debug, Clone, new, Hash, PartialEq, Eq)]
pub struct OptMaxPool {
    pub pool_spec: PoolSpec,
    pub with_index_outputs: Option<DatumType>,
    pub geometry: PoolGeometry,
}

impl Op for OptMaxPool {
    fn name(&self) -> StaticName {
        "OptMaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(self.pool_spec.info())
    }

    op_as_typed_op!();
}

impl EvalOp for OptMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let geo = self.geometry.to_concrete(input.shape())?;
        dispatch_numbers!(Self::eval_t(input.datum_type())(self, &*input, geo.as_ref()))
    }
}

impl TypedOp for OptMaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut facts = self.pool_spec.output_facts(inputs)?;
        if let Some(idt) = self.with_index_outputs {
            facts.push(facts[0].clone());
            facts[1].datum_type = idt;
        }
        Ok(facts)
    }

    as_op!();
}

impl OptMaxPool {
    fn eval_t<T: Datum + Copy + num_traits::Bounded + PartialOrd>(
        &self,
        input: &Tensor,
        geo: &ConcretePoolGeometry,
    ) -> TractResult<TVec<TValue>> {
        let input_dt = input.datum_type();

        if self.with_index_outputs.is_none()
            && let Some(values) = self.try_nchw_2x2_f32::<T>(input, geo)?
        {
            return Ok(tvec!(values.into_tvalue()));
        }
        if self.with_index_outputs.is_none()
            && let Some(values) = self.try_nhwc_2x2_s2_f32::<T>(input, geo)?
        {
            return Ok(tvec!(values.into_tvalue()));
        }
        if self.with_index_outputs.is_none()
            && let Some(values) = self.try_row_spans::<T>(input, geo)?
        {
            return Ok(tvec!(values.into_tvalue()));
        }

        let input_plain = input.try_as_plain_ram()?;
        let input: ArrayViewD<T> = input_plain.to_array_view()?;
        let input_ptr = input.as_ptr();

        let mut values = unsafe { ArrayD::<T>::uninit(&*geo.output_shape.shape).assume_init() };
        let mut indices = if self.with_index_outputs.is_some() {
            Some(unsafe { ArrayD::<i32>::uninit(&*geo.output_shape.shape).assume_init() })
        } else {
            None
        };
        let n = *geo.input_shape.n().unwrap_or(&1);
        let n_stride_i = geo.input_shape.n_stride().unwrap_or(&0);
        let n_stride_o = geo.output_shape.n_stride().unwrap_or(&0);
        unsafe {
            geo.patch.visit_output(|visitor| {
                for n in 0..n {
                    let input_offset = n * n_stride_i;
                    let output_offset = n * n_stride_o;
                    for c in 0..*geo.input_shape.c() {
                        let input_offset = input_offset + geo.input_shape.c_stride() * c;
                        let output_offset = output_offset + geo.output_shape.c_stride() * c;
                        let max = visitor
                            .valid_offsets()
                            .map(|v| (v, *input_ptr.offset(v + input_offset as isize)))
                            .fold((0, T::min_value()), |acc, v| if acc.1 < v.1 { v } else { acc });
                        *values
                            .as_mut_ptr()
                            .offset(output_offset as isize + visitor.output_offset) = max.1;
                        if let Some(ref mut indices) = indices {
                            *indices
                                .as_mut_ptr()
                                .offset(output_offset as isize + visitor.output_offset) =
                                max.0 as i32 / geo.patch.spec.output_inner_stride as i32;
                        }
                    }
                }
            });
        }
        let mut values = values.into_tensor();
        unsafe {
            values.set_datum_type(input_dt);
        }
        if let Some(dt) = self.with_index_outputs {
            Ok(tvec!(
                values.into_tvalue(),
                indices.unwrap().into_tensor().cast_to_dt(dt)?.into_owned().into_tvalue()
            ))
        } else {
            Ok(tvec!(values.into_tvalue()))
        }
    }

    /// 2x2 f32 NCHW, walked (n, c, y, x) so W is contiguous and the stride-1
    /// interior vectorises along x. Every other pool keeps `visit_output`.
    fn try_nchw_2x2_f32<T: Datum>(
        &self,
        input: &Tensor,
        geo: &ConcretePoolGeometry,
    ) -> TractResult<Option<Tensor>> {
        let patch = &geo.patch;
        if T::datum_type() != f32::datum_type()
            || self.pool_spec.data_format != crate::ops::nn::DataFormat::NCHW
            || patch.rank() != 2
            || *geo.input_shape.w_stride() != 1
            || patch.spec.kernel_shape[..] != [2, 2]
            || patch.spec.dilations[..] != [1, 1]
        {
            return Ok(None);
        }
        let mut values =
            unsafe { Tensor::uninitialized_dt(input.datum_type(), &geo.output_shape.shape)? };
        unsafe {
            maxpool_2x2_f32(
                input.as_ptr::<f32>()? as usize,
                values.as_slice_mut_unchecked::<f32>(),
                geo,
            )?;
        }
        Ok(Some(values))
    }

    /// DoseWitness patch: a 2×2 stride-2 f32 pool over channel-last images whose windows all
    /// lie inside (hand landmarks' 112² → 56² pool). Each output pixel is the lane-wise max of
    /// four contiguous input pixels, vectorised across channels; `try_row_spans` took four
    /// passes over the output, pixel by pixel.
    fn try_nhwc_2x2_s2_f32<T: Datum>(
        &self,
        input: &Tensor,
        geo: &ConcretePoolGeometry,
    ) -> TractResult<Option<Tensor>> {
        let patch = &geo.patch;
        let ish = &geo.input_shape;
        if T::datum_type() != f32::datum_type()
            || !self.pool_spec.data_format.c_is_last()
            || patch.rank() != 2
            || patch.spec.kernel_shape[..] != [2, 2]
            || patch.spec.strides[..] != [2, 2]
            || patch.spec.dilations[..] != [1, 1]
            || patch.pad_before[..] != [0, 0]
        {
            return Ok(None);
        }
        let (h, w, c) = (ish.hw_dims()[0], ish.hw_dims()[1], *ish.c());
        let (oh, ow) = (patch.output_shape[0], patch.output_shape[1]);
        if *ish.c_stride() != 1
            || *ish.w_stride() != c
            || *ish.h_stride() != w * c
            || 2 * oh > h
            || 2 * ow > w
            || c == 0
        {
            return Ok(None);
        }
        let mut output =
            unsafe { Tensor::uninitialized_dt(input.datum_type(), &geo.output_shape.shape)? };
        let input_plain = input.try_as_plain_ram()?;
        let input_slice = input_plain.as_slice::<f32>()?;
        let mut output_plain = output.try_as_plain_ram_mut()?;
        let output_slice = output_plain.as_slice_mut::<f32>()?;
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            unsafe { maxpool_nhwc_2x2_s2_avx512(input_slice, output_slice, h, w, c, oh, ow) };
            return Ok(Some(output));
        }
        maxpool_nhwc_2x2_s2(input_slice, output_slice, h, w, c, oh, ow);
        Ok(Some(output))
    }

    /// Any 2D pool, walked one output row at a time over images of contiguous pixels: a
    /// channel plane of 1-element pixels when channels come first, a whole image of
    /// C-element pixels when they come last. Each kernel tap folds into the row over the
    /// span of pixels where it lands in bounds, so a stride-1 tap reduces two contiguous
    /// slices. Taps fold in the generic walk's order with its comparison, so both pick the
    /// same values.
    fn try_row_spans<T: Datum + Copy + num_traits::Bounded + PartialOrd>(
        &self,
        input: &Tensor,
        geo: &ConcretePoolGeometry,
    ) -> TractResult<Option<Tensor>> {
        let patch = &geo.patch;
        let ish = &geo.input_shape;
        if patch.rank() != 2 {
            return Ok(None);
        }
        let (h, w, c) = (ish.hw_dims()[0], ish.hw_dims()[1], *ish.c());
        let px = if self.pool_spec.data_format.c_is_last() { c } else { 1 };
        let contiguous = if px == 1 {
            *ish.w_stride() == 1 && *ish.h_stride() == w && *ish.c_stride() == h * w
        } else {
            *ish.c_stride() == 1 && *ish.w_stride() == c && *ish.h_stride() == w * c
        };
        if !contiguous {
            return Ok(None);
        }
        let (oh, ow) = (patch.output_shape[0], patch.output_shape[1]);
        let spec = &patch.spec;
        let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
        let (sh, sw) = (spec.strides[0], spec.strides[1]);
        let (dh, dw) = (spec.dilations[0], spec.dilations[1]);
        let (pt, pl) = (patch.pad_before[0] as isize, patch.pad_before[1] as isize);
        let mut output = Tensor::zero_dt(input.datum_type(), &geo.output_shape.shape)?;
        let mut output_plain = output.try_as_plain_ram_mut()?;
        let output_slice = output_plain.as_slice_mut::<T>()?;
        output_slice.fill(T::min_value());
        let input_plain = input.try_as_plain_ram()?;
        let input_slice = input_plain.as_slice::<T>()?;
        let column_spans: TVec<(usize, usize, usize)> = (0..kw)
            .filter_map(|kx| {
                let offset = (kx * dw) as isize - pl;
                let last = w as isize - 1 - offset;
                if last < 0 {
                    return None;
                }
                let lo = if offset >= 0 { 0 } else { (-offset as usize).div_ceil(sw) };
                let hi = (last as usize / sw + 1).min(ow);
                (lo < hi).then(|| (lo, hi, ((lo * sw) as isize + offset) as usize))
            })
            .collect();
        for (image, out_image) in
            input_slice.chunks_exact(h * w * px).zip(output_slice.chunks_exact_mut(oh * ow * px))
        {
            for (oy, row) in out_image.chunks_exact_mut(ow * px).enumerate() {
                for ky in 0..kh {
                    let iy = (oy * sh + ky * dh) as isize - pt;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let irow = &image[iy as usize * w * px..][..w * px];
                    for &(lo, hi, start) in &column_spans {
                        let (row, taps) = (&mut row[lo * px..hi * px], &irow[start * px..]);
                        if sw == 1 {
                            fold_max(row, taps.iter());
                        } else if px == 1 {
                            fold_max(row, taps.iter().step_by(sw));
                        } else {
                            for (pixel, taps) in row.chunks_exact_mut(px).zip(taps.chunks(sw * px))
                            {
                                fold_max(pixel, taps.iter());
                            }
                        }
                    }
                }
            }
        }
        Ok(Some(output))
    }
}

/// The body of [`OptMaxPool::try_nhwc_2x2_s2_f32`]: images of `h`×`w` pixels of `c` channels
/// into `oh`×`ow`. Taps fold in the generic walk's order with its comparison (a NaN tap is
/// skipped), so every path picks the same values. The four taps fold in one expression per
/// channel: four `fold_max` passes over each pixel ran 3× slower (0.12 against 0.04 ms).
#[inline(always)]
fn maxpool_nhwc_2x2_s2(
    input: &[f32],
    output: &mut [f32],
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
) {
    let fold = |o: f32, v: f32| if o < v { v } else { o };
    for (image, out_image) in
        input.chunks_exact(h * w * c).zip(output.chunks_exact_mut(oh * ow * c))
    {
        for (oy, out_row) in out_image.chunks_exact_mut(ow * c).enumerate() {
            let top = &image[2 * oy * w * c..][..2 * ow * c];
            let bottom = &image[(2 * oy + 1) * w * c..][..2 * ow * c];
            for ((pixel, top), bottom) in out_row
                .chunks_exact_mut(c)
                .zip(top.chunks_exact(2 * c))
                .zip(bottom.chunks_exact(2 * c))
            {
                let (top_left, top_right) = top.split_at(c);
                let (bottom_left, bottom_right) = bottom.split_at(c);
                for (channel, out) in pixel.iter_mut().enumerate() {
                    let mut max = fold(f32::MIN, top_left[channel]);
                    max = fold(max, top_right[channel]);
                    max = fold(max, bottom_left[channel]);
                    *out = fold(max, bottom_right[channel]);
                }
            }
        }
    }
}

/// [`maxpool_nhwc_2x2_s2`] compiled for AVX-512. Channels in whole vectors of 16 take explicit
/// vector code: the compiled channel loop, whose count it does not know, spends more on its
/// set-up and remainder than on the maxima (hand landmarks' 56x56x16 pool 0.04 -> 0.01 ms).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn maxpool_nhwc_2x2_s2_avx512(
    input: &[f32],
    output: &mut [f32],
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
) {
    use std::arch::x86_64::*;
    if c % 16 != 0 {
        return maxpool_nhwc_2x2_s2(input, output, h, w, c, oh, ow);
    }
    for (image, out_image) in
        input.chunks_exact(h * w * c).zip(output.chunks_exact_mut(oh * ow * c))
    {
        for (oy, out_row) in out_image.chunks_exact_mut(ow * c).enumerate() {
            let top = &image[2 * oy * w * c..][..2 * ow * c];
            let bottom = &image[(2 * oy + 1) * w * c..][..2 * ow * c];
            for ox in 0..ow {
                for ch in (0..c).step_by(16) {
                    let at = 2 * ox * c + ch;
                    // In bounds: `at + c + 16 <= 2 * ow * c` for both rows, `ox * c + ch + 16 <=
                    // ow * c` for the output. `max_ps(v, o)` is `v > o ? v : o`, the scalar
                    // fold's `o < v ? v : o`, NaN included.
                    unsafe {
                        let mut max = _mm512_set1_ps(f32::MIN);
                        for row in [top, bottom] {
                            let left = _mm512_loadu_ps(row.as_ptr().add(at));
                            let right = _mm512_loadu_ps(row.as_ptr().add(at + c));
                            max = _mm512_max_ps(left, max);
                            max = _mm512_max_ps(right, max);
                        }
                        _mm512_storeu_ps(out_row.as_mut_ptr().add(ox * c + ch), max);
                    }
                }
            }
        }
    }
}

fn fold_max<'a, T: Copy + PartialOrd + 'a>(row: &mut [T], taps: impl Iterator<Item = &'a T>) {
    for (o, &v) in row.iter_mut().zip(taps) {
        *o = if *o < v { v } else { *o };
    }
}

unsafe fn maxpool_2x2_f32(
    i_base: usize,
    out: &mut [f32],
    geo: &ConcretePoolGeometry,
) -> TractResult<()> {
    let ish = &geo.input_shape;
    let osh = &geo.output_shape;
    let (h, w) = (ish.hw_dims()[0] as isize, ish.hw_dims()[1] as isize);
    let (oh, ow) = (geo.patch.output_shape[0], geo.patch.output_shape[1]);
    let sh = geo.patch.spec.strides[0] as isize;
    let sw = geo.patch.spec.strides[1] as isize;
    let pt = geo.patch.pad_before[0] as isize;
    let pl = geo.patch.pad_before[1] as isize;
    let ih_stride = *ish.h_stride() as isize;
    let oh_stride = *osh.h_stride() as isize;
    let n = *ish.n().unwrap_or(&1) as isize;
    let in_stride = *ish.n_stride().unwrap_or(&0) as isize;
    let on_stride = *osh.n_stride().unwrap_or(&0) as isize;
    let c = *ish.c() as isize;
    let ic_stride = *ish.c_stride() as isize;
    let oc_stride = *osh.c_stride() as isize;
    // Fully-valid 2×2 windows (both taps in-bounds). SameUpper 2×2 s=1
    // keeps H/W and pads after, so the last row/col are partial.
    let simd_s1 = sh == 1 && sw == 1;
    // DoseWitness patch: stride 2 gets a fully-valid interior too (both rows
    // and both columns of each window in bounds).
    let simd_s2 = sh == 2 && sw == 2;
    let (y0, y1, x0, x1) = if simd_s2 {
        (
            ((pt + 1) / 2) as usize,
            ((h + pt).max(0) as usize / 2).min(oh),
            ((pl + 1) / 2) as usize,
            ((w + pl).max(0) as usize / 2).min(ow),
        )
    } else {
        (
            pt.max(0) as usize,
            ((h - 1 + pt).max(0) as usize).min(oh),
            pl.max(0) as usize,
            ((w - 1 + pl).max(0) as usize).min(ow),
        )
    };
    let plane_len = oh * ow;
    let one_plane = |p: isize, plane_out: *mut f32| unsafe {
        let iptr = i_base as *const f32;
        let nn = p / c;
        let cc = p % c;
        let in_base = nn * in_stride + cc * ic_stride;
        if simd_s1 && y1 > y0 && x1 > x0 {
            maxpool_2x2_s1_valid_f32(
                iptr.offset(in_base + (y0 as isize - pt) * ih_stride + (x0 as isize - pl)),
                plane_out.offset(y0 as isize * oh_stride + x0 as isize),
                y1 - y0,
                x1 - x0,
                ih_stride,
                oh_stride,
            );
        }
        if simd_s2 && y1 > y0 && x1 > x0 {
            maxpool_2x2_s2_valid_f32(
                iptr.offset(in_base + (2 * y0 as isize - pt) * ih_stride + (2 * x0 as isize - pl)),
                plane_out.offset(y0 as isize * oh_stride + x0 as isize),
                y1 - y0,
                x1 - x0,
                ih_stride,
                oh_stride,
            );
        }
        for oy in 0..oh {
            let interior_y = (simd_s1 || simd_s2) && oy >= y0 && oy < y1;
            for ox in 0..ow {
                if interior_y && ox >= x0 && ox < x1 {
                    continue;
                }
                let mut m = f32::MIN;
                for ky in 0..2 {
                    let iy = oy as isize * sh + ky - pt;
                    if iy < 0 || iy >= h {
                        continue;
                    }
                    let row = iptr.offset(in_base + iy * ih_stride);
                    for kx in 0..2 {
                        let ix = ox as isize * sw + kx - pl;
                        if ix < 0 || ix >= w {
                            continue;
                        }
                        m = m.max(*row.offset(ix));
                    }
                }
                *plane_out.offset(oy as isize * oh_stride + ox as isize) = m;
            }
        }
    };
    if oc_stride == plane_len as isize && on_stride == c * oc_stride {
        tract_linalg::multithread::par_chunks_mut(out, plane_len, out.len(), |first, chunk| {
            for (i, plane_out) in chunk.chunks_mut(plane_len).enumerate() {
                one_plane(first as isize + i as isize, plane_out.as_mut_ptr());
            }
            Ok(())
        })
    } else {
        for p in 0..(n * c) {
            let out_base = (p / c) * on_stride + (p % c) * oc_stride;
            unsafe { one_plane(p, out.as_mut_ptr().offset(out_base)) };
        }
        Ok(())
    }
}

unsafe fn maxpool_2x2_s1_valid_f32(
    iptr: *const f32,
    optr: *mut f32,
    oh: usize,
    ow: usize,
    ih_stride: isize,
    oh_stride: isize,
) {
    unsafe {
        for oy in 0..oh {
            let row0 = iptr.offset(oy as isize * ih_stride);
            let row1 = iptr.offset((oy as isize + 1) * ih_stride);
            let dst = optr.offset(oy as isize * oh_stride);
            let mut ox = 0usize;
            #[cfg(target_arch = "aarch64")]
            {
                use std::arch::aarch64::*;
                while ox + 4 <= ow {
                    let a = vld1q_f32(row0.add(ox));
                    let b = vld1q_f32(row0.add(ox + 1));
                    let c = vld1q_f32(row1.add(ox));
                    let d = vld1q_f32(row1.add(ox + 1));
                    vst1q_f32(dst.add(ox), vmaxq_f32(vmaxq_f32(a, b), vmaxq_f32(c, d)));
                    ox += 4;
                }
            }
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx") {
                    use std::arch::x86_64::*;
                    while ox + 8 <= ow {
                        let a = _mm256_loadu_ps(row0.add(ox));
                        let b = _mm256_loadu_ps(row0.add(ox + 1));
                        let c = _mm256_loadu_ps(row1.add(ox));
                        let d = _mm256_loadu_ps(row1.add(ox + 1));
                        _mm256_storeu_ps(
                            dst.add(ox),
                            _mm256_max_ps(_mm256_max_ps(a, b), _mm256_max_ps(c, d)),
                        );
                        ox += 8;
                    }
                }
            }
            while ox < ow {
                let m = (*row0.add(ox))
                    .max(*row0.add(ox + 1))
                    .max(*row1.add(ox))
                    .max(*row1.add(ox + 1));
                *dst.add(ox) = m;
                ox += 1;
            }
        }
    }
}

/// 2×2 stride-2 windows that are all in bounds (DoseWitness patch). Output
/// `ox` reads input columns `2·ox` and `2·ox + 1` of two rows; the AVX2 path
/// separates even and odd columns with in-lane shuffles and restores the
/// order with one 64-bit permute.
unsafe fn maxpool_2x2_s2_valid_f32(
    iptr: *const f32,
    optr: *mut f32,
    oh: usize,
    ow: usize,
    ih_stride: isize,
    oh_stride: isize,
) {
    unsafe {
        #[cfg(target_arch = "x86_64")]
        let avx2 = is_x86_feature_detected!("avx2");
        for oy in 0..oh {
            let row0 = iptr.offset(2 * oy as isize * ih_stride);
            let row1 = row0.offset(ih_stride);
            let dst = optr.offset(oy as isize * oh_stride);
            let mut ox = 0usize;
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                ox = maxpool_2x2_s2_row_avx2(row0, row1, dst, ow);
            }
            while ox < ow {
                let m = (*row0.add(2 * ox))
                    .max(*row0.add(2 * ox + 1))
                    .max(*row1.add(2 * ox))
                    .max(*row1.add(2 * ox + 1));
                *dst.add(ox) = m;
                ox += 1;
            }
        }
    }
}

/// Returns how many outputs of the row it wrote (a multiple of 8).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn maxpool_2x2_s2_row_avx2(
    row0: *const f32,
    row1: *const f32,
    dst: *mut f32,
    ow: usize,
) -> usize {
    use std::arch::x86_64::*;
    unsafe {
        let mut ox = 0;
        while ox + 8 <= ow {
            let a0 = _mm256_loadu_ps(row0.add(2 * ox));
            let a1 = _mm256_loadu_ps(row0.add(2 * ox + 8));
            let b0 = _mm256_loadu_ps(row1.add(2 * ox));
            let b1 = _mm256_loadu_ps(row1.add(2 * ox + 8));
            let a = _mm256_max_ps(
                _mm256_shuffle_ps::<0b10_00_10_00>(a0, a1),
                _mm256_shuffle_ps::<0b11_01_11_01>(a0, a1),
            );
            let b = _mm256_max_ps(
                _mm256_shuffle_ps::<0b10_00_10_00>(b0, b1),
                _mm256_shuffle_ps::<0b11_01_11_01>(b0, b1),
            );
            // lanes hold outputs [0 1 4 5 | 2 3 6 7]
            let m = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                _mm256_max_ps(a, b),
            )));
            _mm256_storeu_ps(dst.add(ox), m);
            ox += 8;
        }
        ox
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cnn::PaddingSpec;
    use crate::ops::nn::DataFormat;

    fn test_case() -> (TypedModel, TVec<TValue>) {
        let mut model = TypedModel::default();
        let source = model.add_source("data", f32::fact([1, 3, 8, 8])).unwrap();
        let pool_spec = PoolSpec::new(
            DataFormat::NCHW,
            tvec![2, 2],
            PaddingSpec::Valid,
            None,
            Some(tvec![2, 2]),
            3,
            3,
        );
        let op = MaxPool { pool_spec, with_index_outputs: None };
        let out = model.wire_node("pool", op, &[source]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let input = ndarray::Array4::from_shape_fn((1, 3, 8, 8), |(_, c, y, x)| {
            (c * 64 + y * 8 + x) as f32
        })
        .into_tensor()
        .into_tvalue();
        (model, tvec!(input))
    }

    #[test]
    fn maxpool_2x2_multithreaded_matches_reference() {
        let cases = [
            ((1usize, 24, 320, 320), PaddingSpec::SameUpper, tvec![1usize, 1]),
            ((2, 8, 33, 17), PaddingSpec::Valid, tvec![2, 2]),
        ];
        for (shape, padding, strides) in cases {
            let c = shape.1;
            let pool_spec =
                PoolSpec::new(DataFormat::NCHW, tvec![2, 2], padding, None, Some(strides), c, c);
            let input = ndarray::Array4::from_shape_fn(shape, |(n, c, y, x)| {
                ((n * 31 + c * 7 + y * 13 + x * 3) % 97) as f32 * 0.25 - 12.0
            })
            .into_tensor()
            .into_tvalue();
            // The index-outputs variant never takes the 2x2 fast path, so its
            // output 0 is the visit_output reference.
            let reference =
                MaxPool { pool_spec: pool_spec.clone(), with_index_outputs: Some(DatumType::I32) }
                    .eval(&EvalContext::out_of_plan(), tvec!(input.clone()))
                    .unwrap();
            let op = MaxPool { pool_spec, with_index_outputs: None };
            let pool = tract_linalg::multithread::Executor::multithread(4);
            let fast = tract_linalg::multithread::multithread_tract_scope(pool, || {
                op.eval(&EvalContext::out_of_plan(), tvec!(input))
            })
            .unwrap();
            assert_eq!(*fast[0], *reference[0]);
        }
    }

    /// DoseWitness patch: the stride-2 interior (AVX2 rows and scalar tails)
    /// against the generic walk, over odd sizes and every padding.
    #[test]
    fn maxpool_2x2_stride2_matches_reference() {
        let cases = [
            ((1usize, 16, 112, 112), PaddingSpec::Valid),
            ((1, 3, 37, 29), PaddingSpec::Valid),
            ((2, 5, 21, 40), PaddingSpec::SameUpper),
            ((1, 4, 19, 35), PaddingSpec::SameLower),
            ((1, 2, 9, 50), PaddingSpec::ExplicitOnnxPool(tvec![1, 1], tvec![0, 1], false)),
            ((1, 1, 3, 3), PaddingSpec::Valid),
        ];
        for (shape, padding) in cases {
            let c = shape.1;
            let pool_spec = PoolSpec::new(
                DataFormat::NCHW,
                tvec![2, 2],
                padding.clone(),
                None,
                Some(tvec![2, 2]),
                c,
                c,
            );
            let input = ndarray::Array4::from_shape_fn(shape, |(n, c, y, x)| {
                ((n * 31 + c * 7 + y * 13 + x * 3) % 97) as f32 * 0.25 - 12.0
            })
            .into_tensor()
            .into_tvalue();
            let reference =
                MaxPool { pool_spec: pool_spec.clone(), with_index_outputs: Some(DatumType::I32) }
                    .eval(&EvalContext::out_of_plan(), tvec!(input.clone()))
                    .unwrap();
            let fast = MaxPool { pool_spec, with_index_outputs: None }
                .eval(&EvalContext::out_of_plan(), tvec!(input))
                .unwrap();
            assert_eq!(*fast[0], *reference[0], "{shape:?} {padding:?}");
        }
    }

    /// DoseWitness patch: a channel-last pool gives the channel-first pool's
    /// values, moved.
    #[test]
    fn maxpool_follows_a_channel_move() {
        let shape = (1usize, 16, 20, 20);
        let input = ndarray::Array4::from_shape_fn(shape, |(_, c, y, x)| {
            ((c * 7 + y * 13 + x * 3) % 97) as f32 * 0.25 - 12.0
        })
        .into_tensor();
        let spec = |fmt| {
            PoolSpec::new(fmt, tvec![3, 3], PaddingSpec::SameUpper, None, Some(tvec![2, 2]), 16, 16)
        };
        let nchw = MaxPool { pool_spec: spec(DataFormat::NCHW), with_index_outputs: None };
        let expected =
            nchw.eval(&EvalContext::out_of_plan(), tvec!(input.clone().into_tvalue())).unwrap()[0]
                .clone()
                .into_tensor()
                .move_axis(1, 3)
                .unwrap();

        let mut model = TypedModel::default();
        let source = model.add_source("data", f32::fact([1, 16, 20, 20])).unwrap();
        let out = model.wire_node("pool", nchw, &[source]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let node = model.node(out[0].node);
        let change = AxisOp::Move(1, 3);
        let consequence = node
            .op
            .change_axes(&model, node, InOut::In(0), &change)
            .unwrap()
            .expect("the pool accepts a channel move");
        let moved = consequence.substitute_op.unwrap();
        let moved = moved.downcast_ref::<MaxPool>().unwrap();
        assert_eq!(moved.pool_spec.data_format, DataFormat::NHWC);
        let got = moved
            .eval(&EvalContext::out_of_plan(), tvec!(input.move_axis(1, 3).unwrap().into_tvalue()))
            .unwrap();
        assert_eq!(*got[0], expected);
        // Any other move is refused.
        assert!(
            node.op.change_axes(&model, node, InOut::In(0), &AxisOp::Move(2, 3)).unwrap().is_none()
        );
    }

    /// DoseWitness patch: the channel-last 2×2 stride-2 path gives what a plain walk over the
    /// windows gives, with a row and a column left over, channel counts on and off the vector
    /// width, and two images.
    #[test]
    fn nhwc_2x2_stride_2_pool_matches_a_plain_walk() {
        for (n, h, w, c) in
            [(1usize, 8usize, 8usize, 16usize), (2, 9, 11, 19), (1, 5, 7, 3), (2, 7, 9, 48)]
        {
            let input = ndarray::Array4::from_shape_fn((n, h, w, c), |(i, y, x, ch)| {
                ((i * 31 + y * 17 + x * 5 + ch * 11) % 89) as f32 * 0.5 - 20.0
            });
            let (oh, ow) = (h / 2, w / 2);
            let expected = ndarray::Array4::from_shape_fn((n, oh, ow, c), |(i, y, x, ch)| {
                let mut max = f32::MIN;
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    max = max.max(input[(i, 2 * y + dy, 2 * x + dx, ch)]);
                }
                max
            })
            .into_tensor();
            let spec = PoolSpec::new(
                DataFormat::NHWC,
                tvec![2, 2],
                PaddingSpec::Valid,
                None,
                Some(tvec![2, 2]),
                c,
                c,
            );
            let pool = MaxPool { pool_spec: spec, with_index_outputs: None };
            let optimized = pool
                .to_optimized(&input.shape().iter().map(|d| d.to_dim()).collect::<TVec<_>>())
                .unwrap();
            let got = optimized
                .eval(&EvalContext::out_of_plan(), tvec!(input.into_tensor().into_tvalue()))
                .unwrap();
            assert_eq!(*got[0], expected, "{n}x{h}x{w}x{c}");
        }
    }

    #[test]
    fn optimized_maxpool_has_concrete_geometry() {
        let (model, input) = test_case();
        let plain = model.clone().into_runnable().unwrap().run(input.clone()).unwrap();

        let optimized = model.into_optimized().unwrap();
        let pool = optimized
            .nodes
            .iter()
            .find_map(|n| n.op_as::<OptMaxPool>())
            .expect("optimized model should contain an OptMaxPool");
        assert!(
            pool.geometry.is_concrete(),
            "OptMaxPool geometry should be concrete after optimization"
        );

        let opt = optimized.into_runnable().unwrap().run(input).unwrap();
        assert_eq!(*opt[0], *plain[0]);
    }
}
