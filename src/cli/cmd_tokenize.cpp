// codecllm tokenize (MODEL.cllm | --tokenizer FILE) [--no-bos] [--ids] TEXT: the token ids of a
// text, as llama.cpp's llama-tokenize prints them. FILE is a SentencePiece .model or a Hugging
// Face tokenizer.json (byte-level BPE; special tokens written in the text become their ids).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "common/file_io.h"
#include "format/cllm_reader.h"
#include "text/tokenizer.h"

namespace cllm::cli {

namespace {

struct TokenizeArgs {
  std::vector<std::string> positional;  // [MODEL.cllm] [TEXT]
  std::string model, tokenizer, prompt, prompt_file;
  bool prompt_given = false;
  bool no_bos = false, ids = false;
  std::string text;  // resolved
};

// Sorts the positionals into model and text: without --tokenizer or -m the first one is the
// model; the text comes from -p, -f or the remaining positional, exactly one of them.
void resolve(TokenizeArgs& a) {
  std::vector<std::string> rest = a.positional;
  if (a.tokenizer.empty() && a.model.empty()) {
    if (rest.empty()) throw CLI::RequiredError("MODEL.cllm (or --tokenizer FILE)");
    a.model = rest.front();
    rest.erase(rest.begin());
  }
  if (!a.tokenizer.empty() && !a.model.empty())
    throw CLI::ValidationError("--tokenizer", "give either a MODEL.cllm or --tokenizer FILE, not both");
  const int sources = static_cast<int>(a.prompt_given) + static_cast<int>(!a.prompt_file.empty()) +
                      static_cast<int>(!rest.empty());
  if (sources == 0) throw CLI::RequiredError("TEXT (or -p TEXT, or -f FILE)");
  if (sources > 1 || rest.size() > 1)
    throw CLI::ValidationError("TEXT", "give the text once: as one argument, with -p or with -f");
  if (!rest.empty()) a.text = rest.front();
  else if (a.prompt_given) a.text = a.prompt;
}

int run_tokenize(const TokenizeArgs& a) {
  std::string text = a.text;
  if (!a.prompt_file.empty()) text = read_text_file(a.prompt_file);
  std::unique_ptr<Tokenizer> tok;
  if (!a.tokenizer.empty()) {
    tok = std::make_unique<Tokenizer>(Tokenizer::from_file(a.tokenizer));
  } else {
    // Only the tokenizer is read (its tiles' checksums are checked on their own).
    CllmOpenOptions opt;
    opt.verify_checksums = false;
    const CllmFile f = CllmFile::open(a.model, opt);
    tok = std::make_unique<Tokenizer>(Tokenizer::from_cllm(f));
  }
  const auto ids = tok->encode(text, a.no_bos ? false : tok->add_bos());
  if (a.ids) {
    std::string out = "[";
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
    std::printf("%s]\n", out.c_str());
    return 0;
  }
  for (int id : ids) std::printf("%6d -> '%s'\n", id, tok->display(id).c_str());
  return 0;
}

}  // namespace

void register_tokenize(CLI::App& app, Action& action) {
  auto a = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  cmd->add_option("args", a->positional, "MODEL.cllm (unless --tokenizer or -m), then TEXT");
  cmd->add_option("-m,--model", a->model, "The .cllm file whose tokenizer to use");
  cmd->add_option("--tokenizer", a->tokenizer,
                  "A SentencePiece .model or a Hugging Face tokenizer.json (with tokenizer_config.json beside it, "
                  "if any) instead of a .cllm")
      ->check(CLI::ExistingFile);
  auto* p = cmd->add_option("-p,--prompt", a->prompt, "The text");
  auto* f = cmd->add_option("-f,--file", a->prompt_file, "Read the text from a file (as is)")->check(CLI::ExistingFile);
  p->excludes(f);
  cmd->add_flag("--no-bos", a->no_bos, "Do not start with BOS");
  cmd->add_flag("--ids", a->ids, "Print only a JSON array of the ids");
  cmd->callback([a, p, &action] {
    a->prompt_given = p->count() > 0;
    resolve(*a);
    action = [a] { return run_tokenize(*a); };
  });
}

}  // namespace cllm::cli
