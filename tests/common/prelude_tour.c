// One group's sum through a LOCAL_PTR scratch and a tree, one atomic per group.
KERNEL void group_sum(GLOBAL const float* RESTRICT x,
                      GLOBAL float* RESTRICT total,
                      GLOBAL uint* RESTRICT groups,
                      GLOBAL int* RESTRICT last,
                      LOCAL_PTR(float) scratch,
                      const uint n,
                      const uint slots) {
    (void)slots;
    LOCAL uint seen[1];
    uint lid = LOCAL_ID(0);
    uint i = GLOBAL_ID(0);
    if (lid == 0) {
        seen[0] = 0;
    }
    scratch[lid] = i < n ? x[i] : 0.0f;
    BARRIER();
    for (uint s = LOCAL_SIZE(0) / 2; s > 0; s /= 2) {
        if (lid < s) {
            scratch[lid] += scratch[lid + s];
        }
        BARRIER();
    }
    ATOMIC_ADD_U32(&seen[0], 1u);
    BARRIER();
    if (lid == 0) {
        ATOMIC_ADD_F32(total, scratch[0]);
        ATOMIC_ADD_U32(groups, seen[0] == LOCAL_SIZE(0) ? 1u : 1000u);
        ATOMIC_MAX_I32(last, (int)GROUP_ID(0));
    }
}

// Each thread writes a value computed from its 3-D coordinates.
KERNEL void ids3(GLOBAL float* RESTRICT out, const uint n) {
    uint x = GLOBAL_ID(0), y = GLOBAL_ID(1), z = GLOBAL_ID(2);
    uint w = GLOBAL_SIZE(0), h = GLOBAL_SIZE(1);
    uint i = x + w * (y + h * z);
    if (i < n && w == LOCAL_SIZE(0) * NUM_GROUPS(0) && x == GROUP_ID(0) * LOCAL_SIZE(0) + LOCAL_ID(0)) {
        out[i] = fmaf((float)x, 2.0f, sqrtf((float)(y * y))) + fmaxf((float)z, 0.5f) * 100.0f;
    }
}
