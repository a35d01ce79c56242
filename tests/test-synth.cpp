// `codecllm synth`: the presets, the synthetic weights' determinism, and synth straight into a
// .cllm file, which must hold what synth into a folder followed by compress makes of it.
#include <dirent.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>

#include "common/error.h"
#include "common/file_io.h"
#include "convert/compress.h"
#include "convert/source_model.h"
#include "convert/synth.h"
#include "convert/synth_tensors.h"
#include "format/cllm_reader.h"
#include "tests/test_util.h"

using namespace cllm;
using Catch::Matchers::Contains;

namespace {

uint64_t parameters(const nlohmann::json& config) {
  uint64_t n = 0;
  for (const auto& t : synth_tensors(config)) n += t.elems();
  return n;
}

// The bytes of one section of a .cllm file.
std::vector<uint8_t> section(const CllmFile& f, uint64_t offset, uint64_t size) {
  return {f.file_data() + offset, f.file_data() + offset + size};
}

// The provenance keys, which say where each file came from and so differ by design.
const char* const kProvenanceKeys[] = {"general.name", "general.source.format", "general.source.path"};

nlohmann::json without_provenance(nlohmann::json meta) {
  for (const char* k : kProvenanceKeys) meta.erase(k);
  return meta;
}

std::vector<std::string> folder_entries(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = ::opendir(path.c_str());
  REQUIRE(d);
  while (const dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("synth: a tensor's values depend only on seed, tensor and element, not on the ranges asked for", "[synth]") {
  // 2.5 blocks of kSynthBlockElems, odd length: ranges below start at odd elements and cross
  // block boundaries, as a tile of another size than the block does.
  const SynthTensor t{"w", {kSynthBlockElems * 5 / 2 + 1}, false};
  const uint64_t n = t.elems();
  std::vector<uint16_t> whole(n), parts(n);
  fill_synth_values(t, 7, 42, 0.02, 0, n, whole.data());
  const uint64_t cuts[] = {0, 1, 99999, kSynthBlockElems - 1, kSynthBlockElems + 2, 2 * kSynthBlockElems - 3, n};
  for (size_t c = 0; c + 1 < std::size(cuts); ++c)
    fill_synth_values(t, 7, 42, 0.02, cuts[c], cuts[c + 1] - cuts[c], parts.data() + cuts[c]);
  CHECK(parts == whole);

  std::vector<uint16_t> other_tensor(n), other_seed(n);
  fill_synth_values(t, 8, 42, 0.02, 0, n, other_tensor.data());
  fill_synth_values(t, 7, 43, 0.02, 0, n, other_seed.data());
  CHECK(other_tensor != whole);
  CHECK(other_seed != whole);
}

TEST_CASE("synth: the llama3.1-70b preset has Llama-3.1-70B's shapes and parameter count", "[synth]") {
  const ModelPreset p = find_model_preset("llama3.1-70b");
  const nlohmann::json& c = p.config;
  CHECK(c["hidden_size"] == 8192);
  CHECK(c["num_hidden_layers"] == 80);
  CHECK(c["num_attention_heads"] == 64);
  CHECK(c["num_key_value_heads"] == 8);
  CHECK(c["intermediate_size"] == 28672);
  CHECK(c["vocab_size"] == 128256);
  CHECK(c["rope_theta"] == 500000.0);
  CHECK(c["rope_scaling"] == find_model_preset("llama3.1-8b").config["rope_scaling"]);
  CHECK(c["tie_word_embeddings"] == false);
  CHECK(p.weight_std == find_model_preset("llama3.1-8b").weight_std);
  // Meta's published count for Llama-3.1-70B.
  CHECK(parameters(c) == 70553706496ull);
}

TEST_CASE("synth OUT.cllm holds what synth OUT_DIR then compress makes: same tiles, index and metadata", "[synth]") {
  struct Case {
    const char* preset;
    uint32_t tile_elems;  // 98304: tiles that straddle the generator's 2^20-element blocks
  };
  for (const Case& k : {Case{"tiny-test", 1u << 20}, Case{"llama3-tiny", 98304}}) {
    INFO(k.preset << ", tiles of " << k.tile_elems);
    test::TempDir dir{"cllm-synth"};
    const ModelPreset preset = find_model_preset(k.preset);
    SynthOptions so;
    so.threads = 1;
    so.tile_elems = k.tile_elems;
    if (preset.config["vocab_size"] == 128256) so.tokenizer_dir = test::shared_model("llama3.1");
    synth_model(preset, dir.file("hf"), so);
    CompressOptions co;
    co.threads = 1;
    co.tile_elems = k.tile_elems;
    compress_model(open_source_model(dir.file("hf")), dir.file("via-folder.cllm"), co);
    so.threads = 2;  // the bits depend on no thread count
    const SynthSummary s = synth_model_cllm(preset, dir.file("direct.cllm"), so);

    const CllmFile a = CllmFile::open(dir.file("via-folder.cllm")), b = CllmFile::open(dir.file("direct.cllm"));
    REQUIRE(a.header().data_size == b.header().data_size);
    CHECK(section(a, a.header().data_offset, a.header().data_size) == section(b, b.header().data_offset, b.header().data_size));
    CHECK(section(a, a.header().index_offset, a.header().index_size) == section(b, b.header().index_offset, b.header().index_size));
    CHECK(without_provenance(a.metadata()) == without_provenance(b.metadata()));
    CHECK(a.metadata()["general.source.format"] == "hf");
    CHECK(b.metadata()["general.name"] == "direct");
    CHECK(b.metadata()["general.source.format"] == "synth");
    CHECK(b.metadata()["general.source.path"] == std::string("codecllm synth --preset ") + k.preset + " --seed 42");
    CHECK(s.file_bytes == file_size(dir.file("direct.cllm")));
    CHECK(s.parameters == parameters(preset.config));
    // verify decodes every tensor of the direct file and compares it with the folder's.
    std::string out, err;
    CHECK(test::run_cli({"verify", dir.file("direct.cllm"), dir.file("hf")}, &out, &err) == 0);
    CHECK_THAT(out + err, Contains("matches '" + dir.file("hf") + "' bit for bit"));
  }
}

TEST_CASE("synth OUT.cllm refuses to overwrite without --force and leaves nothing behind when it fails", "[synth]") {
  test::TempDir dir{"cllm-synth"};
  const std::string out = dir.file("m.cllm");
  std::ofstream(out) << "precious";
  std::string err;
  CHECK(test::run_cli({"synth", out, "--preset", "tiny-test", "--layers", "1"}, nullptr, &err) == 1);
  CHECK_THAT(err, Contains("'" + out + "' already exists") && Contains("--force"));
  CHECK(read_text_file(out) == "precious");

  CHECK(test::run_cli({"synth", out, "--preset", "tiny-test", "--layers", "1", "-f"}, nullptr, &err) == 0);
  CHECK_THAT(err, Contains("wrote '" + out + "'") && Contains("bits/weight"));
  CHECK(CllmFile::open(out).metadata()["llama.block_count"] == 1);

  const std::string nowhere = dir.file("no-such-folder/m.cllm");
  CHECK(test::run_cli({"synth", nowhere, "--preset", "tiny-test"}, nullptr, &err) == 1);
  CHECK_THAT(err, Contains(nowhere) && Contains("No such file or directory"));
  CHECK(test::run_cli({"synth", dir.file("hf"), "--preset", "tiny-test", "--tile-elems", "65536"}, nullptr, &err) == 1);
  CHECK_THAT(err, Contains("--tile-elems applies to a .cllm output only"));
  // No temporary file or side folder was left by any of these runs.
  CHECK(folder_entries(dir.path()) == std::vector<std::string>{"m.cllm"});
}

TEST_CASE("synth refuses to start when the disk cannot hold the output, naming the folder and the sizes", "[synth]") {
  test::TempDir dir{"cllm-synth"};
  CHECK_NOTHROW(check_free_space(dir.path(), 1, "one byte"));
  CHECK_THROWS_WITH(check_free_space(dir.path(), 1ull << 60, "the shards"),
                    Contains("'" + dir.path() + "' has") && Contains("free, but the shards need") &&
                        Contains("1073741824.00 GiB"));
}
