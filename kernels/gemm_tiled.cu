// Tiled SGEMM: C = A·B, row-major f32. Each block computes 16 × 16 tiles of C,
// staging 16 × 16 tiles of A and B in shared memory so every global element is
// read once per tile instead of once per output.
// Splittable over rows of C: a is the chunk's `count` rows of A (count × k), c the
// chunk's `count` rows of C (count × n), b all of B (k × n); `offset` is unused.
// Correct for any launch shape: blocks walk the tiles with a grid-stride loop, and
// a block of fewer than 256 threads covers a tile in several passes (256 threads
// per block, one output each, is the intended shape).
#define GEMM_TS 16

extern "C" __global__ void gemm_tiled(const float* __restrict__ a,
                                      const float* __restrict__ b,
                                      float* __restrict__ c,
                                      unsigned int n,
                                      unsigned int k,
                                      unsigned int offset,
                                      unsigned int count) {
    (void)offset;
    __shared__ float as[GEMM_TS][GEMM_TS];
    __shared__ float bs_[GEMM_TS][GEMM_TS + 1];
    unsigned int bs = blockDim.x * blockDim.y * blockDim.z;
    unsigned int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    size_t blk = blockIdx.x + (size_t)gridDim.x * (blockIdx.y + (size_t)gridDim.y * blockIdx.z);
    size_t blocks = (size_t)gridDim.x * gridDim.y * gridDim.z;
    size_t tiles_x = (n + GEMM_TS - 1) / GEMM_TS;
    size_t tiles = tiles_x * (((size_t)count + GEMM_TS - 1) / GEMM_TS);
    for (size_t t = blk; t < tiles; t += blocks) {
        size_t row0 = (t / tiles_x) * GEMM_TS;
        size_t col0 = (t % tiles_x) * GEMM_TS;
        for (unsigned int v0 = 0; v0 < GEMM_TS * GEMM_TS; v0 += bs) {
            unsigned int v = v0 + tid;
            unsigned int ty = v / GEMM_TS;
            unsigned int tx = v % GEMM_TS;
            float acc = 0.0f;
            for (size_t p0 = 0; p0 < k; p0 += GEMM_TS) {
                for (unsigned int i = tid; i < GEMM_TS * GEMM_TS; i += bs) {
                    unsigned int r = i / GEMM_TS, q = i % GEMM_TS;
                    size_t ar = row0 + r, ap = p0 + q;
                    as[r][q] = (ar < count && ap < k) ? a[ar * k + ap] : 0.0f;
                    size_t bp = p0 + r, bc = col0 + q;
                    bs_[r][q] = (bp < k && bc < n) ? b[bp * n + bc] : 0.0f;
                }
                __syncthreads();
                if (v < GEMM_TS * GEMM_TS) {
#pragma unroll
                    for (unsigned int q = 0; q < GEMM_TS; ++q) {
                        acc = fmaf(as[ty][q], bs_[q][tx], acc);
                    }
                }
                __syncthreads();
            }
            size_t row = row0 + ty, col = col0 + tx;
            if (v < GEMM_TS * GEMM_TS && row < count && col < n) {
                c[row * n + col] = acc;
            }
        }
    }
}
