#include "tests/test_util.h"

#include "common/error.h"

#include <cmath>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "common/dtype.h"
#include "common/file_io.h"
#include "convert/compress.h"
#include "convert/synth.h"
#include "cuda/device_info.h"

namespace cllm::test {

std::string shared_models_dir() {
  if (const char* env = std::getenv("CLLM_SHARED_MODELS")) return env;
  return CLLM_SHARED_MODELS;
}

std::string shared_model(const std::string& name) {
  const std::string p = shared_models_dir() + "/" + name;
  INFO("reference data " << p << " (../shared/models, or set CLLM_SHARED_MODELS)");
  REQUIRE(path_exists(p));
  return p;
}

TempDir::TempDir(const std::string& tag) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/" + tag + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
  path_ = buf.data();
}

TempDir::~TempDir() {
  const std::string cmd = "rm -rf '" + path_ + "'";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "warning: could not remove %s\n", path_.c_str());
}

namespace {
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}
}  // namespace

int run_cli(const std::vector<std::string>& args, std::string* out, std::string* err) {
  TempDir tmp("cllm-cli");
  const char* binary = std::getenv("CLLM_BINARY");  // set where the build tree is elsewhere
  std::string cmd = shell_quote(binary ? binary : CLLM_BINARY);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " >" + tmp.file("out") + " 2>" + tmp.file("err") + " </dev/null";
  const int status = std::system(cmd.c_str());
  if (out) *out = read_text_file(tmp.file("out"));
  if (err) *err = read_text_file(tmp.file("err"));
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::vector<float> gaussian(size_t n, float mean, float stddev, std::mt19937_64& rng) {
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

LlamaConfig small_config() {
  LlamaConfig c;
  c.dim = 48;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.ffn_dim = 80;
  c.vocab_size = 97;
  c.context_length = 64;
  return c;
}

LlamaWeights random_model(const LlamaConfig& c, uint64_t seed, float qk_std, float other_std) {
  std::mt19937_64 rng(seed);
  LlamaWeights w;
  w.config = c;
  const size_t dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.ffn_dim, vocab = c.vocab_size;
  w.token_embd = gaussian(vocab * dim, 0, 1.0f, rng);
  w.output_norm = gaussian(dim, 1, 0.1f, rng);
  if (!c.tie_embeddings) w.output = gaussian(vocab * dim, 0, 0.2f, rng);
  w.layers.resize(c.n_layers);
  for (auto& L : w.layers) {
    L.attn_norm = gaussian(dim, 1, 0.1f, rng);
    L.wq = gaussian(qd * dim, 0, qk_std, rng);
    L.wk = gaussian(kvd * dim, 0, qk_std, rng);
    L.wv = gaussian(kvd * dim, 0, other_std, rng);
    L.wo = gaussian(dim * qd, 0, other_std, rng);
    L.ffn_norm = gaussian(dim, 1, 0.1f, rng);
    L.w_gate = gaussian(ffn * dim, 0, other_std, rng);
    L.w_up = gaussian(ffn * dim, 0, other_std, rng);
    L.w_down = gaussian(dim * ffn, 0, other_std, rng);
    if (architecture_of(c).has(kAttnQBias)) {  // drawn after the weights: a Llama's stay as they were
      L.bq = gaussian(qd, 0, 0.5f, rng);
      L.bk = gaussian(kvd, 0, 0.5f, rng);
      L.bv = gaussian(kvd, 0, 0.5f, rng);
    }
    // (1 + w) norms (Gemma) store weights near 0
    const float norm_mean = architecture_of(c).norm == NormKind::rms_unit_offset ? 0.0f : 1.0f;
    if (architecture_of(c).has(kAttnQNorm)) {
      L.q_norm = gaussian(c.head_dim, norm_mean, 0.2f, rng);
      L.k_norm = gaussian(c.head_dim, norm_mean, 0.2f, rng);
    }
    if (architecture_of(c).has(kAttnPostNorm)) {
      L.attn_post_norm = gaussian(dim, norm_mean, 0.2f, rng);
      L.ffn_post_norm = gaussian(dim, norm_mean, 0.2f, rng);
    }
  }
  return w;
}

std::vector<float> gaussian_f32(size_t n, float stddev, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<uint16_t> gaussian_bf16(size_t n, float stddev, uint64_t seed) {
  const auto f = gaussian_f32(n, stddev, seed);
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = f32_to_bf16(f[i]);
  return v;
}

const char* const kStoriesReference =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, "
    "she saw a big, red ball. She wanted to play with it, but it was too high.\n"
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, "
    "\"I want to play with your ball, but I can't find it.\"\n"
    "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\n"
    "Lily didn't want to help her mom, so she";

std::string compress_stories(const TempDir& dir, bool with_tokenizer) {
  ImportOptions io;
  if (with_tokenizer) io.tokenizer_path = shared_model("tok512.model");
  const SourceModel m = open_source_model(shared_model("stories260K.bin"), io);
  const std::string out = dir.file(with_tokenizer ? "stories260K.cllm" : "notok.cllm");
  CompressOptions co;
  co.threads = 2;
  compress_model(m, out, co);
  return out;
}

std::string synth_tiny_bf16(const TempDir& dir) {
  SynthOptions so;
  so.threads = 2;
  synth_model(find_model_preset("tiny-test"), dir.file("tiny"), so);
  CompressOptions co;
  co.threads = 2;
  compress_model(open_source_model(dir.file("tiny")), dir.file("tiny.cllm"), co);
  return dir.file("tiny.cllm");
}

std::string source_dir() {
  static const std::string dir = [] {
    if (const char* env = std::getenv("CLLM_SOURCE_DIR"); env && *env) return std::string(env);
    std::error_code ec;
    const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec)
      for (std::filesystem::path p = exe.parent_path(); !p.empty(); p = p.parent_path()) {
        if (std::filesystem::is_directory(p / "tests" / "fixtures", ec)) return p.string();
        if (p == p.parent_path()) break;  // the root
      }
    return std::string(CLLM_SOURCE_DIR);
  }();
  return dir;
}

std::string source_path(const std::string& relative) { return source_dir() + "/" + relative; }

std::string fixture_dir(const std::string& name) {
  const std::string p = source_path("tests/fixtures/" + name);
  INFO("test fixture " << p << " (found through $CLLM_SOURCE_DIR, the folders above the test executable, or "
                       << CLLM_SOURCE_DIR << ")");
  REQUIRE(path_exists(p));
  return p;
}

double rel_error(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

int argmax(const float* v, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

void require_gpu_or_skip(const char* test_name) {
  if (cuda::device_count() > 0) return;
  std::printf("SKIPPED [gpu] %s: %s\n", test_name, cuda::why_unavailable().c_str());
  std::fflush(stdout);
  std::_Exit(4);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("expected a cllm::Error");
  return "";
}

std::string python_with(const std::string& modules) {
  std::vector<std::string> candidates;
  if (const char* p = std::getenv("CLLM_PYTHON")) candidates.push_back(p);
  candidates.push_back(source_path(".deps/venv/bin/python3"));
  candidates.push_back("python3");
  for (const auto& py : candidates)
    if (std::system(("'" + py + "' -c 'import " + modules + "' >/dev/null 2>&1").c_str()) == 0) return py;
  return "";
}

}  // namespace cllm::test
