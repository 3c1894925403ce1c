# MD5 (RFC 1321), for the ketama ring (lbcore/_fast/ring.pyx): libketama places keys and
# points by MD5 digests, and a Python call to hashlib per pick would cost ten times the
# pick.  The pure twin uses hashlib; tests/test_ring.py holds this port bit-exact against
# it over every length from 0 to 300 bytes (every padding case, one to six blocks).
#
# The sixty-four constants are floor(abs(sin(i + 1)) * 2**32) (RFC 1321 §3.4), printed
# by Python, not typed; the shifts and the message index of each step are the RFC's.
# Words are read and written little-endian (memcpy of native words on x86-64/aarch64).

from libc.stdint cimport uint32_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    static const uint32_t lbcore_md5_k[64] = {
        0xd76aa478U, 0xe8c7b756U, 0x242070dbU, 0xc1bdceeeU,
        0xf57c0fafU, 0x4787c62aU, 0xa8304613U, 0xfd469501U,
        0x698098d8U, 0x8b44f7afU, 0xffff5bb1U, 0x895cd7beU,
        0x6b901122U, 0xfd987193U, 0xa679438eU, 0x49b40821U,
        0xf61e2562U, 0xc040b340U, 0x265e5a51U, 0xe9b6c7aaU,
        0xd62f105dU, 0x02441453U, 0xd8a1e681U, 0xe7d3fbc8U,
        0x21e1cde6U, 0xc33707d6U, 0xf4d50d87U, 0x455a14edU,
        0xa9e3e905U, 0xfcefa3f8U, 0x676f02d9U, 0x8d2a4c8aU,
        0xfffa3942U, 0x8771f681U, 0x6d9d6122U, 0xfde5380cU,
        0xa4beea44U, 0x4bdecfa9U, 0xf6bb4b60U, 0xbebfbc70U,
        0x289b7ec6U, 0xeaa127faU, 0xd4ef3085U, 0x04881d05U,
        0xd9d4d039U, 0xe6db99e5U, 0x1fa27cf8U, 0xc4ac5665U,
        0xf4292244U, 0x432aff97U, 0xab9423a7U, 0xfc93a039U,
        0x655b59c3U, 0x8f0ccc92U, 0xffeff47dU, 0x85845dd1U,
        0x6fa87e4fU, 0xfe2ce6e0U, 0xa3014314U, 0x4e0811a1U,
        0xf7537e82U, 0xbd3af235U, 0x2ad7d2bbU, 0xeb86d391U,
    };
    /* Per-round rotations (RFC 1321 §3.4, S11..S44). */
    static const int lbcore_md5_r[16] = {7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21};

    /* One 64-byte block into the state. */
    static void lbcore_md5_block(uint32_t s[4], const unsigned char *p) {
        uint32_t m[16], a = s[0], b = s[1], c = s[2], d = s[3], f, t;
        int i, g;
        memcpy(m, p, 64);
        for (i = 0; i < 64; i++) {
            if (i < 16)      { f = (b & c) | (~b & d); g = i; }
            else if (i < 32) { f = (d & b) | (~d & c); g = (5 * i + 1) & 15; }
            else if (i < 48) { f = b ^ c ^ d;          g = (3 * i + 5) & 15; }
            else             { f = c ^ (b | ~d);       g = (7 * i) & 15; }
            t = a + f + lbcore_md5_k[i] + m[g];
            a = d; d = c; c = b;
            b = b + ((t << lbcore_md5_r[(i >> 4) * 4 + (i & 3)]) |
                     (t >> (32 - lbcore_md5_r[(i >> 4) * 4 + (i & 3)])));
        }
        s[0] += a; s[1] += b; s[2] += c; s[3] += d;
    }

    /* The digest of len bytes at data, as its four little-endian words. */
    static void lbcore_md5(const void *data, size_t len, uint32_t out[4]) {
        const unsigned char *p = (const unsigned char *)data;
        unsigned char tail[128];
        size_t rest = len & 63, pad;
        uint64_t bits = (uint64_t)len * 8;
        int i;
        out[0] = 0x67452301U; out[1] = 0xefcdab89U; out[2] = 0x98badcfeU; out[3] = 0x10325476U;
        for (size_t n = len >> 6; n; n--, p += 64)
            lbcore_md5_block(out, p);
        /* Padding: 0x80, zeros up to 56 mod 64, the length in bits (little-endian). */
        pad = rest < 56 ? 64 : 128;
        memset(tail, 0, pad);
        memcpy(tail, p, rest);
        tail[rest] = 0x80;
        for (i = 0; i < 8; i++)
            tail[pad - 8 + i] = (unsigned char)(bits >> (8 * i));
        lbcore_md5_block(out, tail);
        if (pad == 128)
            lbcore_md5_block(out, tail + 64);
    }
    """
    void md5 "lbcore_md5" (const void* data, size_t length, uint32_t* out) noexcept nogil
