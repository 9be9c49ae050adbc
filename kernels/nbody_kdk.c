// Leapfrog kick and drift of the chunk's bodies i in [0, count):
//   v += kick * a;  x += drift * v   (x: float4 with mass in w, v: float3, a: float4)
// Splittable convention: pos, vel and acc are the chunk's slices (indexed from 0);
// `offset` is the chunk's first global body (unused). The same operations in the
// same order on every backend (FMUL_RN / FADD_RN: never contracted into an FMA),
// so every device computes the same bits.
KERNEL void nbody_kdk(GLOBAL float* RESTRICT pos,
                      GLOBAL float* RESTRICT vel,
                      GLOBAL const float* RESTRICT acc,
                      const float kick,
                      const float drift,
                      const uint offset,
                      const uint count) {
    (void)offset;
    uint i = GLOBAL_ID(0);
    if (i < count) {
        for (uint k = 0; k < 3; k++) {
            float v = FADD_RN(vel[3 * i + k], FMUL_RN(kick, acc[4 * i + k]));
            vel[3 * i + k] = v;
            pos[4 * i + k] = FADD_RN(pos[4 * i + k], FMUL_RN(drift, v));
        }
    }
}
