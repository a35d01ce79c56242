#include "convert/synth.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "common/dtype.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "common/units.h"
#include "convert/safetensors.h"
#include "convert/spm_model_builder.h"
#include "convert/synth_tensors.h"
#include "text/bpe_tokenizer.h"

namespace cllm {

std::vector<ModelPreset> model_presets() {
  std::vector<ModelPreset> out;
  for (const char* text : model_preset_json()) {
    const auto j = nlohmann::json::parse(text);
    ModelPreset p;
    p.name = j.at("name").get<std::string>();
    p.description = j.value("description", "");
    p.weight_std = j.value("weight_std", 0.02);
    p.config = j.at("config");
    out.push_back(std::move(p));
  }
  return out;
}

ModelPreset find_model_preset(const std::string& name) {
  std::string known;
  for (auto& p : model_presets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  fail("unknown preset '", name, "' (known: ", known, ")");
}

namespace {

// A SentencePiece BPE vocabulary of the preset's size: unk, BOS, EOS, the 256 byte pieces,
// then letter strings. Enough for tokenize and run to work; the text it produces is nonsense.
std::vector<uint8_t> synth_tokenizer(int vocab, int bos, int eos) {
  SpmModelSpec spec;
  spec.bos_id = bos;
  spec.eos_id = eos;
  spec.pieces.resize(static_cast<size_t>(vocab));
  std::vector<bool> used(static_cast<size_t>(vocab), false);
  auto put = [&](int id, std::string piece, SpmPieceType type) {
    CLLM_CHECK(id >= 0 && id < vocab, "synth: token id ", id, " outside the vocabulary of ", vocab);
    spec.pieces[static_cast<size_t>(id)] = {std::move(piece), 0.0f, type};
    used[static_cast<size_t>(id)] = true;
  };
  put(0, "<unk>", SpmPieceType::unknown);
  put(bos, "<s>", SpmPieceType::control);
  put(eos, "</s>", SpmPieceType::control);
  // The first free ids get the 256 byte pieces, the rest words over a-z ("▁a".."▁z", "▁aa",
  // ...), scored so that shorter (earlier) words win merges.
  static const char* hex = "0123456789ABCDEF";
  uint64_t k = 0;
  for (int id = 0, byte = 0; id < vocab; ++id) {
    if (used[static_cast<size_t>(id)]) continue;
    if (byte < 256) {
      put(id, std::string("<0x") + hex[byte >> 4] + hex[byte & 15] + ">", SpmPieceType::byte);
      ++byte;
      continue;
    }
    std::string word;
    for (uint64_t v = k + 1; v > 0; v = (v - 1) / 26) word.insert(word.begin(), static_cast<char>('a' + (v - 1) % 26));
    put(id, "\xE2\x96\x81" + word, SpmPieceType::normal);
    spec.pieces[static_cast<size_t>(id)].score = -static_cast<float>(k++);
  }
  return build_spm_model(spec);
}

void write_text(const std::string& path, const std::string& text, bool overwrite) {
  AtomicOutputFile f(path, overwrite);
  f.write(text.data(), text.size());
  f.commit();
}

constexpr int kLlama3Vocab = 128256;

// Copies dir's tokenizer.json (and tokenizer_config.json) byte for byte, after checking that
// the tokenizer loads and fits the vocabulary.
void copy_hf_tokenizer(const std::string& dir, const std::string& out_dir, int vocab, bool overwrite) {
  const std::string json = path_join(dir, "tokenizer.json");
  if (!path_exists(json)) fail("synth: '", dir, "' has no tokenizer.json to copy");
  const std::string text = read_text_file(json);
  const BpeSpec spec = bpe_spec_from_hf_json(text, "'" + json + "'");
  if (static_cast<int>(spec.tokens.size()) > vocab)
    fail("synth: '", json, "' has ", spec.tokens.size(), " tokens, more than the preset's vocabulary of ", vocab);
  write_text(path_join(out_dir, "tokenizer.json"), text, overwrite);
  const std::string config = path_join(dir, "tokenizer_config.json");
  if (path_exists(config)) write_text(path_join(out_dir, "tokenizer_config.json"), read_text_file(config), overwrite);
}

}  // namespace

nlohmann::json synth_config(const ModelPreset& preset, const SynthOptions& opt) {
  nlohmann::json config = preset.config;
  if (opt.layers >= 0) {
    CLLM_CHECK(opt.layers >= 1 && opt.layers <= config.at("num_hidden_layers").get<int>(), "synth: --layers ",
               opt.layers, " outside 1..", config.at("num_hidden_layers").get<int>(), " for preset '", preset.name, "'");
    config["num_hidden_layers"] = opt.layers;
  }
  return config;
}

namespace {

void make_output_dir(const std::string& out_dir) {
  if (!path_exists(out_dir) && ::mkdir(out_dir.c_str(), 0755) != 0)
    fail("creating '", out_dir, "': ", errno_string(errno));
  CLLM_CHECK(is_directory(out_dir), "'", out_dir, "' exists and is not a directory");
}

// Which tensors (indices into the list) go to which shard file, and the bytes of all of them.
struct ShardPlan {
  std::vector<std::vector<size_t>> shards;
  uint64_t total_bytes = 0;
};

// Shards of about shard_bytes, tensors kept whole, in HF's order.
ShardPlan plan_shards(const std::vector<SynthTensor>& tensors, uint64_t shard_bytes) {
  ShardPlan plan;
  plan.shards.resize(1);
  uint64_t in_shard = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t bytes = tensors[i].elems() * 2;
    if (in_shard > 0 && in_shard + bytes > shard_bytes) {
      plan.shards.emplace_back();
      in_shard = 0;
    }
    plan.shards.back().push_back(i);
    in_shard += bytes;
    plan.total_bytes += bytes;
  }
  return plan;
}

// HF's names: "model.safetensors" alone, else "model-00001-of-00003.safetensors".
std::string shard_file_name(size_t s, size_t n_shards) {
  return n_shards == 1 ? "model.safetensors"
      : cat("model-", std::string(5 - std::min<size_t>(5, std::to_string(s + 1).size()), '0'), s + 1, "-of-",
            std::string(5 - std::min<size_t>(5, std::to_string(n_shards).size()), '0'), n_shards, ".safetensors");
}

// Generates tensor i's values into buf, a block of kSynthBlockElems per task.
void generate_tensor(ThreadPool& pool, std::vector<uint16_t>& buf, const SynthTensor& t, size_t i, uint64_t seed,
                     double weight_std) {
  const uint64_t n = t.elems();
  buf.resize(n);
  pool.parallel_for((n + kSynthBlockElems - 1) / kSynthBlockElems, [&](size_t b) {
    const uint64_t first = b * kSynthBlockElems;
    fill_synth_values(t, i, seed, weight_std, first, std::min(kSynthBlockElems, n - first), buf.data() + first);
  });
}

// Writes every shard file; returns the weight map (tensor name -> file) for the index.
nlohmann::json write_shards(const std::vector<SynthTensor>& tensors, const ShardPlan& plan, const ModelPreset& preset,
                            const std::string& out_dir, const SynthOptions& opt, SynthSummary& sum) {
  ThreadPool pool(opt.threads > 0 ? opt.threads : hardware_threads());
  nlohmann::json weight_map = nlohmann::json::object();
  std::vector<uint16_t> buf;
  uint64_t done = 0;
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    const std::string file = shard_file_name(s, plan.shards.size());
    SafetensorsWriter w(path_join(out_dir, file), opt.overwrite);
    w.add_metadata("format", "pt");
    for (size_t i : plan.shards[s]) {
      w.add_tensor(tensors[i].name, DType::BF16, tensors[i].shape);
      weight_map[tensors[i].name] = file;
    }
    for (size_t i : plan.shards[s]) {
      const size_t n = tensors[i].elems();
      generate_tensor(pool, buf, tensors[i], i, opt.seed, preset.weight_std);
      w.write(buf.data(), n * 2);
      sum.parameters += n;
      done += n * 2;
      if (opt.progress) opt.progress(done, plan.total_bytes);
    }
    w.commit();
  }
  return weight_map;
}

// Llama 3's tokenizer.json when given or found (for its vocabulary), else a synthetic
// SentencePiece model; returns what was written, for the summary.
std::string write_tokenizer(const nlohmann::json& config, const std::string& out_dir, const SynthOptions& opt) {
  const int vocab = config.at("vocab_size").get<int>();
  const std::string tok_dir = !opt.tokenizer_dir.empty() ? opt.tokenizer_dir
                              : vocab == kLlama3Vocab     ? find_llama3_tokenizer_dir()
                                                          : "";
  // The other kind's files, left by an earlier synth into this folder, would be read instead.
  for (const char* stale : tok_dir.empty() ? std::vector<const char*>{"tokenizer.json", "tokenizer_config.json"}
                                           : std::vector<const char*>{"tokenizer.model"}) {
    const std::string path = path_join(out_dir, stale);
    if (path_exists(path) && std::remove(path.c_str()) != 0) fail("removing '", path, "': ", errno_string(errno));
  }
  if (!tok_dir.empty()) {
    copy_hf_tokenizer(tok_dir, out_dir, vocab, opt.overwrite);
    return "tokenizer.json from '" + tok_dir + "'";
  }
  if (vocab == kLlama3Vocab)
    log_warn("synth: Llama 3's tokenizer.json was not found (pass --tokenizer-dir DIR, or set CLLM_SHARED_MODELS): "
             "writing a synthetic SentencePiece tokenizer instead");
  const auto tok = synth_tokenizer(vocab, config.value("bos_token_id", 1), config.value("eos_token_id", 2));
  AtomicOutputFile f(path_join(out_dir, "tokenizer.model"), opt.overwrite);
  f.write(tok.data(), tok.size());
  f.commit();
  return "synthetic SentencePiece";
}

}  // namespace

std::string find_llama3_tokenizer_dir() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("CLLM_SHARED_MODELS")) candidates.push_back(path_join(env, "llama3.1"));
  candidates.push_back("../shared/models/llama3.1");
  for (const auto& dir : candidates)
    if (path_exists(path_join(dir, "tokenizer.json"))) return dir;
  return "";
}

void check_free_space(const std::string& dir, uint64_t needed, const std::string& what) {
  struct statvfs fs {};
  if (::statvfs(dir.c_str(), &fs) != 0) fail("'", dir, "': ", errno_string(errno));
  const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  if (free_bytes < needed)
    fail("'", dir, "' has ", format_gib(free_bytes), " free, but ", what, " need ",
         format_gib(needed), ": free space or write elsewhere");
}

std::string write_synth_side_files(const ModelPreset& preset, const nlohmann::json& config, const std::string& dir,
                                   const SynthOptions& opt) {
  nlohmann::json marked = config;
  marked["codecllm_synth"] = {{"preset", preset.name}, {"seed", opt.seed}, {"weight_std", preset.weight_std}};
  write_text(path_join(dir, "config.json"), marked.dump(2) + "\n", opt.overwrite);
  return write_tokenizer(config, dir, opt);
}

SynthSummary synth_model(const ModelPreset& preset, const std::string& out_dir, const SynthOptions& opt) {
  Timer timer;
  const nlohmann::json config = synth_config(preset, opt);
  const auto tensors = synth_tensors(config);
  const ShardPlan plan = plan_shards(tensors, opt.shard_bytes);
  make_output_dir(out_dir);
  uint64_t replaced = 0;  // --force: shards of the same names give their space back
  for (size_t i = 0; i < plan.shards.size(); ++i) {
    const std::string shard = path_join(out_dir, shard_file_name(i, plan.shards.size()));
    if (path_exists(shard)) replaced += file_size(shard);
  }
  check_free_space(out_dir, plan.total_bytes - std::min(replaced, plan.total_bytes), "the safetensors shards");

  SynthSummary sum;
  const nlohmann::json weight_map = write_shards(tensors, plan, preset, out_dir, opt, sum);
  sum.shards = static_cast<int>(plan.shards.size());
  sum.bytes = plan.total_bytes;
  sum.file_bytes = plan.total_bytes;

  if (plan.shards.size() > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", plan.total_bytes}}}, {"weight_map", weight_map}};
    write_text(path_join(out_dir, "model.safetensors.index.json"), index.dump(2) + "\n", opt.overwrite);
  }
  sum.tokenizer = write_synth_side_files(preset, config, out_dir, opt);
  sum.seconds = timer.seconds();
  return sum;
}

}  // namespace cllm
