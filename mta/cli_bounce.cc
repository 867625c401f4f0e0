// `peregrine bounce parse`: one bounce or feedback report, read as the
// daemon's bounce inbox reads it, printed as JSON.

#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "mta/bounce/classifier.h"
#include "mta/bounce/report.h"
#include "mta/bounce/verp.h"
#include "mta/cli_commands.h"
#include "mta/config.h"
#include "nlohmann/json.hpp"

namespace peregrine {
namespace {

using Json = nlohmann::ordered_json;

Json StringOrNull(const std::string& s) {
  return s.empty() ? Json(nullptr) : Json(s);
}

}  // namespace

std::optional<std::string> ReadInput(const std::string& file,
                                     std::istream& in) {
  std::stringstream text;
  if (file == "-") {
    text << in.rdbuf();
  } else {
    std::ifstream f(file, std::ios::binary);
    if (!f) return std::nullopt;
    text << f.rdbuf();
  }
  return text.str();
}

int BounceParse(const BounceParseArgs& a, std::istream& in, std::ostream& out,
                std::ostream& err) {
  std::optional<std::string> text = ReadInput(a.file, in);
  if (!text) {
    err << "peregrine bounce parse: cannot read " << a.file << "\n";
    return 2;
  }
  absl::StatusOr<Config> config =
      a.config_path.empty() ? DefaultConfig() : LoadConfigFile(a.config_path);
  if (!config.ok()) {
    err << "peregrine bounce parse: " << config.status().message() << "\n";
    return 2;
  }
  if (!a.data_dir.empty()) config->data_dir = a.data_dir;
  std::string rules = a.rules.empty() ? config->bounce_rules_file : a.rules;
  auto classifier = bounce::Classifier::Create(rules);
  if (!classifier.ok()) {
    err << "peregrine bounce parse: " << classifier.status().message() << "\n";
    return 2;
  }
  bounce::Report report = bounce::ParseReport(*text, classifier->get());

  Json j = Json::object();
  j["kind"] = std::string(bounce::ReportKindName(report.kind));
  j["reporting_mta"] = StringOrNull(report.reporting_mta);
  j["subject"] = StringOrNull(report.subject);
  j["feedback_type"] = StringOrNull(report.feedback_type);
  j["original_message_id"] = StringOrNull(report.original_message_id);
  j["original_return_path"] = StringOrNull(report.original_return_path);
  Json rcpts = Json::array();
  for (const bounce::ReportedRecipient& r : report.recipients) {
    Json o = Json::object();
    o["recipient"] = r.recipient;
    o["original_recipient"] = StringOrNull(r.original_recipient);
    o["action"] = StringOrNull(r.action);
    o["status"] = StringOrNull(r.status);
    o["remote_mta"] = StringOrNull(r.remote_mta);
    o["diagnostic"] = StringOrNull(r.diagnostic);
    o["reply"] = r.reply.code == 0 && r.reply.text.empty()
                     ? Json(nullptr)
                     : Json{{"code", r.reply.code},
                            {"enhanced", StringOrNull(r.reply.enhanced)},
                            {"text", r.reply.text}};
    o["category"] = std::string(bounce::CategoryName(r.category));
    o["rule"] = StringOrNull(r.rule);
    rcpts.push_back(std::move(o));
  }
  j["recipients"] = std::move(rcpts);

  // VERP: with the configuration's bounce domain and key, if it has them.
  Json verp = nullptr;
  if (!config->bounce_verp_domain.empty()) {
    bounce::VerpOptions v;
    v.domain = config->bounce_verp_domain;
    v.prefix = config->bounce_verp_prefix;
    std::ifstream key(config->VerpSecretPath(), std::ios::binary);
    std::stringstream secret;
    secret << key.rdbuf();
    v.secret = std::string(absl::StripAsciiWhitespace(secret.str()));
    std::vector<std::string> candidates;
    if (!a.recipient.empty()) candidates.push_back(a.recipient);
    candidates.insert(candidates.end(), report.candidates.begin(),
                      report.candidates.end());
    for (const std::string& c : candidates) {
      auto m = bounce::ParseVerp(v, c);
      if (m.ok() && m->has_value()) {
        verp = {{"address", c},
                {"valid", true},
                {"id", queue::FormatMessageId((*m)->id)},
                {"index", (*m)->index},
                {"recipient", (*m)->recipient}};
        break;
      }
      if (!m.ok() && verp.is_null()) {
        verp = {{"address", c},
                {"valid", false},
                {"error", std::string(m.status().message())}};
      }
    }
  }
  j["verp"] = std::move(verp);
  j["error"] = StringOrNull(report.error);
  out << j.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
  return report.recipients.empty() ? 1 : 0;
}

}  // namespace peregrine
