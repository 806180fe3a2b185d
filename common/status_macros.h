// Status propagation helpers. Debian's abseil (20220623) ships none.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DGPTQ_CONCAT_INNER_(a, b) a##b
#define DGPTQ_CONCAT_(a, b) DGPTQ_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function if it is not OK.
#define DGPTQ_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::absl::Status dgptq_status_ = (expr);         \
    if (!dgptq_status_.ok()) return dgptq_status_; \
  } while (0)

// `lhs = value of expr`, or returns its status if `expr` (a StatusOr) failed.
#define DGPTQ_ASSIGN_OR_RETURN(lhs, expr) \
  DGPTQ_ASSIGN_OR_RETURN_IMPL_(DGPTQ_CONCAT_(dgptq_statusor_, __LINE__), lhs, expr)
#define DGPTQ_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

namespace dgptq {

// Prefixes `context` to a non-OK status's message, keeping its code.
inline absl::Status Annotate(const absl::Status& s, std::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), std::string(context) + ": " + std::string(s.message()));
}

}  // namespace dgptq
