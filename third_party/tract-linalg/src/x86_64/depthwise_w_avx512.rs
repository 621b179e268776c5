//! AVX-512 depthwise convolution along a contiguous output axis (DoseWitness patch, see
//! `third_party/README.md`), for channel-first depthwise layers that the optimiser cannot move to
//! channel-last (BlazeFace and FaceMesh, whose channel padding and max-pools block the move).
//!
//! Same contract and the same arithmetic as upstream's AVX kernel in `depthwise.rs`: the bias,
//! then one multiply and one add per tap, in tap order, with no FMA, so every output is
//! bit-identical to the scalar walk. It differs in width (16 lanes), in masked tails instead of a
//! scalar remainder, and in handling `in_stride == 2` (stride-2 layers were scalar): two loads
//! and one `vpermt2ps` gather the even elements.

/// # Safety
/// `input.offset(offsets[t] + i * in_stride)` must be readable for every tap and every `i` below
/// `len`, and `len` output points writable from `output`. The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
pub unsafe fn depthwise_w_f32_avx512(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
    in_stride: isize,
) {
    unsafe {
        match in_stride {
            1 => imp::stride1(input, output, taps, offsets, bias, len),
            2 => imp::stride2(input, output, taps, offsets, bias, len),
            _ => imp::scalar(input, output, taps, offsets, bias, 0, len, in_stride),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    fn mask(count: usize) -> __mmask16 {
        if count >= 16 { 0xFFFF } else { ((1u32 << count) - 1) as __mmask16 }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn stride1(
        input: *const f32,
        output: *mut f32,
        taps: &[f32],
        offsets: &[isize],
        bias: f32,
        len: usize,
    ) {
        unsafe {
            let biasv = _mm512_set1_ps(bias);
            let mut i = 0usize;
            while i + 64 <= len {
                let (mut a0, mut a1, mut a2, mut a3) = (biasv, biasv, biasv, biasv);
                for (tap, offset) in taps.iter().zip(offsets) {
                    let k = _mm512_set1_ps(*tap);
                    let p = input.offset(*offset).add(i);
                    a0 = _mm512_add_ps(a0, _mm512_mul_ps(_mm512_loadu_ps(p), k));
                    a1 = _mm512_add_ps(a1, _mm512_mul_ps(_mm512_loadu_ps(p.add(16)), k));
                    a2 = _mm512_add_ps(a2, _mm512_mul_ps(_mm512_loadu_ps(p.add(32)), k));
                    a3 = _mm512_add_ps(a3, _mm512_mul_ps(_mm512_loadu_ps(p.add(48)), k));
                }
                _mm512_storeu_ps(output.add(i), a0);
                _mm512_storeu_ps(output.add(i + 16), a1);
                _mm512_storeu_ps(output.add(i + 32), a2);
                _mm512_storeu_ps(output.add(i + 48), a3);
                i += 64;
            }
            while i < len {
                let m = mask(len - i);
                let mut acc = biasv;
                for (tap, offset) in taps.iter().zip(offsets) {
                    let x = _mm512_maskz_loadu_ps(m, input.offset(*offset).wrapping_add(i));
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(x, _mm512_set1_ps(*tap)));
                }
                _mm512_mask_storeu_ps(output.add(i), m, acc);
                i += 16;
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn stride2(
        input: *const f32,
        output: *mut f32,
        taps: &[f32],
        offsets: &[isize],
        bias: f32,
        len: usize,
    ) {
        unsafe {
            let biasv = _mm512_set1_ps(bias);
            // Lanes 0..16 of the result are elements 0, 2, ..., 30 of the 32 loaded.
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let mut i = 0usize;
            while i < len {
                let outputs = (len - i).min(16);
                // 16 outputs read elements 0..=30 of the run: never element 31, which may lie
                // past the end of the input.
                let needed = 2 * outputs - 1;
                let (m_lo, m_hi) = (mask(needed), mask(needed.saturating_sub(16)));
                let mut acc = biasv;
                for (tap, offset) in taps.iter().zip(offsets) {
                    let p = input.offset(*offset).wrapping_add(2 * i);
                    let lo = _mm512_maskz_loadu_ps(m_lo, p);
                    let hi = _mm512_maskz_loadu_ps(m_hi, p.wrapping_add(16));
                    let x = _mm512_permutex2var_ps(lo, even, hi);
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(x, _mm512_set1_ps(*tap)));
                }
                _mm512_mask_storeu_ps(output.add(i), mask(outputs), acc);
                i += 16;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn scalar(
        input: *const f32,
        output: *mut f32,
        taps: &[f32],
        offsets: &[isize],
        bias: f32,
        from: usize,
        len: usize,
        in_stride: isize,
    ) {
        unsafe {
            for i in from..len {
                let mut sum = bias;
                for (tap, offset) in taps.iter().zip(offsets) {
                    sum += tap * *input.offset(*offset + i as isize * in_stride);
                }
                *output.add(i) = sum;
            }
        }
    }
}

bail_stub!(x86_64; pub unsafe fn depthwise_w_f32_avx512(
    *const f32, *mut f32, &[f32], &[isize], f32, usize, isize
));

submit_routine!(x86_64; DepthwiseWF32, DepthwiseW, "x86_64_avx512_depthwise_w_f32",
    depthwise_w_f32_avx512, isa(X86_64Avx512f));

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Compares with the scalar walk bit for bit, on an input that ends exactly where the last
    /// output's last tap reads, so a load past the end would show under a sanitizer or as a
    /// wrong value from the guard region being poisoned with NaN.
    fn compare(taps: usize, len: usize, in_stride: isize) {
        let k: Vec<f32> = (0..taps).map(|t| (t as f32 * 0.7).sin()).collect();
        let offsets: Vec<isize> = (0..taps as isize).map(|t| t - taps as isize / 2).collect();
        let center = taps;
        let used = if len == 0 { 0 } else { center + (len - 1) * in_stride as usize + taps };
        let mut input: Vec<f32> = (0..used + 64).map(|i| (i as f32 * 0.37).cos()).collect();
        for value in &mut input[used..] {
            *value = f32::NAN;
        }
        let mut expected = vec![0f32; len];
        let mut output = vec![0f32; len + 16];
        for value in &mut output[len..] {
            *value = -7.0;
        }
        unsafe {
            imp::scalar(
                input.as_ptr().add(center),
                expected.as_mut_ptr(),
                &k,
                &offsets,
                0.25,
                0,
                len,
                in_stride,
            );
            depthwise_w_f32_avx512(
                input.as_ptr().add(center),
                output.as_mut_ptr(),
                &k,
                &offsets,
                0.25,
                len,
                in_stride,
            )
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&output[..len]), bits(&expected), "taps {taps} len {len} stride {in_stride}");
        assert!(output[len..].iter().all(|&x| x == -7.0), "wrote past len {len}");
    }

    #[test]
    fn matches_scalar_bit_for_bit() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        for taps in [1, 2, 3, 4, 5, 9, 25] {
            for len in [0, 1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 224] {
                for stride in [1, 2, 3] {
                    compare(taps, len, stride);
                }
            }
        }
    }

    #[test]
    fn chosen_on_avx512_machines() {
        if std::is_x86_feature_detected!("avx512f") {
            let chosen = crate::routines::best_for(
                crate::routines::Func::DepthwiseW,
                tract_data::prelude::DatumType::F32,
                &crate::isa::native(),
            )
            .map(|routine| routine.name());
            assert_eq!(chosen, Some("x86_64_avx512_depthwise_w_f32"));
            let chosen = crate::routines::best_for(
                crate::routines::Func::DepthwiseC,
                tract_data::prelude::DatumType::F32,
                &crate::isa::native(),
            )
            .map(|routine| routine.name());
            assert_eq!(chosen, Some("x86_64_avx512_depthwise_c_f32"));
        }
    }
}
