// Tiled SGEMM: C = A·B, row-major f32. Each work-group computes 16 × 16 tiles of C,
// staging 16 × 16 tiles of A and B in local memory so every global element is
// read once per tile instead of once per output.
// Splittable over rows of C: a is the chunk's `count` rows of A (count × k), c the
// chunk's `count` rows of C (count × n), b all of B (k × n); `offset` is unused.
// Correct for any launch shape: work-groups walk the tiles with a grid-stride loop,
// and a work-group of fewer than 256 work-items covers a tile in several passes
// (256 work-items per group, one output each, is the intended shape).
#define GEMM_TS 16

__kernel void gemm_tiled(__global const float* restrict a,
                         __global const float* restrict b,
                         __global float* restrict c,
                         const uint n,
                         const uint k,
                         const uint offset,
                         const uint count) {
    (void)offset;
    __local float as[GEMM_TS][GEMM_TS];
    __local float bs_[GEMM_TS][GEMM_TS + 1];
    uint bs = get_local_size(0) * get_local_size(1) * get_local_size(2);
    uint tid = get_local_id(0) + get_local_size(0) * (get_local_id(1) + get_local_size(1) * get_local_id(2));
    ulong blk = get_group_id(0) + (ulong)get_num_groups(0) * (get_group_id(1) + (ulong)get_num_groups(1) * get_group_id(2));
    ulong blocks = (ulong)get_num_groups(0) * get_num_groups(1) * get_num_groups(2);
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
                barrier(CLK_LOCAL_MEM_FENCE);
                if (v < GEMM_TS * GEMM_TS) {
                    for (uint q = 0; q < GEMM_TS; ++q) {
                        acc = fma(as[ty][q], bs_[q][tx], acc);
                    }
                }
                barrier(CLK_LOCAL_MEM_FENCE);
            }
            ulong row = row0 + ty, col = col0 + tx;
            if (v < GEMM_TS * GEMM_TS && row < count && col < n) {
                c[row * n + col] = acc;
            }
        }
    }
}
