// synth_model_cllm: a preset's model generated straight into a .cllm file. The HF importer
// reads config.json and the tokenizer from a small side folder (so that config, tokenizer and
// metadata come from the same code as `compress FOLDER`), and compress_model encodes tensors
// whose tiles are generated on demand inside its encoder tasks.
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/error.h"
#include "common/file_io.h"
#include "common/timer.h"
#include "convert/compress.h"
#include "convert/import_util.h"
#include "convert/source_model.h"
#include "convert/synth.h"
#include "convert/synth_tensors.h"

namespace cllm {

namespace {

// "<out>.synth-XXXXXX": a folder next to the output for config.json and the tokenizer, removed
// with everything in it when this goes out of scope.
class SideFolder {
 public:
  explicit SideFolder(const std::string& out_path) {
    std::string pattern = out_path + ".synth-XXXXXX";
    if (!::mkdtemp(pattern.data()))
      fail("creating a temporary folder next to '", out_path, "': ", errno_string(errno));
    path_ = pattern;
  }
  ~SideFolder() {
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model"})
      std::remove(path_join(path_, f).c_str());
    ::rmdir(path_.c_str());
  }
  SideFolder(const SideFolder&) = delete;
  SideFolder& operator=(const SideFolder&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string parent_dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// The preset's tensors in HF naming, each filling its values tile by tile.
std::vector<SourceTensor> generated_tensors(const std::vector<SynthTensor>& tensors, const ModelPreset& preset,
                                            uint64_t seed) {
  std::vector<SourceTensor> out;
  for (size_t i = 0; i < tensors.size(); ++i) {
    SourceTensor s;
    s.name = tensors[i].name;
    s.dtype = DType::BF16;
    s.shape = tensors[i].shape;
    s.size = tensors[i].elems() * 2;
    s.fill = [t = tensors[i], i, seed, std = preset.weight_std](uint64_t first, uint64_t n, uint8_t* dst) {
      fill_synth_values(t, i, seed, std, first, n, reinterpret_cast<uint16_t*>(dst));
    };
    out.push_back(std::move(s));
  }
  return out;
}

// The model as the importer describes the folder synth_model would write, but with
// provenance saying what it is: general.name the output's stem, general.source.format
// "synth", general.source.path the command's model arguments.
SourceModel describe_model(const ModelPreset& preset, const nlohmann::json& config, const std::string& out_path,
                           const SynthOptions& opt, SynthSummary& sum) {
  SideFolder side(out_path);
  SynthOptions side_opt = opt;
  side_opt.overwrite = false;  // a fresh folder
  sum.tokenizer = write_synth_side_files(preset, config, side.path(), side_opt);
  SourceModel m = import_hf_folder_with_tensors(side.path(), {}, generated_tensors(synth_tensors(config), preset, opt.seed));
  m.path = out_path;
  m.extra_metadata["general.name"] = path_stem(out_path);
  m.extra_metadata["general.source.format"] = "synth";
  std::string how = cat("codecllm synth --preset ", preset.name, " --seed ", opt.seed);
  if (opt.layers >= 0) how += cat(" --layers ", opt.layers);
  m.extra_metadata["general.source.path"] = how;
  return m;
}

}  // namespace

SynthSummary synth_model_cllm(const ModelPreset& preset, const std::string& out_path, const SynthOptions& opt) {
  Timer timer;
  if (!opt.overwrite && path_exists(out_path)) fail("'", out_path, "' already exists: refusing to overwrite it (use --force)");
  if (is_directory(out_path)) fail("'", out_path, "' is a folder: give a .cllm file name");
  const nlohmann::json config = synth_config(preset, opt);
  SynthSummary sum;
  for (const auto& t : synth_tensors(config)) sum.parameters += t.elems();
  sum.bytes = sum.parameters * 2;
  // Sign and mantissa are stored raw (docs/codec.md): at least one byte a weight, whatever
  // the exponents' entropy. A 70B needs ~70 GB at least, ~95 GB in practice.
  check_free_space(parent_dir(out_path), sum.parameters, "the weights' sign and mantissa bits alone");

  const SourceModel m = describe_model(preset, config, out_path, opt, sum);
  CompressOptions copt;
  copt.threads = opt.threads;
  copt.overwrite = opt.overwrite;
  copt.tile_elems = opt.tile_elems;
  copt.progress = opt.progress;
  const CompressSummary cs = compress_model(m, out_path, copt);
  sum.file_bytes = cs.file_bytes;
  sum.shards = 1;
  sum.bits_per_weight = cs.coded_elems ? 8.0 * static_cast<double>(cs.float_tile_bytes) / static_cast<double>(cs.coded_elems) : 0;
  sum.seconds = timer.seconds();
  return sum;
}

}  // namespace cllm
