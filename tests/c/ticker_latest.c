/* Prints a symbol's newest ticker and the newest candle of a candle ring, read with the
 * header-only C reader: `ticker_latest INSTANCE TICKER_RING CANDLE_RING SYMBOL`. */
#include "../../readers/c/mdpipe_reader.h" /* first: it selects the POSIX interfaces */

#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 5) return 64;
    mdp_reader t, c;
    if (mdp_attach(&t, argv[1], argv[2]) != 0) {
        fprintf(stderr, "%s\n", t.error);
        return 2;
    }
    if (mdp_attach(&c, argv[1], argv[3]) != 0) {
        fprintf(stderr, "%s\n", c.error);
        return 2;
    }
    if (t.kind != MDP_KIND_TICKER || c.kind != MDP_KIND_CANDLE) return 3;
    int sid = mdp_symbol_id(&t, argv[4]);
    mdp_ticker_record tick;
    if (sid < 0 || mdp_latest(&t, sid, &tick) != 1) return 4;
    printf("mark=%.3f funding=%.6f next=%lld oi_sent=%d\n", tick.mark_price, tick.funding_rate,
           (long long)tick.next_funding_ts_ns,
           (int)((tick.filled & MDP_TICKER_HAS_OPEN_INTEREST) != 0));
    mdp_candle_record bar;
    if (mdp_latest(&c, mdp_symbol_id(&c, argv[4]), &bar) != 1) return 5;
    printf("open_ts=%lld o=%.2f h=%.2f l=%.2f c=%.2f v=%.3f n=%llu rev=%u amended=%d\n",
           (long long)bar.open_ts_ns, bar.open, bar.high, bar.low, bar.close, bar.volume,
           (unsigned long long)bar.trades, bar.revision,
           (int)((bar.flags & MDP_CANDLE_AMENDED) != 0));
    mdp_detach(&t);
    mdp_detach(&c);
    return 0;
}
