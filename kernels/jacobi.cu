// One Jacobi-2D sweep (5-point stencil, f32) over a row-major grid of `width`
// columns and `rows` rows, for a band of rows with halos.
//
// `in` holds the band's read range: its owned rows plus the halo rows around
// them (and possibly a few elements before, where a view had to start on an
// aligned address); `in_len` elements. The band's owned elements start at
// element `lead` of `in`, and its first owned row is grid row `row0`.
// Splittable convention: thread i computes owned element g = offset + i
// (grid row row0 + g / width, column g % width) into out[i], for i < count.
//
// Border elements (first or last grid row or column) keep their value
// (Dirichlet boundary): out = in. Interior elements get the mean of their four
// neighbours, summed in the fixed order ((N + S) + E) + W and scaled by 0.25f,
// exactly as the OpenCL and CPU versions do, so every backend gives the same
// bits (no multiply-add to contract). Reads stay inside in[0, in_len): an
// element whose neighbours are missing from `in` (the launch check refuses such
// arguments) is written as NaN.
extern "C" __global__ void jacobi(const float* __restrict__ in,
                                  float* __restrict__ out,
                                  unsigned int width,
                                  unsigned int lead,
                                  unsigned int in_len,
                                  unsigned int row0,
                                  unsigned int rows,
                                  unsigned int offset,
                                  unsigned int count) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count || width == 0) {
        return;
    }
    unsigned int g = offset + i;
    unsigned int r = row0 + g / width;
    unsigned int c = g % width;
    unsigned int j = lead + g;
    if (j >= in_len) {
        out[i] = __int_as_float(0x7fc00000);
        return;
    }
    if (r == 0 || r + 1 >= rows || c == 0 || c + 1 == width) {
        out[i] = in[j];
        return;
    }
    if (j < width || in_len - j <= width) {
        out[i] = __int_as_float(0x7fc00000);
        return;
    }
    float n = in[j - width];
    float s = in[j + width];
    float e = in[j + 1];
    float w = in[j - 1];
    out[i] = 0.25f * (((n + s) + e) + w);
}
