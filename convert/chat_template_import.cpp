#include "convert/chat_template_import.h"

#include "common/error.h"
#include "common/file_io.h"
#include "common/log.h"
#include "text/chat_template.h"

namespace cllm {

std::string hf_chat_template(const std::string& dir, const nlohmann::json& tc, const std::string& tc_path,
                             std::string* origin) {
  *origin = path_join(dir, "chat_template.jinja");
  if (path_exists(*origin)) return read_text_file(*origin);  // transformers prefers it too
  *origin = tc_path;
  const auto it = tc.find("chat_template");
  if (it == tc.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {  // [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
    for (const auto& e : *it)
      if (e.is_object() && e.value("name", "") == "default" && e.value("template", nlohmann::json()).is_string())
        return e["template"].get<std::string>();
    log_warn("'", tc_path, "': chat_template lists named templates but none is named 'default': the model will "
             "have no chat template");
    return "";
  }
  fail("'", tc_path, "': chat_template must be a string or a list of {name, template}, found ", it->type_name());
}

void record_chat_template(const std::string& jinja, const std::string& origin, SourceModel& m) {
  if (jinja.empty()) return;
  const ChatTemplate t = chat_template_detect(jinja);
  m.extra_metadata["tokenizer.chat_template"] = jinja;
  m.extra_metadata["tokenizer.chat_format"] = chat_format_name(t.format);
  if (t.format == ChatFormat::none)
    log_warn("'", origin, "': the chat template is none of the formats codecllm renders (", chat_template_names(),
             "): run --chat will need --chat-template NAME");
}

void record_gguf_chat_template(const GGUFFile& g, SourceModel& m) {
  std::string jinja;
  if (g.get_string("tokenizer.chat_template", &jinja))
    record_chat_template(jinja, g.path() + ": tokenizer.chat_template", m);
}

}  // namespace cllm
