// Unoptimised baselines (loaded by qnnlib/kernels/cuda.py). The paper's 23x compared
// its XNOR kernel with an unoptimised float GEMM. These two are that comparison, like for like: one thread per
// output, operands read straight from global memory, no tiling, no shared memory, no
// register blocking. Both read the second operand transposed, (K, N) floats and (W, N)
// words, so consecutive threads (consecutive columns) read consecutive addresses.
// Launch: ceil(M*N/256) x 256 (1-D, so no grid dimension limits M).
// Packed words as in xnor_gemm.cu: bit j of word w is element 64w+j, padding masked.

typedef unsigned long long u64;

// C (M, N) = A (M, K) @ BT (K, N), float32.
extern "C" __global__ void naive_sgemm(const float *__restrict__ a,
                                       const float *__restrict__ bt, int M, int N, int K,
                                       float *__restrict__ c) {
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)M * N) return;
    int row = index / N, col = index % N;
    float sum = 0.0f;
    for (int i = 0; i < K; ++i) sum += a[(size_t)row * K + i] * bt[(size_t)i * N + col];
    c[index] = sum;
}

// C (M, N) = k - 2 popc(A ^ B) for A (M, W) and BT (W, N) packed words (padding masked).
extern "C" __global__ void naive_xnor_gemm(const u64 *__restrict__ a,
                                           const u64 *__restrict__ bt, int M, int N, int W,
                                           int k, int *__restrict__ c) {
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)M * N) return;
    int row = index / N, col = index % N;
    const u64 last_mask = (k % 64 == 0) ? ~0ull : ((1ull << (k % 64)) - 1ull);
    int mismatches = 0;
    for (int w = 0; w < W; ++w) {
        u64 x = a[(size_t)row * W + w] ^ bt[(size_t)w * N + col];
        mismatches += __popcll(w == W - 1 ? x & last_mask : x);
    }
    c[index] = k - 2 * mismatches;
}
