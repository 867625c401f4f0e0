// libFuzzer target: what comes back to the bounce domains and the lines an
// operator imports. The first byte picks: 0-1, the rest is a message read
// as a bounce or feedback report (GMime, the DSN fields, the plain-text
// shapes); 2, a VERP address checked against a key; 3, a suppression CSV
// line. Any input gives a value, never a crash; what is read stays within
// the bounds the parser promises.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "mta/bounce/classifier.h"
#include "mta/bounce/report.h"
#include "mta/bounce/suppression.h"
#include "mta/bounce/verp.h"

using namespace peregrine::bounce;  // NOLINT: a fuzz target.

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
    case 1: {
      static const std::shared_ptr<const Classifier> rules =
          *Classifier::Create();
      Report r = ParseReport(rest, rules.get());
      if (r.recipients.size() > 1000) std::abort();
      if (r.recipients.empty() && r.error.empty()) std::abort();
      for (const ReportedRecipient& p : r.recipients) {
        if (p.recipient.size() > rest.size()) std::abort();
      }
      break;
    }
    case 2: {
      VerpOptions o;
      o.domain = "bounces.example";
      o.secret = "0123456789abcdef0123456789abcdef";
      auto m = ParseVerp(o, rest);
      if (m.ok() && m->has_value()) {
        // A valid token must be one we would make.
        if (VerpAddress(o, (*m)->id, (*m)->index, (*m)->recipient).size() >
            rest.size() + 64) {
          std::abort();
        }
      }
      break;
    }
    case 3: {
      SuppressionEntry defaults;
      auto e = ParseCsvLine(rest, defaults);
      if (e.ok() && e->has_value()) {
        auto back = ParseCsvLine(ToCsv(**e), defaults);
        if (!back.ok() || !back->has_value() ||
            (*back)->address != (*e)->address) {
          std::abort();
        }
      }
      break;
    }
  }
  return 0;
}
