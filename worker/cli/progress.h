// Progress output of long commands: a one-line bar on stderr when it is a terminal,
// one JSON object per line on stderr otherwise.
#pragma once

#include <string>

#include "worker/quant/pipeline.h"

namespace dgptq::cli {

class ProgressPrinter {
 public:
  ProgressPrinter();
  void operator()(const worker::ProgressEvent& e);
  void Finish();

 private:
  bool tty_;
  int modules_done_ = 0;
};

// JSON string literal of `s` (quotes, backslashes and control characters escaped).
std::string JsonString(const std::string& s);

}  // namespace dgptq::cli
