/*
 * mdpipe_reader.h - header-only C reader of mdpipe shared-memory rings (layout version 2).
 *
 * The layout is documented field by field in docs/layout.md. This reader maps a ring
 * read-only, reads slots with the seqlock of mdpipe_seqlock.h (C11 acquire/release, so it
 * is correct on weakly ordered CPUs too), and reports exactly how many records it lost when
 * the writer lapped it. Header-only: copy readers/c/ whole (this file includes the
 * generated mdpipe_layout.h and mdpipe_seqlock.h). C11 with GCC or Clang, Linux.
 *
 *   mdp_reader r;
 *   if (mdp_attach(&r, "default", "books.usdm.0") != 0) { fprintf(stderr, "%s\n", r.error); }
 *   mdp_book_record *rec = malloc(r.record_size);
 *   while (running) {
 *       if (mdp_poll(&r, rec) == 1) use(rec);
 *       else if (++idle % 4096 == 0 && mdp_check_writer(&r) < 0) fail(r.error);
 *   }
 *   mdp_detach(&r);
 *
 * Trust: a segment is read only when it is a regular file (never a symlink, FIFO or
 * device) owned by the expected user (this process's effective uid unless the caller names
 * another with mdp_attach_owned) that no group or other user may write, and when every
 * header field is within bounds: the header is copied and validated before anything is
 * mapped, and the validated copy (never the shared header) gives every offset used later.
 * Every read stays inside the mapping. A refusal is -1 with r.error naming the segment
 * and the field. What no reader can prevent: the owner (only the owner may write it)
 * truncating a segment while it is mapped raises SIGBUS on the next access beyond the new
 * end; mdp_check_writer() compares the file's size with the mapping and reports a shrunk
 * file, so a reader that calls it while idle stops before touching the lost pages.
 */
#ifndef MDPIPE_READER_H
#define MDPIPE_READER_H

/* POSIX calls (pread, lstat, O_NOFOLLOW) under -std=c11 too: include this header first. */
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "mdpipe_layout.h"  /* every offset, constant and record struct, generated */
#include "mdpipe_seqlock.h" /* the seqlock read, shared with mdpipe's Python extension */

/* Bounded work per call: a writer that died mid-write leaves a slot odd for ever. */
#define MDP_MAX_SKIPS 64
#define MDP_MAX_SPINS (1 << 20)

typedef struct {
    const uint8_t *base;
    size_t size;
    int fd;     /* kept open to notice a shrunk file (mdp_check_writer) */
    dev_t dev;  /* identity of the mapped file, to notice a replaced segment */
    ino_t ino;
    uid_t owner;
    uint32_t kind, depth, record_size, slot_size, max_symbols;
    uint64_t capacity, mask, symbols_offset, slots_offset, latest_offset;
    uint64_t generation;
    uint64_t next;     /* this reader's cursor: the next message number to read */
    uint64_t lost;     /* records skipped because the writer lapped this reader (exact) */
    uint64_t restarts; /* writer restarts followed (new generation or replaced segment) */
    char path[128];
    char error[256];
} mdp_reader;

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

/* Instance and ring names as mdpipe forms them: letters, digits, '_', '-' ('.' between ring
 * name parts); nothing that could leave /dev/shm. */
static inline int mdp_name_ok(const char *s, size_t max_len, int dots) {
    size_t n = strlen(s);
    if (n == 0 || n > max_len || s[0] == '.' || s[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-' || (dots && c == '.' && s[i + 1] != '.');
        if (!ok) return 0;
    }
    return 1;
}

#define MDP_FAIL(r, ...)                                             \
    do {                                                             \
        snprintf((r)->error, sizeof (r)->error, __VA_ARGS__);        \
        return -1;                                                   \
    } while (0)

/* end = offset + count * stride, refusing overflow and anything past size; 0 when inside. */
static inline int mdp_table_end(uint64_t offset, uint64_t count, uint64_t stride, uint64_t size,
                                uint64_t *end) {
    uint64_t bytes;
    if (__builtin_mul_overflow(count, stride, &bytes)) return -1;
    if (__builtin_add_overflow(offset, bytes, end)) return -1;
    return *end <= size ? 0 : -1;
}

/* Check a copied header page against a file of file_size bytes and fill r's geometry;
 * 0, or -1 with r->error naming the field. Nothing is read beyond the copied page. */
static inline int mdp_validate_header(mdp_reader *r, const uint8_t *h, uint64_t file_size) {
    const char *p = r->path;
    uint64_t magic = mdp_u64(h, MDP_H_MAGIC);
    if (magic == 0) MDP_FAIL(r, "%s: field magic is 0: the writer is still creating it", p);
    if (magic != MDP_MAGIC) MDP_FAIL(r, "%s: field magic is wrong: not an mdpipe segment", p);
    uint32_t version = mdp_u32(h, MDP_H_LAYOUT_VERSION);
    if (version != MDP_LAYOUT_VERSION)
        MDP_FAIL(r, "%s: field layout_version is %u, this reader reads version %u", p, version,
                 MDP_LAYOUT_VERSION);
    uint32_t kind = mdp_u32(h, MDP_H_KIND);
    if (kind == MDP_KIND_STATUS)
        MDP_FAIL(r, "%s: field kind is 3 (status): a status segment has no records", p);
    if (kind != MDP_KIND_BOOK && kind != MDP_KIND_TRADE && kind != MDP_KIND_TICKER &&
        kind != MDP_KIND_CANDLE)
        MDP_FAIL(r, "%s: field kind is %u, not 1 (book), 2 (trade), 4 (ticker) or 5 (candle)",
                 p, kind);
    uint64_t capacity = mdp_u64(h, MDP_H_CAPACITY);
    if (capacity < 2 || capacity > MDP_MAX_CAPACITY || (capacity & (capacity - 1)))
        MDP_FAIL(r, "%s: field capacity is %llu, not a power of two in 2..%llu", p,
                 (unsigned long long)capacity, (unsigned long long)MDP_MAX_CAPACITY);
    uint32_t depth = mdp_u32(h, MDP_H_DEPTH);
    uint32_t record_size;
    if (kind == MDP_KIND_BOOK) {
        if (depth < 1 || depth > MDP_MAX_DEPTH)
            MDP_FAIL(r, "%s: field depth is %u, not in 1..%u for a book ring", p, depth,
                     MDP_MAX_DEPTH);
        record_size = MDP_BOOK_LEVELS_OFFSET + depth * 2u * 2u * (uint32_t)sizeof(double);
    } else {
        if (depth != 0) MDP_FAIL(r, "%s: field depth is %u, not 0 for this kind", p, depth);
        record_size = kind == MDP_KIND_TRADE    ? MDP_TRADE_RECORD_SIZE
                      : kind == MDP_KIND_TICKER ? MDP_TICKER_RECORD_SIZE
                                                : MDP_CANDLE_RECORD_SIZE;
    }
    if (mdp_u32(h, MDP_H_RECORD_SIZE) != record_size)
        MDP_FAIL(r, "%s: field record_size is %u, not %u for this kind and depth", p,
                 mdp_u32(h, MDP_H_RECORD_SIZE), record_size);
    uint32_t slot_size = (record_size + MDP_CACHE_LINE - 1) / MDP_CACHE_LINE * MDP_CACHE_LINE;
    if (mdp_u32(h, MDP_H_SLOT_SIZE) != slot_size)
        MDP_FAIL(r, "%s: field slot_size is %u, not %u (record_size rounded up to 64)", p,
                 mdp_u32(h, MDP_H_SLOT_SIZE), slot_size);
    uint32_t max_symbols = mdp_u32(h, MDP_H_MAX_SYMBOLS);
    if (max_symbols < 1 || max_symbols > MDP_MAX_SYMBOLS)
        MDP_FAIL(r, "%s: field max_symbols is %u, not in 1..%u", p, max_symbols, MDP_MAX_SYMBOLS);
    uint32_t n_symbols = mdp_u32(h, MDP_H_N_SYMBOLS);
    if (n_symbols > max_symbols)
        MDP_FAIL(r, "%s: field n_symbols is %u, more than max_symbols %u", p, n_symbols,
                 max_symbols);
    uint32_t n_counters = mdp_u32(h, MDP_H_N_COUNTERS);
    if (n_counters > MDP_MAX_COUNTERS)
        MDP_FAIL(r, "%s: field n_counters is %u, more than %u", p, n_counters, MDP_MAX_COUNTERS);
    uint64_t segment_size = mdp_u64(h, MDP_H_SEGMENT_SIZE);
    if (segment_size > MDP_MAX_SEGMENT_BYTES)
        MDP_FAIL(r, "%s: field segment_size is %llu, over %llu", p,
                 (unsigned long long)segment_size, (unsigned long long)MDP_MAX_SEGMENT_BYTES);
    if (segment_size != file_size)
        MDP_FAIL(r, "%s: field segment_size is %llu, the file has %llu bytes", p,
                 (unsigned long long)segment_size, (unsigned long long)file_size);
    /* Tables in order after the counters section, each 64-byte aligned and inside the file. */
    static const struct {
        const char *name;
        uint32_t at;
    } tables[3] = {{"symbols_offset", MDP_H_SYMBOLS_OFFSET},
                   {"latest_offset", MDP_H_LATEST_OFFSET},
                   {"slots_offset", MDP_H_SLOTS_OFFSET}};
    uint64_t counts[3] = {max_symbols, max_symbols, capacity};
    uint64_t strides[3] = {MDP_SYMBOL_ENTRY, slot_size, slot_size};
    uint64_t offsets[3], floor = MDP_TABLES_OFFSET, end;
    for (int i = 0; i < 3; i++) {
        offsets[i] = mdp_u64(h, tables[i].at);
        if (offsets[i] % MDP_CACHE_LINE)
            MDP_FAIL(r, "%s: field %s is %llu, not 64-byte aligned", p, tables[i].name,
                     (unsigned long long)offsets[i]);
        if (offsets[i] < floor)
            MDP_FAIL(r, "%s: field %s is %llu, overlapping what precedes it (ends at %llu)", p,
                     tables[i].name, (unsigned long long)offsets[i], (unsigned long long)floor);
        if (mdp_table_end(offsets[i], counts[i], strides[i], file_size, &end) != 0)
            MDP_FAIL(r, "%s: field %s is %llu, its table runs past the file's %llu bytes", p,
                     tables[i].name, (unsigned long long)offsets[i],
                     (unsigned long long)file_size);
        floor = end;
    }
    r->kind = kind;
    r->depth = depth;
    r->record_size = record_size;
    r->slot_size = slot_size;
    r->max_symbols = max_symbols;
    r->capacity = capacity;
    r->mask = capacity - 1;
    r->symbols_offset = offsets[0];
    r->latest_offset = offsets[1];
    r->slots_offset = offsets[2];
    r->generation = mdp_u64(h, MDP_H_GENERATION);
    return 0;
}

/* Open, check and map the segment at r->path into r (cursor untouched); 0 or -1. */
static inline int mdp_map(mdp_reader *r) {
    const char *p = r->path;
    int fd = open(p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP) MDP_FAIL(r, "%s: is a symbolic link, refused", p);
        MDP_FAIL(r, "cannot open %s: %s", p, strerror(errno));
    }
    struct stat st;
    uint8_t header[MDP_PAGE];
    const char *why = NULL;
    if (fstat(fd, &st) != 0)
        why = "cannot stat it";
    else if (!S_ISREG(st.st_mode))
        why = "not a regular file (a FIFO, device, socket or directory), refused";
    else if (st.st_uid != r->owner) {
        close(fd);
        MDP_FAIL(r, "%s: owner uid %u is not the expected uid %u, refused", p,
                 (unsigned)st.st_uid, (unsigned)r->owner);
    } else if (st.st_mode & (S_IWGRP | S_IWOTH))
        why = "mode lets group or others write it, refused";
    else if ((uint64_t)st.st_size < MDP_PAGE)
        why = "smaller than one header page: not an mdpipe segment";
    else if (pread(fd, header, sizeof header, 0) != (ssize_t)sizeof header)
        why = "cannot read its header page";
    if (why) {
        close(fd);
        MDP_FAIL(r, "%s: %s", p, why);
    }
    if (mdp_validate_header(r, header, (uint64_t)st.st_size) != 0) {
        close(fd);
        return -1;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        close(fd);
        MDP_FAIL(r, "cannot map %s: %s", p, strerror(e));
    }
    r->base = (const uint8_t *)m;
    r->size = (size_t)st.st_size;
    r->fd = fd;
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    return 0;
}

static inline void mdp_unmap(mdp_reader *r) {
    if (r->base) munmap((void *)r->base, r->size);
    if (r->fd >= 0) close(r->fd);
    r->base = NULL;
    r->fd = -1;
}

/* Map /dev/shm/mdpipe.<instance>.<ring>, a segment that user `owner` must own, read-only;
 * 0 on success, else -1 and r->error names the segment and the field at fault. */
static inline int mdp_attach_owned(mdp_reader *r, const char *instance, const char *ring,
                                   uid_t owner) {
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    r->owner = owner;
    if (!mdp_name_ok(instance, 64, 0))
        MDP_FAIL(r, "instance name '%.64s': use letters, digits, '_' or '-'", instance);
    if (!mdp_name_ok(ring, 31, 1))
        MDP_FAIL(r, "ring name '%.64s': use letters, digits, '_', '-' and '.' separators", ring);
    snprintf(r->path, sizeof r->path, "/dev/shm/mdpipe.%s.%s", instance, ring);
    if (mdp_map(r) != 0) return -1;
    r->next = mdp_load_acquire(r->base + MDP_H_WRITE_CURSOR); /* start at the live edge */
    return 0;
}

/* mdp_attach_owned for a segment of this process's effective user, the usual case. */
static inline int mdp_attach(mdp_reader *r, const char *instance, const char *ring) {
    return mdp_attach_owned(r, instance, ring, geteuid());
}

static inline void mdp_detach(mdp_reader *r) { mdp_unmap(r); }

/* Symbol id of a name (the venue's own, e.g. "BTCUSDT"), or -1. Reads only the table
 * validated at attach. */
static inline int mdp_symbol_id(const mdp_reader *r, const char *symbol) {
    uint32_t n = mdp_u32(r->base, MDP_H_N_SYMBOLS);
    if (n > r->max_symbols) n = r->max_symbols;
    size_t len = strlen(symbol);
    if (len == 0 || len >= MDP_S_BASE - MDP_S_NAME) return -1;
    for (uint32_t i = 0; i < n; i++) {
        const char *entry =
            (const char *)r->base + r->symbols_offset + (uint64_t)i * MDP_SYMBOL_ENTRY;
        if (memcmp(entry + MDP_S_NAME, symbol, len) == 0 && entry[MDP_S_NAME + len] == '\0')
            return (int)i;
    }
    return -1;
}

/* A symbol table entry as NUL-terminated strings: the venue's name and the normalized
 * instrument (base, quote, kind) that lines venues up. */
typedef struct {
    char name[MDP_S_BASE - MDP_S_NAME + 1];
    char base[MDP_S_QUOTE - MDP_S_BASE + 1];
    char quote[MDP_S_KIND - MDP_S_QUOTE + 1];
    char kind[MDP_SYMBOL_ENTRY - MDP_S_KIND + 1];
} mdp_symbol;

/* Entry `symbol_id` of the symbol table into out: 0, or -1 for an id not published. */
static inline int mdp_symbol_at(const mdp_reader *r, int symbol_id, mdp_symbol *out) {
    uint32_t n = mdp_u32(r->base, MDP_H_N_SYMBOLS);
    if (n > r->max_symbols) n = r->max_symbols;
    if (symbol_id < 0 || (uint32_t)symbol_id >= n) return -1;
    const char *e = (const char *)r->base + r->symbols_offset + (uint64_t)symbol_id * MDP_SYMBOL_ENTRY;
    memset(out, 0, sizeof *out);
    memcpy(out->name, e + MDP_S_NAME, sizeof out->name - 1);
    memcpy(out->base, e + MDP_S_BASE, sizeof out->base - 1);
    memcpy(out->quote, e + MDP_S_QUOTE, sizeof out->quote - 1);
    memcpy(out->kind, e + MDP_S_KIND, sizeof out->kind - 1);
    return 0;
}

/* Seqlocked copy of the slot at offset whose complete seq must be `want`:
 * 1 copied, 0 not there yet, 2 the slot holds a later message. */
static inline int mdp_copy_slot(const mdp_reader *r, uint64_t off, uint64_t want, void *out) {
    uint64_t s = mdp_load_acquire(r->base + off);
    if (s < want) return 0; /* older, or message `want` itself still being written */
    if (s > want) return 2;
    return mdp_seqlock_read(r->base + off, out, r->record_size) == want ? 1 : 2;
}

/* The next record into out (record_size bytes): 1 read, 0 none yet. Lapping is handled
 * here: the reader skips to the oldest safe record and adds the skipped count to lost. */
static inline int mdp_poll(mdp_reader *r, void *out) {
    for (int skips = 0; skips < MDP_MAX_SKIPS; skips++) {
        uint64_t n = r->next;
        uint64_t off = r->slots_offset + (n & r->mask) * r->slot_size;
        int got = mdp_copy_slot(r, off, 2 * n + 2, out);
        if (got == 1) {
            r->next = n + 1;
            return 1;
        }
        if (got == 0) return 0;
        uint64_t w = mdp_load_acquire(r->base + MDP_H_WRITE_CURSOR);
        uint64_t target = w >= r->capacity ? w - r->capacity + 1 : 0;
        if (target <= n) target = n + 1;
        r->lost += target - n;
        r->next = target;
    }
    return 0;
}

/* The newest record of a symbol into out: 1, 0 when it has none yet, -1 for an id outside
 * the table or a slot that stays mid-write (its writer died there; r->error says which). */
static inline int mdp_latest(mdp_reader *r, int symbol_id, void *out) {
    if (symbol_id < 0 || (uint32_t)symbol_id >= r->max_symbols)
        MDP_FAIL(r, "%s: symbol id %d is outside the table of %u", r->path, symbol_id,
                 r->max_symbols);
    uint64_t off = r->latest_offset + (uint64_t)symbol_id * r->slot_size;
    for (int spins = 0; spins < MDP_MAX_SPINS; spins++) {
        if (mdp_load_acquire(r->base + off) == 0) return 0;
        if (mdp_seqlock_read(r->base + off, out, r->record_size) != MDP_SEQ_TORN) return 1;
    }
    MDP_FAIL(r, "%s: latest slot of symbol %d stays mid-write", r->path, symbol_id);
}

/* Follow the writer; call it now and then while idle. 0 nothing changed, 1 the writer
 * restarted (in place, or it replaced the segment: re-mapped, and every record that could
 * no longer be read counted in lost), -1 the segment shrank, vanished into something else
 * or its replacement is refused (r->error says why; detach, the mapping is not safe). */
static inline int mdp_check_writer(mdp_reader *r) {
    struct stat st;
    if (fstat(r->fd, &st) != 0 || (uint64_t)st.st_size < r->size)
        MDP_FAIL(r, "%s: the segment shrank below its mapped %zu bytes (truncated)", r->path,
                 r->size);
    uint64_t gen = mdp_load_acquire(r->base + MDP_H_GENERATION);
    if (gen != r->generation) {
        r->generation = gen;
        r->restarts++;
        uint64_t w = mdp_load_acquire(r->base + MDP_H_WRITE_CURSOR);
        if (w < r->next) r->next = w; /* a cursor never moves back in place: defensive */
        return 1;
    }
    if (lstat(r->path, &st) != 0 || (st.st_dev == r->dev && st.st_ino == r->ino)) return 0;
    uint64_t unread = mdp_load_acquire(r->base + MDP_H_WRITE_CURSOR);
    unread = unread > r->next ? unread - r->next : 0;
    mdp_reader fresh = *r;
    fresh.base = NULL;
    fresh.fd = -1;
    if (mdp_map(&fresh) != 0) {
        memcpy(r->error, fresh.error, sizeof r->error);
        return -1;
    }
    mdp_unmap(r);
    *r = fresh;
    uint64_t w = mdp_load_acquire(r->base + MDP_H_WRITE_CURSOR);
    r->next = w >= r->capacity ? w - r->capacity + 1 : 0;
    r->lost += unread + r->next;
    r->restarts++;
    return 1;
}

/* A book record's levels, best first: depth x [price, qty] per side. */
static inline const double *mdp_bids(const mdp_book_record *rec) {
    return (const double *)((const uint8_t *)rec + MDP_BOOK_LEVELS_OFFSET);
}

static inline const double *mdp_asks(const mdp_book_record *rec, uint32_t depth) {
    return mdp_bids(rec) + 2 * depth;
}

#endif /* MDPIPE_READER_H */
