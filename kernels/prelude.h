// offload portable-kernel prelude: one C source, compiled as CUDA C (NVRTC) or OpenCL C.
//
// The library prepends a one-line dialect header (`#define OFFLOAD_CUDA 1` or
// `#define OFFLOAD_OPENCL 1`), this prelude, and a `#line 1 "NAME.c"` directive, so
// compiler messages point at the kernel's own lines. A portable kernel uses only:
//
//   KERNEL void name(...)          the entry point (extern "C" __global__ / __kernel)
//   GLOBAL T* RESTRICT p           a buffer parameter (global address space)
//   LOCAL T tile[N];               a static work-group (shared) array, at kernel scope
//   LOCAL_PTR(T) scratch           a `Param::Local` parameter (index it: scratch[i])
//   DEVICE_FN T helper(...)        a helper function
//   GLOBAL_ID(d) LOCAL_ID(d) GROUP_ID(d) LOCAL_SIZE(d) NUM_GROUPS(d) GLOBAL_SIZE(d)
//                                  3-D indices and sizes (d = 0, 1, 2), as uint
//   BARRIER()                      work-group barrier (local and global memory fence)
//   ATOMIC_ADD_I32/U32, ATOMIC_SUB_I32/U32, ATOMIC_MIN_I32/U32, ATOMIC_MAX_I32/U32,
//   ATOMIC_XCHG_I32/U32, ATOMIC_CAS_I32/U32(p, cmp, v), ATOMIC_ADD_F32 (global p),
//   LOCAL_ATOMIC_ADD_F32 (local p) return the old value
//   sqrtf rsqrtf fmaf expf logf powf sinf cosf tanhf fabsf fminf fmaxf floorf ceilf
//                                  f32 math, CUDA spelling
//   FADD_RN(a, b) FMUL_RN(a, b)    f32 add / multiply never contracted into an FMA
//   as_float as_int as_uint        bit casts
//   F2U_SAT_RTZ(f)                 float to uint, rounded toward zero, saturated (NaN -> 0)
//   float2/3/4, make_float2/3/4    vector types and their constructors, CUDA spelling
//   #pragma unroll [N]             accepted by NVRTC and clang-based OpenCL compilers
//   uint ulong uchar ushort        OpenCL type names
//   OFFLOAD_CUDA / OFFLOAD_OPENCL  which dialect is compiling (for tuned paths)
//
// Atomics the dialect lacks (ATOMIC_ADD_F64 on OpenCL) are undeclared names that
// say so in the compiler log.

#if defined(OFFLOAD_CUDA)

typedef unsigned int uint;
typedef unsigned long long ulong;
typedef unsigned char uchar;
typedef unsigned short ushort;

#define KERNEL extern "C" __global__
#define GLOBAL
#define LOCAL __shared__
#define RESTRICT __restrict__
#define DEVICE_FN static __device__ __forceinline__

#define OFFLOAD_PICK(v, d) ((uint)((d) == 0 ? (v).x : (d) == 1 ? (v).y : (v).z))
#define LOCAL_ID(d) OFFLOAD_PICK(threadIdx, d)
#define GROUP_ID(d) OFFLOAD_PICK(blockIdx, d)
#define LOCAL_SIZE(d) OFFLOAD_PICK(blockDim, d)
#define NUM_GROUPS(d) OFFLOAD_PICK(gridDim, d)
#define GLOBAL_ID(d) (GROUP_ID(d) * LOCAL_SIZE(d) + LOCAL_ID(d))
#define GLOBAL_SIZE(d) (NUM_GROUPS(d) * LOCAL_SIZE(d))

#define BARRIER() __syncthreads()

// Dynamic shared memory: every `Param::Local` argument is a 16-byte aligned slice
// of it, passed to the kernel as its byte offset.
extern __shared__ __align__(16) unsigned char offload_dynamic_shared[];
template <typename T> struct offload_local {
    unsigned int offset;
    template <typename I> __device__ __forceinline__ T& operator[](I i) const {
        return reinterpret_cast<T*>(offload_dynamic_shared + offset)[i];
    }
};
#define LOCAL_PTR(T) offload_local<T>

#define ATOMIC_ADD_I32(p, v) atomicAdd((p), (int)(v))
#define ATOMIC_ADD_U32(p, v) atomicAdd((p), (unsigned int)(v))
#define ATOMIC_SUB_I32(p, v) atomicSub((p), (int)(v))
#define ATOMIC_SUB_U32(p, v) atomicSub((p), (unsigned int)(v))
#define ATOMIC_MIN_I32(p, v) atomicMin((p), (int)(v))
#define ATOMIC_MIN_U32(p, v) atomicMin((p), (unsigned int)(v))
#define ATOMIC_MAX_I32(p, v) atomicMax((p), (int)(v))
#define ATOMIC_MAX_U32(p, v) atomicMax((p), (unsigned int)(v))
#define ATOMIC_XCHG_I32(p, v) atomicExch((p), (int)(v))
#define ATOMIC_XCHG_U32(p, v) atomicExch((p), (unsigned int)(v))
#define ATOMIC_CAS_I32(p, cmp, v) atomicCAS((p), (int)(cmp), (int)(v))
#define ATOMIC_CAS_U32(p, cmp, v) atomicCAS((p), (unsigned int)(cmp), (unsigned int)(v))
#define ATOMIC_ADD_F32(p, v) atomicAdd((p), (float)(v))
#define LOCAL_ATOMIC_ADD_F32(p, v) atomicAdd((p), (float)(v))
#define ATOMIC_ADD_F64(p, v) atomicAdd((p), (double)(v))

#define FADD_RN(a, b) __fadd_rn((a), (b))
#define F2U_SAT_RTZ(f) __float2uint_rz(f)
#define FMUL_RN(a, b) __fmul_rn((a), (b))

static __device__ __forceinline__ float as_float(uint u) { return __uint_as_float(u); }
static __device__ __forceinline__ float as_float(int u) { return __int_as_float(u); }
static __device__ __forceinline__ uint as_uint(float f) { return __float_as_uint(f); }
static __device__ __forceinline__ int as_int(float f) { return __float_as_int(f); }

#elif defined(OFFLOAD_OPENCL)

#define KERNEL __kernel
#define GLOBAL __global
#define LOCAL __local
#define RESTRICT restrict
#define DEVICE_FN static inline

#define LOCAL_ID(d) ((uint)get_local_id(d))
#define GROUP_ID(d) ((uint)get_group_id(d))
#define LOCAL_SIZE(d) ((uint)get_local_size(d))
#define NUM_GROUPS(d) ((uint)get_num_groups(d))
#define GLOBAL_ID(d) ((uint)get_global_id(d))
#define GLOBAL_SIZE(d) ((uint)get_global_size(d))

#define BARRIER() barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE)

#define LOCAL_PTR(T) __local T*

#define ATOMIC_ADD_I32(p, v) atomic_add((p), (int)(v))
#define ATOMIC_ADD_U32(p, v) atomic_add((p), (uint)(v))
#define ATOMIC_SUB_I32(p, v) atomic_sub((p), (int)(v))
#define ATOMIC_SUB_U32(p, v) atomic_sub((p), (uint)(v))
#define ATOMIC_MIN_I32(p, v) atomic_min((p), (int)(v))
#define ATOMIC_MIN_U32(p, v) atomic_min((p), (uint)(v))
#define ATOMIC_MAX_I32(p, v) atomic_max((p), (int)(v))
#define ATOMIC_MAX_U32(p, v) atomic_max((p), (uint)(v))
#define ATOMIC_XCHG_I32(p, v) atomic_xchg((p), (int)(v))
#define ATOMIC_XCHG_U32(p, v) atomic_xchg((p), (uint)(v))
#define ATOMIC_CAS_I32(p, cmp, v) atomic_cmpxchg((p), (int)(cmp), (int)(v))
#define ATOMIC_CAS_U32(p, cmp, v) atomic_cmpxchg((p), (uint)(cmp), (uint)(v))

// Float atomic add as a compare-and-swap loop on the bits, once per address space.
#define OFFLOAD_ATOMIC_ADD_F32(SPACE)                                                  \
    static inline float offload_atomic_add_f32_##SPACE(volatile SPACE float* p, float v) { \
        volatile SPACE uint* u = (volatile SPACE uint*)p;                              \
        uint old = *u;                                                                 \
        uint seen;                                                                     \
        do {                                                                           \
            seen = old;                                                                \
            old = atomic_cmpxchg(u, seen, as_uint(as_float(seen) + v));                \
        } while (old != seen);                                                         \
        return as_float(old);                                                          \
    }
OFFLOAD_ATOMIC_ADD_F32(__global)
OFFLOAD_ATOMIC_ADD_F32(__local)
#define ATOMIC_ADD_F32(p, v) offload_atomic_add_f32___global((p), (float)(v))
#define LOCAL_ATOMIC_ADD_F32(p, v) offload_atomic_add_f32___local((p), (float)(v))
#define ATOMIC_ADD_F64(p, v) ATOMIC_ADD_F64_is_not_available_in_the_OpenCL_dialect(p, v)

static inline float offload_fadd_rn(float a, float b) { return a + b; }
static inline float offload_fmul_rn(float a, float b) { return a * b; }
#define FADD_RN(a, b) offload_fadd_rn((a), (b))
#define F2U_SAT_RTZ(f) convert_uint_sat_rtz(f)

#define make_float2(x, y) ((float2)((x), (y)))
#define make_float3(x, y, z) ((float3)((x), (y), (z)))
#define make_float4(x, y, z, w) ((float4)((x), (y), (z), (w)))
#define FMUL_RN(a, b) offload_fmul_rn((a), (b))

#define sqrtf sqrt
#define rsqrtf rsqrt
#define fmaf fma
#define expf exp
#define logf log
#define powf pow
#define sinf sin
#define cosf cos
#define tanhf tanh
#define fabsf fabs
#define fminf fmin
#define fmaxf fmax
#define floorf floor
#define ceilf ceil

#else
#error "offload prelude: define OFFLOAD_CUDA or OFFLOAD_OPENCL before it"
#endif
