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
//! 512-bit FMA ports, and for nine taps (3x3) it also holds the kernel in registers.

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
        fma::run(
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
        avx512::run(
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

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn run(
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
            let taps = tap_indices.len().min(offsets.len());
            if taps == 9 {
                return run9(
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
                );
            }
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
                        _mm512_mask_storeu_ps(o, m0, acc0[p]);
                        _mm512_mask_storeu_ps(o.wrapping_add(16), m1, acc1[p]);
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
                    _mm512_mask_storeu_ps(oa, m0, a0);
                    _mm512_mask_storeu_ps(oa.wrapping_add(16), m1, a1);
                    _mm512_mask_storeu_ps(ob, m0, b0x);
                    _mm512_mask_storeu_ps(ob.wrapping_add(16), m1, b1x);
                    i += 2;
                }
                if i < len {
                    let ia = input.offset(i as isize * in_stride).add(c);
                    let (mut a0, mut a1) = (b0, b1);
                    for t in 0..taps {
                        let k = kernel.add(*tap_indices.get_unchecked(t) * k_stride + c);
                        let pa = ia.offset(*offsets.get_unchecked(t));
                        a0 = _mm512_fmadd_ps(
                            _mm512_maskz_loadu_ps(m0, pa),
                            _mm512_maskz_loadu_ps(m0, k),
                            a0,
                        );
                        a1 = _mm512_fmadd_ps(
                            _mm512_maskz_loadu_ps(m1, pa.wrapping_add(16)),
                            _mm512_maskz_loadu_ps(m1, k.wrapping_add(16)),
                            a1,
                        );
                    }
                    let oa = output.offset(i as isize * out_stride).add(c);
                    _mm512_mask_storeu_ps(oa, m0, a0);
                    _mm512_mask_storeu_ps(oa.wrapping_add(16), m1, a1);
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
    unsafe fn run9(
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
                        _mm512_mask_storeu_ps(o, m0, acc0[p]);
                        _mm512_mask_storeu_ps(o.wrapping_add(16), m1, acc1[p]);
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
                    _mm512_mask_storeu_ps(o, m0, a0);
                    _mm512_mask_storeu_ps(o.wrapping_add(16), m1, a1);
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

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn run(
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
                    _mm256_maskstore_ps(oa, m0, a0);
                    _mm256_maskstore_ps(oa.wrapping_add(8), m1, a1);
                    _mm256_maskstore_ps(ob, m0, b0x);
                    _mm256_maskstore_ps(ob.wrapping_add(8), m1, b1x);
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
                    _mm256_maskstore_ps(oa, m0, a0);
                    _mm256_maskstore_ps(oa.wrapping_add(8), m1, a1);
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

    /// Runs `kernel` on a channel-last strip and compares it with the plain sum, position by
    /// position and channel by channel. Outputs are interleaved with a sentinel gap so a store
    /// past `channels` shows.
    fn compare(kernel: Kernel, taps: usize, channels: usize, len: usize, stride: usize) {
        let k_stride = channels + 3;
        let weights: Vec<f32> = (0..taps * k_stride).map(|i| (i as f32 * 0.7).sin()).collect();
        let tap_indices: Vec<usize> = (0..taps).rev().collect();
        let offsets: Vec<isize> =
            (0..taps as isize).map(|t| (t - taps as isize / 2) * channels as isize).collect();
        let bias: Vec<f32> = (0..channels).map(|i| i as f32 * 0.05 - 0.1).collect();
        let in_stride = (channels * stride) as isize;
        let out_stride = channels as isize + 5;
        let center = (taps / 2) * channels;
        let input: Vec<f32> = (0..center + len * in_stride as usize + taps * channels)
            .map(|i| (i as f32 * 0.11).cos())
            .collect();
        let sentinel = -12345.0f32;
        let mut output = vec![sentinel; len * out_stride as usize + 16];
        unsafe {
            kernel(
                input.as_ptr().add(center),
                output.as_mut_ptr(),
                weights.as_ptr(),
                &tap_indices,
                &offsets,
                bias.as_ptr(),
                channels,
                k_stride,
                len,
                in_stride,
                out_stride,
            )
        };
        for i in 0..len {
            for c in 0..out_stride as usize {
                let got = output[i * out_stride as usize + c];
                if c >= channels {
                    assert_eq!(got, sentinel, "wrote past channels: taps {taps} ch {channels}");
                    continue;
                }
                let want = tap_indices.iter().zip(&offsets).fold(bias[c], |sum, (&k, &o)| {
                    let x = input[(center as isize + i as isize * in_stride + o) as usize + c];
                    sum + weights[k * k_stride + c] * x
                });
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "taps {taps} ch {channels} len {len} stride {stride} at {i},{c}: {got} vs {want}"
                );
            }
        }
    }

    fn sweep(kernel: Kernel) {
        for taps in [1, 2, 3, 4, 6, 9, 25] {
            for channels in [1, 5, 8, 15, 16, 17, 24, 31, 32, 33, 48, 64, 96, 144] {
                for len in [0, 1, 2, 3, 7, 28] {
                    for stride in [1, 2] {
                        compare(kernel, taps, channels, len, stride);
                    }
                }
            }
        }
    }

    #[test]
    fn fma_matches_reference() {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            sweep(depthwise_c_f32_fma);
        }
    }

    #[test]
    fn avx512_matches_reference() {
        if std::is_x86_feature_detected!("avx512f") {
            sweep(depthwise_c_f32_avx512);
        }
    }
}
