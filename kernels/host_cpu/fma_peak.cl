// FMA-peak calibration for host-CPU OpenCL devices (same signature and results as
// kernels/fma_peak.cl, within rounding). A host-CPU compiler such as PoCL leaves a
// loop of scalar fma() chains unvectorized, so here each work-item takes 16
// consecutive items as the lanes of float16 vectors: work-item g computes items
// 16g .. 16g + 15 (those below `count`), each lane running 8 independent chains
// of `iters` fused multiply-adds, 16 * iters flops per item. Launch at least
// `count` work-items, as for the other version; work-items past count / 16 return
// at once.
__kernel void fma_peak(__global float* restrict out,
                       const float x,
                       const float y,
                       const uint iters,
                       const uint offset,
                       const uint count) {
    uint base = get_global_id(0) * 16u;
    if (base >= count) {
        return;
    }
    const float16 lane = (float16)(0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f,
                                   8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f);
    // ((offset + i) & 1023) * 1e-4 per lane, i = base + lane.
    uint first = (offset + base) & 1023u;
    float16 idx = (float16)((float)first) + lane;
    idx = select(idx, idx - 1024.0f, isgreaterequal(idx, (float16)(1024.0f)));
    float16 s = idx * 1e-4f;
    float16 a0 = s, a1 = s + 0.01f, a2 = s + 0.02f, a3 = s + 0.03f;
    float16 a4 = s + 0.04f, a5 = s + 0.05f, a6 = s + 0.06f, a7 = s + 0.07f;
    float16 xv = (float16)(x), yv = (float16)(y);
    for (uint k = 0; k < iters; ++k) {
        a0 = fma(a0, xv, yv);
        a1 = fma(a1, xv, yv);
        a2 = fma(a2, xv, yv);
        a3 = fma(a3, xv, yv);
        a4 = fma(a4, xv, yv);
        a5 = fma(a5, xv, yv);
        a6 = fma(a6, xv, yv);
        a7 = fma(a7, xv, yv);
    }
    float16 r = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
    float v[16];
    vstore16(r, 0, v);
    for (uint l = 0; l < 16u && base + l < count; ++l) {
        out[base + l] = v[l];
    }
}
