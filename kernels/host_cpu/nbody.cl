// CPU-shaped variant of kernels/nbody.cl for OpenCL devices that compute on host
// cores (PoCL, CPU runtimes): the same entry point, signature and contract.
//
//   a_i = sum_j m_j * r_ij / (|r_ij|^2 + eps2)^(3/2),   r_ij = p_j - p_i
//
// `pos` holds all n bodies as float4 (x, y, z, mass), broadcast to every chunk;
// `acc` is the chunk's slice of `count` float4 results for bodies offset + i
// (w = 0). eps2 > 0, so the self-interaction contributes exactly 0.
//
// Shaped for PoCL's vectorizer, which runs the work-items of a group in SIMD
// lanes when the kernel is a simple loop whose bounds are the same for every
// work-item (it then places its work-item loop innermost):
// * no local memory and no barriers: every work-item walks all n sources straight
//   from `pos` (16 bytes a body, it stays in cache), each one a broadcast;
// * loop bounds independent of the work-item: the launch strides over the chunk
//   from 0 and work-items past its end compute on a clamped body and only skip
//   the store;
// * sources read as scalars through a float pointer, and no explicit fma(): a
//   float4 load or an fma() call in the loop stops PoCL from vectorizing it
//   (measured: ~5 GFLOP/s instead of ~100 on two cores). The kernel is built with
//   -cl-fast-relaxed-math, which contracts the products and sums into FMAs, and
//   uses native_rsqrt, as the hand-written reference in `bench -- nbody` does.
// Correct for any work-group size, any grid and any n. 20 flops per interaction
// by the usual convention.

__kernel void nbody(__global const float4* restrict pos,
                    __global float4* restrict acc,
                    const uint n,
                    const float eps2,
                    const uint offset,
                    const uint count) {
    __global const float* restrict p = (__global const float*)pos;
    const uint gid = (uint)get_global_id(0);
    const uint stride = (uint)get_global_size(0);
    for (uint base = 0; base < count; base += stride) {
        const uint i = base + gid;
        // count > 0 here, and offset + count <= n is checked at launch; the
        // clamp keeps the load inside pos whatever the arguments.
        const uint b = min(offset + min(i, count - 1), n - 1);
        const float xi = p[4 * b];
        const float yi = p[4 * b + 1];
        const float zi = p[4 * b + 2];
        float ax = 0.0f;
        float ay = 0.0f;
        float az = 0.0f;
        for (uint j = 0; j < n; ++j) {
            const float dx = p[4 * j] - xi;
            const float dy = p[4 * j + 1] - yi;
            const float dz = p[4 * j + 2] - zi;
            const float r2 = dx * dx + dy * dy + dz * dz + eps2;
            const float inv = native_rsqrt(r2);
            const float s = p[4 * j + 3] * inv * inv * inv;
            ax += dx * s;
            ay += dy * s;
            az += dz * s;
        }
        if (i < count) {
            acc[i] = (float4)(ax, ay, az, 0.0f);
        }
    }
}
