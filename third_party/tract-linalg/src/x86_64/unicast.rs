//! DoseWitness patch (third_party/README.md): AVX f32 unicast kernels, `a[i] = a[i] op b[i]`.
//!
//! x86_64 had none, so residual adds, products and differences of same-shape tensors ran the generic
//! kernel, compiled for the SSE2 baseline (4 lanes). These process 16 values per step in two
//! 256-bit vectors; the frame handles alignment and tails as for every unicast kernel.

macro_rules! avx_unicast {
    ($func:ident, $op:ident, $intrinsic:ident) => {
        paste! {
            routine_unicast_rust!(x86_64;
                f32,
                $func,
                16,
                8,
                fn run(a: &mut [f32], b: &[f32]) {
                    debug_assert!(a.len() == b.len());
                    debug_assert!(a.len() % Self::nr() == 0);
                    debug_assert!(a.as_ptr() as usize % Self::alignment_bytes() == 0);
                    unsafe { [<$func _run>](a, b) }
                },
                op($op),
                isa(X86_64Avx)
            );

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx")]
            unsafe fn [<$func _run>](a: &mut [f32], b: &[f32]) {
                use std::arch::x86_64::*;
                unsafe {
                    let (pa, pb) = (a.as_mut_ptr(), b.as_ptr());
                    let mut i = 0;
                    while i + 16 <= a.len() {
                        let x0 = _mm256_load_ps(pa.add(i));
                        let x1 = _mm256_load_ps(pa.add(i + 8));
                        let y0 = _mm256_loadu_ps(pb.add(i));
                        let y1 = _mm256_loadu_ps(pb.add(i + 8));
                        _mm256_store_ps(pa.add(i), $intrinsic(x0, y0));
                        _mm256_store_ps(pa.add(i + 8), $intrinsic(x1, y1));
                        i += 16;
                    }
                }
            }
        }
    };
}

avx_unicast!(x86_64_avx_f32_unicast_add_16n, Add, _mm256_add_ps);
avx_unicast!(x86_64_avx_f32_unicast_mul_16n, Mul, _mm256_mul_ps);
avx_unicast!(x86_64_avx_f32_unicast_sub_16n, Sub, _mm256_sub_ps);
// Min and max stay generic: `minps`/`maxps` treat NaN differently from `f32::min`/`max`.

#[cfg(all(test, target_arch = "x86_64"))]
mod dosewitness_tests {
    use crate::BinOp;
    use crate::routines::{Func, best_for};
    use tract_data::internal::*;

    /// On a machine with AVX, f32 add, mul and sub dispatch to these kernels, not the
    /// generic SSE ones.
    #[test]
    fn avx_machines_pick_these_kernels() {
        if !std::arch::is_x86_feature_detected!("avx") {
            return;
        }
        let isa = crate::isa::native();
        for (op, name) in [
            (BinOp::Add, "x86_64_avx_f32_unicast_add_16n"),
            (BinOp::Mul, "x86_64_avx_f32_unicast_mul_16n"),
            (BinOp::Sub, "x86_64_avx_f32_unicast_sub_16n"),
        ] {
            let routine = best_for(Func::BinUnicast(op), f32::datum_type(), &isa).unwrap();
            assert_eq!(routine.name(), name);
        }
    }
}
