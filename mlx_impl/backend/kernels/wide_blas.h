// Matrix products for the kernels: through MLX's BLAS, or through the "wide" BLAS, a second BLAS
// for S3Gen's large products (many rows) loaded by wide_blas.cpp.
#pragma once

#include <cstdint>
#include <string>

namespace ck {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// C = alpha A op(B) + beta C, row-major, A not transposed: through the wide BLAS when `wide` and
// it is loaded (one thread), else through MLX's BLAS (its threads: the stream's setting).
void sgemm(bool wide, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Threads for a wide product of `rows` rows: the stream's, at least 64 rows each.
int wide_threads(bool wide, int64_t rows);

// y (rows, n) += bias (n) on every row (nothing without a bias)
void add_bias_rows(float* y, const float* bias, int64_t rows, int64_t n);

bool wide_blas_loaded();
const std::string& wide_blas_about();  // the library and its core, or why it is not used

}  // namespace ck
