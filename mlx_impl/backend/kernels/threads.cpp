// The threads of a stream's worker: MLX runs each CPU stream's work on its own thread, and two
// streams busy at once share the cores.
#include <thread>

#include "common.h"
#include "kernels.h"

// Intel MKL only: BLAS threads of the calling thread (weak: absent with other BLAS libraries)
extern "C" int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));
extern "C" int MKL_Get_Max_Threads() __attribute__((weak));

namespace ck {
namespace {

thread_local int t_stream_threads = 0;  // 0: the machine's cores

// The BLAS threads a product queued here would use, read on the stream's thread in queue order
// (-1 without MKL): what one_blas_thread's tests check.
class BlasThreadsProbe : public CpuPrimitive {
 public:
  explicit BlasThreadsProbe(mx::Stream s) : CpuPrimitive(s) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = encoder(inputs, out);
    enc.dispatch([dst = out.data<int32_t>()]() { *dst = MKL_Get_Max_Threads ? MKL_Get_Max_Threads() : -1; });
  }
  const char* name() const override { return "CpuKernelBlasThreadsProbe"; }
};

}  // namespace

size_t stream_threads() {
  return t_stream_threads > 0 ? static_cast<size_t>(t_stream_threads)
                              : std::max(1u, std::thread::hardware_concurrency());
}

// MLX runs each CPU stream's work on its own thread; with two streams busy at once, BLAS calls
// that each start a team of threads oversubscribe the cores (measured: 2-thread MKL products on
// two streams at once are slower than 1-thread ones). The setting is MKL's thread-local one, set
// on the stream's thread in queue order.
bool set_stream_blas_threads(int threads) {
  if (threads < 0) throw std::invalid_argument("set_stream_blas_threads: threads >= 0 expected");
  auto s = cpu_stream("set_stream_blas_threads");
  bool mkl = MKL_Set_Num_Threads_Local != nullptr;
  mx::cpu::get_command_encoder(s).dispatch([threads, mkl]() {
    t_stream_threads = threads;
    if (mkl) MKL_Set_Num_Threads_Local(threads);
  });
  return mkl;
}

mx::array stream_blas_threads() {
  auto s = cpu_stream("stream_blas_threads");
  return mx::array({}, mx::int32, std::make_shared<BlasThreadsProbe>(s), {});
}

}  // namespace ck
