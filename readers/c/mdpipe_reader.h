/*
 * mdpipe_reader.h - header-only C reader of mdpipe shared-memory rings (layout version 2).
 *
 * The layout is documented field by field in docs/layout.md. This reader maps a ring
 * read-only, follows the seqlock protocol with acquire loads, and reports exactly how many
 * records it lost when the writer lapped it. x86-64 and GCC/Clang (__atomic builtins).
 *
 *   mdp_reader r;
 *   if (mdp_attach(&r, "default", "books.usdm.0") != 0) { fprintf(stderr, "%s\n", r.error); }
 *   mdp_book_record *rec = malloc(r.record_size);
 *   while (running) if (mdp_poll(&r, rec) == 1) use(rec);
 *   mdp_detach(&r);
 */
#ifndef MDPIPE_READER_H
#define MDPIPE_READER_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MDP_LAYOUT_VERSION 2u
#define MDP_MAGIC 0x010045504950444DULL /* "MDPIPE\0\1" little-endian */
#define MDP_KIND_BOOK 1u
#define MDP_KIND_TRADE 2u
#define MDP_KIND_STATUS 3u

#define MDP_FLAG_SYNCED 1u
#define MDP_FLAG_PARTIAL 2u
#define MDP_FLAG_RESYNC 4u
#define MDP_FLAG_CROSSED 8u
#define MDP_FLAG_BUYER_MAKER 1u

/* Header offsets (docs/layout.md). */
#define MDP_H_MAGIC 0
#define MDP_H_VERSION 8
#define MDP_H_KIND 12
#define MDP_H_CAPACITY 16
#define MDP_H_RECORD_SIZE 24
#define MDP_H_DEPTH 28
#define MDP_H_N_SYMBOLS 36
#define MDP_H_SLOT_SIZE 44
#define MDP_H_SYMBOLS_OFFSET 48
#define MDP_H_LATEST_OFFSET 56
#define MDP_H_SLOTS_OFFSET 64
#define MDP_H_GENERATION 104
#define MDP_H_WRITE_CURSOR 128
#define MDP_SYMBOL_ENTRY 64

/* Book record header; levels follow: bids[depth][2] then asks[depth][2] as doubles. */
typedef struct {
    uint64_t seq;
    uint32_t symbol_id;
    uint32_t flags;
    int64_t exchange_ts_ns;
    int64_t recv_ts_ns;
    int64_t commit_ts_ns;
    uint64_t first_update_id;
    uint64_t last_update_id;
    uint64_t prev_update_id;
    uint64_t symbol_seq;
    uint16_t bid_count;
    uint16_t ask_count;
    uint32_t _pad0;
    double levels[]; /* bids then asks, each depth x [price, qty] */
} mdp_book_record;

typedef struct {
    uint64_t seq;
    uint32_t symbol_id;
    uint32_t flags;
    int64_t exchange_ts_ns;
    int64_t event_ts_ns;
    int64_t recv_ts_ns;
    int64_t commit_ts_ns;
    uint64_t trade_id;
    uint64_t first_trade_id;
    uint64_t last_trade_id;
    double price;
    double qty;
    uint64_t symbol_seq;
    int8_t side;
    uint8_t _pad0[7];
} mdp_trade_record;

_Static_assert(sizeof(mdp_book_record) == 80, "book record header is 80 bytes");
_Static_assert(sizeof(mdp_trade_record) == 104, "trade record is 104 bytes");

typedef struct {
    const uint8_t *base;
    size_t size;
    uint32_t kind, depth, record_size, slot_size;
    uint64_t capacity, mask, slots_offset, latest_offset;
    uint64_t next; /* this reader's cursor: the next message number to read */
    uint64_t lost; /* records skipped because the writer lapped this reader (exact) */
    char error[256];
} mdp_reader;

static inline uint64_t mdp_load_acquire(const uint8_t *base, uint64_t offset) {
    return __atomic_load_n((const uint64_t *)(base + offset), __ATOMIC_ACQUIRE);
}

static inline uint32_t mdp_u32(const uint8_t *base, uint64_t offset) {
    uint32_t v;
    memcpy(&v, base + offset, 4);
    return v;
}

static inline uint64_t mdp_u64(const uint8_t *base, uint64_t offset) {
    uint64_t v;
    memcpy(&v, base + offset, 8);
    return v;
}

/* Map /dev/shm/mdpipe.<instance>.<ring> read-only and check it; 0 on success, else -1 and
 * r->error says why (missing segment, permissions, wrong magic or layout version). */
static inline int mdp_attach(mdp_reader *r, const char *instance, const char *ring) {
    char name[160];
    memset(r, 0, sizeof(*r));
    snprintf(name, sizeof name, "/mdpipe.%s.%s", instance, ring);
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0) {
        snprintf(r->error, sizeof r->error, "cannot open %s: %s", name, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 4096) {
        snprintf(r->error, sizeof r->error, "%s is not an mdpipe segment", name);
        close(fd);
        return -1;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(r->error, sizeof r->error, "cannot map %s: %s", name, strerror(errno));
        return -1;
    }
    r->base = (const uint8_t *)p;
    r->size = (size_t)st.st_size;
    if (mdp_u64(r->base, MDP_H_MAGIC) != MDP_MAGIC) {
        snprintf(r->error, sizeof r->error, "%s: bad magic, not an mdpipe segment", name);
        munmap(p, r->size);
        return -1;
    }
    uint32_t version = mdp_u32(r->base, MDP_H_VERSION);
    if (version != MDP_LAYOUT_VERSION) {
        snprintf(r->error, sizeof r->error,
                 "%s has layout version %u, this reader reads version %u", name, version,
                 MDP_LAYOUT_VERSION);
        munmap(p, r->size);
        return -1;
    }
    r->kind = mdp_u32(r->base, MDP_H_KIND);
    r->depth = mdp_u32(r->base, MDP_H_DEPTH);
    r->record_size = mdp_u32(r->base, MDP_H_RECORD_SIZE);
    r->slot_size = mdp_u32(r->base, MDP_H_SLOT_SIZE);
    r->capacity = mdp_u64(r->base, MDP_H_CAPACITY);
    r->mask = r->capacity - 1;
    r->slots_offset = mdp_u64(r->base, MDP_H_SLOTS_OFFSET);
    r->latest_offset = mdp_u64(r->base, MDP_H_LATEST_OFFSET);
    r->next = mdp_load_acquire(r->base, MDP_H_WRITE_CURSOR); /* start at the live edge */
    return 0;
}

static inline void mdp_detach(mdp_reader *r) {
    if (r->base) munmap((void *)r->base, r->size);
    r->base = NULL;
}

/* Symbol id of a name, or -1. */
static inline int mdp_symbol_id(const mdp_reader *r, const char *symbol) {
    uint32_t n = mdp_u32(r->base, MDP_H_N_SYMBOLS);
    uint64_t off = mdp_u64(r->base, MDP_H_SYMBOLS_OFFSET);
    for (uint32_t i = 0; i < n; i++)
        if (strncmp((const char *)r->base + off + i * MDP_SYMBOL_ENTRY, symbol,
                    32) == 0) /* the name field of a symbol entry */
            return (int)i;
    return -1;
}

/* Seqlocked copy of the slot at offset whose complete seq must be `want`:
 * 1 copied, 0 not there yet, 2 the slot holds a later message. */
static inline int mdp_copy_slot(const mdp_reader *r, uint64_t off, uint64_t want, void *out) {
    uint64_t s1 = mdp_load_acquire(r->base, off);
    if (s1 < want) return 0;
    if (s1 > want) return 2;
    memcpy(out, r->base + off, r->record_size);
    __atomic_thread_fence(__ATOMIC_ACQUIRE); /* the copy's loads complete before the re-check */
    uint64_t s2 = mdp_load_acquire(r->base, off);
    return s2 == s1 ? 1 : 2;
}

/* The next record into out (record_size bytes): 1 read, 0 none yet. Lapping is handled
 * here: the reader skips to the oldest safe record and adds the skipped count to lost. */
static inline int mdp_poll(mdp_reader *r, void *out) {
    for (;;) {
        uint64_t n = r->next;
        uint64_t off = r->slots_offset + (n & r->mask) * r->slot_size;
        int got = mdp_copy_slot(r, off, 2 * n + 2, out);
        if (got == 1) {
            r->next = n + 1;
            return 1;
        }
        if (got == 0) return 0;
        uint64_t w = mdp_load_acquire(r->base, MDP_H_WRITE_CURSOR);
        uint64_t target = w - r->capacity + 1;
        if (target <= n) target = n + 1;
        r->lost += target - n;
        r->next = target;
    }
}

/* The newest record of a symbol into out: 1, or 0 when it has none yet. */
static inline int mdp_latest(const mdp_reader *r, int symbol_id, void *out) {
    uint64_t off = r->latest_offset + (uint64_t)symbol_id * r->slot_size;
    for (;;) {
        uint64_t s1 = mdp_load_acquire(r->base, off);
        if (s1 == 0) return 0;
        if (s1 & 1) continue;
        memcpy(out, r->base + off, r->record_size);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (mdp_load_acquire(r->base, off) == s1) return 1;
    }
}

static inline const double *mdp_bids(const mdp_book_record *rec) { return rec->levels; }

static inline const double *mdp_asks(const mdp_book_record *rec, uint32_t depth) {
    return rec->levels + 2 * depth;
}

#endif /* MDPIPE_READER_H */
