#include "runtime/device_select.h"

#include "common/error.h"
#include "cuda/device_info.h"

namespace cllm {

const char* device_name(Device d) { return d == Device::cuda ? "cuda" : "cpu"; }

Device select_device(const std::string& choice) {
  if (choice == "cpu") return Device::cpu;
  if (choice == "cuda" || choice == "auto") {
    if (cuda::device_count() > 0) return Device::cuda;
    if (choice == "auto") return Device::cpu;
    fail_with({Remedy::cpu_device, ""}, "no CUDA device (", cuda::why_unavailable(), ")");
  }
  fail("unknown device '", choice, "' (expected cpu, cuda or auto)");
}

}  // namespace cllm
