/*
 * mdpipe_tail - print the book records of an mdpipe ring from C.
 *
 *   cc -O2 -o mdpipe_tail readers/c/mdpipe_tail.c        (add -lrt on old glibc)
 *   ./mdpipe_tail default books.usdm.0 [count] [--wait-ms N] [--owner UID]
 *   ./mdpipe_tail default books.usdm.0 --symbols
 *
 * Prints "attached" once mapped, then one line per record, then "lost N" (records the
 * writer lapped) after `count` records. --wait-ms sleeps after attaching, to show lapping;
 * --owner names the uid that must own the segment (default: this process's euid).
 * --symbols prints the symbol table instead: "id name base/quote:kind" per symbol.
 * Exit status: 0 done, 1 the segment went bad while reading, 2 usage or refused segment.
 */
#include "mdpipe_reader.h" /* first: it selects the POSIX interfaces it needs */

#include <stdlib.h>
#include <time.h>

static int parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    const char *usage =
        "usage: %s INSTANCE RING [COUNT] [--wait-ms N] [--owner UID] [--symbols]\n";
    if (argc < 3) {
        fprintf(stderr, usage, argv[0]);
        return 2;
    }
    long count = 10, wait_ms = 0, owner = (long)geteuid();
    int list_symbols = 0;
    for (int i = 3; i < argc; i++) {
        int ok = 1;
        if (strcmp(argv[i], "--symbols") == 0)
            list_symbols = 1;
        else if (strcmp(argv[i], "--wait-ms") == 0 && i + 1 < argc)
            ok = parse_long(argv[++i], &wait_ms) == 0;
        else if (strcmp(argv[i], "--owner") == 0 && i + 1 < argc)
            ok = parse_long(argv[++i], &owner) == 0;
        else
            ok = i == 3 && parse_long(argv[i], &count) == 0;
        if (!ok) {
            fprintf(stderr, usage, argv[0]);
            return 2;
        }
    }

    mdp_reader r;
    if (mdp_attach_owned(&r, argv[1], argv[2], (uid_t)owner) != 0) {
        fprintf(stderr, "mdpipe_tail: %s\n", r.error);
        return 2;
    }
    if (list_symbols) {
        mdp_symbol sym;
        for (int id = 0; mdp_symbol_at(&r, id, &sym) == 0; id++)
            printf("%d %s %s/%s:%s\n", id, sym.name, sym.base, sym.quote, sym.kind);
        mdp_detach(&r);
        return 0;
    }
    if (r.kind != MDP_KIND_BOOK) {
        fprintf(stderr, "mdpipe_tail: %s is not a book ring\n", r.path);
        mdp_detach(&r);
        return 2;
    }
    printf("attached depth=%u capacity=%lu\n", r.depth, (unsigned long)r.capacity);
    fflush(stdout);
    if (wait_ms) {
        struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    mdp_book_record *rec = malloc(r.record_size);
    unsigned long idle = 0;
    for (long got = 0; got < count;) {
        if (mdp_poll(&r, rec) == 1) {
            const double *b = mdp_bids(rec), *a = mdp_asks(rec, r.depth);
            printf("sym=%u u=%lu flags=%u bid=%.2f x %.4f ask=%.2f x %.4f\n", rec->symbol_id,
                   (unsigned long)rec->last_update_id, rec->flags, b[0], b[1], a[0], a[1]);
            got++;
        } else if (++idle % 65536 == 0 && mdp_check_writer(&r) < 0) {
            fprintf(stderr, "mdpipe_tail: %s\n", r.error);
            free(rec);
            mdp_detach(&r);
            return 1;
        }
    }
    printf("lost %lu\n", (unsigned long)r.lost);
    free(rec);
    mdp_detach(&r);
    return 0;
}
