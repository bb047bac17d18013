/*
 * fuzz_header - feed readers/c/mdpipe_reader.h segments with mutated headers.
 *
 *   fuzz_header TEMPLATE INSTANCE RING CASES SEED
 *
 * TEMPLATE is a copy of a good segment. Each case writes a mutated copy to
 * /dev/shm/mdpipe.INSTANCE.RING (mode 0600): header fields set to boundary values or
 * random ones, one field or several at once, the file cut short or grown, the write
 * cursor and slot sequences scrambled. A forked child then attaches and, when accepted,
 * polls, looks symbols up, reads the latest table and follows the writer, under a 2 s
 * alarm. The parent tallies how each child ended and prints one line:
 *   cases=N accepted=A refused=R crashes=C hangs=H unnamed=U
 * crashes: killed by a signal; hangs: still running after 2 s; unnamed: refused without a
 * message naming the segment. The first bad cases are described on stderr.
 */
#include "../../readers/c/mdpipe_reader.h" /* first: it selects the POSIX interfaces */

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

typedef struct {
    const char *name;
    uint32_t offset, width;
} field;

static const field FIELDS[] = {
    {"magic", MDP_H_MAGIC, 8},           {"layout_version", MDP_H_LAYOUT_VERSION, 4},
    {"kind", MDP_H_KIND, 4},             {"capacity", MDP_H_CAPACITY, 8},
    {"record_size", MDP_H_RECORD_SIZE, 4}, {"depth", MDP_H_DEPTH, 4},
    {"max_symbols", MDP_H_MAX_SYMBOLS, 4}, {"n_symbols", MDP_H_N_SYMBOLS, 4},
    {"n_counters", MDP_H_N_COUNTERS, 4}, {"slot_size", MDP_H_SLOT_SIZE, 4},
    {"symbols_offset", MDP_H_SYMBOLS_OFFSET, 8}, {"latest_offset", MDP_H_LATEST_OFFSET, 8},
    {"slots_offset", MDP_H_SLOTS_OFFSET, 8}, {"segment_size", MDP_H_SEGMENT_SIZE, 8},
    {"generation", MDP_H_GENERATION, 8}, {"write_cursor", MDP_H_WRITE_CURSOR, 8},
};
#define N_FIELDS (sizeof FIELDS / sizeof FIELDS[0])

static uint64_t rng_state;

static uint64_t rnd(void) { /* xorshift64*: reproducible from the seed */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static uint64_t boundary(uint64_t good, uint32_t width) {
    uint64_t top = width == 8 ? UINT64_MAX : (1ull << (8 * width)) - 1;
    const uint64_t picks[] = {0, 1, 2, 3, 63, 64, 65, 4095, 4096, 4097, 65535, 65536, 65537,
                              1ull << 24, (1ull << 24) + 1, 1ull << 31, (1ull << 32) - 1,
                              1ull << 32, 1ull << 63, UINT64_MAX, UINT64_MAX - 63,
                              good - 1, good + 1, good * 2, good / 2, good + 64, good - 64,
                              good + 4096, rnd()};
    return picks[rnd() % (sizeof picks / sizeof picks[0])] & top;
}

static void put(uint8_t *buf, uint32_t offset, uint32_t width, uint64_t v) {
    memcpy(buf + offset, &v, width); /* little-endian host */
}

static uint64_t get(const uint8_t *buf, uint32_t offset, uint32_t width) {
    uint64_t v = 0;
    memcpy(&v, buf + offset, width);
    return v;
}

/* The child's whole life: attach, and when accepted exercise every read path. */
static int run_reader(const char *instance, const char *ring, const char *path) {
    alarm(2);
    mdp_reader r;
    if (mdp_attach(&r, instance, ring) != 0)
        return r.error[0] && strstr(r.error, path) ? 10 : 13;
    uint8_t *rec = malloc(r.record_size);
    for (int i = 0; i < 256; i++) mdp_poll(&r, rec);
    mdp_symbol_id(&r, "BTCUSDT");
    mdp_symbol_id(&r, "");
    mdp_symbol sym;
    for (int id = -1; id <= (int)r.max_symbols && id < 64; id++)
        if (mdp_symbol_at(&r, id, &sym) == 0 && strlen(sym.name) >= sizeof sym.name) return 14;
    for (int id = -1; id <= (int)r.max_symbols && id < 64; id++) mdp_latest(&r, id, rec);
    mdp_latest(&r, (int)r.max_symbols, rec);
    mdp_check_writer(&r);
    for (int i = 0; i < 16; i++) mdp_poll(&r, rec);
    free(rec);
    mdp_detach(&r);
    return 11;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s TEMPLATE INSTANCE RING CASES SEED\n", argv[0]);
        return 2;
    }
    const char *instance = argv[2], *ring = argv[3];
    long cases = atol(argv[4]);
    rng_state = strtoull(argv[5], NULL, 10) | 1;
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    size_t size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *good = malloc(size), *buf = malloc(size + 2 * MDP_PAGE);
    if (fread(good, 1, size, f) != size) {
        perror("read template");
        return 2;
    }
    fclose(f);
    char path[160];
    snprintf(path, sizeof path, "/dev/shm/mdpipe.%s.%s", instance, ring);

    long accepted = 0, refused = 0, crashes = 0, hangs = 0, unnamed = 0, reported = 0;
    char what[256];
    for (long c = 0; c < cases; c++) {
        memcpy(buf, good, size);
        size_t len = size;
        int n = snprintf(what, sizeof what, "case %ld:", c);
        /* Cases cycle through: one field at boundary values, one field at random, several
         * fields at once, the file cut or grown, the cursor and slot words scrambled. */
        int mode = (int)(c % 5);
        int mutations = mode == 2 ? 2 + (int)(rnd() % 4) : 1;
        for (int m = 0; m < mutations && mode <= 2; m++) {
            const field *fl = &FIELDS[mode == 0 ? (c / 5) % N_FIELDS : rnd() % N_FIELDS];
            uint64_t v = mode == 1 ? rnd() : boundary(get(good, fl->offset, fl->width), fl->width);
            put(buf, fl->offset, fl->width, v);
            n += snprintf(what + n, sizeof what - (size_t)n, " %s=%llu", fl->name,
                          (unsigned long long)v);
        }
        if (mode == 3) {
            len = rnd() % 2 ? (size_t)(rnd() % size) : size + (size_t)(rnd() % (2 * MDP_PAGE));
            if (len > size) memset(buf + size, 0xAB, len - size);
            if (rnd() % 2) put(buf, MDP_H_SEGMENT_SIZE, 8, len);
            n += snprintf(what + n, sizeof what - (size_t)n, " file %zu bytes", len);
        }
        if (mode == 4) {
            put(buf, MDP_H_WRITE_CURSOR, 8, boundary(get(good, MDP_H_WRITE_CURSOR, 8), 8));
            put(buf, MDP_H_N_SYMBOLS, 4, rnd() % (get(good, MDP_H_MAX_SYMBOLS, 4) + 1));
            uint64_t slots = get(good, MDP_H_SLOTS_OFFSET, 8);
            uint64_t latest = get(good, MDP_H_LATEST_OFFSET, 8);
            uint64_t stride = get(good, MDP_H_SLOT_SIZE, 4);
            for (uint64_t s = 0; s < get(good, MDP_H_CAPACITY, 8); s++)
                if (rnd() % 2) put(buf, (uint32_t)(slots + s * stride), 8, boundary(2 * s + 2, 8));
            for (uint64_t s = 0; s < get(good, MDP_H_MAX_SYMBOLS, 4); s++)
                put(buf, (uint32_t)(latest + s * stride), 8, rnd() % 2 ? 1 : boundary(2, 8));
            memset(buf + get(good, MDP_H_SYMBOLS_OFFSET, 8), 'A', MDP_SYMBOL_ENTRY);
            n += snprintf(what + n, sizeof what - (size_t)n, " cursor, slots and names scrambled");
        }

        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, buf, len) != (ssize_t)len) {
            perror(path);
            return 2;
        }
        close(fd);
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) _exit(run_reader(instance, ring, path));
        int status;
        waitpid(pid, &status, 0);
        const char *bad = NULL;
        if (WIFSIGNALED(status)) {
            if (WTERMSIG(status) == SIGALRM) {
                hangs++;
                bad = "hang";
            } else {
                crashes++;
                bad = strsignal(WTERMSIG(status));
            }
        } else if (WEXITSTATUS(status) == 10) {
            refused++;
        } else if (WEXITSTATUS(status) == 11) {
            accepted++;
        } else {
            unnamed++;
            bad = "refused without naming the segment";
        }
        if (bad && reported++ < 20) fprintf(stderr, "%s -> %s\n", what, bad);
    }
    unlink(path);
    printf("cases=%ld accepted=%ld refused=%ld crashes=%ld hangs=%ld unnamed=%ld\n", cases,
           accepted, refused, crashes, hangs, unnamed);
    return crashes || hangs || unnamed ? 1 : 0;
}
