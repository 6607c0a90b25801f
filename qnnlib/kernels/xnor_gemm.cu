// XNOR-popcount GEMM on bit-packed ±1 matrices (loaded by qnnlib/kernels/cuda.py).
//
// A is (M, W) and B is (N, W) uint64 words packed along K (bit j of word w is element
// 64w+j, bit 1 means +1, padding bits 0). Output: either int32 dot products (M, N), or,
// when `thresholds` is non-null, the bits (dot >= thresholds[n]) ^ flip[n] packed along N
// into uint64 (M, ceil(N/64)), the next layer's A.
//
// Both kernels compute a 64 x 64 output tile per block; the tile's 64 columns are exactly
// one output word of the packed epilogue, so a block assembles each word in shared memory
// and no two blocks ever write the same word.

typedef unsigned long long u64;
typedef unsigned int u32;

#define TILE 64

// Epilogue shared by both kernels: one (row, col) result.
__device__ __forceinline__ void store_result(int dot, int row, int col, int M, int N,
                                             int *out_dots, const int *thresholds,
                                             const bool *flip, u64 *row_bits) {
    if (row >= M || col >= N) return;
    if (thresholds == nullptr) {
        out_dots[(size_t)row * N + col] = dot;
    } else if ((dot >= thresholds[col]) != flip[col]) {
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
        out_bits[(size_t)(row0 + r) * out_words + blockIdx.x] = row_bits[r];
}

// ---------------------------------------------------------------------------------------
// (1) CUDA cores: XOR + __popcll. 256 threads, each owns a 4 x 4 block of outputs spread
// with stride 16 so that a warp reads 16 distinct consecutive B words (no bank conflicts)
// and broadcasts A words. K is walked in chunks of KW words staged in shared memory.
// Launch: grid (ceil(N/64), ceil(M/64)), block 256.
#define KW 8

extern "C" __global__ void __launch_bounds__(256)
xnor_gemm_cuda_core(const u64 *__restrict__ a, const u64 *__restrict__ b, int M, int N,
                    int W, int k, const int *__restrict__ thresholds,
                    const bool *__restrict__ flip, int *__restrict__ out_dots,
                    u64 *__restrict__ out_bits) {
    __shared__ u64 a_tile[KW][TILE];
    __shared__ u64 b_tile[KW][TILE];
    __shared__ u64 row_bits[TILE];

    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
    int mismatches[4][4] = {};
    if (thresholds != nullptr) clear_row_bits(row_bits);

    for (int w0 = 0; w0 < W; w0 += KW) {
        // Out-of-range words and rows load as 0 in both operands: XOR 0, popcount 0.
        for (int i = threadIdx.x; i < KW * TILE; i += blockDim.x) {
            int r = i / KW, w = i % KW;
            bool word_ok = w0 + w < W;
            a_tile[w][r] = (word_ok && row0 + r < M) ? a[(size_t)(row0 + r) * W + w0 + w] : 0ull;
            b_tile[w][r] = (word_ok && col0 + r < N) ? b[(size_t)(col0 + r) * W + w0 + w] : 0ull;
        }
        __syncthreads();
#pragma unroll
        for (int w = 0; w < KW; ++w) {
            u64 x[4], y[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                x[i] = a_tile[w][ty + 16 * i];
                y[i] = b_tile[w][tx + 16 * i];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mismatches[i][j] += __popcll(x[i] ^ y[j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
            store_result(k - 2 * mismatches[i][j], row0 + ty + 16 * i, col0 + tx + 16 * j, M,
                         N, out_dots, thresholds, flip, row_bits);
    if (thresholds != nullptr) {
        __syncthreads();
        flush_row_bits(row_bits, row0, M, (N + TILE - 1) / TILE, out_bits);
    }
}

// ---------------------------------------------------------------------------------------
// Row popcounts for the tensor-core identity below. Launch: ceil(rows/256) x 256.
extern "C" __global__ void row_popcount(const u64 *__restrict__ words, int rows, int W,
                                        int *__restrict__ counts) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    int count = 0;
    for (int w = 0; w < W; ++w) count += __popcll(words[(size_t)r * W + w]);
    counts[r] = count;
}

// ---------------------------------------------------------------------------------------
// (2) Tensor cores (sm_80+): mma.m16n8k256 b1 with AND + popc (the only form Hopper
// implements natively). With a, b the bit vectors of two ±1 rows:
//   dot = 4*popc(a & b) - 2*popc(a) - 2*popc(b) + k
// 128 threads = 4 warps in a 2 x 2 grid, each warp a 32 x 32 sub-tile = 2 x 4 mma tiles.
// K is staged KS words (4 x 256 bits) at a time; zero words pad K to a multiple of 256.
// Launch: grid (ceil(N/64), ceil(M/64)), block 128.
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
                                           int rows, int W, int w0) {
    for (int i = threadIdx.x; i < TILE * KS; i += blockDim.x) {
        int r = i / KS, w = i % KS;
        u64 word = (row0 + r < rows && w0 + w < W) ? src[(size_t)(row0 + r) * W + w0 + w] : 0ull;
        // Little-endian halves keep bit order: u32 2w holds bits 0..31 of word w.
        tile[r * STAGE_U32 + 2 * w] = (u32)word;
        tile[r * STAGE_U32 + 2 * w + 1] = (u32)(word >> 32);
    }
}

extern "C" __global__ void __launch_bounds__(128)
xnor_gemm_tensor_core(const u64 *__restrict__ a, const u64 *__restrict__ b, int M, int N,
                      int W, int k, const int *__restrict__ a_popc,
                      const int *__restrict__ b_popc, const int *__restrict__ thresholds,
                      const bool *__restrict__ flip, int *__restrict__ out_dots,
                      u64 *__restrict__ out_bits) {
    __shared__ u32 a_tile[TILE * STAGE_U32];
    __shared__ u32 b_tile[TILE * STAGE_U32];
    __shared__ u64 row_bits[TILE];

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int group = lane / 4, in_group = lane % 4;  // PTX fragment coordinates
    const int warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;
    const int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
    int acc[2][4][4] = {};
    if (thresholds != nullptr) clear_row_bits(row_bits);

    for (int w0 = 0; w0 < W; w0 += KS) {
        load_stage(a_tile, a, row0, M, W, w0);
        load_stage(b_tile, b, col0, N, W, w0);
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
                int dot = 4 * acc[i][j][e] - 2 * a_popc[row] - 2 * b_popc[col] + k;
                store_result(dot, row, col, M, N, out_dots, thresholds, flip, row_bits);
            }
    if (thresholds != nullptr) {
        __syncthreads();
        flush_row_bits(row_bits, row0, M, (N + TILE - 1) / TILE, out_bits);
    }
}
#endif
