// Shared by kernels.c (exact K-quant kernels) and quantdot.c (8-bit-activation kernels): the
// K-quant code unpacking, identical in both. Include after defining AVX2 and INLINE.
#ifndef FINETUNE_KQUANT_CODES_H
#define FINETUNE_KQUANT_CODES_H

#include <immintrin.h>

/// K-quant formats as `kquant_codes_avx2` takes them.
enum { KQ_Q4_K, KQ_Q5_K, KQ_Q6_K };

/// The 32 codes of K-quant sub-block `s` as unsigned bytes, in value order: Q4_K 0–15, Q5_K
/// 0–31 (sub-block s = values 32s…32s+31), Q6_K 0–63 (group s = values 32s…32s+31, before its
/// −32). Q4_K/Q5_K sub-blocks 2p/2p+1 are the low/high nibbles of qs[32p…32p+31]; Q5_K's fifth
/// bit of value l is bit s of qh[l]; Q6_K group s = 4H + j takes the low (j < 2) or high nibbles
/// of ql[64H + 32(j&1) + l] and bits 2j, 2j+1 of qh[32H + l] as bits 4, 5. Bits move with 16-bit
/// shifts (the bit wanted stays inside its byte) and one mask.
AVX2 INLINE __m256i kquant_codes_avx2(const int kind, const uint8_t *p, const int s) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    switch (kind) {
    case KQ_Q4_K: {
        __m256i q = _mm256_loadu_si256((const __m256i *)(p + 16 + 32 * (s / 2)));
        if (s & 1) q = _mm256_srli_epi16(q, 4);
        return _mm256_and_si256(q, low4);
    }
    case KQ_Q5_K: {
        __m256i q = _mm256_loadu_si256((const __m256i *)(p + 48 + 32 * (s / 2)));
        if (s & 1) q = _mm256_srli_epi16(q, 4);
        __m256i h = _mm256_loadu_si256((const __m256i *)(p + 16));
        h = s <= 4 ? _mm256_slli_epi16(h, 4 - s) : _mm256_srli_epi16(h, s - 4);  // bit s → bit 4
        return _mm256_or_si256(_mm256_and_si256(q, low4), _mm256_and_si256(h, _mm256_set1_epi8(0x10)));
    }
    default: {  // KQ_Q6_K
        const int H = s / 4, j = s % 4;
        __m256i q = _mm256_loadu_si256((const __m256i *)(p + 64 * H + 32 * (j & 1)));
        if (j >= 2) q = _mm256_srli_epi16(q, 4);
        __m256i h = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * H));
        h = j <= 2 ? _mm256_slli_epi16(h, 4 - 2 * j) : _mm256_srli_epi16(h, 2);  // bits 2j, 2j+1 → 4, 5
        return _mm256_or_si256(_mm256_and_si256(q, low4), _mm256_and_si256(h, _mm256_set1_epi8(0x30)));
    }
    }
}

#endif
