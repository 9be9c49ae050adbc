// An empty kernel: measures launch overhead.
extern "C" __global__ void noop(unsigned int offset, unsigned int count) {
    (void)offset;
    (void)count;
}
