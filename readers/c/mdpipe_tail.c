/*
 * mdpipe_tail - print the book records of an mdpipe ring from C.
 *
 *   cc -O2 -o mdpipe_tail readers/c/mdpipe_tail.c        (add -lrt on old glibc)
 *   ./mdpipe_tail default books.usdm.0 [count] [--wait-ms N]
 *
 * Prints "attached" once mapped, then one line per record, then "lost N" (records the
 * writer lapped) after `count` records. --wait-ms sleeps after attaching, to show lapping.
 */
#include <stdlib.h>
#include <time.h>

#include "mdpipe_reader.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s INSTANCE RING [COUNT] [--wait-ms N]\n", argv[0]);
        return 2;
    }
    long count = argc > 3 && argv[3][0] != '-' ? atol(argv[3]) : 10;
    long wait_ms = 0;
    for (int i = 3; i < argc - 1; i++)
        if (strcmp(argv[i], "--wait-ms") == 0) wait_ms = atol(argv[i + 1]);

    mdp_reader r;
    if (mdp_attach(&r, argv[1], argv[2]) != 0) {
        fprintf(stderr, "mdpipe_tail: %s\n", r.error);
        return 2;
    }
    if (r.kind != MDP_KIND_BOOK) {
        fprintf(stderr, "mdpipe_tail: %s is not a book ring\n", argv[2]);
        return 2;
    }
    printf("attached depth=%u capacity=%lu\n", r.depth, (unsigned long)r.capacity);
    fflush(stdout);
    if (wait_ms) {
        struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    mdp_book_record *rec = malloc(r.record_size);
    for (long got = 0; got < count;) {
        if (mdp_poll(&r, rec) != 1) continue;
        const double *b = mdp_bids(rec), *a = mdp_asks(rec, r.depth);
        printf("sym=%u u=%lu flags=%u bid=%.2f x %.4f ask=%.2f x %.4f\n", rec->symbol_id,
               (unsigned long)rec->last_update_id, rec->flags, b[0], b[1], a[0], a[1]);
        got++;
    }
    printf("lost %lu\n", (unsigned long)r.lost);
    free(rec);
    mdp_detach(&r);
    return 0;
}
