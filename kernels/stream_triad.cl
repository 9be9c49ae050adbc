// Bandwidth calibration (STREAM triad): a[i] = b[i] + s * c[i] for the chunk's
// items i in [0, count): 12 bytes and 2 flops per item. Splittable convention:
// a, b and c are the chunk's slices; work-items past `count` do nothing.
__kernel void stream_triad(__global float* restrict a,
                           __global const float* restrict b,
                           __global const float* restrict c,
                           const float s,
                           const uint offset,
                           const uint count) {
    (void)offset;
    uint i = get_global_id(0);
    if (i < count) {
        a[i] = fma(s, c[i], b[i]);
    }
}
