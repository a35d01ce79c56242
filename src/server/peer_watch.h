// Whether the client of a request has closed its connection, for a handler that writes nothing
// until its answer is whole (a non-streamed completion): cpp-httplib 0.11 gives a handler no
// socket, and only a write would find the connection closed. The socket is found by the
// connection's addresses (Request::local_addr/port, remote_addr/port) among this process's
// descriptors (/proc/self/fd, Linux); it stays this connection's while its handler runs, since
// httplib closes it on the same thread afterwards. Where it is not found, gone() says false:
// the request then runs to its end as before.
#pragma once

#include <httplib.h>

namespace cllm::server {

class PeerWatch {
 public:
  explicit PeerWatch(const httplib::Request& req);
  // True once the client has closed (or reset) the connection. Does not block.
  bool gone() const;
  bool watching() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace cllm::server
