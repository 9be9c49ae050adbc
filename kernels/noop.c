// An empty kernel: measures launch overhead.
KERNEL void noop(const uint offset, const uint count) {
    (void)offset;
    (void)count;
}
