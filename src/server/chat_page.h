// The chat page served at `GET /`: one static HTML file with its script and style inline
// (src/server/chat_page.html), compiled into the binary from chat_page.cpp.in at configure time.
#pragma once

#include <string_view>

namespace cllm::server {

std::string_view chat_page_html();

}  // namespace cllm::server
