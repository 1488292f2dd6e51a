// The "wide" BLAS: a second BLAS for S3Gen's large products (many rows). Intel MKL, which MLX is
// linked with here because it is 2-3x faster than OpenBLAS for T3's two-row products, runs its
// AVX2 kernels on AMD CPUs: 82-87 GFLOP/s a core where OpenBLAS's AVX-512 (SkylakeX) kernels reach
// 145-206 (docs/MLX_CPU.md). OpenBLAS is loaded privately (RTLD_LOCAL) with the core chosen from
// the CPU's features, and always runs one thread: callers split rows over the stream's threads.
// Not loaded where MLX's BLAS is MKL on an Intel CPU (MKL's own fast path; not measured here).
// CHATTERBOX_WIDE_BLAS: a library path, or 0 for MLX's BLAS everywhere (then the same math, slower);
// CHATTERBOX_WIDE_BLAS_CORE: the OpenBLAS core (machine images may set OPENBLAS_CORETYPE=Haswell
// for other programs: it is not inherited).
#include "wide_blas.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <optional>

#include "common.h"

// the BLAS MLX is linked with (libmlx.so's dependency, found in its load scope)
extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c,
                            int ldc);
// Intel MKL only (weak: absent with other BLAS libraries)
extern "C" int MKL_Get_Max_Threads() __attribute__((weak));

namespace ck {
namespace {

using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                         float, float*, int);

struct WideBlas {
  SgemmFn sgemm = nullptr;
  std::string about;  // the library and its core, or why it is not used
};

const char* openblas_core_for_this_cpu() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return nullptr;  // OpenBLAS's own choice
}

bool intel_cpu() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_is("intel");
#else
  return false;
#endif
}

// setenv for the library's initialisation only (OpenBLAS reads its core and threads when loaded)
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

WideBlas load_wide_blas() {
  WideBlas out;
  const char* setting = std::getenv("CHATTERBOX_WIDE_BLAS");
  std::string path = setting && *setting ? setting : "libopenblas.so.0";
  if (path == "0") {
    out.about = "off (CHATTERBOX_WIDE_BLAS=0)";
    return out;
  }
  if (!(setting && *setting) && MKL_Get_Max_Threads && intel_cpu()) {
    out.about = "not used: MLX's BLAS is Intel MKL on an Intel CPU (MKL's own AVX-512 kernels there)";
    return out;
  }
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  bool already_loaded = lib != nullptr;
  const char* core_setting = std::getenv("CHATTERBOX_WIDE_BLAS_CORE");  // else OPENBLAS_CORETYPE is overridden
  const char* core = core_setting && *core_setting ? core_setting : openblas_core_for_this_cpu();
  if (!lib) {
    ScopedEnv core_env("OPENBLAS_CORETYPE", core), threads_env("OPENBLAS_NUM_THREADS", "1");
    lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  }
  if (!lib) {
    out.about = "not loaded (" + path + ": " + dlerror() + ")";
    return out;
  }
  auto sgemm = reinterpret_cast<SgemmFn>(dlsym(lib, "cblas_sgemm"));
  auto set_threads = reinterpret_cast<void (*)(int)>(dlsym(lib, "openblas_set_num_threads"));
  auto corename = reinterpret_cast<const char* (*)()>(dlsym(lib, "openblas_get_corename"));
  if (!sgemm || !set_threads) {
    out.about = "not used (" + path + " is not OpenBLAS: no cblas_sgemm / openblas_set_num_threads)";
    return out;
  }
  set_threads(1);
  out.sgemm = sgemm;
  out.about = path + ", core " + (corename ? corename() : "?") +
              (already_loaded ? " (already loaded: its core is the process's)" : "");
  return out;
}

const WideBlas& wide_blas() {
  static const WideBlas blas = load_wide_blas();
  return blas;
}

}  // namespace

void sgemm(bool wide, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const WideBlas& blas = wide_blas();
  if (wide && blas.sgemm)
    blas.sgemm(kRowMajor, kNoTrans, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
  else
    cblas_sgemm(kRowMajor, kNoTrans, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
}

int wide_threads(bool wide, int64_t rows) {
  if (!wide || !wide_blas().sgemm) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(stream_threads(), rows / 64)));
}

void add_bias_rows(float* y, const float* bias, int64_t rows, int64_t n) {
  if (bias)
    for (int64_t r = 0; r < rows; ++r, y += n)
      for (int64_t j = 0; j < n; ++j) y[j] += bias[j];
}

bool wide_blas_loaded() { return wide_blas().sgemm != nullptr; }

const std::string& wide_blas_about() { return wide_blas().about; }

}  // namespace ck
