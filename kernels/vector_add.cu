// c[i] = a[i] + b[i] for the chunk's items i in [0, count).
// Splittable convention: a, b and c are the chunk's slices (indexed from 0);
// `offset` is the chunk's first global item (unused here). Launch at least
// `count` threads in total; threads past `count` do nothing (same on every backend).
extern "C" __global__ void vector_add(const float* __restrict__ a,
                                      const float* __restrict__ b,
                                      float* __restrict__ c,
                                      unsigned int offset,
                                      unsigned int count) {
    (void)offset;
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) {
        c[i] = a[i] + b[i];
    }
}
