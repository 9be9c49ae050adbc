// All-pairs gravitational accelerations with softening (GPU Gems 3, ch. 31):
//
//   a_i = sum_j m_j * r_ij / (|r_ij|^2 + eps2)^(3/2),   r_ij = p_j - p_i
//
// Splittable convention: `pos` holds all n bodies as float4 (x, y, z, mass) and is
// broadcast to every chunk; `acc` is the chunk's slice of `count` float4 results,
// indexed from 0 for body `offset + i` (w is written as 0). `eps2` must be > 0 for
// the self-interaction (r = 0) to contribute exactly 0.
//
// Tiling: each work-group stages NBODY_TILE bodies at a time in static local
// (shared) memory, waits at a barrier, and every work-item accumulates the whole
// tile (unrolled inner loop, rsqrtf). Correct for any work-group size (items beyond
// NBODY_TILE only skip the staging; groups of up to NBODY_TILE = 256 items are the
// intended use), any number of groups (groups stride over the chunk) and any n
// (the last tile is partial). Every work-item reaches every barrier, including
// items past the end of the chunk. 20 flops per interaction by the usual convention.
// (Host-CPU OpenCL devices build kernels/host_cpu/nbody.cl instead, shaped for SIMD
// lanes rather than work-groups.)

#define NBODY_TILE 256

DEVICE_FN float3 nbody_interact(float4 bi, float4 bj, float3 a, float eps2) {
    float dx = bj.x - bi.x;
    float dy = bj.y - bi.y;
    float dz = bj.z - bi.z;
    float r2 = fmaf(dx, dx, fmaf(dy, dy, fmaf(dz, dz, eps2)));
    float inv = rsqrtf(r2);
    float s = bj.w * inv * inv * inv;
    a.x = fmaf(dx, s, a.x);
    a.y = fmaf(dy, s, a.y);
    a.z = fmaf(dz, s, a.z);
    return a;
}

KERNEL void nbody(GLOBAL const float4* RESTRICT pos,
                  GLOBAL float4* RESTRICT acc,
                  const uint n,
                  const float eps2,
                  const uint offset,
                  const uint count) {
    LOCAL float4 tile[NBODY_TILE];
    const uint tid = LOCAL_ID(0);
    const uint bdim = LOCAL_SIZE(0);
    const uint stride = NUM_GROUPS(0) * bdim;
    // The loop bound depends only on the group, so every work-item of a group runs
    // the same iterations and reaches every barrier.
    for (uint base = GROUP_ID(0) * bdim; base < count; base += stride) {
        const uint i = base + tid;
        const bool active = i < count && offset + i < n;
        float4 bi = active ? pos[offset + i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        float3 a = make_float3(0.0f, 0.0f, 0.0f);
        for (uint t0 = 0; t0 < n; t0 += NBODY_TILE) {
            for (uint k = tid; k < NBODY_TILE; k += bdim) {
                uint j = t0 + k;
                tile[k] = j < n ? pos[j] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
            BARRIER();
            const uint len = min((uint)NBODY_TILE, n - t0);
            if (len == NBODY_TILE) {
#pragma unroll 16
                for (uint k = 0; k < NBODY_TILE; ++k) {
                    a = nbody_interact(bi, tile[k], a, eps2);
                }
            } else {
#pragma unroll 4
                for (uint k = 0; k < len; ++k) {
                    a = nbody_interact(bi, tile[k], a, eps2);
                }
            }
            BARRIER();
        }
        if (active) {
            acc[i] = make_float4(a.x, a.y, a.z, 0.0f);
        }
    }
}
