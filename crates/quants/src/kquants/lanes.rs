//! Minimal fixed-width f32 lane vectors for running independent sub-block searches in lockstep.
//!
//! Each operation is one short loop over the lanes doing exactly the scalar IEEE operation per lane,
//! which LLVM turns into SIMD instructions; nothing here reassociates, fuses or approximates, so
//! every lane's results are bit-identical to the scalar code.

// Lane loops are the point of this module.
#![allow(clippy::needless_range_loop)]

use std::ops::{Add, BitAnd, Div, Mul, Sub};

#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub(super) struct F<const N: usize>(pub(super) [f32; N]);

/// Per-lane predicate: all ones (true) or all zeros, so selects are plain bit blends.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub(super) struct M<const N: usize>([u32; N]);

macro_rules! binop {
    ($tr:ident, $f:ident, $op:tt) => {
        impl<const N: usize> $tr for F<N> {
            type Output = F<N>;
            #[inline(always)]
            fn $f(self, rhs: F<N>) -> F<N> {
                let mut r = [0.0f32; N];
                for k in 0..N {
                    r[k] = self.0[k] $op rhs.0[k];
                }
                F(r)
            }
        }
    };
}
binop!(Add, add, +);
binop!(Sub, sub, -);
binop!(Mul, mul, *);
binop!(Div, div, /);

macro_rules! cmp {
    ($f:ident, $op:tt) => {
        #[inline(always)]
        pub(super) fn $f(self, rhs: F<N>) -> M<N> {
            let mut r = [0u32; N];
            for k in 0..N {
                r[k] = if self.0[k] $op rhs.0[k] { u32::MAX } else { 0 };
            }
            M(r)
        }
    };
}

impl<const N: usize> F<N> {
    #[inline(always)]
    pub(super) fn splat(v: f32) -> F<N> {
        F([v; N])
    }

    #[inline(always)]
    pub(super) fn abs(self) -> F<N> {
        let mut r = [0.0f32; N];
        for k in 0..N {
            r[k] = self.0[k].abs();
        }
        F(r)
    }

    #[inline(always)]
    pub(super) fn sqrt(self) -> F<N> {
        let mut r = [0.0f32; N];
        for k in 0..N {
            r[k] = self.0[k].sqrt();
        }
        F(r)
    }

    cmp!(lt, <);
    cmp!(gt, >);
    cmp!(eq, ==);
    cmp!(ne, !=);

    /// `crate::nearest_int(x).clamp(lo, hi)` per lane, returned as f32 (exact: |level| < 2^24).
    #[inline(always)]
    pub(super) fn round_clamp(self, lo: i32, hi: i32) -> F<N> {
        let mut r = [0.0f32; N];
        for k in 0..N {
            let v = self.0[k] + 12_582_912.0f32;
            let i = (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000;
            r[k] = i.max(lo).min(hi) as f32;
        }
        F(r)
    }
}

impl<const N: usize> M<N> {
    /// Per lane: `a` where the predicate holds, else `b` (bitwise, so -0.0 and NaN pass unchanged).
    #[inline(always)]
    pub(super) fn select(self, a: F<N>, b: F<N>) -> F<N> {
        let mut r = [0.0f32; N];
        for k in 0..N {
            let m = self.0[k];
            r[k] = f32::from_bits((a.0[k].to_bits() & m) | (b.0[k].to_bits() & !m));
        }
        F(r)
    }

    #[inline(always)]
    pub(super) fn any(self) -> bool {
        let mut acc = 0u32;
        for k in 0..N {
            acc |= self.0[k];
        }
        acc != 0
    }
}

impl<const N: usize> BitAnd for M<N> {
    type Output = M<N>;
    #[inline(always)]
    fn bitand(self, rhs: M<N>) -> M<N> {
        let mut r = [0u32; N];
        for k in 0..N {
            r[k] = self.0[k] & rhs.0[k];
        }
        M(r)
    }
}
