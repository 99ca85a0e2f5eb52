//! The one module allowed `unsafe`: 16 bytes at a time with SSE2, part of
//! every x86_64 CPU (the `cfg` below checks the build targets it). The
//! only `unsafe` is calling a `#[target_feature(enable = "sse2")]`
//! function, which Rust requires even where the build enables the feature;
//! the function itself reads a `[u8; 16]` by value (no pointers). Other
//! targets get the same answers from a portable loop. Measured in
//! BENCHMARKS.md (issue 14 steps); fuzzed with the engine target.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// Bit `i` is set where `block[i]` is `"`, `\` or a control byte (below
/// 0x20): the bytes that end a JSON string's plain run. The second mask
/// has the `"` bits only.
#[inline(always)]
#[allow(unsafe_code)] // the one call below
pub fn string_specials(block: &[u8; 16]) -> (u32, u32) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: the cfg above: this build targets CPUs with SSE2.
        unsafe { sse2::string_specials(block) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        portable_string_specials(block)
    }
}

#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn portable_string_specials(block: &[u8; 16]) -> (u32, u32) {
    let (mut all, mut quotes) = (0u32, 0u32);
    for (i, &b) in block.iter().enumerate() {
        let bit = 1u32 << i;
        if b == b'"' {
            quotes |= bit;
        }
        if b == b'"' || b == b'\\' || b < 0x20 {
            all |= bit;
        }
    }
    (all, quotes)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8,
    };

    /// The block in a register, byte 0 lowest (as `_mm_loadu_si128` would
    /// load it, without a pointer).
    #[target_feature(enable = "sse2")]
    #[inline]
    fn load(block: &[u8; 16]) -> __m128i {
        let x = u128::from_le_bytes(*block);
        _mm_set_epi64x((x >> 64) as u64 as i64, x as u64 as i64)
    }

    /// Lanes equal to `b`.
    #[target_feature(enable = "sse2")]
    #[inline]
    fn eq(v: __m128i, b: u8) -> __m128i {
        _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8))
    }

    /// Lanes at most `max`, unsigned: min(v, max) == v.
    #[target_feature(enable = "sse2")]
    #[inline]
    fn at_most(v: __m128i, max: u8) -> __m128i {
        _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(max as i8)), v)
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    fn mask(v: __m128i) -> u32 {
        _mm_movemask_epi8(v) as u32 & 0xffff
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    pub fn string_specials(block: &[u8; 16]) -> (u32, u32) {
        let v = load(block);
        let quote = eq(v, b'"');
        let all = _mm_or_si128(_mm_or_si128(quote, eq(v, b'\\')), at_most(v, 0x1f));
        (mask(all), mask(quote))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Every byte value at every place of a block, with another special
    /// byte before or after it: SSE2 and the portable loop agree.
    #[test]
    fn sse2_and_the_portable_loop_agree() {
        for b in 0..=255u8 {
            for pos in 0..16 {
                for other in [b'a', b'"', b'\\', 0x1f, 0x20, 0x80, 0xff, b'0', b'~'] {
                    for at in 0..16 {
                        let mut block = [b'x'; 16];
                        block[at] = other;
                        block[pos] = b;
                        assert_eq!(
                            string_specials(&block),
                            portable_string_specials(&block),
                            "{b} at {pos}, {other} at {at}"
                        );
                    }
                }
            }
        }
    }
}
