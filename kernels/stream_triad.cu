// Bandwidth calibration (STREAM triad): a[i] = b[i] + s * c[i] for the chunk's
// items i in [0, count): 12 bytes and 2 flops per item. Splittable convention:
// a, b and c are the chunk's slices; threads past `count` do nothing.
extern "C" __global__ void stream_triad(float* __restrict__ a,
                                        const float* __restrict__ b,
                                        const float* __restrict__ c,
                                        float s,
                                        unsigned int offset,
                                        unsigned int count) {
    (void)offset;
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) {
        a[i] = fmaf(s, c[i], b[i]);
    }
}
