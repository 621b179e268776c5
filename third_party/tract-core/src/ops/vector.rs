//! DoseWitness patch: run a plain Rust loop compiled for AVX when the CPU has it.

/// Runs `f` inside a function compiled with AVX enabled when the CPU has AVX (x86_64), plainly
/// otherwise. A simple loop in `f` (inlined there) then autovectorises to 8-lane `ymm` code
/// instead of the 4-lane SSE of the x86_64 baseline; results are the same either way.
#[inline(always)]
pub(crate) fn with_avx<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx") {
        #[target_feature(enable = "avx")]
        unsafe fn avx<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX, checked just above.
        return unsafe { avx(f) };
    }
    f()
}
