// Bandwidth calibration (STREAM triad): a[i] = b[i] + s * c[i] for the chunk's
// items i in [0, count): 12 bytes and 2 flops per item. Splittable convention:
// a, b and c are the chunk's slices; work-items past `count` do nothing.
KERNEL void stream_triad(GLOBAL float* RESTRICT a,
                         GLOBAL const float* RESTRICT b,
                         GLOBAL const float* RESTRICT c,
                         const float s,
                         const uint offset,
                         const uint count) {
    (void)offset;
    uint i = GLOBAL_ID(0);
    if (i < count) {
        a[i] = fmaf(s, c[i], b[i]);
    }
}
