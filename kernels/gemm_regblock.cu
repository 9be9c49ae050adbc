// Register-blocked SGEMM: C = A·B, row-major f32. Each block computes 64 × 64
// tiles of C with 256 threads, each thread holding a 4 × 4 block of outputs in
// registers, so every value read from shared memory feeds four multiply-adds.
// A (transposed) and B are staged 16 columns / rows at a time in shared memory.
// Splittable over rows of C: a is the chunk's `count` rows of A (count × k), c the
// chunk's `count` rows of C (count × n), b all of B (k × n); `offset` is unused.
// Correct for any launch shape: blocks walk the tiles with a grid-stride loop, and
// a block of fewer than 256 threads covers a tile in several passes (256 threads
// per block is the intended shape).
#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16
#define GEMM_T 4
#define GEMM_VT 256

extern "C" __global__ void gemm_regblock(const float* __restrict__ a,
                                         const float* __restrict__ b,
                                         float* __restrict__ c,
                                         unsigned int n,
                                         unsigned int k,
                                         unsigned int offset,
                                         unsigned int count) {
    (void)offset;
    __shared__ float as[GEMM_BK][GEMM_BM + 4];
    __shared__ float bs_[GEMM_BK][GEMM_BN];
    unsigned int bs = blockDim.x * blockDim.y * blockDim.z;
    unsigned int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    size_t blk = blockIdx.x + (size_t)gridDim.x * (blockIdx.y + (size_t)gridDim.y * blockIdx.z);
    size_t blocks = (size_t)gridDim.x * gridDim.y * gridDim.z;
    size_t tiles_x = (n + GEMM_BN - 1) / GEMM_BN;
    size_t tiles = tiles_x * (((size_t)count + GEMM_BM - 1) / GEMM_BM);
    for (size_t t = blk; t < tiles; t += blocks) {
        size_t row0 = (t / tiles_x) * GEMM_BM;
        size_t col0 = (t % tiles_x) * GEMM_BN;
        for (unsigned int v0 = 0; v0 < GEMM_VT; v0 += bs) {
            unsigned int v = v0 + tid;
            // Thread v owns rows ty + 16 i and columns tx + 16 j (i, j < 4).
            unsigned int ty = (v / 16) % 16;
            unsigned int tx = v % 16;
            float acc[GEMM_T][GEMM_T];
#pragma unroll
            for (int i = 0; i < GEMM_T; ++i)
#pragma unroll
                for (int j = 0; j < GEMM_T; ++j) acc[i][j] = 0.0f;
            for (size_t p0 = 0; p0 < k; p0 += GEMM_BK) {
                for (unsigned int i = tid; i < GEMM_BM * GEMM_BK; i += bs) {
                    unsigned int r = i / GEMM_BK, q = i % GEMM_BK;
                    size_t ar = row0 + r, ap = p0 + q;
                    as[q][r] = (ar < count && ap < k) ? a[ar * k + ap] : 0.0f;
                }
                for (unsigned int i = tid; i < GEMM_BK * GEMM_BN; i += bs) {
                    unsigned int r = i / GEMM_BN, q = i % GEMM_BN;
                    size_t bp = p0 + r, bc = col0 + q;
                    bs_[r][q] = (bp < k && bc < n) ? b[bp * n + bc] : 0.0f;
                }
                __syncthreads();
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
                __syncthreads();
            }
            if (v < GEMM_VT) {
#pragma unroll
                for (int i = 0; i < GEMM_T; ++i) {
                    size_t row = row0 + ty + 16 * i;
#pragma unroll
                    for (int j = 0; j < GEMM_T; ++j) {
                        size_t col = col0 + tx + 16 * j;
                        if (row < count && col < n) c[row * n + col] = acc[i][j];
                    }
                }
            }
        }
    }
}
