// libFuzzer target: the bounce classifier's two inputs from outside. The
// first byte picks one: odd, the rest is an operator's rule file
// (bounce.rules_file: TOML, then RE2 patterns); even, the rest is a reply
// line from a remote server, classified by the built-in rules. Bad rule
// files must be refused with a message naming the file, never crash; every
// reply gets a category.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "mta/bounce/classifier.h"

using peregrine::Reply;
using peregrine::bounce::Classifier;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    auto c = Classifier::FromText(rest, "fuzz.toml", false);
    if (!c.ok()) {
      if (c.status().message().find("fuzz.toml") == std::string::npos) {
        std::abort();
      }
      return 0;
    }
    (*c)->Classify(Reply{550, "5.1.1", "no such user"});
    return 0;
  }
  static const std::shared_ptr<const Classifier> builtin =
      *Classifier::Create();
  auto v = builtin->Classify(Reply::Parse(rest));
  if (!v.rule.empty() && v.pattern.empty()) std::abort();
  return 0;
}
