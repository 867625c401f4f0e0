#include "mta/bounce/classifier.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "re2/re2.h"

// toml++ reports errors by exception; they never leave this file.
#include <toml++/toml.h>

namespace peregrine::bounce {
namespace {

std::string Names() {
  std::string out;
  for (Category c : AllCategories()) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", CategoryName(c));
  }
  return out;
}

}  // namespace

Classifier::~Classifier() = default;

absl::Status Classifier::Parse(absl::string_view text, absl::string_view source,
                               std::vector<Rule>* rules) {
  toml::table table;
  try {
    table = toml::parse(std::string_view(text.data(), text.size()),
                        std::string_view(source.data(), source.size()));
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ":", e.source().begin.line, ":", e.source().begin.column,
        ": TOML syntax error: ", std::string(e.description())));
  }
  for (auto&& [key, value] : table) {
    if (key.str() != "rule") {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ":", key.source().begin.line, ": unknown key '",
          std::string(key.str()), "'; a rule file holds [[rule]] tables"));
    }
  }
  const toml::node* list = table.get("rule");
  if (list == nullptr) return absl::OkStatus();
  const toml::array* array = list->as_array();
  if (array == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", list->source().begin.line,
                     ": 'rule' must be a list of [[rule]] tables"));
  }
  for (const toml::node& node : *array) {
    std::string where = absl::StrCat(source, ":", node.source().begin.line);
    const toml::table* rule = node.as_table();
    if (rule == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": a [[rule]] must be a table"));
    }
    for (auto&& [k, v] : *rule) {
      if (k.str() != "category" && k.str() != "patterns") {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown key '", std::string(k.str()),
                         "' (a rule has category and patterns)"));
      }
    }
    std::optional<std::string> name = (*rule)["category"].value<std::string>();
    if (!name) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": the rule needs category = one of: ", Names()));
    }
    std::optional<Category> category = ParseCategory(*name);
    if (!category) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": unknown category '", *name, "'; categories: ", Names()));
    }
    const toml::array* patterns = (*rule)["patterns"].as_array();
    if (patterns == nullptr || patterns->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": the rule needs patterns = [\"RE2 pattern\", ...]"));
    }
    for (const toml::node& p : *patterns) {
      std::optional<std::string> pattern = p.value<std::string>();
      if (!pattern) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": each pattern must be a string"));
      }
      RE2::Options options;
      options.set_case_sensitive(false);
      options.set_log_errors(false);
      auto re = std::make_unique<re2::RE2>(*pattern, options);
      if (!re->ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": pattern '", *pattern,
                         "' is not a valid RE2 expression: ", re->error()));
      }
      rules->push_back(Rule{*category,
                            absl::StrCat(source, ":", p.source().begin.line),
                            *pattern, std::move(re)});
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Classifier>> Classifier::FromText(
    absl::string_view text, absl::string_view source, bool with_defaults) {
  std::shared_ptr<Classifier> c(new Classifier());
  if (absl::Status s = Parse(text, source, &c->rules_); !s.ok()) return s;
  if (with_defaults) {
    absl::Status s = Parse(DefaultRules(), "(built-in rules)", &c->rules_);
    if (!s.ok()) return s;
  }
  c->BuildSet();
  return std::shared_ptr<const Classifier>(std::move(c));
}

absl::StatusOr<std::shared_ptr<const Classifier>> Classifier::Create(
    const std::string& rules_file) {
  if (rules_file.empty()) return FromText("", "", true);
  std::ifstream in(rules_file);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read bounce rules file ", rules_file));
  }
  std::stringstream text;
  text << in.rdbuf();
  return FromText(text.str(), rules_file, true);
}

void Classifier::BuildSet() {
  RE2::Options options;
  options.set_case_sensitive(false);
  options.set_log_errors(false);
  auto set = std::make_unique<RE2::Set>(options, RE2::UNANCHORED);
  for (const Rule& r : rules_) {
    if (set->Add(r.pattern, nullptr) < 0) return;
  }
  if (!set->Compile()) return;
  set_ = std::move(set);
}

Verdict Classifier::Classify(const Reply& reply) const {
  std::string line = reply.ToString();
  if (set_ != nullptr) {
    std::vector<int> hits;
    RE2::Set::ErrorInfo error;
    if (set_->Match(line, &hits, &error)) {
      const Rule& r = rules_[*std::min_element(hits.begin(), hits.end())];
      return Verdict{r.category, r.where, r.pattern};
    }
    if (error.kind == RE2::Set::kNoError) return Verdict{};
    // Out of memory in the automaton: one by one, as below.
  }
  for (const Rule& r : rules_) {
    if (RE2::PartialMatch(line, *r.re)) {
      return Verdict{r.category, r.where, r.pattern};
    }
  }
  return Verdict{};
}

}  // namespace peregrine::bounce
