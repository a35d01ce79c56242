#include "model/chat_session.h"

#include <algorithm>

#include "common/error.h"
#include "common/timer.h"

namespace cllm {

namespace {

// The beginning of a template, on one line, to name it in messages.
std::string template_excerpt(const std::string& jinja) {
  std::string s;
  for (char c : jinja.substr(0, 60)) s += c == '\n' ? ' ' : c;
  return "'" + s + (jinja.size() > 60 ? "...'" : "'") + " (" + std::to_string(jinja.size()) + " bytes)";
}

}  // namespace

ChatTemplate chat_template_for(const Tokenizer& tok, const std::string& name, std::string* why) {
  if (!name.empty()) {
    *why = "--chat-template";
    return chat_template_from_name(name);
  }
  const std::string& jinja = tok.chat_template();
  if (!jinja.empty()) {
    ChatTemplate t = chat_template_detect(jinja);
    if (t.format == ChatFormat::none)
      fail("chat: the model's chat template ", template_excerpt(jinja), " is none of the formats codecllm renders (",
           chat_template_names(), "): pass --chat-template NAME");
    *why = "the model's chat template";
    return t;
  }
  if (!tok.chat_format().empty() && tok.chat_format() != "none") {
    *why = "metadata tokenizer.chat_format";
    return chat_template_from_name(tok.chat_format());
  }
  fail("chat: the model has no chat template (metadata tokenizer.chat_template): pass --chat-template NAME (one of ",
       chat_template_names(), ")");
}

std::vector<ChatPiece> chat_render_prompt(const Tokenizer& tok, const ChatTemplate& t,
                                          const std::vector<ChatMessage>& messages, const ChatSpecials& sp) {
  std::vector<ChatPiece> pieces = chat_render(t, messages, true, sp);
  // A template that does not write BOS itself (ChatML, Phi-3, Zephyr) gets it from the tokenizer,
  // as any prompt does, when the tokenizer adds one.
  const bool writes_bos = !pieces.empty() && pieces[0].special && pieces[0].text == sp.bos;
  if (!writes_bos && tok.add_bos() && !sp.bos.empty()) pieces.insert(pieces.begin(), {true, sp.bos});
  return pieces;
}

ChatSession::ChatSession(ForwardFn forward, int context, int n_vocab, const Tokenizer& tok, const ChatOptions& opt)
    : forward_(std::move(forward)),
      context_(context),
      n_vocab_(n_vocab),
      n_sample_(std::min(n_vocab, tok.n_vocab())),
      tok_(tok),
      opt_(opt),
      specials_(chat_specials(tok)),
      sampler_(opt.sampling) {
  if (tok.n_vocab() > n_vocab) fail("the tokenizer has ", tok.n_vocab(), " tokens but the model only ", n_vocab);
  if (opt.chat.format == ChatFormat::none)
    fail("chat: the model has no known chat template: pass --chat-template NAME (one of ", chat_template_names(), ")");
  if (!opt.system.empty() && !opt.chat.system_allowed)
    fail("chat: the model's chat template (", opt.chat.name, ") refuses a system message: leave out --system-prompt");
  const std::string eot = chat_end_of_turn(opt.chat, specials_);
  eot_ = eot.empty() ? -1 : tok.find_piece(eot);
  if (eot_ < 0)
    fail("chat: the ", opt.chat.name, " format ends a reply with '", eot.empty() ? "EOS" : eot,
         "', which this tokenizer does not have (pick another format with --chat-template)");
  if (!opt.system.empty()) messages_.push_back({"system", opt.system});
  chat_tokenize(tok, rendered("x"));  // every token the format needs exists
}

std::vector<ChatPiece> ChatSession::rendered(const std::string& user) const {
  std::vector<ChatMessage> conversation = messages_;
  conversation.push_back({"user", user});
  return chat_render_prompt(tok_, opt_.chat, conversation, specials_);
}

namespace {

// The pieces after the first n characters of their text; false when n falls inside a special token.
bool drop_text_prefix(const std::vector<ChatPiece>& pieces, size_t n, std::vector<ChatPiece>* rest) {
  rest->clear();
  for (const auto& p : pieces) {
    if (n == 0) {
      rest->push_back(p);
    } else if (p.text.size() <= n) {
      n -= p.text.size();
    } else {
      if (p.special) return false;
      rest->push_back({false, p.text.substr(n)});
      n = 0;
    }
  }
  return true;
}

}  // namespace

std::vector<int> ChatSession::next_prompt(const std::string& user, int* pos) const {
  const std::vector<ChatPiece> pieces = rendered(user);
  const std::string text = chat_text(pieces);
  // The usual case: the rendering continues the cache's text; tokenize only what follows it.
  std::vector<ChatPiece> rest;
  const bool continues = text.size() > cached_text_.size() && text.compare(0, cached_text_.size(), cached_text_) == 0;
  if (!cached_.empty() && continues && drop_text_prefix(pieces, cached_text_.size(), &rest)) {
    if (pos) *pos = static_cast<int>(cached_.size());
    return chat_tokenize(tok_, rest);
  }
  // The template rewrote an earlier turn (or trimmed the reply): keep the ids the two share.
  const std::vector<int> ids = chat_tokenize(tok_, pieces);
  size_t same = 0;
  while (same < cached_.size() && same + 1 < ids.size() && cached_[same] == ids[same]) ++same;
  if (pos) *pos = static_cast<int>(same);
  return std::vector<int>(ids.begin() + static_cast<std::ptrdiff_t>(same), ids.end());
}

ChatTurn ChatSession::turn(const std::string& user, const std::function<void(const std::string&)>& on_text) {
  ChatTurn t;
  t.prompt = next_prompt(user, &t.pos);
  const int n = static_cast<int>(t.prompt.size());
  if (t.pos + n > context_)
    fail("chat: the message needs ", n, " tokens and ", context_ - t.pos, " of the context's ", context_,
         " are left: start again with a larger -c");
  for (int id : t.prompt) sampler_.accept(id);
  ++turns_;
  pos_ = t.pos;
  cached_.resize(static_cast<size_t>(pos_));
  cached_.insert(cached_.end(), t.prompt.begin(), t.prompt.end());
  cached_text_ = chat_text(rendered(user));

  Timer timer;
  const float* logits = forward_(t.prompt.data(), n, pos_);
  pos_ += n;
  t.prompt_ms = timer.ms();

  TokenDecoder decoder(tok_);
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    t.text += s;
    if (on_text) on_text(s);
  };
  while (opt_.n_predict < 0 || static_cast<int>(t.reply.size()) < opt_.n_predict) {
    timer.reset();
    const int next = sampler_.sample(logits, n_sample_);
    t.sample_ms += timer.ms();
    logits_hash_ = logits_hash(logits, n_vocab_);
    sampler_.accept(next);
    t.reply.push_back(next);
    if (next == eot_ || tok_.is_eog(next)) {
      t.end_of_turn = true;
      break;
    }
    emit(decoder.push(next));
    cached_.push_back(next);  // fed below, or by the next turn when the context is full
    if (pos_ >= context_) {
      t.context_full = true;
      break;
    }
    // Every reply token goes into the cache, the last one too: the next turn continues after it.
    timer.reset();
    logits = forward_(&next, 1, pos_);
    t.eval_ms += timer.ms();
    ++t.n_eval;
    ++pos_;
  }
  emit(decoder.flush());
  cached_text_ += t.text;
  if (t.context_full) {
    cached_.pop_back();  // sampled from the last position, never fed
    cached_text_.clear();
  }
  messages_.push_back({"user", user});
  messages_.push_back({"assistant", t.text});
  return t;
}

}  // namespace cllm
