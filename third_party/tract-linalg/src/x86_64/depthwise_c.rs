//! Channel-inner depthwise convolution for x86_64 (DoseWitness patch, see
//! `third_party/README.md`).
//!
//! Upstream 0.23.9 ships this kernel for aarch64 and wasm only, so on x86_64
//! `Conv::suggested_axis_changes` never moves a depthwise convolution to channel-last and the
//! channel-first path runs every border zone and every stride-2 convolution through the scalar
//! walk. With a kernel registered here, the optimiser moves MobileNet-style graphs to
//! channel-last, where one output position is a run of contiguous channels whatever the stride.
//!
//! Same contract as the aarch64 kernel: for each of `len` output positions `i`, every channel
//! `c < channels` gets `bias[c] + sum over taps t of kernel[tap_indices[t] * k_stride + c] *
//! input[i * in_stride + offsets[t] + c]`, written at `output[i * out_stride + c]`. Like the
//! aarch64 kernel it uses fused multiply-adds, so results may differ from the scalar walk in the
//! last bit.
//!
//! Two versions: AVX-512F (16 lanes, masked tails) and AVX2 + FMA (8 lanes, masked tails through
//! `vmaskmovps`). The AVX2 one keeps four independent accumulators — two channel vectors for
//! each of two output positions. The AVX-512 one keeps eight (four positions), enough for two
//! 512-bit FMA ports; for nine taps (3x3) it also holds the kernel in registers, and when the
//! taps are rows of a window sliding along the run (`avx512::Grid`), it loads each input
//! once for all the outputs that use it.

/// # Safety
/// For every position `i < len`, every tap `t` and every channel `c < channels`,
/// `input.offset(i * in_stride + offsets[t]).add(c)` must be readable,
/// `kernel.add(tap_indices[t] * k_stride + c)` and `bias.add(c)` readable, and
/// `output.offset(i * out_stride).add(c)` writable. The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_f32_fma(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
) {
    unsafe {
        fma::run::<false>(
            input,
            output,
            kernel,
            tap_indices,
            offsets,
            bias,
            channels,
            k_stride,
            len,
            in_stride,
            out_stride,
            [0.0; 2],
        )
    }
}

/// # Safety
/// As [`depthwise_c_f32_fma`], and the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_f32_avx512(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
) {
    unsafe {
        avx512::run::<false>(
            input,
            output,
            kernel,
            tap_indices,
            offsets,
            bias,
            channels,
            k_stride,
            len,
            in_stride,
            out_stride,
            [0.0; 2],
        )
    }
}

/// # Safety
/// As [`depthwise_c_f32_fma`]. Each output is `min(max(sum, clamp[0]), clamp[1])`, with the
/// `maxps`/`minps` rule that a NaN sum yields the bound.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_clamp_f32_fma(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
    clamp: [f32; 2],
) {
    unsafe {
        fma::run::<true>(
            input,
            output,
            kernel,
            tap_indices,
            offsets,
            bias,
            channels,
            k_stride,
            len,
            in_stride,
            out_stride,
            clamp,
        )
    }
}

/// # Safety
/// As [`depthwise_c_clamp_f32_fma`], and the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_clamp_f32_avx512(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
    clamp: [f32; 2],
) {
    unsafe {
        avx512::run::<true>(
            input,
            output,
            kernel,
            tap_indices,
            offsets,
            bias,
            channels,
            k_stride,
            len,
            in_stride,
            out_stride,
            clamp,
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Lanes `c..c + 16` that are below `channels`, as a load/store mask.
    #[inline(always)]
    fn lanes(c: usize, channels: usize) -> __mmask16 {
        let left = channels.saturating_sub(c);
        if left >= 16 { 0xFFFF } else { ((1u32 << left) - 1) as __mmask16 }
    }

    /// The clamp a `CLAMP` kernel applies before each store: `maxps` then `minps`, whose
    /// second operand (the bound) is what a NaN yields.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn post<const CLAMP: bool>(v: __m512, lo: __m512, hi: __m512) -> __m512 {
        if CLAMP { _mm512_min_ps(_mm512_max_ps(v, lo), hi) } else { v }
    }

    /// Taps that form rows of `width` positions `step` apart along the output run, with
    /// consecutive outputs `stride` such positions apart (a stride-1 or stride-2 window of
    /// width 3 or 5): neighbouring outputs then share their inputs.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Grid {
        pub(super) width: usize,
        pub(super) stride: usize,
        pub(super) step: isize,
    }

    impl Grid {
        pub(super) fn detect(offsets: &[isize], in_stride: isize) -> Option<Grid> {
            for stride in [1usize, 2] {
                if in_stride % stride as isize != 0 || in_stride == 0 {
                    continue;
                }
                let step = in_stride / stride as isize;
                let width =
                    (1..offsets.len()).take_while(|&k| offsets[k] == offsets[0] + k as isize * step).count() + 1;
                if !(width == 3 || width == 5) || offsets.len() % width != 0 {
                    continue;
                }
                let rows = offsets.chunks_exact(width);
                if rows.clone().all(|row| (1..width).all(|k| row[k] == row[0] + k as isize * step)) {
                    return Some(Grid { width, stride, step });
                }
            }
            None
        }
    }

    /// `P` outputs at a time over a [`Grid`]: each input vector along a tap row is loaded once
    /// and used by every output whose window covers it (a 5-wide stride-1 row and four outputs:
    /// 8 input loads for 20 FMAs per 16 channels, where loading per tap and output takes 20),
    /// and each kernel vector once for the `P`. [`run_taps`]'s loads bind it before its FMAs do:
    /// on the EPYC (Zen 4) this loop runs 5x5 rows 15-40 % faster.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_grid<const CLAMP: bool, const KW: usize, const S: usize, const P: usize>(
        input: *const f32,
        output: *mut f32,
        kernel: *const f32,
        tap_indices: &[usize],
        offsets: &[isize],
        bias: *const f32,
        channels: usize,
        k_stride: usize,
        len: usize,
        in_stride: isize,
        out_stride: isize,
        clamp: [f32; 2],
        step: isize,
    ) {
        unsafe {
            let (lo, hi) = (_mm512_set1_ps(clamp[0]), _mm512_set1_ps(clamp[1]));
            let rows = offsets.len() / KW;
            let mut c = 0usize;
            while c < channels {
                let m0 = lanes(c, channels);
                let m1 = lanes(c + 16, channels);
                let b0 = _mm512_maskz_loadu_ps(m0, bias.add(c));
                let b1 = _mm512_maskz_loadu_ps(m1, bias.wrapping_add(c + 16));
                // 3x3: all 18 kernel vectors stay in registers for the whole run (with 8
                // accumulators and 2 inputs, 28 of 32); wider kernels load a row's per output group.
                let resident = KW == 3 && rows == 3;
                let mut kk0 = [[_mm512_setzero_ps(); KW]; 3];
                let mut kk1 = [[_mm512_setzero_ps(); KW]; 3];
                let load_row = |ky: usize, k0: &mut [__m512; KW], k1: &mut [__m512; KW]| {
                    for kx in 0..KW {
                        let k = kernel.add(*tap_indices.get_unchecked(ky * KW + kx) * k_stride + c);
                        k0[kx] = _mm512_maskz_loadu_ps(m0, k);
                        k1[kx] = _mm512_maskz_loadu_ps(m1, k.wrapping_add(16));
                    }
                };
                if resident {
                    for ky in 0..3 {
                        load_row(ky, &mut kk0[ky], &mut kk1[ky]);
                    }
                }
                let store_all = |i: usize, acc0: &[__m512; P], acc1: &[__m512; P]| {
                    for p in 0..P {
                        let o = output.offset((i + p) as isize * out_stride).add(c);
                        _mm512_mask_storeu_ps(o, m0, post::<CLAMP>(acc0[p], lo, hi));
                        _mm512_mask_storeu_ps(o.wrapping_add(16), m1, post::<CLAMP>(acc1[p], lo, hi));
                        // The outputs four groups on, for writing: an output buffer fresh from
                        // the allocator is rarely in cache, and this loop outruns the stores'
                        // line fills otherwise (a 28x28x144 5x5 layer with its output out of
                        // cache: 150 -> 90-100 us, where the per-tap loop took 105-110).
                        let ahead = o.wrapping_offset(4 * P as isize * out_stride);
                        _mm_prefetch::<_MM_HINT_ET0>(ahead as *const i8);
                        _mm_prefetch::<_MM_HINT_ET0>(ahead.wrapping_add(16) as *const i8);
                    }
                };
                let mut i = 0usize;
                if resident {
                    // A constant row count, so the rows unroll and the kernel stays in registers.
                    while i + P <= len {
                        let base = input.offset(i as isize * in_stride).add(c);
                        let mut acc0 = [b0; P];
                        let mut acc1 = [b1; P];
                        for ky in 0..3 {
                            let row = base.offset(*offsets.get_unchecked(ky * KW));
                            row_fmas::<KW, S, P>(
                                row, step, m0, m1, &kk0[ky], &kk1[ky], &mut acc0, &mut acc1,
                            );
                        }
                        store_all(i, &acc0, &acc1);
                        i += P;
                    }
                } else {
                    while i + P <= len {
                        let base = input.offset(i as isize * in_stride).add(c);
                        let mut acc0 = [b0; P];
                        let mut acc1 = [b1; P];
                        for ky in 0..rows {
                            let row = base.offset(*offsets.get_unchecked(ky * KW));
                            let mut k0 = [_mm512_setzero_ps(); KW];
                            let mut k1 = [_mm512_setzero_ps(); KW];
                            load_row(ky, &mut k0, &mut k1);
                            row_fmas::<KW, S, P>(
                                row, step, m0, m1, &k0, &k1, &mut acc0, &mut acc1,
                            );
                        }
                        store_all(i, &acc0, &acc1);
                        i += P;
                    }
                }
                c += 32;
            }
        }
    }

    /// One tap row of a [`Grid`] for `P` outputs: each of the row's inputs (`step` apart) is
    /// loaded once and multiplied into every output whose window covers it.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn row_fmas<const KW: usize, const S: usize, const P: usize>(
        row: *const f32,
        step: isize,
        m0: __mmask16,
        m1: __mmask16,
        k0: &[__m512; KW],
        k1: &[__m512; KW],
        acc0: &mut [__m512; P],
        acc1: &mut [__m512; P],
    ) {
        unsafe {
            for j in 0..(P - 1) * S + KW {
                let src = row.offset(j as isize * step);
                let x0 = _mm512_maskz_loadu_ps(m0, src);
                let x1 = _mm512_maskz_loadu_ps(m1, src.wrapping_add(16));
                for p in 0..P {
                    if j >= p * S && j - p * S < KW {
                        let kx = j - p * S;
                        acc0[p] = _mm512_fmadd_ps(x0, k0[kx], acc0[p]);
                        acc1[p] = _mm512_fmadd_ps(x1, k1[kx], acc1[p]);
                    }
                }
            }
        }
    }

    /// Picks the loop for the taps: a [`Grid`] (rows of a 5-wide window, or of a 3-wide one on
    /// runs of 16 outputs or more) takes the grid loop, nine other taps the kernel-in-registers
    /// loop, anything else the generic one.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn run<const CLAMP: bool>(
        input: *const f32,
        output: *mut f32,
        kernel: *const f32,
        tap_indices: &[usize],
        offsets: &[isize],
        bias: *const f32,
        channels: usize,
        k_stride: usize,
        len: usize,
        in_stride: isize,
        out_stride: isize,
        clamp: [f32; 2],
    ) {
        unsafe {
            let taps = tap_indices.len().min(offsets.len());
            let (tap_indices, offsets) = (&tap_indices[..taps], &offsets[..taps]);
            // Three-wide windows keep the nine-tap loop (kernel in registers) on short runs,
            // where it measured as fast or faster.
            let grid = if len >= 2 { Grid::detect(offsets, in_stride) } else { None }
                .filter(|grid| grid.width == 5 || len >= 16);
            let Some(grid) = grid else {
                let run = if taps == 9 { run9::<CLAMP> } else { run_taps::<CLAMP> };
                return run(
                    input, output, kernel, tap_indices, offsets, bias, channels, k_stride, len,
                    in_stride, out_stride, clamp,
                );
            };
            // Groups of four outputs, then the three, two or one left.
            macro_rules! grid {
                ($kw: literal, $s: literal) => {{
                    let whole = len / 4 * 4;
                    let (rest_input, rest_output) = (
                        input.offset(whole as isize * in_stride),
                        output.offset(whole as isize * out_stride),
                    );
                    macro_rules! outputs {
                        ($p: literal, $input: expr, $output: expr, $len: expr) => {
                            run_grid::<CLAMP, $kw, $s, $p>(
                                $input, $output, kernel, tap_indices, offsets, bias, channels,
                                k_stride, $len, in_stride, out_stride, clamp, grid.step,
                            )
                        };
                    }
                    outputs!(4, input, output, whole);
                    match len - whole {
                        3 => outputs!(3, rest_input, rest_output, 3),
                        2 => outputs!(2, rest_input, rest_output, 2),
                        1 => outputs!(1, rest_input, rest_output, 1),
                        _ => (),
                    }
                }};
            }
            match (grid.width, grid.stride) {
                (5, 1) => grid!(5, 1),
                (5, 2) => grid!(5, 2),
                (3, 1) => grid!(3, 1),
                (3, 2) => grid!(3, 2),
                _ => unreachable!("Grid::detect gives widths 3 and 5, strides 1 and 2"),
            }
        }
    }

    /// Any taps: each tap's kernel vectors loaded once for four outputs, each input once per tap
    /// and output.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_taps<const CLAMP: bool>(
        input: *const f32,
        output: *mut f32,
        kernel: *const f32,
        tap_indices: &[usize],
        offsets: &[isize],
        bias: *const f32,
        channels: usize,
        k_stride: usize,
        len: usize,
        in_stride: isize,
        out_stride: isize,
        clamp: [f32; 2],
    ) {
        unsafe {
            let (lo, hi) = (_mm512_set1_ps(clamp[0]), _mm512_set1_ps(clamp[1]));
            let taps = tap_indices.len().min(offsets.len());
            let (tap_indices, offsets) = (&tap_indices[..taps], &offsets[..taps]);
            let mut c = 0usize;
            while c < channels {
                let m0 = lanes(c, channels);
                let m1 = lanes(c + 16, channels);
                let b0 = _mm512_maskz_loadu_ps(m0, bias.add(c));
                let b1 = _mm512_maskz_loadu_ps(m1, bias.wrapping_add(c + 16));
                let mut i = 0usize;
                // Four positions: eight accumulator chains, so the FMA latency is covered on
                // both FMA ports, and each tap's kernel vectors are loaded once for four
                // positions (5x5 zones: BlazeFace, palm detection, hand landmarks).
                while i + 4 <= len {
                    let base = input.offset(i as isize * in_stride).add(c);
                    let mut acc0 = [b0; 4];
                    let mut acc1 = [b1; 4];
                    for t in 0..taps {
                        let k = kernel.add(*tap_indices.get_unchecked(t) * k_stride + c);
                        let off = *offsets.get_unchecked(t);
                        let k0 = _mm512_maskz_loadu_ps(m0, k);
                        let k1 = _mm512_maskz_loadu_ps(m1, k.wrapping_add(16));
                        for p in 0..4 {
                            let src = base.offset(p as isize * in_stride + off);
                            let x0 = _mm512_maskz_loadu_ps(m0, src);
                            let x1 = _mm512_maskz_loadu_ps(m1, src.wrapping_add(16));
                            acc0[p] = _mm512_fmadd_ps(x0, k0, acc0[p]);
                            acc1[p] = _mm512_fmadd_ps(x1, k1, acc1[p]);
                        }
                    }
                    for p in 0..4 {
                        let o = output.offset((i + p) as isize * out_stride).add(c);
                        _mm512_mask_storeu_ps(o, m0, post::<CLAMP>(acc0[p], lo, hi));
                        _mm512_mask_storeu_ps(o.wrapping_add(16), m1, post::<CLAMP>(acc1[p], lo, hi));
                    }
                    i += 4;
                }
                while i + 2 <= len {
                    let ia = input.offset(i as isize * in_stride).add(c);
                    let ib = ia.offset(in_stride);
                    let (mut a0, mut a1, mut b0x, mut b1x) = (b0, b1, b0, b1);
                    for t in 0..taps {
                        let k = kernel.add(*tap_indices.get_unchecked(t) * k_stride + c);
                        let off = *offsets.get_unchecked(t);
                        let k0 = _mm512_maskz_loadu_ps(m0, k);
                        let k1 = _mm512_maskz_loadu_ps(m1, k.wrapping_add(16));
                        let pa = ia.offset(off);
                        let pb = ib.offset(off);
                        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, pa), k0, a0);
                        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, pa.wrapping_add(16)), k1, a1);
                        b0x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, pb), k0, b0x);
                        b1x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, pb.wrapping_add(16)), k1, b1x);
                    }
                    let oa = output.offset(i as isize * out_stride).add(c);
                    let ob = oa.offset(out_stride);
                    _mm512_mask_storeu_ps(oa, m0, post::<CLAMP>(a0, lo, hi));
                    _mm512_mask_storeu_ps(oa.wrapping_add(16), m1, post::<CLAMP>(a1, lo, hi));
                    _mm512_mask_storeu_ps(ob, m0, post::<CLAMP>(b0x, lo, hi));
                    _mm512_mask_storeu_ps(ob.wrapping_add(16), m1, post::<CLAMP>(b1x, lo, hi));
                    i += 2;
                }
                if i < len {
                    let ia = input.offset(i as isize * in_stride).add(c);
                    let (mut a0, mut a1) = (b0, b1);
                    for t in 0..taps {
                        let k = kernel.add(*tap_indices.get_unchecked(t) * k_stride + c);
                        let pa = ia.offset(*offsets.get_unchecked(t));
                        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, pa), _mm512_maskz_loadu_ps(m0, k), a0);
                        a1 = _mm512_fmadd_ps(
                            _mm512_maskz_loadu_ps(m1, pa.wrapping_add(16)),
                            _mm512_maskz_loadu_ps(m1, k.wrapping_add(16)),
                            a1,
                        );
                    }
                    let oa = output.offset(i as isize * out_stride).add(c);
                    _mm512_mask_storeu_ps(oa, m0, post::<CLAMP>(a0, lo, hi));
                    _mm512_mask_storeu_ps(oa.wrapping_add(16), m1, post::<CLAMP>(a1, lo, hi));
                }
                c += 32;
            }
        }
    }

    /// Nine taps (every 3x3 zone), most of a MobileNet's depthwise time. The 2 x 9 kernel
    /// vectors of a 32-channel block stay in registers for the whole row, and four output
    /// positions at once give eight independent accumulators: one load per FMA instead of 1.5,
    /// and enough chains to keep both FMA ports busy through the FMA latency (the generic loop
    /// above has four chains, so it waits on latency).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run9<const CLAMP: bool>(
        input: *const f32,
        output: *mut f32,
        kernel: *const f32,
        tap_indices: &[usize],
        offsets: &[isize],
        bias: *const f32,
        channels: usize,
        k_stride: usize,
        len: usize,
        in_stride: isize,
        out_stride: isize,
        clamp: [f32; 2],
    ) {
        unsafe {
            let (lo, hi) = (_mm512_set1_ps(clamp[0]), _mm512_set1_ps(clamp[1]));
            let mut off = [0isize; 9];
            off.copy_from_slice(&offsets[..9]);
            let mut c = 0usize;
            while c < channels {
                let m0 = lanes(c, channels);
                let m1 = lanes(c + 16, channels);
                let bias0 = _mm512_maskz_loadu_ps(m0, bias.add(c));
                let bias1 = _mm512_maskz_loadu_ps(m1, bias.wrapping_add(c + 16));
                let mut k0 = [_mm512_setzero_ps(); 9];
                let mut k1 = [_mm512_setzero_ps(); 9];
                for t in 0..9 {
                    let k = kernel.add(tap_indices[t] * k_stride + c);
                    k0[t] = _mm512_maskz_loadu_ps(m0, k);
                    k1[t] = _mm512_maskz_loadu_ps(m1, k.wrapping_add(16));
                }
                let mut i = 0usize;
                while i + 4 <= len {
                    let base = input.offset(i as isize * in_stride).add(c);
                    let mut acc0 = [bias0; 4];
                    let mut acc1 = [bias1; 4];
                    for t in 0..9 {
                        for p in 0..4 {
                            let src = base.offset(p as isize * in_stride + off[t]);
                            let x0 = _mm512_maskz_loadu_ps(m0, src);
                            let x1 = _mm512_maskz_loadu_ps(m1, src.wrapping_add(16));
                            acc0[p] = _mm512_fmadd_ps(x0, k0[t], acc0[p]);
                            acc1[p] = _mm512_fmadd_ps(x1, k1[t], acc1[p]);
                        }
                    }
                    for p in 0..4 {
                        let o = output.offset((i + p) as isize * out_stride).add(c);
                        _mm512_mask_storeu_ps(o, m0, post::<CLAMP>(acc0[p], lo, hi));
                        _mm512_mask_storeu_ps(o.wrapping_add(16), m1, post::<CLAMP>(acc1[p], lo, hi));
                    }
                    i += 4;
                }
                while i < len {
                    let base = input.offset(i as isize * in_stride).add(c);
                    let (mut a0, mut a1) = (bias0, bias1);
                    for t in 0..9 {
                        let src = base.offset(off[t]);
                        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, src), k0[t], a0);
                        a1 = _mm512_fmadd_ps(
                            _mm512_maskz_loadu_ps(m1, src.wrapping_add(16)),
                            k1[t],
                            a1,
                        );
                    }
                    let o = output.offset(i as isize * out_stride).add(c);
                    _mm512_mask_storeu_ps(o, m0, post::<CLAMP>(a0, lo, hi));
                    _mm512_mask_storeu_ps(o.wrapping_add(16), m1, post::<CLAMP>(a1, lo, hi));
                    i += 1;
                }
                c += 32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    /// Lanes `c..c + 8` that are below `channels`, as a `vmaskmovps` mask (sign bit set).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lanes(c: usize, channels: usize) -> __m256i {
        let left = channels.saturating_sub(c).min(8) as i32;
        let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(left), index)
    }

    /// As the AVX-512 `post`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn post<const CLAMP: bool>(v: __m256, lo: __m256, hi: __m256) -> __m256 {
        if CLAMP { _mm256_min_ps(_mm256_max_ps(v, lo), hi) } else { v }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn run<const CLAMP: bool>(
        input: *const f32,
        output: *mut f32,
        kernel: *const f32,
        tap_indices: &[usize],
        offsets: &[isize],
        bias: *const f32,
        channels: usize,
        k_stride: usize,
        len: usize,
        in_stride: isize,
        out_stride: isize,
        clamp: [f32; 2],
    ) {
        unsafe {
            let (lo, hi) = (_mm256_set1_ps(clamp[0]), _mm256_set1_ps(clamp[1]));
            let taps = tap_indices.len().min(offsets.len());
            let (tap_indices, offsets) = (&tap_indices[..taps], &offsets[..taps]);
            let mut c = 0usize;
            while c < channels {
                let m0 = lanes(c, channels);
                let m1 = lanes(c + 8, channels);
                let b0 = _mm256_maskload_ps(bias.add(c), m0);
                let b1 = _mm256_maskload_ps(bias.wrapping_add(c + 8), m1);
                let mut i = 0usize;
                while i + 2 <= len {
                    let ia = input.offset(i as isize * in_stride).add(c);
                    let ib = ia.offset(in_stride);
                    let (mut a0, mut a1, mut b0x, mut b1x) = (b0, b1, b0, b1);
                    for t in 0..taps {
                        let k = kernel.add(*tap_indices.get_unchecked(t) * k_stride + c);
                        let off = *offsets.get_unchecked(t);
                        let k0 = _mm256_maskload_ps(k, m0);
                        let k1 = _mm256_maskload_ps(k.wrapping_add(8), m1);
                        let pa = ia.offset(off);
                        let pb = ib.offset(off);
                        a0 = _mm256_fmadd_ps(_mm256_maskload_ps(pa, m0), k0, a0);
                        a1 = _mm256_fmadd_ps(_mm256_maskload_ps(pa.wrapping_add(8), m1), k1, a1);
                        b0x = _mm256_fmadd_ps(_mm256_maskload_ps(pb, m0), k0, b0x);
                        b1x = _mm256_fmadd_ps(_mm256_maskload_ps(pb.wrapping_add(8), m1), k1, b1x);
                    }
                    let oa = output.offset(i as isize * out_stride).add(c);
                    let ob = oa.offset(out_stride);
                    _mm256_maskstore_ps(oa, m0, post::<CLAMP>(a0, lo, hi));
                    _mm256_maskstore_ps(oa.wrapping_add(8), m1, post::<CLAMP>(a1, lo, hi));
                    _mm256_maskstore_ps(ob, m0, post::<CLAMP>(b0x, lo, hi));
                    _mm256_maskstore_ps(ob.wrapping_add(8), m1, post::<CLAMP>(b1x, lo, hi));
                    i += 2;
                }
                if i < len {
                    let ia = input.offset(i as isize * in_stride).add(c);
                    let (mut a0, mut a1) = (b0, b1);
                    for t in 0..taps {
                        let k = kernel.add(*tap_indices.get_unchecked(t) * k_stride + c);
                        let pa = ia.offset(*offsets.get_unchecked(t));
                        a0 = _mm256_fmadd_ps(
                            _mm256_maskload_ps(pa, m0),
                            _mm256_maskload_ps(k, m0),
                            a0,
                        );
                        a1 = _mm256_fmadd_ps(
                            _mm256_maskload_ps(pa.wrapping_add(8), m1),
                            _mm256_maskload_ps(k.wrapping_add(8), m1),
                            a1,
                        );
                    }
                    let oa = output.offset(i as isize * out_stride).add(c);
                    _mm256_maskstore_ps(oa, m0, post::<CLAMP>(a0, lo, hi));
                    _mm256_maskstore_ps(oa.wrapping_add(8), m1, post::<CLAMP>(a1, lo, hi));
                }
                c += 16;
            }
        }
    }
}

bail_stub!(x86_64; pub unsafe fn depthwise_c_f32_fma(
    *const f32, *mut f32, *const f32, &[usize], &[isize], *const f32, usize, usize, usize, isize,
    isize
));

bail_stub!(x86_64; pub unsafe fn depthwise_c_f32_avx512(
    *const f32, *mut f32, *const f32, &[usize], &[isize], *const f32, usize, usize, usize, isize,
    isize
));

bail_stub!(x86_64; pub unsafe fn depthwise_c_clamp_f32_fma(
    *const f32, *mut f32, *const f32, &[usize], &[isize], *const f32, usize, usize, usize, isize,
    isize, [f32; 2]
));

bail_stub!(x86_64; pub unsafe fn depthwise_c_clamp_f32_avx512(
    *const f32, *mut f32, *const f32, &[usize], &[isize], *const f32, usize, usize, usize, isize,
    isize, [f32; 2]
));

submit_routine!(x86_64; DepthwiseCClampF32, DepthwiseCClamp, "x86_64_fma_depthwise_c_clamp_f32",
    depthwise_c_clamp_f32_fma, isa(X86_64Avx2, X86_64Fma));
submit_routine!(x86_64; DepthwiseCClampF32, DepthwiseCClamp, "x86_64_avx512_depthwise_c_clamp_f32",
    depthwise_c_clamp_f32_avx512, isa(X86_64Avx512f));
submit_routine!(x86_64; DepthwiseCF32, DepthwiseC, "x86_64_fma_depthwise_c_f32", depthwise_c_f32_fma,
    isa(X86_64Avx2, X86_64Fma));
submit_routine!(x86_64; DepthwiseCF32, DepthwiseC, "x86_64_avx512_depthwise_c_f32",
    depthwise_c_f32_avx512, isa(X86_64Avx512f));

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    type Kernel = unsafe fn(
        *const f32,
        *mut f32,
        *const f32,
        &[usize],
        &[isize],
        *const f32,
        usize,
        usize,
        usize,
        isize,
        isize,
    );

    type ClampKernel = unsafe fn(
        *const f32,
        *mut f32,
        *const f32,
        &[usize],
        &[isize],
        *const f32,
        usize,
        usize,
        usize,
        isize,
        isize,
        [f32; 2],
    );

    /// A kernel under test: a plain one, or a clamping one with its bounds.
    #[derive(Clone, Copy)]
    enum Under {
        Plain(Kernel),
        Clamped(ClampKernel, [f32; 2]),
    }

    /// Runs the kernel on a channel-last strip and compares it with the plain sum (clamped, for
    /// a clamping kernel), position by position and channel by channel. Outputs are interleaved
    /// with a sentinel gap so a store past `channels` shows. Returns how many sums fell below
    /// and above the bounds, so a sweep can show the clamp was exercised.
    fn compare(under: Under, taps: usize, channels: usize, len: usize, stride: usize) -> [usize; 2] {
        let offsets: Vec<isize> =
            (0..taps as isize).map(|t| (t - taps as isize / 2) * channels as isize).collect();
        check(under, &offsets, channels, len, stride)
    }

    /// As [`compare`], with the taps of a `rows` x `width` window over an image whose rows hold
    /// `len * stride + width` positions, as a 2D convolution's zone hands them to the kernel.
    fn compare_grid(
        under: Under,
        [rows, width]: [usize; 2],
        channels: usize,
        len: usize,
        stride: usize,
    ) -> [usize; 2] {
        let row = ((len * stride + width) * channels) as isize;
        let offsets: Vec<isize> = (0..rows as isize)
            .flat_map(|ky| (0..width as isize).map(move |kx| ky * row + kx * channels as isize))
            .collect();
        check(under, &offsets, channels, len, stride)
    }

    fn check(under: Under, offsets: &[isize], channels: usize, len: usize, stride: usize) -> [usize; 2] {
        let taps = offsets.len();
        let offsets = offsets.to_vec();
        let mut clamped = [0; 2];
        let k_stride = channels + 3;
        let weights: Vec<f32> = (0..taps * k_stride).map(|i| (i as f32 * 0.7).sin()).collect();
        let tap_indices: Vec<usize> = (0..taps).rev().collect();
        let bias: Vec<f32> = (0..channels).map(|i| i as f32 * 0.05 - 0.1).collect();
        let in_stride = (channels * stride) as isize;
        let out_stride = channels as isize + 5;
        let center = offsets.iter().map(|&o| -o).max().unwrap_or(0).max(0) as usize;
        let reach = offsets.iter().copied().max().unwrap_or(0).max(0) as usize;
        let input: Vec<f32> = (0..center + len * in_stride as usize + reach + channels)
            .map(|i| (i as f32 * 0.11).cos())
            .collect();
        let sentinel = -12345.0f32;
        let mut output = vec![sentinel; len * out_stride as usize + 16];
        let (input_ptr, output_ptr) = (unsafe { input.as_ptr().add(center) }, output.as_mut_ptr());
        let (weights_ptr, bias_ptr) = (weights.as_ptr(), bias.as_ptr());
        match under {
            Under::Plain(kernel) => unsafe {
                kernel(
                    input_ptr, output_ptr, weights_ptr, &tap_indices, &offsets, bias_ptr,
                    channels, k_stride, len, in_stride, out_stride,
                )
            },
            Under::Clamped(kernel, bounds) => unsafe {
                kernel(
                    input_ptr, output_ptr, weights_ptr, &tap_indices, &offsets, bias_ptr,
                    channels, k_stride, len, in_stride, out_stride, bounds,
                )
            },
        }
        for i in 0..len {
            for c in 0..out_stride as usize {
                let got = output[i * out_stride as usize + c];
                if c >= channels {
                    assert_eq!(got, sentinel, "wrote past channels: taps {taps} ch {channels}");
                    continue;
                }
                let sum = tap_indices.iter().zip(&offsets).fold(bias[c], |sum, (&k, &o)| {
                    let x = input[(center as isize + i as isize * in_stride + o) as usize + c];
                    sum + weights[k * k_stride + c] * x
                });
                let want = match under {
                    Under::Plain(_) => sum,
                    Under::Clamped(_, [lo, hi]) => {
                        clamped[0] += usize::from(sum < lo);
                        clamped[1] += usize::from(sum > hi);
                        sum.max(lo).min(hi)
                    }
                };
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "taps {taps} ch {channels} len {len} stride {stride} at {i},{c}: {got} vs {want}"
                );
            }
        }
        clamped
    }

    fn sweep(under: Under) {
        let mut clamped = [0; 2];
        for taps in [1, 2, 3, 4, 6, 9, 25] {
            for channels in [1, 5, 8, 15, 16, 17, 24, 31, 32, 33, 48, 64, 96, 144] {
                for len in [0, 1, 2, 3, 7, 28] {
                    for stride in [1, 2] {
                        let [below, above] = compare(under, taps, channels, len, stride);
                        clamped = [clamped[0] + below, clamped[1] + above];
                    }
                }
            }
        }
        // Each finite bound must have bitten somewhere, or the sweep proved nothing about it.
        if let Under::Clamped(_, [lo, hi]) = under {
            assert_eq!([clamped[0] > 0, clamped[1] > 0], [lo.is_finite(), hi.is_finite()]);
        }
    }

    /// Windows whose neighbouring outputs share inputs (the AVX-512 kernel's [`avx512::Grid`]
    /// path), around the four-output groups and the three-, two- and one-output rests, on
    /// whole and part-filled channel blocks; and windows that are not grids.
    fn sweep_grids(under: Under) {
        let mut clamped = [0; 2];
        for window in [[1, 3], [3, 3], [5, 3], [1, 5], [2, 5], [5, 5], [3, 4], [2, 2]] {
            for channels in [8, 16, 24, 32, 48, 144] {
                for len in [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 18, 19, 28] {
                    for stride in [1, 2] {
                        let [below, above] = compare_grid(under, window, channels, len, stride);
                        clamped = [clamped[0] + below, clamped[1] + above];
                    }
                }
            }
        }
        if let Under::Clamped(_, [lo, hi]) = under {
            assert_eq!([clamped[0] > 0, clamped[1] > 0], [lo.is_finite(), hi.is_finite()]);
        }
    }

    #[test]
    fn windows_of_width_three_and_five_are_grids_along_the_run() {
        let channels = 48isize;
        let grid = |rows: isize, width: isize, row: isize| -> Vec<isize> {
            (0..rows).flat_map(|ky| (0..width).map(move |kx| ky * row + kx * channels)).collect()
        };
        let detect = |offsets: &[isize], in_stride: isize| {
            avx512::Grid::detect(offsets, in_stride).map(|g| (g.width, g.stride, g.step))
        };
        let row = 20 * channels;
        assert_eq!(detect(&grid(5, 5, row), channels), Some((5, 1, channels)));
        assert_eq!(detect(&grid(3, 5, row), 2 * channels), Some((5, 2, channels)));
        assert_eq!(detect(&grid(3, 3, row), channels), Some((3, 1, channels)));
        // Along a column: the rows of the window are the runs' steps.
        let column: Vec<isize> =
            (0..3).flat_map(|kx| (0..5).map(move |ky| ky * row + kx * channels)).collect();
        assert_eq!(detect(&column, row), Some((5, 1, row)));
        // Not grids: a width of four, a line of nine, taps that do not step with the run.
        assert_eq!(detect(&grid(3, 4, row), channels), None);
        assert_eq!(detect(&grid(1, 9, row), channels), None);
        assert_eq!(detect(&grid(5, 5, row), 3 * channels), None);
        assert_eq!(detect(&grid(5, 5, row), row), None);
    }

    /// Tight enough that both bounds bite on these sums (ReLU6 at a smaller scale).
    const BOUNDS: [f32; 2] = [-0.25, 0.5];
    /// A NaN sum comes out as the lower bound, as `x > lo ? x : lo` then `x < hi ? x : hi`
    /// (the two-pass clamp this kernel replaces) gives.
    #[test]
    fn a_nan_sum_yields_the_lower_bound() {
        let mut kernels: Vec<ClampKernel> = Vec::new();
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            kernels.push(depthwise_c_clamp_f32_fma);
        }
        if std::is_x86_feature_detected!("avx512f") {
            kernels.push(depthwise_c_clamp_f32_avx512);
        }
        for kernel in kernels {
            for (channels, len) in [(16, 4), (20, 3), (9, 1)] {
                let input = vec![f32::NAN; channels * len];
                let (weights, bias) = (vec![1.0f32; channels], vec![0.0f32; channels]);
                let mut output = vec![0.0f32; channels * len];
                unsafe {
                    kernel(
                        input.as_ptr(),
                        output.as_mut_ptr(),
                        weights.as_ptr(),
                        &[0],
                        &[0],
                        bias.as_ptr(),
                        channels,
                        channels,
                        len,
                        channels as isize,
                        channels as isize,
                        [-1.0, 6.0],
                    )
                };
                assert!(output.iter().all(|&v| v == -1.0), "{channels} x {len}: {output:?}");
            }
        }
    }

    #[test]
    fn fma_matches_reference() {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            sweep(Under::Plain(depthwise_c_f32_fma));
            sweep(Under::Clamped(depthwise_c_clamp_f32_fma, BOUNDS));
            sweep(Under::Clamped(depthwise_c_clamp_f32_fma, [0.0, f32::INFINITY]));
        }
    }

    #[test]
    fn avx512_matches_reference() {
        if std::is_x86_feature_detected!("avx512f") {
            sweep(Under::Plain(depthwise_c_f32_avx512));
            sweep(Under::Clamped(depthwise_c_clamp_f32_avx512, BOUNDS));
            sweep(Under::Clamped(depthwise_c_clamp_f32_avx512, [0.0, f32::INFINITY]));
        }
    }

    #[test]
    fn avx512_grid_windows_match_reference() {
        if std::is_x86_feature_detected!("avx512f") {
            sweep_grids(Under::Plain(depthwise_c_f32_avx512));
            sweep_grids(Under::Clamped(depthwise_c_clamp_f32_avx512, BOUNDS));
        }
    }

    #[test]
    fn fma_grid_windows_match_reference() {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            sweep_grids(Under::Plain(depthwise_c_f32_fma));
            sweep_grids(Under::Clamped(depthwise_c_clamp_f32_fma, BOUNDS));
        }
    }
}
