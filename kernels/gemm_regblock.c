// Register-blocked SGEMM: C = A·B, row-major f32. Each work-group computes 64 × 64
// tiles of C with 256 work-items, each holding a 4 × 4 block of outputs in
// registers, so every value read from local (shared) memory feeds four multiply-adds.
// A (transposed) and B are staged 16 columns / rows at a time in local memory.
// Splittable over rows of C: a is the chunk's `count` rows of A (count × k), c the
// chunk's `count` rows of C (count × n), b all of B (k × n); `offset` is unused.
// Correct for any launch shape: work-groups walk the tiles with a grid-stride loop,
// and a work-group of fewer than 256 work-items covers a tile in several passes
// (256 work-items per group is the intended shape).
#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16
#define GEMM_T 4
#define GEMM_VT 256

KERNEL void gemm_regblock(GLOBAL const float* RESTRICT a,
                          GLOBAL const float* RESTRICT b,
                          GLOBAL float* RESTRICT c,
                          const uint n,
                          const uint k,
                          const uint offset,
                          const uint count) {
    (void)offset;
    LOCAL float as[GEMM_BK][GEMM_BM + 4];
    LOCAL float bs_[GEMM_BK][GEMM_BN];
    uint bs = LOCAL_SIZE(0) * LOCAL_SIZE(1) * LOCAL_SIZE(2);
    uint tid = LOCAL_ID(0) + LOCAL_SIZE(0) * (LOCAL_ID(1) + LOCAL_SIZE(1) * LOCAL_ID(2));
    ulong blk = GROUP_ID(0) + (ulong)NUM_GROUPS(0) * (GROUP_ID(1) + (ulong)NUM_GROUPS(1) * GROUP_ID(2));
    ulong blocks = (ulong)NUM_GROUPS(0) * NUM_GROUPS(1) * NUM_GROUPS(2);
    ulong tiles_x = (n + GEMM_BN - 1) / GEMM_BN;
    ulong tiles = tiles_x * (((ulong)count + GEMM_BM - 1) / GEMM_BM);
    for (ulong t = blk; t < tiles; t += blocks) {
        ulong row0 = (t / tiles_x) * GEMM_BM;
        ulong col0 = (t % tiles_x) * GEMM_BN;
        for (uint v0 = 0; v0 < GEMM_VT; v0 += bs) {
            uint v = v0 + tid;
            // Work-item v owns rows ty + 16 i and columns tx + 16 j (i, j < 4).
            uint ty = (v / 16) % 16;
            uint tx = v % 16;
            float acc[GEMM_T][GEMM_T];
#pragma unroll
            for (int i = 0; i < GEMM_T; ++i)
#pragma unroll
                for (int j = 0; j < GEMM_T; ++j) acc[i][j] = 0.0f;
            for (ulong p0 = 0; p0 < k; p0 += GEMM_BK) {
                for (uint i = tid; i < GEMM_BM * GEMM_BK; i += bs) {
                    uint r = i / GEMM_BK, q = i % GEMM_BK;
                    ulong ar = row0 + r, ap = p0 + q;
                    as[q][r] = (ar < count && ap < k) ? a[ar * k + ap] : 0.0f;
                }
                for (uint i = tid; i < GEMM_BK * GEMM_BN; i += bs) {
                    uint r = i / GEMM_BN, q = i % GEMM_BN;
                    ulong bp = p0 + r, bc = col0 + q;
                    bs_[r][q] = (bp < k && bc < n) ? b[bp * n + bc] : 0.0f;
                }
                BARRIER();
#pragma unroll
                for (int q = 0; q < GEMM_BK; ++q) {
                    float av[GEMM_T], bv[GEMM_T];
#pragma unroll
                    for (int i = 0; i < GEMM_T; ++i) av[i] = as[q][ty + 16 * i];
#pragma unroll
                    for (int j = 0; j < GEMM_T; ++j) bv[j] = bs_[q][tx + 16 * j];
#pragma unroll
                    for (int i = 0; i < GEMM_T; ++i)
#pragma unroll
                        for (int j = 0; j < GEMM_T; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
                }
                BARRIER();
            }
            if (v < GEMM_VT) {
#pragma unroll
                for (int i = 0; i < GEMM_T; ++i) {
                    ulong row = row0 + ty + 16 * i;
#pragma unroll
                    for (int j = 0; j < GEMM_T; ++j) {
                        ulong col = col0 + tx + 16 * j;
                        if (row < count && col < n) c[row * n + col] = acc[i][j];
                    }
                }
            }
        }
    }
}
