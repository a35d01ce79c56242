#include "server/completion_route.h"

#include <atomic>

#include <chrono>
#include <memory>

#include "common/error.h"
#include "server/api_error.h"
#include "server/http_reply.h"
#include "server/job.h"
#include "server/openai_shapes.h"
#include "server/peer_watch.h"
#include "server/request.h"

namespace cllm::server {

namespace {

// The request's prompt and settings on its model; ApiError 400 for a chat the model has no
// format for, 413 for a prompt longer than the context.
GenerationInput generation_input(const CompletionRequest& r, ServedModel& model) {
  GenerationInput in = r.chat ? model.chat_input(r.messages) : model.completion_input(r.prompt);
  const int n = static_cast<int>(in.prompt.size());
  if (n > model.context())
    throw ApiError(413, cat("the prompt is ", n, " tokens, longer than model '", model.id(), "''s context of ",
                            model.context(), " tokens"), r.chat ? "messages" : "prompt");
  in.sampling = r.sampling;
  in.max_tokens = r.max_tokens;
  in.stop = r.stop;
  in.ignore_eos = r.ignore_eos;
  return in;
}

// A job's client is still there when it is cancelled only when the server stops.
constexpr const char* kStopping = "the server is stopping";

// How long a stream waits for text before writing an SSE comment, which finds a client that
// left while its request was queued (a write to a closed connection fails).
constexpr auto kStreamPoll = std::chrono::milliseconds(100);
constexpr int kPollsPerKeepAlive = 10;  // one comment a second while nothing else is sent

// How often a non-streamed request looks whether its client is still connected.
constexpr auto kPeerPoll = std::chrono::milliseconds(100);

// Waits for a non-streamed job's end; a client that closes its connection meanwhile cancels it
// (the scheduler stops before its next token, or skips it if it is still queued). True when the
// client left.
bool wait_for_whole_answer(const httplib::Request& req, Job& job) {
  const PeerWatch peer(req);
  bool left = false;
  while (!job.wait_done(kPeerPoll))
    if (!left && peer.gone()) {
      left = true;
      job.cancel();
    }
  return left;
}

// The events that end a stream: the finish reason (or the error), the usage when asked, [DONE].
std::string stream_end(const Job& job, const ResponseHeader& h, bool include_usage) {
  if (job.error_status() != 0) return sse_event(error_json(job.error_status(), job.error_message())) + kSseDone;
  if (job.output().finish == FinishReason::cancelled) return sse_event(error_json(503, kStopping)) + kSseDone;
  std::string out = sse_event(final_chunk_json(h, job.output().finish));
  if (include_usage) out += sse_event(usage_chunk_json(h, job.output()));
  return out + kSseDone;
}

// The streamed answer: one chunk per piece of text as the scheduler produces it.
std::atomic<int> g_open_streams{0};

void stream_answer(httplib::Response& res, std::shared_ptr<Job> job, const ResponseHeader& h, bool include_usage) {
  ++g_open_streams;  // until httplib releases the provider below (written out, or the client gone)
  auto first = std::make_shared<bool>(true);
  auto idle_polls = std::make_shared<int>(0);
  res.set_chunked_content_provider(
      "text/event-stream",
      [job, h, include_usage, first, idle_polls](size_t, httplib::DataSink& sink) {
        std::vector<std::string> pieces;
        const bool done = job->take_text(&pieces, kStreamPoll);
        std::string out;
        for (const auto& piece : pieces) {  // one event per token's text, as OpenAI streams
          out += sse_event(text_chunk_json(h, piece, *first));
          *first = false;
        }
        if (done) {
          out += stream_end(*job, h, include_usage);
        } else if (out.empty() && ++*idle_polls >= kPollsPerKeepAlive) {
          out = ": waiting\n\n";
          *idle_polls = 0;
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) {
          job->cancel();  // the client went away: the scheduler stops before its next token
          return false;
        }
        if (done) sink.done();
        return true;
      },
      [job](bool success) {
        if (!success) job->cancel();
        --g_open_streams;
      });
}

}  // namespace

int open_streams() { return g_open_streams.load(); }

void handle_completion(const httplib::Request& req, httplib::Response& res, ModelSet& models, bool chat) {
  try {
    if (!models.ready()) throw ApiError(503, "the server is loading its models");
    const CompletionRequest r = parse_completion_request(req.body, chat);
    ServedModel* model = r.model.empty() ? models.only() : models.find(r.model);
    if (!model && r.model.empty())
      throw ApiError(400, cat("field 'model': expected a model id (GET /v1/models lists them: ", models.ids(),
                              "), found nothing; it may be left out only where the server has one model"),
                     "model");
    if (!model) throw ApiError(404, cat("model '", r.model, "' does not exist (models: ", models.ids(), ")"), "model");
    auto job = std::make_shared<Job>(generation_input(r, *model));
    if (!model->scheduler().submit(job))
      throw ApiError(503, cat("model '", model->id(), "' is busy: its queue is full; try again later"));
    const ResponseHeader h = make_response_header(model->id(), chat);
    if (r.stream) return stream_answer(res, job, h, r.include_usage);
    const bool client_left = wait_for_whole_answer(req, *job);
    if (job->error_status() != 0) throw ApiError(job->error_status(), job->error_message());
    // 499 (nginx's "client closed request"): counted in the metrics, read by no one.
    if (client_left) throw ApiError(499, "the client closed the connection");
    if (job->output().finish == FinishReason::cancelled) throw ApiError(503, kStopping);
    send_json(res, 200, completion_json(h, job->output()));
  } catch (const ApiError& e) {
    send_error(res, e);
  }
}

}  // namespace cllm::server
