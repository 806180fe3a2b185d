#include "worker/cli/progress.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_format.h"

namespace dgptq::cli {

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

ProgressPrinter::ProgressPrinter() : tty_(isatty(2) != 0) {}

void ProgressPrinter::operator()(const worker::ProgressEvent& e) {
  if (e.phase == "quantize" && !e.module.empty()) ++modules_done_;
  if (!tty_) {
    std::fprintf(stderr, "%s\n",
                 absl::StrFormat("{\"event\":\"progress\",\"phase\":%s,\"layer\":%d,\"layers\":%d,"
                                 "\"module\":%s,\"loss\":%.6g,\"seconds\":%.4f}",
                                 JsonString(e.phase), e.layer, e.layers, JsonString(e.module),
                                 e.loss, e.seconds)
                     .c_str());
    return;
  }
  const int width = 30;
  const int done = e.layers > 0 ? (e.layer + 1) * width / e.layers : 0;
  std::string bar(std::max(0, done), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r[%s] layer %d/%d  %-10s %-40s", bar.c_str(), e.layer + 1, e.layers,
               e.phase.c_str(), e.module.c_str());
  std::fflush(stderr);
}

void ProgressPrinter::Finish() {
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace dgptq::cli
