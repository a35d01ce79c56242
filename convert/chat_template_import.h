// The model's chat template, read at compress time and stored in the .cllm as metadata
// tokenizer.chat_template (the Jinja text, as it was) and tokenizer.chat_format (the family
// text/chat_template.h recognises, "none" when none; a warning then lists the known names).
#pragma once

#include <string>

#include "convert/gguf_reader.h"
#include "convert/source_model.h"
#include "nlohmann/json.hpp"

namespace cllm {

// A Hugging Face folder's template: chat_template.jinja beside the config (newer folders), else
// tokenizer_config.json's chat_template, a string or a list of {name, template} (its "default").
// "" when there is none. *origin: the file it came from.
std::string hf_chat_template(const std::string& dir, const nlohmann::json& tokenizer_config,
                             const std::string& tokenizer_config_path, std::string* origin);

// Records jinja (from origin, for the warning) in m's metadata; nothing when it is empty.
void record_chat_template(const std::string& jinja, const std::string& origin, SourceModel& m);

// A GGUF file's tokenizer.chat_template, recorded as above.
void record_gguf_chat_template(const GGUFFile& g, SourceModel& m);

}  // namespace cllm
