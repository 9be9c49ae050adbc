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
// exactly as the CPU version does, so every backend gives the same bits (a
// multiply after the sum leaves nothing to contract into a multiply-add).
// Reads stay inside in[0, in_len): an element whose neighbours are missing from
// `in` (the launch check refuses such arguments) is written as NaN.
//
// Shaped for CPU OpenCL devices too: every work-item takes the same path
// (selects, and loads under a condition), so PoCL's work-group vectorizer turns
// the work-items into SIMD lanes. The row and column come from a float
// reciprocal estimate of g / width (converted with saturation, so never out of
// range) corrected by one step each way, exact while the quotient is below 2^21
// (its error is then at most 0.375): grids of up to 2^21 rows (and widths below
// 2^30) take it; taller ones divide (a branch on arguments only, the same for
// every work-item). Whatever the row and column, loads are bounded by `inside`.
KERNEL void jacobi(GLOBAL const float* RESTRICT in,
                   GLOBAL float* RESTRICT out,
                   const uint width,
                   const uint lead,
                   const uint in_len,
                   const uint row0,
                   const uint rows,
                   const uint offset,
                   const uint count) {
    uint i = GLOBAL_ID(0);
    if (i < count && width != 0) {
        uint g = offset + i;
        uint q, c;
        if (rows <= (1u << 21) && width < (1u << 30)) {
            q = F2U_SAT_RTZ((float)g * (1.0f / (float)width));
            int rem = (int)(g - q * width);
            q = rem < 0 ? q - 1u : q;
            rem = rem < 0 ? rem + (int)width : rem;
            q = rem >= (int)width ? q + 1u : q;
            rem = rem >= (int)width ? rem - (int)width : rem;
            c = (uint)rem;
        } else {
            q = g / width;
            c = g - q * width;
        }
        uint r = row0 + q;
        uint j = lead + g;
        bool border = r == 0 || r + 1 >= rows || c == 0 || c + 1 == width;
        // All four neighbours (and the element) inside in[0, in_len).
        bool inside = j >= width && j < in_len && in_len - j > width;
        float v;
        if (inside) {
            float n = in[j - width];
            float s = in[j + width];
            float e = in[j + 1];
            float w = in[j - 1];
            float centre = in[j];
            v = border ? centre : 0.25f * (((n + s) + e) + w);
        } else {
            v = (j < in_len && border) ? in[j] : as_float(0x7fc00000u);
        }
        out[i] = v;
    }
}
