// Tree reduction through local memory: each work-group sums its grid-stride share of
// x[0..n) into scratch (one value per work-item), folds scratch pairwise behind
// barriers, and writes its partial sum to partial[group] (extent: one per group).
// Any block shape and size: the work-group's items are linear, x fastest, and a
// block that is not a power of two first folds its tail onto the largest power of
// two below it. Launch with `Arg::local(threads per block)` for scratch.
KERNEL void reduce_tree(GLOBAL const float* RESTRICT x,
                        GLOBAL float* RESTRICT partial,
                        LOCAL_PTR(float) scratch,
                        const uint n) {
    uint bs = LOCAL_SIZE(0) * LOCAL_SIZE(1) * LOCAL_SIZE(2);
    uint t = LOCAL_ID(0) + LOCAL_SIZE(0) * (LOCAL_ID(1) + LOCAL_SIZE(1) * LOCAL_ID(2));
    ulong g = GROUP_ID(0) + (ulong)NUM_GROUPS(0) * (GROUP_ID(1) + (ulong)NUM_GROUPS(1) * GROUP_ID(2));
    ulong all = (ulong)bs * NUM_GROUPS(0) * NUM_GROUPS(1) * NUM_GROUPS(2);
    float acc = 0.0f;
    for (ulong i = g * bs + t; i < n; i += all) {
        acc += x[i];
    }
    scratch[t] = acc;
    BARRIER();
    uint p = 1;
    while (p * 2 <= bs) {
        p *= 2;
    }
    if (t < bs - p) {
        scratch[t] += scratch[t + p];
    }
    BARRIER();
    for (uint s = p / 2; s > 0; s /= 2) {
        if (t < s) {
            scratch[t] += scratch[t + s];
        }
        BARRIER();
    }
    if (t == 0) {
        partial[g] = scratch[0];
    }
}
