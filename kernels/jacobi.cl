// One Jacobi-2D sweep (5-point stencil, f32) over a row-major grid of `width`
// columns and `rows` rows, for a band of rows with halos.
//
// `in` holds the band's read range: its owned rows plus the halo rows around
// them (and possibly a few elements before, where a view had to start on an
// aligned address); `in_len` elements. The band's owned elements start at
// element `lead` of `in`, and its first owned row is grid row `row0`.
// Splittable convention: work-item i computes owned element g = offset + i
// (grid row row0 + g / width, column g % width) into out[i], for i < count.
//
// Border elements (first or last grid row or column) keep their value
// (Dirichlet boundary): out = in. Interior elements get the mean of their four
// neighbours, summed in the fixed order ((N + S) + E) + W and scaled by 0.25f,
// exactly as the CUDA and CPU versions do, so every backend gives the same bits.
// Reads stay inside in[0, in_len): an element whose neighbours are missing from
// `in` (the launch check refuses such arguments) is written as NaN.
__kernel void jacobi(__global const float* restrict in,
                     __global float* restrict out,
                     const uint width,
                     const uint lead,
                     const uint in_len,
                     const uint row0,
                     const uint rows,
                     const uint offset,
                     const uint count) {
    uint i = get_global_id(0);
    if (i >= count || width == 0) {
        return;
    }
    uint g = offset + i;
    uint r = row0 + g / width;
    uint c = g % width;
    uint j = lead + g;
    if (j >= in_len) {
        out[i] = NAN;
        return;
    }
    if (r == 0 || r + 1 >= rows || c == 0 || c + 1 == width) {
        out[i] = in[j];
        return;
    }
    if (j < width || in_len - j <= width) {
        out[i] = NAN;
        return;
    }
    float n = in[j - width];
    float s = in[j + width];
    float e = in[j + 1];
    float w = in[j - 1];
    out[i] = 0.25f * (((n + s) + e) + w);
}
