/*
 * mdpipe_seqlock.h - the seqlock primitive of mdpipe rings, shared by the header-only C
 * reader (mdpipe_reader.h) and the Python extension (mdpipe/shm/_seqlock.c).
 *
 * Memory ordering (C11 atomics on the 8-byte sequence words, as in Boehm, "Can seqlocks get
 * along with programming language memory models?", 2012):
 *   writer: seq = odd (relaxed); fence(release); payload stores; seq = even (release)
 *   reader: s1 = seq (acquire); payload copy; fence(acquire); s2 = seq (relaxed); s1 == s2
 * The release fence keeps the payload stores after the odd mark; the release store keeps them
 * before the even mark; the reader's acquire load and acquire fence keep its copy between its
 * two loads. This holds on weakly ordered CPUs (aarch64) as well as on x86-64, where the
 * fences compile to nothing but still stop the compiler from moving the copy.
 */
#ifndef MDPIPE_SEQLOCK_H
#define MDPIPE_SEQLOCK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A sequence value no complete slot can hold: returned for a torn or in-progress copy. */
#define MDP_SEQ_TORN UINT64_MAX

static inline uint64_t mdp_load_acquire(const void *word) {
    return atomic_load_explicit((_Atomic uint64_t *)word, memory_order_acquire);
}

static inline void mdp_store_release(void *word, uint64_t value) {
    atomic_store_explicit((_Atomic uint64_t *)word, value, memory_order_release);
}

/* Copy `size` bytes of a seqlocked slot (sequence word first) into `out`.
 * Returns the even sequence the copy is consistent with, or MDP_SEQ_TORN when the slot was
 * being written or changed during the copy (the caller decides whether to retry). */
static inline uint64_t mdp_seqlock_read(const uint8_t *slot, void *out, size_t size) {
    uint64_t s1 = mdp_load_acquire(slot);
    if (s1 & 1) return MDP_SEQ_TORN;
    memcpy(out, slot, size);
    atomic_thread_fence(memory_order_acquire);
    uint64_t s2 = atomic_load_explicit((_Atomic uint64_t *)slot, memory_order_relaxed);
    return s1 == s2 ? s1 : MDP_SEQ_TORN;
}

/* The same, for several byte ranges of one slot (a partial read): ranges[i] = {offset, size}
 * copied to out at the same running position. */
static inline uint64_t mdp_seqlock_read_ranges(const uint8_t *slot, uint8_t *out,
                                               const size_t (*ranges)[2], int n) {
    uint64_t s1 = mdp_load_acquire(slot);
    if (s1 & 1) return MDP_SEQ_TORN;
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        memcpy(out + pos, slot + ranges[i][0], ranges[i][1]);
        pos += ranges[i][1];
    }
    atomic_thread_fence(memory_order_acquire);
    uint64_t s2 = atomic_load_explicit((_Atomic uint64_t *)slot, memory_order_relaxed);
    return s1 == s2 ? s1 : MDP_SEQ_TORN;
}

/* Writer: publish `size` payload bytes (after the 8-byte sequence word) under sequence `even`. */
static inline void mdp_seqlock_write(uint8_t *slot, const uint8_t *payload, size_t size,
                                     uint64_t even) {
    atomic_store_explicit((_Atomic uint64_t *)slot, even - 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    memcpy(slot + 8, payload, size);
    mdp_store_release(slot, even);
}

#endif /* MDPIPE_SEQLOCK_H */
