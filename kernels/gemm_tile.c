// One tile product of a tiled matrix multiply: C += A · B on t × t tiles, each
// contiguous and row-major (the tile layout of offload::task::to_tiles).
// Item e is element offset + e of the C tile: c[e] += sum_k a[i*t + k] * b[k*t + j]
// with (i, j) = ((offset + e) / t, (offset + e) % t), for e < count. a and b are
// whole tiles (t*t elements, checked); c is the chunk's slice of the C tile.
// Consecutive threads walk a row of B: host-CPU OpenCL compilers vectorize
// across them, GPUs coalesce the loads.
KERNEL void gemm_tile(GLOBAL const float* RESTRICT a,
                      GLOBAL const float* RESTRICT b,
                      GLOBAL float* RESTRICT c,
                      const uint t,
                      const uint offset,
                      const uint count) {
    uint e = GLOBAL_ID(0);
    if (e >= count) {
        return;
    }
    uint g = offset + e;
    uint i = g / t;
    uint j = g - i * t;
    float acc = 0.0f;
    for (uint k = 0; k < t; ++k) {
        acc += a[i * t + k] * b[k * t + j];
    }
    c[e] += acc;
}
