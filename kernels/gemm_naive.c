// Naive SGEMM: C = A·B, row-major f32, one thread per element of C, each a dot
// product of a row of A with a column of B read straight from global memory.
// Splittable over rows of C: a is the chunk's `count` rows of A (count × k), c the
// chunk's `count` rows of C (count × n), b all of B (k × n); `offset` (the chunk's
// first row) is unused. Correct for any launch shape: threads walk the count × n
// elements with a grid-stride loop over linear thread ids.
KERNEL void gemm_naive(GLOBAL const float* RESTRICT a,
                       GLOBAL const float* RESTRICT b,
                       GLOBAL float* RESTRICT c,
                       const uint n,
                       const uint k,
                       const uint offset,
                       const uint count) {
    (void)offset;
    ulong bs = (ulong)LOCAL_SIZE(0) * LOCAL_SIZE(1) * LOCAL_SIZE(2);
    ulong tid = LOCAL_ID(0) + (ulong)LOCAL_SIZE(0) * (LOCAL_ID(1) + (ulong)LOCAL_SIZE(1) * LOCAL_ID(2));
    ulong blk = GROUP_ID(0) + (ulong)NUM_GROUPS(0) * (GROUP_ID(1) + (ulong)NUM_GROUPS(1) * GROUP_ID(2));
    ulong threads = bs * NUM_GROUPS(0) * NUM_GROUPS(1) * NUM_GROUPS(2);
    ulong total = (ulong)count * n;
    for (ulong e = blk * bs + tid; e < total; e += threads) {
        ulong row = e / n;
        ulong col = e - row * n;
        GLOBAL const float* ar = a + row * k;
        float acc = 0.0f;
        for (uint p = 0; p < k; ++p) {
            acc = fmaf(ar[p], b[(ulong)p * n + col], acc);
        }
        c[e] = acc;
    }
}
