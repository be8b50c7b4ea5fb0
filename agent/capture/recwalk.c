/* Record walk for classic pcap buffers, loaded with ctypes by agent/capture/native.py.
 *
 * Record boundaries chain (each record's caplen gives the next record's offset), so they cannot be
 * found with vectorised operations; this loop is the only per-record work of the batch reader that
 * Python would otherwise do, and it gathers the record header fields on the way. It reads nothing
 * outside buf[0:end): every record header it looks at has its 16 bytes inside the buffer (12 to
 * learn the length), and a record is taken only when it ends at or before `end`. The records taken
 * are exactly those of the Python loop in pcapfile._PcapParser.parse, and the time stamps are the
 * same IEEE doubles as vectordecode.record_headers computes (sec + frac / units).
 */
#include <stdint.h>
#include <string.h>

static uint32_t u32_at(const unsigned char *p, int swap)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}

/* Walk records from `pos`; for up to `max_records` records store the frame offset, time stamp,
 * captured and original length; return how many, and in *next_pos the offset of the first record
 * not taken (incomplete, or over the limit). */
long camwatch_pcap_walk(const unsigned char *buf, long end, long pos, long hlen, int swap, double units,
                        long max_records, int64_t *offsets, double *ts, int64_t *caplens,
                        int64_t *origlens, long *next_pos)
{
    long taken = 0;
    if (pos < 0 || hlen < 16 || end < 0) {
        *next_pos = pos;
        return 0;
    }
    while (taken < max_records && end - pos >= 12) {
        uint32_t caplen = u32_at(buf + pos + 8, swap);
        /* 64-bit arithmetic: pos + hlen + caplen cannot overflow for any buffer size. */
        int64_t nxt = (int64_t)pos + (int64_t)hlen + (int64_t)caplen;
        if (nxt > (int64_t)end)
            break;
        /* nxt <= end and hlen >= 16, so the whole 16-byte header is inside the buffer. */
        ts[taken] = (double)u32_at(buf + pos, swap) + (double)u32_at(buf + pos + 4, swap) / units;
        caplens[taken] = caplen;
        origlens[taken] = u32_at(buf + pos + 12, swap);
        offsets[taken] = (int64_t)pos + hlen;
        taken++;
        pos = (long)nxt;
    }
    *next_pos = pos;
    return taken;
}
