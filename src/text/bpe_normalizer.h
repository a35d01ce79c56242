// The BPE normalizer: the text between added tokens goes through the spec's normalizer steps in
// order, as the Hugging Face library does before pre-tokenizing: Unicode normalization forms
// (NFC, NFD, NFKC, NFKD; ICU computes them), Prepend (text put before a non-empty fragment) and
// Replace (every match of a pattern, bpe_regex.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/bpe_regex.h"
#include "text/bpe_spec.h"

namespace cllm {

class BpeNormalizerChain {
 public:
  // Compiles the Replace patterns and looks up the ICU normalizers; origin names it in errors.
  BpeNormalizerChain(const std::vector<BpeNormalizer>& steps, const std::string& origin);
  ~BpeNormalizerChain();
  BpeNormalizerChain(const BpeNormalizerChain&) = delete;
  BpeNormalizerChain& operator=(const BpeNormalizerChain&) = delete;

  bool empty() const { return steps_.empty(); }
  // text (valid UTF-8) normalized.
  std::string normalize(std::string text) const;

 private:
  struct Step {
    BpeNormalizer spec;
    std::unique_ptr<BpeRegex> regex;  // replace
    const void* icu = nullptr;        // icu::Normalizer2 of a normalization form
  };
  std::vector<Step> steps_;
};

}  // namespace cllm
