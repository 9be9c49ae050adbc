// All-pairs gravitational accelerations with softening (GPU Gems 3, ch. 31):
//
//   a_i = sum_j m_j * r_ij / (|r_ij|^2 + eps2)^(3/2),   r_ij = p_j - p_i
//
// Splittable convention: `pos` holds all n bodies as float4 (x, y, z, mass) and is
// broadcast to every chunk; `acc` is the chunk's slice of `count` float4 results,
// indexed from 0 for body `offset + i` (w is written as 0). `eps2` must be > 0 for
// the self-interaction (r = 0) to contribute exactly 0.
//
// Tiling: each block stages NBODY_TILE bodies at a time in static shared memory,
// synchronises, and every thread accumulates the whole tile (unrolled inner loop,
// rsqrtf). Correct for any block size (threads beyond NBODY_TILE only skip the
// staging; blocks of up to NBODY_TILE = 256 threads are the intended use), any
// grid (blocks stride over the chunk) and any n (the last tile is partial).
// 20 flops per interaction by the usual convention.

#define NBODY_TILE 256

__device__ __forceinline__ float3 nbody_interact(float4 bi, float4 bj, float3 a, float eps2) {
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

extern "C" __global__ void nbody(const float4* __restrict__ pos,
                                 float4* __restrict__ acc,
                                 unsigned int n,
                                 float eps2,
                                 unsigned int offset,
                                 unsigned int count) {
    __shared__ float4 tile[NBODY_TILE];
    const unsigned int tid = threadIdx.x;
    const unsigned int bdim = blockDim.x;
    // The loop bound depends only on the block, so every thread of a block runs the
    // same iterations and reaches every __syncthreads().
    for (unsigned int base = blockIdx.x * bdim; base < count; base += gridDim.x * bdim) {
        const unsigned int i = base + tid;
        const bool active = i < count && offset + i < n;
        float4 bi = active ? pos[offset + i] : make_float4(0.f, 0.f, 0.f, 0.f);
        float3 a = make_float3(0.f, 0.f, 0.f);
        for (unsigned int t0 = 0; t0 < n; t0 += NBODY_TILE) {
            for (unsigned int k = tid; k < NBODY_TILE; k += bdim) {
                unsigned int j = t0 + k;
                tile[k] = j < n ? pos[j] : make_float4(0.f, 0.f, 0.f, 0.f);
            }
            __syncthreads();
            const unsigned int len = min(NBODY_TILE, n - t0);
            if (len == NBODY_TILE) {
#pragma unroll 16
                for (unsigned int k = 0; k < NBODY_TILE; ++k) {
                    a = nbody_interact(bi, tile[k], a, eps2);
                }
            } else {
#pragma unroll 4
                for (unsigned int k = 0; k < len; ++k) {
                    a = nbody_interact(bi, tile[k], a, eps2);
                }
            }
            __syncthreads();
        }
        if (active) {
            acc[i] = make_float4(a.x, a.y, a.z, 0.f);
        }
    }
}
