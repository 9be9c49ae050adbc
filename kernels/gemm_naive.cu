// Naive SGEMM: C = A·B, row-major f32, one thread per element of C, each a dot
// product of a row of A with a column of B read straight from global memory.
// Splittable over rows of C: a is the chunk's `count` rows of A (count × k), c the
// chunk's `count` rows of C (count × n), b all of B (k × n); `offset` (the chunk's
// first row) is unused. Correct for any launch shape: threads walk the count × n
// elements with a grid-stride loop over linear thread ids.
extern "C" __global__ void gemm_naive(const float* __restrict__ a,
                                      const float* __restrict__ b,
                                      float* __restrict__ c,
                                      unsigned int n,
                                      unsigned int k,
                                      unsigned int offset,
                                      unsigned int count) {
    (void)offset;
    size_t bs = (size_t)blockDim.x * blockDim.y * blockDim.z;
    size_t tid = threadIdx.x + (size_t)blockDim.x * (threadIdx.y + (size_t)blockDim.y * threadIdx.z);
    size_t blk = blockIdx.x + (size_t)gridDim.x * (blockIdx.y + (size_t)gridDim.y * blockIdx.z);
    size_t threads = bs * gridDim.x * gridDim.y * gridDim.z;
    size_t total = (size_t)count * n;
    for (size_t e = blk * bs + tid; e < total; e += threads) {
        size_t row = e / n;
        size_t col = e - row * n;
        const float* ar = a + row * k;
        float acc = 0.0f;
        for (unsigned int p = 0; p < k; ++p) {
            acc = fmaf(ar[p], b[(size_t)p * n + col], acc);
        }
        c[e] = acc;
    }
}
