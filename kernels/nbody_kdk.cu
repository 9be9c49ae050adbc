// Leapfrog kick and drift of the chunk's bodies i in [0, count):
//   v += kick * a;  x += drift * v   (x: float4 with mass in w, v: float3, a: float4)
// Splittable convention: pos, vel and acc are the chunk's slices (indexed from 0);
// `offset` is the chunk's first global body (unused). The same operations in the
// same order on every backend (__fmul_rn/__fadd_rn: no contraction into FMA), so
// every device computes the same bits.
extern "C" __global__ void nbody_kdk(float* __restrict__ pos,
                                     float* __restrict__ vel,
                                     const float* __restrict__ acc,
                                     float kick,
                                     float drift,
                                     unsigned int offset,
                                     unsigned int count) {
    (void)offset;
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) {
        for (unsigned int k = 0; k < 3; k++) {
            float v = __fadd_rn(vel[3 * i + k], __fmul_rn(kick, acc[4 * i + k]));
            vel[3 * i + k] = v;
            pos[4 * i + k] = __fadd_rn(pos[4 * i + k], __fmul_rn(drift, v));
        }
    }
}
