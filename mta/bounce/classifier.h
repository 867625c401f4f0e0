// Classifier: what kind of failure a reply reports, by rules.
//
// A rule names a category and RE2 patterns matched (case-insensitively,
// anywhere) against "CODE ENHANCED TEXT", e.g. "550 5.1.1 The email account
// that you tried to reach does not exist". Rules are tried in order and the
// first that matches wins: an operator's own file first, then the shipped
// defaults (default_rules.cc: the RFC 3463 enhanced codes and the common
// texts of the large providers). Immutable once built; shared by every
// shard through a shared_ptr and replaced whole on SIGHUP.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/reply.h"
#include "mta/bounce/category.h"
#include "re2/set.h"

namespace peregrine::bounce {

struct Verdict {
  Category category = Category::kUnknown;
  // The rule that matched: "FILE:LINE" and its pattern; empty for none.
  std::string rule;
  std::string pattern;
};

class Classifier {
 public:
  ~Classifier();
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  // The shipped rules, after an operator's file when `rules_file` is not
  // empty. Errors name the file, the line and what is wrong.
  static absl::StatusOr<std::shared_ptr<const Classifier>> Create(
      const std::string& rules_file = "");
  // Rules from TOML text (`source` names it in messages), then the
  // shipped ones when `with_defaults`.
  static absl::StatusOr<std::shared_ptr<const Classifier>> FromText(
      absl::string_view text, absl::string_view source, bool with_defaults);

  Verdict Classify(const Reply& reply) const;
  size_t rules() const { return rules_.size(); }

 private:
  struct Rule {
    Category category;
    std::string where;
    std::string pattern;
    std::unique_ptr<re2::RE2> re;
  };
  Classifier() = default;
  // Every pattern in one automaton (RE2::Set): one pass over the reply
  // finds all the rules that match; the first of them wins. Null when it
  // could not be built: the rules are then tried one by one.
  void BuildSet();
  std::unique_ptr<re2::RE2::Set> set_;
  static absl::Status Parse(absl::string_view text, absl::string_view source,
                            std::vector<Rule>* rules);
  std::vector<Rule> rules_;
};

// The shipped rules as TOML (`peregrine bounce rules` prints them).
absl::string_view DefaultRules();

}  // namespace peregrine::bounce
