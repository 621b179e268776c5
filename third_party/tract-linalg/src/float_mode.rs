//! The floating-point mode tract's x86_64 kernels run in (DoseWitness patch).
//!
//! Every x86_64 assembly kernel sets MXCSR to `0x1FC0` on entry (exceptions
//! masked, denormal inputs read as zero, round to nearest) and restores the
//! caller's value on exit. LDMXCSR drains the pipeline; on some virtual
//! machines the pair costs ~300 ns, which is more than a small matmul tile.
//! The kernels now skip both when the caller's control bits already match, so
//! a caller that runs a whole plan inside [`with_kernel_float_mode`] pays the
//! switch once per plan instead of once per tile.

/// MXCSR control bits (masks, DAZ, rounding, FZ) the kernels set.
#[cfg(target_arch = "x86_64")]
pub const KERNEL_MXCSR: u32 = 0x1FC0;

/// Runs `f` with MXCSR in the kernels' mode, restoring the caller's mode
/// afterwards (also when `f` panics). Outside x86_64 this only calls `f`.
///
/// Inside `f`, SSE/AVX arithmetic reads denormal inputs as zero; nothing else
/// changes. Other threads keep their own MXCSR: kernels run there switch per
/// call as before.
pub fn with_kernel_float_mode<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        let saved = mxcsr();
        if saved & 0xFFC0 == KERNEL_MXCSR {
            return f();
        }
        struct Restore(u32);
        impl Drop for Restore {
            fn drop(&mut self) {
                set_mxcsr(self.0);
            }
        }
        let _restore = Restore(saved);
        set_mxcsr(KERNEL_MXCSR);
        f()
    }
    #[cfg(not(target_arch = "x86_64"))]
    f()
}

#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    let mut value: u32 = 0;
    // SAFETY: STMXCSR only writes the 4 bytes it is pointed at.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack, preserves_flags));
    }
    value
}

#[cfg(target_arch = "x86_64")]
fn set_mxcsr(value: u32) {
    // SAFETY: callers pass the kernels' mode or a value read back from
    // STMXCSR; neither unmasks an exception.
    unsafe {
        std::arch::asm!("ldmxcsr [{}]", in(reg) &value, options(nostack, preserves_flags, readonly));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn mode_is_set_inside_and_restored_after() {
        let before = mxcsr() & 0xFFC0;
        let inside = with_kernel_float_mode(|| mxcsr() & 0xFFC0);
        assert_eq!(inside, KERNEL_MXCSR);
        assert_eq!(mxcsr() & 0xFFC0, before);
        // Nested calls keep the mode and leave it to the outer scope.
        let nested = with_kernel_float_mode(|| with_kernel_float_mode(|| mxcsr() & 0xFFC0));
        assert_eq!(nested, KERNEL_MXCSR);
        assert_eq!(mxcsr() & 0xFFC0, before);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn denormals_read_as_zero_inside_only() {
        let tiny = std::hint::black_box(f32::from_bits(1)); // smallest denormal
        let scaled = |x: f32| std::hint::black_box(x) * std::hint::black_box(2.0f32);
        assert!(scaled(tiny) > 0.0);
        assert_eq!(with_kernel_float_mode(|| scaled(tiny)), 0.0);
    }
}
