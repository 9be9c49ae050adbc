// FMA-peak calibration: each work-item runs 8 independent chains of `iters` fused
// multiply-adds (acc = acc * x + y), 16 * iters flops, and writes the sum of its
// chains to out[i] so nothing is optimised away. Launch at least `count`
// work-items; items past `count` do nothing. `offset` is the chunk's first item.
// (Host-CPU OpenCL devices build kernels/host_cpu/fma_peak.cl instead, whose float16
// lanes fill the CPU's vector units.)
KERNEL void fma_peak(GLOBAL float* RESTRICT out,
                     const float x,
                     const float y,
                     const uint iters,
                     const uint offset,
                     const uint count) {
    uint i = GLOBAL_ID(0);
    if (i >= count) {
        return;
    }
    float s = (float)((offset + i) & 1023u) * 1e-4f;
    float a0 = s, a1 = s + 0.01f, a2 = s + 0.02f, a3 = s + 0.03f;
    float a4 = s + 0.04f, a5 = s + 0.05f, a6 = s + 0.06f, a7 = s + 0.07f;
#pragma unroll 4
    for (uint k = 0; k < iters; ++k) {
        a0 = fmaf(a0, x, y);
        a1 = fmaf(a1, x, y);
        a2 = fmaf(a2, x, y);
        a3 = fmaf(a3, x, y);
        a4 = fmaf(a4, x, y);
        a5 = fmaf(a5, x, y);
        a6 = fmaf(a6, x, y);
        a7 = fmaf(a7, x, y);
    }
    out[i] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
}
