//! Denormal (subnormal) floats flushed to zero while ONNX Runtime runs, as TensorFlow does on
//! CPU. Training gradients drift into the denormal range (~1e-38) as the loss falls, and x86
//! cores run float math on denormals up to 100 times slower: without this, block 5's backward
//! pass took 200 to 850 ms per batch of 16 depending on how small the batch's gradients were,
//! with it a steady 220 to 290 ms. Results change only where a value is below 1.2e-38.
//!
//! The intra-op pool's threads are set once ([`crate::init`]); the calling thread, which does part
//! of every run's work, is set for the run only ([`flushing`]) so that Rust code keeps the default
//! floating-point environment and every run computes the same whichever thread does which part.

/// Runs `f` with flush-to-zero and denormals-are-zero set on this thread (x86-64's MXCSR; a
/// no-op elsewhere, where ONNX Runtime does not set them on its threads either), restoring the
/// previous state afterwards, also on unwinding.
pub(crate) fn flushing<R>(f: impl FnOnce() -> R) -> R {
    let _restore = Mxcsr::set_flush_to_zero();
    f()
}

#[cfg(target_arch = "x86_64")]
struct Mxcsr(u32);

#[cfg(target_arch = "x86_64")]
impl Mxcsr {
    /// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) flags.
    const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

    fn set_flush_to_zero() -> Mxcsr {
        let saved = read();
        write(saved | Self::FTZ_DAZ);
        Mxcsr(saved)
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for Mxcsr {
    fn drop(&mut self) {
        // The two modes as they were; the sticky exception flags as the run left them.
        write((read() & !Self::FTZ_DAZ) | (self.0 & Self::FTZ_DAZ));
    }
}

#[cfg(target_arch = "x86_64")]
fn read() -> u32 {
    let mut csr = 0u32;
    // SAFETY: stores the 32-bit MXCSR register into a local.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags)) };
    csr
}

#[cfg(target_arch = "x86_64")]
fn write(csr: u32) {
    // SAFETY: loads MXCSR from a local; callers change only the FTZ and DAZ modes.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly, preserves_flags)) };
}

#[cfg(not(target_arch = "x86_64"))]
struct Mxcsr;

#[cfg(not(target_arch = "x86_64"))]
impl Mxcsr {
    fn set_flush_to_zero() -> Mxcsr {
        Mxcsr
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn denormals_flush_inside_and_not_after() {
        let modes = || read() & Mxcsr::FTZ_DAZ;
        let tiny = std::hint::black_box(1e-39f32);
        let half = |x: f32| std::hint::black_box(x) * std::hint::black_box(0.5f32);
        let before = modes();
        assert_ne!(half(tiny), 0.0, "denormals are kept by default");
        assert_eq!(flushing(|| half(tiny)), 0.0);
        assert_eq!(modes(), before);
        assert_ne!(half(tiny), 0.0);
        // Restored when the closure panics too.
        assert!(std::panic::catch_unwind(|| flushing(|| panic!("inside"))).is_err());
        assert_eq!(modes(), before);
    }
}
