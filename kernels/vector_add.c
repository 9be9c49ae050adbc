// c[i] = a[i] + b[i] for the chunk's items i in [0, count).
// Splittable convention: a, b and c are the chunk's slices (indexed from 0);
// `offset` is the chunk's first global item (unused here). Launch at least
// `count` threads in total; threads past `count` do nothing (same on every backend).
KERNEL void vector_add(GLOBAL const float* RESTRICT a,
                       GLOBAL const float* RESTRICT b,
                       GLOBAL float* RESTRICT c,
                       const uint offset,
                       const uint count) {
    (void)offset;
    uint i = GLOBAL_ID(0);
    if (i < count) {
        c[i] = a[i] + b[i];
    }
}
