#include "text/bpe_normalizer.h"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include "common/error.h"

namespace cllm {

namespace {

const icu::Normalizer2* icu_normalizer(BpeNormalizer::Kind kind, const std::string& origin) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (kind) {
    case BpeNormalizer::Kind::nfc: n = icu::Normalizer2::getNFCInstance(status); break;
    case BpeNormalizer::Kind::nfd: n = icu::Normalizer2::getNFDInstance(status); break;
    case BpeNormalizer::Kind::nfkc: n = icu::Normalizer2::getNFKCInstance(status); break;
    case BpeNormalizer::Kind::nfkd: n = icu::Normalizer2::getNFKDInstance(status); break;
    default: return nullptr;
  }
  if (U_FAILURE(status) || !n) fail(origin, ": ICU has no Unicode normalizer (", u_errorName(status), ")");
  return n;
}

}  // namespace

BpeNormalizerChain::BpeNormalizerChain(const std::vector<BpeNormalizer>& steps, const std::string& origin) {
  for (const auto& s : steps) {
    Step step{s, nullptr, icu_normalizer(s.kind, origin)};
    if (s.kind == BpeNormalizer::Kind::replace) step.regex = std::make_unique<BpeRegex>(s.pattern, origin);
    steps_.push_back(std::move(step));
  }
}

BpeNormalizerChain::~BpeNormalizerChain() = default;

std::string BpeNormalizerChain::normalize(std::string text) const {
  for (const auto& s : steps_) {
    if (s.icu) {
      UErrorCode status = U_ZERO_ERROR;
      const auto* n = static_cast<const icu::Normalizer2*>(s.icu);
      const icu::UnicodeString in = icu::UnicodeString::fromUTF8(text);
      if (n->isNormalized(in, status) && U_SUCCESS(status)) continue;
      status = U_ZERO_ERROR;
      const icu::UnicodeString out = n->normalize(in, status);
      if (U_FAILURE(status)) fail("Unicode normalization failed: ", u_errorName(status));
      text.clear();
      out.toUTF8String(text);
    } else if (s.spec.kind == BpeNormalizer::Kind::prepend) {
      if (!text.empty()) text.insert(0, s.spec.content);
    } else {
      text = s.regex->replace_all(text, s.spec.content);
    }
  }
  return text;
}

}  // namespace cllm
