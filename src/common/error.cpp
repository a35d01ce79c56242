#include "common/error.h"

#include <cstring>

namespace cllm {

std::string errno_string(int err) { return std::strerror(err); }

}  // namespace cllm
