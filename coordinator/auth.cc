#include "coordinator/auth.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace dgptq::coordinator {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

// Equality whose time depends on the lengths only, never on where the strings first differ,
// so a caller cannot find a token byte by byte from response times.
bool ConstantTimeEquals(absl::string_view presented, absl::string_view expected) {
  unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const char p = i < presented.size() ? presented[i] : 0;
    diff |= static_cast<unsigned char>(p ^ expected[i]);
  }
  return diff == 0;
}

const char* RoleName(Role role) { return role == Role::kClient ? "client" : "worker"; }

}  // namespace

absl::Status TokenAuth::Check(Role role, std::optional<absl::string_view> authorization) const {
  const std::string& mine = role == Role::kClient ? client_token_ : worker_token_;
  const std::string& other = role == Role::kClient ? worker_token_ : client_token_;
  if (mine.empty()) return absl::OkStatus();
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        absl::StrCat("this coordinator needs a ", RoleName(role), " bearer token"));
  }
  if (!absl::StartsWithIgnoreCase(*authorization, kBearer)) {
    return absl::UnauthenticatedError("the authorization metadata is not 'Bearer <token>'");
  }
  const absl::string_view token = authorization->substr(kBearer.size());
  // Both comparisons always run: the time does not tell which one matched.
  const bool is_mine = ConstantTimeEquals(token, mine);
  const bool is_other = !other.empty() && ConstantTimeEquals(token, other);
  if (is_mine) return absl::OkStatus();
  if (is_other) {
    const Role other_role = role == Role::kClient ? Role::kWorker : Role::kClient;
    return absl::PermissionDeniedError(absl::StrCat(
        "a ", RoleName(other_role), " token may not call ", RoleName(role), " methods"));
  }
  return absl::UnauthenticatedError(absl::StrCat("invalid ", RoleName(role), " token"));
}

}  // namespace dgptq::coordinator
