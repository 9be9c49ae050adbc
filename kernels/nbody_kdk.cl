#pragma OPENCL FP_CONTRACT OFF
// Leapfrog kick and drift of the chunk's bodies i in [0, count):
//   v += kick * a;  x += drift * v   (x: float4 with mass in w, v: float3, a: float4)
// Splittable convention: pos, vel and acc are the chunk's slices (indexed from 0);
// `offset` is the chunk's first global body (unused). The same operations in the
// same order on every backend, so every device computes the same bits.
__kernel void nbody_kdk(__global float* restrict pos,
                        __global float* restrict vel,
                        __global const float* restrict acc,
                        const float kick,
                        const float drift,
                        const uint offset,
                        const uint count) {
    (void)offset;
    uint i = get_global_id(0);
    if (i < count) {
        for (uint k = 0; k < 3; k++) {
            float v = vel[3 * i + k] + kick * acc[4 * i + k];
            vel[3 * i + k] = v;
            pos[4 * i + k] = pos[4 * i + k] + drift * v;
        }
    }
}
