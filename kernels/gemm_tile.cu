// One tile product of a tiled matrix multiply: C += A · B on t × t tiles, each
// contiguous and row-major (the tile layout of offload::task::to_tiles).
// Item e is element offset + e of the C tile: c[e] += sum_k a[i*t + k] * b[k*t + j]
// with (i, j) = ((offset + e) / t, (offset + e) % t), for e < count. a and b are
// whole tiles (t*t elements, checked); c is the chunk's slice of the C tile.
extern "C" __global__ void gemm_tile(const float* __restrict__ a,
                                     const float* __restrict__ b,
                                     float* __restrict__ c,
                                     unsigned int t,
                                     unsigned int offset,
                                     unsigned int count) {
    unsigned int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= count) {
        return;
    }
    unsigned int g = offset + e;
    unsigned int i = g / t;
    unsigned int j = g - i * t;
    float acc = 0.0f;
    for (unsigned int k = 0; k < t; ++k) {
        acc += a[i * t + k] * b[k * t + j];
    }
    c[e] += acc;
}
