// c[i] = a[i] + b[i] for the chunk's items i in [0, count).
// Splittable convention: a, b and c are the chunk's slices (indexed from 0);
// `offset` is the chunk's first global item (unused here). Launch at least
// `count` work-items in total; items past `count` do nothing (same on every backend).
__kernel void vector_add(__global const float* restrict a,
                         __global const float* restrict b,
                         __global float* restrict c,
                         const uint offset,
                         const uint count) {
    (void)offset;
    uint i = get_global_id(0);
    if (i < count) {
        c[i] = a[i] + b[i];
    }
}
