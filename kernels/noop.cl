// An empty kernel: measures launch overhead.
__kernel void noop(const uint offset, const uint count) {
    (void)offset;
    (void)count;
}
