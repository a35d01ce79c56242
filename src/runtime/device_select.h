// Chooses where a model runs from the user's --device choice and what this machine has.
#pragma once

#include <string>

namespace cllm {

enum class Device { cpu, cuda };

// Parses "cpu", "cuda" or "auto" (auto = cuda when a device is usable, else cpu).
// Throws cllm::Error for "cuda" when no usable CUDA device exists:
// "no CUDA device (<reason>): use --device cpu".
Device select_device(const std::string& choice);
const char* device_name(Device d);

}  // namespace cllm
