// Tiled SGEMM: C = A·B, row-major f32. Each work-group computes 16 × 16 tiles of C,
// staging 16 × 16 tiles of A and B in local (shared) memory so every global element is
// read once per tile instead of once per output.
// Splittable over rows of C: a is the chunk's `count` rows of A (count × k), c the
// chunk's `count` rows of C (count × n), b all of B (k × n); `offset` is unused.
// Correct for any launch shape: work-groups walk the tiles with a grid-stride loop,
// and a work-group of fewer than 256 work-items covers a tile in several passes
// (256 work-items per group, one output each, is the intended shape).
#define GEMM_TS 16

KERNEL void gemm_tiled(GLOBAL const float* RESTRICT a,
                       GLOBAL const float* RESTRICT b,
                       GLOBAL float* RESTRICT c,
                       const uint n,
                       const uint k,
                       const uint offset,
                       const uint count) {
    (void)offset;
    LOCAL float as[GEMM_TS][GEMM_TS];
    LOCAL float bs_[GEMM_TS][GEMM_TS + 1];
    uint bs = LOCAL_SIZE(0) * LOCAL_SIZE(1) * LOCAL_SIZE(2);
    uint tid = LOCAL_ID(0) + LOCAL_SIZE(0) * (LOCAL_ID(1) + LOCAL_SIZE(1) * LOCAL_ID(2));
    ulong blk = GROUP_ID(0) + (ulong)NUM_GROUPS(0) * (GROUP_ID(1) + (ulong)NUM_GROUPS(1) * GROUP_ID(2));
    ulong blocks = (ulong)NUM_GROUPS(0) * NUM_GROUPS(1) * NUM_GROUPS(2);
    ulong tiles_x = (n + GEMM_TS - 1) / GEMM_TS;
    ulong tiles = tiles_x * (((ulong)count + GEMM_TS - 1) / GEMM_TS);
    for (ulong t = blk; t < tiles; t += blocks) {
        ulong row0 = (t / tiles_x) * GEMM_TS;
        ulong col0 = (t % tiles_x) * GEMM_TS;
        for (uint v0 = 0; v0 < GEMM_TS * GEMM_TS; v0 += bs) {
            uint v = v0 + tid;
            uint ty = v / GEMM_TS;
            uint tx = v % GEMM_TS;
            float acc = 0.0f;
            for (ulong p0 = 0; p0 < k; p0 += GEMM_TS) {
                for (uint i = tid; i < GEMM_TS * GEMM_TS; i += bs) {
                    uint r = i / GEMM_TS, q = i % GEMM_TS;
                    ulong ar = row0 + r, ap = p0 + q;
                    as[r][q] = (ar < count && ap < k) ? a[ar * k + ap] : 0.0f;
                    ulong bp = p0 + r, bc = col0 + q;
                    bs_[r][q] = (bp < k && bc < n) ? b[bp * n + bc] : 0.0f;
                }
                BARRIER();
                if (v < GEMM_TS * GEMM_TS) {
                    for (uint q = 0; q < GEMM_TS; ++q) {
                        acc = fmaf(as[ty][q], bs_[q][tx], acc);
                    }
                }
                BARRIER();
            }
            ulong row = row0 + ty, col = col0 + tx;
            if (v < GEMM_TS * GEMM_TS && row < count && col < n) {
                c[row * n + col] = acc;
            }
        }
    }
}
