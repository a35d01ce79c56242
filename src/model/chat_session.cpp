#include "model/chat_session.h"

#include <algorithm>

#include "common/error.h"
#include "common/timer.h"

namespace cllm {

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
  if (opt.format == ChatFormat::none)
    fail("chat: the model has no known chat template (metadata tokenizer.chat_format is none): pass "
         "--chat-template llama3, llama2 or zephyr");
  const std::string eot = chat_end_of_turn(opt.format, specials_);
  eot_ = eot.empty() ? -1 : tok.find_piece(eot);
  if (eot_ < 0)
    fail("chat: the ", chat_format_name(opt.format), " format ends a reply with '", eot.empty() ? "EOS" : eot,
         "', which this tokenizer does not have (pick another format with --chat-template)");
  chat_tokenize(tok, chat_user_turn(opt.format, opt.system, "x", true, specials_));  // every token it needs exists
}

std::vector<int> ChatSession::next_prompt(const std::string& user) const {
  std::vector<ChatPiece> pieces;
  if (turns_ > 0) {
    // The previous reply's stop token was never fed: close the turn as the template does.
    pieces.push_back({true, chat_end_of_turn(opt_.format, specials_)});
    for (auto& p : chat_after_reply(opt_.format, specials_)) pieces.push_back(std::move(p));
  }
  for (auto& p : chat_user_turn(opt_.format, opt_.system, user, turns_ == 0, specials_)) pieces.push_back(std::move(p));
  return chat_tokenize(tok_, pieces);
}

ChatTurn ChatSession::turn(const std::string& user, const std::function<void(const std::string&)>& on_text) {
  ChatTurn t;
  t.pos = pos_;
  t.prompt = next_prompt(user);
  const int n = static_cast<int>(t.prompt.size());
  if (pos_ + n > context_)
    fail("chat: the message needs ", n, " tokens and ", context_ - pos_, " of the context's ", context_,
         " are left: start again with a larger -c");
  for (int id : t.prompt) sampler_.accept(id);
  ++turns_;

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
  return t;
}

}  // namespace cllm
