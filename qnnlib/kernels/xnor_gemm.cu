// XNOR-popcount GEMM on bit-packed ±1 matrices (loaded by qnnlib/kernels/cuda.py).
//
// A is (M, W) and B is (N, W) uint64 words packed along K (bit j of word w is element
// 64w+j, bit 1 means +1). Padding bits beyond k are masked off when a word is staged, so
// the result never depends on them. Output: either int32 dot products (M, N), or, when
// `thresholds` is non-null, the bits (dot >= thresholds[n]) ^ (flip[n] != 0) packed along
// N into uint64 (M, ceil(N/64)), the next layer's A.
//
// The tiled kernels compute a 64 x 64 output tile per block; the tile's 64 columns are
// exactly one output word of the packed epilogue, so a block assembles each word in
// shared memory and no two blocks ever write the same word.
// Launch grid of every tiled kernel: (ceil(M/64), ceil(N/64)): row tiles on grid x (up to
// 2^31 - 1), column tiles on grid y (up to 65535, i.e. N <= 4,194,240).

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned char u8;

#define TILE 64

// Bits of the last word that belong to K (all bits when 64 divides k).
__device__ __forceinline__ u64 last_word_mask(int k) {
    return (k % 64 == 0) ? ~0ull : ((1ull << (k % 64)) - 1ull);
}

// Word w of a row, 0 outside the matrix, padding bits cleared. Rows are 64-bit: the
// bit-plane kernel's (M * 8, W) view of its planes has more than 2^31 rows from M = 2^28.
__device__ __forceinline__ u64 load_word(const u64 *__restrict__ src, long long row,
                                         long long rows, int w, int W, u64 last_mask) {
    if (row >= rows || w >= W) return 0ull;
    u64 word = src[(size_t)row * W + w];
    return w == W - 1 ? word & last_mask : word;
}

// Index and dot arithmetic that leaves int, as host-and-device functions so that a CPU
// test (tests/test_cuda_sources.py) runs them at the limits the host checks allow.

// Row of plane p of pixel row `row` in the (M * PLANES, W) view of the bit-planes: in 64
// bits, since M * PLANES passes INT_MAX from M = 2^28 (a 16 GiB buffer fits on one GPU).
template <int PLANES>
__host__ __device__ __forceinline__ long long plane_row(int row, int p) {
    return (long long)row * PLANES + p;
}

// t = W_b . x = 2 (x . w+) - sum(x) for uint8 x. |t| <= 255 k fits int32 for every k the
// host allows (cuda.MAX_PIXEL_K = 8,421,504), but 2 (x . w+) alone passes INT_MAX from
// k = 4,210,753: the doubling is done in 64 bits.
__host__ __device__ __forceinline__ int bitplane_dot(int ones, int pixel_sum) {
    return (int)(2ll * ones - pixel_sum);
}

// dot = 4 popc(a & b) - 2 popc(a) - 2 popc(b) + k for two ±1 rows. |dot| <= k fits int32
// (checks.MAX_K = 2^30 - 1), but 4 popc(a & b) passes INT_MAX from k = 2^29: 64 bits.
__host__ __device__ __forceinline__ int and_popc_dot(int both, int a_ones, int b_ones, int k) {
    return (int)(4ll * both - 2ll * a_ones - 2ll * b_ones + k);
}

// Epilogue shared by the tiled kernels: one (row, col) result.
__device__ __forceinline__ void store_result(int dot, int row, int col, int M, int N,
                                             int *out_dots, const int *thresholds,
                                             const u8 *flip, u64 *row_bits) {
    if (row >= M || col >= N) return;
    if (thresholds == nullptr) {
        out_dots[(size_t)row * N + col] = dot;
    } else if ((dot >= thresholds[col]) != (flip[col] != 0)) {
        atomicOr(&row_bits[row % TILE], 1ull << (col % TILE));
    }
}

// Callers reach a __syncthreads() (the K loop has one) before the first atomicOr.
__device__ __forceinline__ void clear_row_bits(u64 *row_bits) {
    for (int r = threadIdx.x; r < TILE; r += blockDim.x) row_bits[r] = 0ull;
}

__device__ __forceinline__ void flush_row_bits(const u64 *row_bits, int row0, int M,
                                               int out_words, u64 *out_bits) {
    for (int r = threadIdx.x; r < TILE && row0 + r < M; r += blockDim.x)
        out_bits[(size_t)(row0 + r) * out_words + blockIdx.y] = row_bits[r];
}

// ---------------------------------------------------------------------------------------
// (1) CUDA cores: XOR + __popcll. 256 threads, each owns a 4 x 4 block of outputs spread
// with stride 16 so that a warp reads 16 distinct consecutive B words (no bank conflicts)
// and broadcasts A words. K is walked in chunks of KW words staged in shared memory.
//
// The same tile also serves the bit-plane first layer of the inference engine
// (PLANES = 8): A holds the 8 bit-planes of uint8 pixels, (M, 8, W), B the 0/1 masks w+
// of the +1 weights, and the tile computes x . w+ = sum_n 2^n popc(plane_n & w+);
// the result is t = 2 (x . w+) - sum(x) = W_b . x (exact), see qnnlib/deploy.py.
#define KW 8
// Row stride of the staging tiles in u64. The store loop has w fastest across threads;
// a half-warp (one 64-bit shared-memory phase) covers 8 words x 2 rows, whose bank pairs
// (w * STAGE_ROW + r) mod 16 = 2w + r are all distinct with a stride of 66 (64 would put
// all 8 words of a row in one bank pair: an 8-way conflict).
#define STAGE_ROW (TILE + 2)

template <int PLANES>
__device__ __forceinline__ void cuda_core_tile(const u64 *__restrict__ a,
                                               const u64 *__restrict__ b, int M, int N, int W,
                                               int k, int (&acc)[4][4]) {
    __shared__ u64 a_tile[PLANES * KW * STAGE_ROW];
    __shared__ u64 b_tile[KW * STAGE_ROW];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int row0 = blockIdx.x * TILE, col0 = blockIdx.y * TILE;
    const u64 last_mask = last_word_mask(k);

    for (int w0 = 0; w0 < W; w0 += KW) {
        // Out-of-range words and rows load as 0 in both operands: XOR 0 / AND 0, popc 0.
        for (int i = threadIdx.x; i < KW * TILE; i += blockDim.x) {
            int r = i / KW, w = i % KW;
            b_tile[w * STAGE_ROW + r] = load_word(b, col0 + r, N, w0 + w, W, last_mask);
#pragma unroll
            for (int p = 0; p < PLANES; ++p) {
                // plane p of row r is row (r * PLANES + p) of the (M * PLANES, W) matrix
                u64 word = row0 + r < M ? load_word(a, plane_row<PLANES>(row0 + r, p),
                                                    (long long)M * PLANES, w0 + w, W, last_mask)
                                        : 0ull;
                a_tile[(p * KW + w) * STAGE_ROW + r] = word;
            }
        }
        __syncthreads();
#pragma unroll
        for (int w = 0; w < KW; ++w) {
            u64 y[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) y[j] = b_tile[w * STAGE_ROW + tx + 16 * j];
#pragma unroll
            for (int p = 0; p < PLANES; ++p)
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    u64 x = a_tile[(p * KW + w) * STAGE_ROW + ty + 16 * i];
#pragma unroll
                    for (int j = 0; j < 4; ++j)
                        acc[i][j] += PLANES == 1 ? __popcll(x ^ y[j])
                                                 : __popcll(x & y[j]) << p;
                }
        }
        __syncthreads();
    }
}

// Epilogue of the CUDA-core tile: value(i, j) -> store_result, then the packed flush.
template <typename Value>
__device__ __forceinline__ void cuda_core_epilogue(Value value, int M, int N,
                                                   const int *thresholds, const u8 *flip,
                                                   int *out_dots, u64 *out_bits,
                                                   u64 *row_bits) {
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int row0 = blockIdx.x * TILE, col0 = blockIdx.y * TILE;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
            store_result(value(i, j, row0 + ty + 16 * i), row0 + ty + 16 * i,
                         col0 + tx + 16 * j, M, N, out_dots, thresholds, flip, row_bits);
    if (thresholds != nullptr) {
        __syncthreads();
        flush_row_bits(row_bits, row0, M, (N + TILE - 1) / TILE, out_bits);
    }
}

// Launch: grid (ceil(M/64), ceil(N/64)), block 256.
extern "C" __global__ void __launch_bounds__(256)
xnor_gemm_cuda_core(const u64 *__restrict__ a, const u64 *__restrict__ b, int M, int N,
                    int W, int k, const int *__restrict__ thresholds,
                    const u8 *__restrict__ flip, int *__restrict__ out_dots,
                    u64 *__restrict__ out_bits) {
    __shared__ u64 row_bits[TILE];
    int mismatches[4][4] = {};
    if (thresholds != nullptr) clear_row_bits(row_bits);
    cuda_core_tile<1>(a, b, M, N, W, k, mismatches);
    cuda_core_epilogue([&](int i, int j, int) { return k - 2 * mismatches[i][j]; }, M, N,
                       thresholds, flip, out_dots, out_bits, row_bits);
}

// Bit-plane first layer: planes (M, 8, W), masks (N, W), pixel_sums (M,); the output is
// t = W_b . x as int32 dots, or its thresholded packed bits. Launch as above.
extern "C" __global__ void __launch_bounds__(256)
bitplane_gemm(const u64 *__restrict__ planes, const u64 *__restrict__ masks, int M, int N,
              int W, int k, const int *__restrict__ pixel_sums,
              const int *__restrict__ thresholds, const u8 *__restrict__ flip,
              int *__restrict__ out_dots, u64 *__restrict__ out_bits) {
    __shared__ u64 row_bits[TILE];
    int ones[4][4] = {};
    if (thresholds != nullptr) clear_row_bits(row_bits);
    cuda_core_tile<8>(planes, masks, M, N, W, k, ones);
    cuda_core_epilogue(
        [&](int i, int j, int row) {
            return row < M ? bitplane_dot(ones[i][j], pixel_sums[row]) : 0;
        },
        M, N, thresholds, flip, out_dots, out_bits, row_bits);
}

// uint8 pixels (M, K) -> bit-planes (M, 8, W): word [m, n, w] holds bit n of pixels
// 64w .. 64w+63 of row m (pixel 64w + j at bit j), zero beyond K. One thread per (m, w).
extern "C" __global__ void pack_bitplanes(const u8 *__restrict__ pixels, int M, int K, int W,
                                          u64 *__restrict__ planes) {
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)M * W) return;
    int m = index / W, w = index % W;
    u64 words[8] = {};
    for (int j = 0; j < 64 && 64 * w + j < K; ++j) {
        u64 pixel = pixels[(size_t)m * K + 64 * w + j];
#pragma unroll
        for (int n = 0; n < 8; ++n) words[n] |= ((pixel >> n) & 1ull) << j;
    }
#pragma unroll
    for (int n = 0; n < 8; ++n) planes[((size_t)m * 8 + n) * W + w] = words[n];
}

// ---------------------------------------------------------------------------------------
// Row popcounts (padding masked) for the tensor-core identity below.
// Launch: ceil(rows/256) x 256.
extern "C" __global__ void row_popcount(const u64 *__restrict__ words, int rows, int W, int k,
                                        int *__restrict__ counts) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const u64 last_mask = last_word_mask(k);
    int count = 0;
    for (int w = 0; w < W; ++w) count += __popcll(load_word(words, r, rows, w, W, last_mask));
    counts[r] = count;
}

// ---------------------------------------------------------------------------------------
// (2) Tensor cores (sm_80+): mma.m16n8k256 b1 with AND + popc (the only form Hopper
// implements natively). With a, b the bit vectors of two ±1 rows:
//   dot = 4*popc(a & b) - 2*popc(a) - 2*popc(b) + k
// 128 threads = 4 warps in a 2 x 2 grid, each warp a 32 x 32 sub-tile = 2 x 4 mma tiles.
// K is staged KS words (4 x 256 bits) at a time; zero words pad K to a multiple of 256.
// Launch: grid (ceil(M/64), ceil(N/64)), block 128.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define KS 16                   // uint64 words per stage
#define STAGE_U32 (2 * KS + 4)  // row stride in u32; +4 makes fragment loads conflict-free

__device__ __forceinline__ void mma_and_popc(int (&c)[4], const u32 (&a)[4], const u32 (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void load_stage(u32 *tile, const u64 *__restrict__ src, int row0,
                                           int rows, int W, int w0, u64 last_mask) {
    for (int i = threadIdx.x; i < TILE * KS; i += blockDim.x) {
        int r = i / KS, w = i % KS;
        // One 64-bit store (STAGE_U32 is even, the tile 8-byte aligned): a half-warp
        // writes 16 consecutive words of one row, 16 distinct bank pairs. Two u32 stores
        // would put 32 threads on the 16 even (then odd) banks: 2-way conflicts.
        // Little-endian: u32 2w holds bits 0..31 of word w, u32 2w+1 bits 32..63.
        *reinterpret_cast<u64 *>(tile + r * STAGE_U32 + 2 * w) =
            load_word(src, row0 + r, rows, w0 + w, W, last_mask);
    }
}

extern "C" __global__ void __launch_bounds__(128)
xnor_gemm_tensor_core(const u64 *__restrict__ a, const u64 *__restrict__ b, int M, int N,
                      int W, int k, const int *__restrict__ a_popc,
                      const int *__restrict__ b_popc, const int *__restrict__ thresholds,
                      const u8 *__restrict__ flip, int *__restrict__ out_dots,
                      u64 *__restrict__ out_bits) {
    __shared__ __align__(16) u32 a_tile[TILE * STAGE_U32];
    __shared__ __align__(16) u32 b_tile[TILE * STAGE_U32];
    __shared__ u64 row_bits[TILE];

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int group = lane / 4, in_group = lane % 4;  // PTX fragment coordinates
    const int warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;
    const int row0 = blockIdx.x * TILE, col0 = blockIdx.y * TILE;
    const u64 last_mask = last_word_mask(k);
    int acc[2][4][4] = {};
    if (thresholds != nullptr) clear_row_bits(row_bits);

    for (int w0 = 0; w0 < W; w0 += KS) {
        load_stage(a_tile, a, row0, M, W, w0, last_mask);
        load_stage(b_tile, b, col0, N, W, w0, last_mask);
        __syncthreads();
#pragma unroll
        for (int step = 0; step < KS / 4; ++step) {
            // A and B fragments use the same K index formula, so loading the same u32
            // offsets for both pairs every bit of a row of A with the matching bit of B.
            const int kbase = step * 8 + in_group;
            u32 af[2][4], bf[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const u32 *top = a_tile + (warp_row + 16 * i + group) * STAGE_U32;
                const u32 *bottom = top + 8 * STAGE_U32;
                af[i][0] = top[kbase];
                af[i][1] = bottom[kbase];
                af[i][2] = top[kbase + 4];
                af[i][3] = bottom[kbase + 4];
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const u32 *col = b_tile + (warp_col + 8 * j + group) * STAGE_U32;
                bf[j][0] = col[kbase];
                bf[j][1] = col[kbase + 4];
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_and_popc(acc[i][j], af[i], bf[j]);
        }
        __syncthreads();
    }

    // Accumulator layout: c0, c1 at (group, 2*in_group + {0,1}); c2, c3 at row + 8.
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int row = row0 + warp_row + 16 * i + group + 8 * (e / 2);
                int col = col0 + warp_col + 8 * j + 2 * in_group + (e % 2);
                if (row >= M || col >= N) continue;
                int dot = and_popc_dot(acc[i][j][e], a_popc[row], b_popc[col], k);
                store_result(dot, row, col, M, N, out_dots, thresholds, flip, row_bits);
            }
    if (thresholds != nullptr) {
        __syncthreads();
        flush_row_bits(row_bits, row0, M, (N + TILE - 1) / TILE, out_bits);
    }
}
#endif
