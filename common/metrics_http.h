// A minimal HTTP/1.1 server for Prometheus scrapes: GET /metrics answers the registry in
// the text exposition format (0.0.4); anything else is 404. Our own instead of
// prometheus-cpp's civetweb Exposer, which fails to start inside the daemons here
// (mg_start returns null after a successful bind) and cannot bind port 0.
//
// One accept thread; each connection is answered and closed (scrapers reconnect).
// Thread-safety: Start/Stop from one thread; the registry is prometheus-cpp's (thread-safe).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace dgptq {

class MetricsHttpServer {
 public:
  // Listens on `address` ("host:port", IPv4 or "0.0.0.0"; port 0 picks a free port).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, std::shared_ptr<prometheus::Registry> registry);
  void Serve();

  int fd_;
  int port_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace dgptq
