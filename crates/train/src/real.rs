//! The float types training runs in: `f32` (as Keras does), and `f64` for the gradient checks,
//! where finite differences are accurate enough to be a real test.

/// A float type the trainers run in.
pub trait Real:
    ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + num_traits::Float
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    fn of(x: f64) -> Self;
}

impl Real for f32 {
    fn of(x: f64) -> f32 {
        x as f32
    }
}

impl Real for f64 {
    fn of(x: f64) -> f64 {
        x
    }
}

/// Runs `f` compiled for AVX2 when the CPU has it (the default x86-64 target only has SSE2).
/// Rust never fuses `a·b + c` into an FMA, so the results are bit-identical either way; only
/// the speed differs (about 25% on the head's training step).
#[inline(always)]
pub fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { avx2(f) };
    }
    f()
}

/// `y += a·x` (vectorised by the compiler).
#[inline(always)]
pub fn axpy<T: Real>(a: T, x: &[T], y: &mut [T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}
