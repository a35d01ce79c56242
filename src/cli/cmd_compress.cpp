// codecllm compress INPUT OUT.cllm: import a model (HF folder, llama2.c .bin, GGUF) and write
// it as a .cllm container with entropy-coded weights.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/progress.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "convert/compress.h"

namespace cllm::cli {

namespace {

struct CompressArgs {
  std::string input, output, tokenizer;
  int threads = 0;
  bool force = false, raw = false;
  uint32_t tile_elems = 1u << 20;
};

// A quantized GGUF source, said plainly: what was dequantized, and what "lossless" then means.
void print_quantized_source(const nlohmann::json& meta, const CompressSummary& s) {
  if (!meta.is_object() || !meta.contains("general.source.quantization")) return;
  const double file_bytes = meta.value("general.source.file_bytes", 0.0);
  std::fprintf(stderr,
               "  quantized source: %s in a %s file, dequantized on import to %s;\n"
               "                  the .cllm is exact to those dequantized values (verify compares against them)\n"
               "                  and is %.2f x the size of the quantized file\n",
               meta["general.source.quantization"].get<std::string>().c_str(), format_bytes(file_bytes).c_str(),
               meta.value("general.source.dequantized_dtype", std::string("f32")).c_str(),
               file_bytes > 0 ? static_cast<double>(s.file_bytes) / file_bytes : 0.0);
}

int run_compress(const CompressArgs& a) {
  ImportOptions imp;
  imp.tokenizer_path = a.tokenizer;
  const SourceModel model = with_context("importing '" + a.input + "'", [&] { return open_source_model(a.input, imp); });
  const auto& c = model.config;
  log_info("loaded ", source_format_name(model.format), " model '", a.input, "': ", c.n_layers, " layers, dim ",
           c.dim, ", ", c.n_heads, "/", c.n_kv_heads, " heads, ffn ", c.ffn_dim, ", vocab ", c.vocab_size, ", ",
           model.tensors.size(), " tensors, ", format_bytes(static_cast<double>(model.total_bytes())));
  if (model.tokenizer.kind.empty())
    log_warn("no tokenizer found for '", a.input, "': the .cllm file will have none (use --tokenizer FILE)");

  CompressOptions opt;
  opt.threads = a.threads > 0 ? a.threads : hardware_threads();
  opt.overwrite = a.force;
  opt.tile_elems = a.tile_elems;
  opt.store_raw = a.raw;
  ProgressBar bar("compressing");
  opt.progress = [&](uint64_t done, uint64_t total) { bar.update(done, total); };
  const CompressSummary s = with_context("compressing '" + a.input + "'", [&] { return compress_model(model, a.output, opt); });
  bar.finish();

  const bool quantized = model.extra_metadata.is_object() && model.extra_metadata.contains("general.source.quantization");
  const double bits_per_weight = s.coded_elems ? 8.0 * static_cast<double>(s.float_tile_bytes) / static_cast<double>(s.coded_elems) : 0.0;
  const double bound_per_weight = s.coded_elems ? s.order0_bound_bits / static_cast<double>(s.coded_elems) : 0.0;
  std::fprintf(stderr,
               "compressed '%s' -> '%s' with %d threads in %.2f s (%s/s)\n"
               "  source tensors  %s\n"
               "  output file     %s (%.2f%% of the %s)\n"
               "  weights         %.3f bits/weight; order-0 bound %.3f bits/weight (H = %.3f bits); %+.2f%% over the bound\n",
               a.input.c_str(), a.output.c_str(), opt.threads, s.seconds,
               format_bytes(static_cast<double>(s.source_bytes) / (s.seconds > 0 ? s.seconds : 1)).c_str(),
               format_bytes(static_cast<double>(s.source_bytes)).c_str(), format_bytes(static_cast<double>(s.file_bytes)).c_str(),
               100.0 * static_cast<double>(s.file_bytes) / static_cast<double>(s.source_bytes ? s.source_bytes : 1),
               quantized ? "dequantized tensors" : "source",
               bits_per_weight, bound_per_weight, s.exponent_entropy,
               bound_per_weight > 0 ? 100.0 * (bits_per_weight / bound_per_weight - 1.0) : 0.0);
  print_quantized_source(model.extra_metadata, s);
  return 0;
}

}  // namespace

void register_compress(CLI::App& app, Action& action) {
  auto a = std::make_shared<CompressArgs>();
  CLI::App* cmd = app.add_subcommand("compress", "Compress a model (HF folder, llama2.c .bin or GGUF) into a .cllm file");
  cmd->add_option("input", a->input, "Model to compress: a Hugging Face folder, a llama2.c .bin or a .gguf file")->required();
  cmd->add_option("output", a->output, "The .cllm file to write")->required();
  cmd->add_option("-t,--threads", a->threads, "Encoder threads (0 = all hardware threads)")->default_val(0)->check(CLI::NonNegativeNumber);
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer to embed (SentencePiece .model, llama2.c tokenizer .bin or tokenizer.json); for llama2.c checkpoints")->check(CLI::ExistingFile);
  cmd->add_flag("-f,--force", a->force, "Overwrite the output file if it exists");
  cmd->add_option("--tile-elems", a->tile_elems, "Elements per tile (32768 .. 16777216)")->default_val(1u << 20)->check(CLI::Range(32768u, 1u << 24));
  cmd->add_flag("--raw", a->raw, "Store every tile uncompressed (for testing and comparisons)");
  cmd->callback([a, &action] { action = [a] { return run_compress(*a); }; });
}

}  // namespace cllm::cli
