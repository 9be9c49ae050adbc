// Register-blocked SGEMM: C = A·B, row-major f32. Each work-group computes 64 × 64
// tiles of C with 256 work-items, each holding a 4 × 4 block of outputs in
// registers, so every value read from local memory feeds four multiply-adds.
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

__kernel void gemm_regblock(__global const float* restrict a,
                            __global const float* restrict b,
                            __global float* restrict c,
                            const uint n,
                            const uint k,
                            const uint offset,
                            const uint count) {
    (void)offset;
    __local float as[GEMM_BK][GEMM_BM + 4];
    __local float bs_[GEMM_BK][GEMM_BN];
    uint bs = get_local_size(0) * get_local_size(1) * get_local_size(2);
    uint tid = get_local_id(0) + get_local_size(0) * (get_local_id(1) + get_local_size(1) * get_local_id(2));
    ulong blk = get_group_id(0) + (ulong)get_num_groups(0) * (get_group_id(1) + (ulong)get_num_groups(1) * get_group_id(2));
    ulong blocks = (ulong)get_num_groups(0) * get_num_groups(1) * get_num_groups(2);
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
            for (int i = 0; i < GEMM_T; ++i)
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
                barrier(CLK_LOCAL_MEM_FENCE);
                for (int q = 0; q < GEMM_BK; ++q) {
                    float av[GEMM_T], bv[GEMM_T];
                    for (int i = 0; i < GEMM_T; ++i) av[i] = as[q][ty + 16 * i];
                    for (int j = 0; j < GEMM_T; ++j) bv[j] = bs_[q][tx + 16 * j];
                    for (int i = 0; i < GEMM_T; ++i)
                        for (int j = 0; j < GEMM_T; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
                barrier(CLK_LOCAL_MEM_FENCE);
            }
            if (v < GEMM_VT) {
                for (int i = 0; i < GEMM_T; ++i) {
                    ulong row = row0 + ty + 16 * i;
                    for (int j = 0; j < GEMM_T; ++j) {
                        ulong col = col0 + tx + 16 * j;
                        if (row < count && col < n) c[row * n + col] = acc[i][j];
                    }
                }
            }
        }
    }
}
