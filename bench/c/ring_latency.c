/*
 * ring_latency - one-way latency of mdpipe ring records as seen by a C reader.
 *
 *   cc -O2 -o ring_latency bench/c/ring_latency.c -lrt
 *   ./ring_latency INSTANCE RING COUNT
 *
 * Busy-polls the ring with readers/c/mdpipe_reader.h, takes CLOCK_REALTIME as soon as a
 * record is copied, and prints "p50 p99 p99.9 lost" in microseconds of commit_ts_ns -> copy.
 */
#include "../../readers/c/mdpipe_reader.h" /* first: it selects the POSIX interfaces */

#include <stdlib.h>
#include <time.h>

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s INSTANCE RING COUNT\n", argv[0]);
        return 2;
    }
    long n = atol(argv[3]);
    if (n <= 0) {
        fprintf(stderr, "ring_latency: COUNT must be a positive number of records\n");
        return 2;
    }
    mdp_reader r;
    if (mdp_attach(&r, argv[1], argv[2]) != 0) {
        fprintf(stderr, "ring_latency: %s\n", r.error);
        return 2;
    }
    int64_t *lat = malloc(sizeof(int64_t) * (size_t)n);
    mdp_book_record *rec = malloc(r.record_size);
    printf("attached\n");
    fflush(stdout);
    for (long i = 0; i < n;) {
        if (mdp_poll(&r, rec) != 1) continue;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        lat[i++] = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - rec->commit_ts_ns;
    }
    qsort(lat, (size_t)n, sizeof(int64_t), cmp_i64);
    printf("%.3f %.3f %.3f %lu\n", lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3,
           lat[n * 999 / 1000] / 1e3, (unsigned long)r.lost);
    free(rec);
    free(lat);
    mdp_detach(&r);
    return 0;
}
