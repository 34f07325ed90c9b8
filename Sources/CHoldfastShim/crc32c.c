// crc32c for ext4 metadata_csum and jbd2 checksums.
// Hardware path: the SSE4.2 crc32 instruction, 8 bytes at a time, three lanes at once on long buffers.
// Portable path: slicing-by-8 tables built once.
#include "CHoldfastShim.h"
#include <pthread.h>
#include <string.h>

static uint32_t table[8][256];
static int table_ready = 0;

static void build_tables(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int s = 1; s < 8; s++) table[s][i] = (table[s - 1][i] >> 8) ^ table[0][table[s - 1][i] & 0xFF];
    }
    __atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t hf_crc32c_update_portable(uint32_t crc, const void *data, size_t length) {
    if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE)) build_tables();
    const uint8_t *p = data;
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = table[7][w & 0xFF] ^ table[6][(w >> 8) & 0xFF] ^ table[5][(w >> 16) & 0xFF] ^
              table[4][(w >> 24) & 0xFF] ^ table[3][(w >> 32) & 0xFF] ^ table[2][(w >> 40) & 0xFF] ^
              table[1][(w >> 48) & 0xFF] ^ table[0][(w >> 56) & 0xFF];
        p += 8;
        length -= 8;
    }
    while (length--) crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#if defined(__x86_64__)
// One crc32 instruction waits for the one before it (3 cycles each), so a serial loop uses a third
// of the unit. Long buffers go in strides of three lanes of LANE bytes, computed side by side, then
// joined: crc(A B) = shift(crc(A)) ^ crc0(B), where crc0 starts from 0 and shift() is the crc's
// advance over LANE zero bytes, a linear map on 32 bits kept as four byte tables.
#define LANE 336
static uint32_t lane_shift[4][256];
static pthread_once_t lane_shift_once = PTHREAD_ONCE_INIT;

__attribute__((target("sse4.2")))
static uint64_t crc32c_words(uint64_t c, const uint8_t *p, size_t words) {
    for (size_t i = 0; i < words; i++) {
        uint64_t w;
        memcpy(&w, p + 8 * i, 8);
        c = __builtin_ia32_crc32di(c, w);
    }
    return c;
}

__attribute__((target("sse4.2")))
static void build_lane_shift(void) {
    static const uint8_t zeros[LANE];
    uint32_t basis[32];
    for (int b = 0; b < 32; b++) basis[b] = (uint32_t)crc32c_words(1u << b, zeros, LANE / 8);
    for (int k = 0; k < 4; k++) {
        for (uint32_t v = 0; v < 256; v++) {
            uint32_t x = 0;
            for (int b = 0; b < 8; b++) if (v & (1u << b)) x ^= basis[8 * k + b];
            lane_shift[k][v] = x;
        }
    }
}

static inline uint32_t shift_lane(uint32_t c) {
    return lane_shift[0][c & 0xFF] ^ lane_shift[1][(c >> 8) & 0xFF] ^ lane_shift[2][(c >> 16) & 0xFF] ^ lane_shift[3][c >> 24];
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t length) {
    const uint8_t *p = data;
    uint64_t c = crc;
    if (length >= 3 * LANE) {
        pthread_once(&lane_shift_once, build_lane_shift);
        while (length >= 3 * LANE) {
            uint64_t c1 = 0, c2 = 0;
            for (size_t i = 0; i < LANE; i += 8) {
                uint64_t w0, w1, w2;
                memcpy(&w0, p + i, 8);
                memcpy(&w1, p + LANE + i, 8);
                memcpy(&w2, p + 2 * LANE + i, 8);
                c = __builtin_ia32_crc32di(c, w0);
                c1 = __builtin_ia32_crc32di(c1, w1);
                c2 = __builtin_ia32_crc32di(c2, w2);
            }
            c = shift_lane(shift_lane((uint32_t)c) ^ (uint32_t)c1) ^ (uint32_t)c2;
            p += 3 * LANE;
            length -= 3 * LANE;
        }
    }
    if (length >= 8) {  /* an empty buffer may come as a null pointer: no arithmetic on it */
        c = crc32c_words(c, p, length / 8);
        p += length & ~(size_t)7;
        length &= 7;
    }
    uint32_t c32 = (uint32_t)c;
    while (length--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}

static int has_sse42(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("sse4.2") ? 1 : 0;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

uint32_t hf_crc32c_update(uint32_t crc, const void *data, size_t length) {
    if (has_sse42()) return crc32c_sse42(crc, data, length);
    return hf_crc32c_update_portable(crc, data, length);
}

int hf_crc32c_is_hardware(void) { return has_sse42(); }
#else
uint32_t hf_crc32c_update(uint32_t crc, const void *data, size_t length) {
    return hf_crc32c_update_portable(crc, data, length);
}
int hf_crc32c_is_hardware(void) { return 0; }
#endif
