// codecllm info MODEL.cllm: the metadata and a per-tensor table.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/progress.h"
#include "format/cllm_reader.h"

namespace cllm::cli {

namespace {

struct InfoArgs {
  std::string model;
  bool json = false, no_verify = false, tensors = true;
};

std::string shape_str(const std::vector<uint64_t>& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) out += (i ? " x " : "") + std::to_string(s[i]);
  return out;
}

// One line for a file made from a quantized GGUF: which types, what the tensors are exact
// to, and the size against the source file.
void print_quantized_source(const CllmFile& f) {
  const nlohmann::json& meta = f.metadata();
  if (!meta.contains("general.source.quantization")) return;
  const double source = meta.value("general.source.file_bytes", 0.0);
  std::printf("source: a quantized GGUF (%s), dequantized to %s on import: the tensors are exact to the dequantized "
              "values; %s, %.2f x the %s source file\n",
              meta["general.source.quantization"].get<std::string>().c_str(),
              meta.value("general.source.dequantized_dtype", std::string("f32")).c_str(),
              format_bytes(static_cast<double>(f.file_size())).c_str(),
              source > 0 ? static_cast<double>(f.file_size()) / source : 0.0, format_bytes(source).c_str());
}

int run_info(const InfoArgs& a) {
  CllmOpenOptions opt;
  opt.verify_checksums = !a.no_verify;
  const CllmFile f = CllmFile::open(a.model, opt);

  if (a.json) {
    nlohmann::json j;
    j["file"] = a.model;
    j["version"] = f.version();
    j["size"] = f.file_size();
    j["metadata"] = f.metadata();
    for (const auto& t : f.tensors())
      j["tensors"].push_back({{"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape},
                              {"codec", tensor_codec_name(t.codec)}, {"tiles", t.tiles.size()},
                              {"raw_bytes", t.raw_bytes()}, {"stored_bytes", t.stored_bytes()}});
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }

  uint64_t raw = 0, stored = 0, tiles = 0;
  for (const auto& t : f.tensors()) {
    raw += t.raw_bytes();
    stored += t.stored_bytes();
    tiles += t.tiles.size();
  }
  std::printf("file: %s\nformat: .cllm v%u, %s, %zu groups, %zu tensors, %llu tiles%s\n", a.model.c_str(), f.version(),
              format_bytes(static_cast<double>(f.file_size())).c_str(), f.groups().size(), f.tensors().size(),
              static_cast<unsigned long long>(tiles), a.no_verify ? " (checksums not verified)" : ", checksums OK");
  std::printf("tensors: %s raw, %s stored (%.2f%%)\n", format_bytes(static_cast<double>(raw)).c_str(),
              format_bytes(static_cast<double>(stored)).c_str(), raw ? 100.0 * static_cast<double>(stored) / static_cast<double>(raw) : 0.0);
  print_quantized_source(f);
  std::printf("\nmetadata:\n");
  for (const auto& [key, value] : f.metadata().items())
    std::printf("  %-44s = %s\n", key.c_str(), value.is_string() ? value.get<std::string>().c_str() : value.dump().c_str());
  if (!a.tensors) return 0;
  std::printf("\n| %-32s | %-5s | %-14s | %-8s | %5s | %10s | %7s |\n", "tensor", "dtype", "shape", "codec", "tiles", "stored", "ratio");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|\n", std::string(34, '-').c_str(), std::string(7, '-').c_str(), std::string(16, '-').c_str(),
              std::string(10, '-').c_str(), std::string(7, '-').c_str(), std::string(12, '-').c_str(), std::string(9, '-').c_str());
  for (const auto& t : f.tensors()) {
    const double ratio = t.raw_bytes() ? 100.0 * static_cast<double>(t.stored_bytes()) / static_cast<double>(t.raw_bytes()) : 0.0;
    std::printf("| %-32s | %-5s | %-14s | %-8s | %5zu | %10s | %6.2f%% |\n", t.name.c_str(), dtype_name(t.dtype),
                shape_str(t.shape).c_str(), tensor_codec_name(t.codec), t.tiles.size(),
                format_bytes(static_cast<double>(t.stored_bytes())).c_str(), ratio);
  }
  return 0;
}

}  // namespace

void register_info(CLI::App& app, Action& action) {
  auto a = std::make_shared<InfoArgs>();
  CLI::App* cmd = app.add_subcommand("info", "Show a .cllm file's metadata and tensors");
  cmd->add_option("model", a->model, "The .cllm file")->required();
  cmd->add_flag("--json", a->json, "Print everything as one JSON object");
  cmd->add_flag("--no-verify", a->no_verify, "Do not check the tiles' checksums");
  cmd->add_flag("!--no-tensors", a->tensors, "Omit the per-tensor table");
  cmd->callback([a, &action] { action = [a] { return run_info(*a); }; });
}

}  // namespace cllm::cli
