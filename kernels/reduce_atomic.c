// One-pass atomic reduction: each work-item sums its grid-stride share of x[0..n)
// and adds it to total[global id % lanes] with a float atomic add; the sum of the
// `lanes` totals is the sum of x (more lanes: less contention on one address).
// Any launch shape; total must start at zero (or at the value to add to).
KERNEL void reduce_atomic(GLOBAL const float* RESTRICT x,
                          GLOBAL float* RESTRICT total,
                          const uint n,
                          const uint lanes) {
    uint bs = LOCAL_SIZE(0) * LOCAL_SIZE(1) * LOCAL_SIZE(2);
    uint t = LOCAL_ID(0) + LOCAL_SIZE(0) * (LOCAL_ID(1) + LOCAL_SIZE(1) * LOCAL_ID(2));
    ulong g = GROUP_ID(0) + (ulong)NUM_GROUPS(0) * (GROUP_ID(1) + (ulong)NUM_GROUPS(1) * GROUP_ID(2));
    ulong all = (ulong)bs * NUM_GROUPS(0) * NUM_GROUPS(1) * NUM_GROUPS(2);
    ulong gid = g * bs + t;
    float acc = 0.0f;
    for (ulong i = gid; i < n; i += all) {
        acc += x[i];
    }
    ATOMIC_ADD_F32(&total[gid % lanes], acc);
}
