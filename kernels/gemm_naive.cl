// Naive SGEMM: C = A·B, row-major f32, one work-item per element of C, each a dot
// product of a row of A with a column of B read straight from global memory.
// Splittable over rows of C: a is the chunk's `count` rows of A (count × k), c the
// chunk's `count` rows of C (count × n), b all of B (k × n); `offset` (the chunk's
// first row) is unused. Correct for any launch shape: work-items walk the count × n
// elements with a grid-stride loop over linear work-item ids.
__kernel void gemm_naive(__global const float* restrict a,
                         __global const float* restrict b,
                         __global float* restrict c,
                         const uint n,
                         const uint k,
                         const uint offset,
                         const uint count) {
    (void)offset;
    ulong bs = (ulong)get_local_size(0) * get_local_size(1) * get_local_size(2);
    ulong tid = get_local_id(0) + (ulong)get_local_size(0) * (get_local_id(1) + (ulong)get_local_size(1) * get_local_id(2));
    ulong blk = get_group_id(0) + (ulong)get_num_groups(0) * (get_group_id(1) + (ulong)get_num_groups(1) * get_group_id(2));
    ulong threads = bs * get_num_groups(0) * get_num_groups(1) * get_num_groups(2);
    ulong total = (ulong)count * n;
    for (ulong e = blk * bs + tid; e < total; e += threads) {
        ulong row = e / n;
        ulong col = e - row * n;
        __global const float* ar = a + row * k;
        float acc = 0.0f;
        for (uint p = 0; p < k; ++p) {
            acc = fma(ar[p], b[(ulong)p * n + col], acc);
        }
        c[e] = acc;
    }
}
