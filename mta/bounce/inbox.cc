#include "mta/bounce/inbox.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/log.h"

namespace peregrine::bounce {
namespace {

constexpr const char* kLog = "bounce";
using outcome::Kind;
using outcome::Outcome;

bool Failed(const ReportedRecipient& r) {
  return r.action == "failed" ||
         (r.action.empty() && !r.status.empty() && r.status[0] == '5');
}

}  // namespace

std::string InboxResult::Summary() const {
  std::string s =
      absl::StrCat(ReportKindName(report.kind), ", ", report.recipients.size(),
                   " recipient", report.recipients.size() == 1 ? "" : "s");
  if (matched) {
    absl::StrAppend(&s, ", VERP match ", queue::FormatMessageId(match.id), " <",
                    match.recipient, ">");
  } else if (!verp_error.empty()) {
    absl::StrAppend(&s, ", forged or damaged VERP token");
  } else {
    absl::StrAppend(&s, ", no VERP token");
  }
  if (suppressed > 0) absl::StrAppend(&s, ", ", suppressed, " suppressed");
  if (!report.error.empty()) absl::StrAppend(&s, " (", report.error, ")");
  return s;
}

BounceInbox::BounceInbox(InboxOptions options, const outcome::Bus* bus,
                         SuppressionList* suppression)
    : options_(std::move(options)),
      bus_(bus),
      suppression_(suppression),
      thread_([this] { Main(); }) {}

BounceInbox::~BounceInbox() { Stop(); }

bool BounceInbox::IsBounceDomain(absl::string_view domain) const {
  if (domain.empty()) return false;
  if (absl::EqualsIgnoreCase(domain, options_.verp.domain)) return true;
  for (const std::string& d : options_.domains) {
    if (absl::EqualsIgnoreCase(domain, d)) return true;
  }
  return false;
}

void BounceInbox::Submit(std::string message,
                         std::vector<std::string> recipients,
                         std::string client, Done done) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_ && waiting_.size() < kMaxWaiting) {
      waiting_.push_back({std::move(message), std::move(recipients),
                          std::move(client), std::move(done)});
      return;
    }
  }
  done(absl::UnavailableError("too many bounces waiting to be read"), "");
}

void BounceInbox::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void BounceInbox::Main() {
  for (;;) {
    Item item;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !waiting_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (waiting_.empty()) return;  // Stopping, and nothing left.
      item = std::move(waiting_.front());
      waiting_.pop_front();
    }
    InboxResult r = Process(item.message, item.recipients, item.client);
    item.done(absl::OkStatus(), r.Summary());
  }
}

void BounceInbox::Suppress(const std::string& address,
                           const std::string& category,
                           const std::string& reason, const std::string& source,
                           const Outcome& about) {
  if (suppression_ == nullptr) return;
  SuppressionEntry e;
  e.address = address;
  e.category = category;
  e.reason = reason;
  e.source = source;
  e.added = absl::Now();
  if (options_.suppress_for > absl::ZeroDuration()) {
    e.expires = e.added + options_.suppress_for;
  }
  if (absl::Status s = suppression_->Add(e); !s.ok()) {
    log::Error(kLog, "cannot suppress <%s>: %s", address, s.message());
    return;
  }
  Outcome o = about;
  o.kind = Kind::kSuppressed;
  o.reason = absl::StrCat(
      "added to the suppression list after ",
      source == "complaint" ? "a complaint" : "a bounce that came back");
  bus_->Publish(o);
}

InboxResult BounceInbox::Process(absl::string_view message,
                                 const std::vector<std::string>& recipients,
                                 absl::string_view client) {
  std::shared_ptr<const Classifier> classifier =
      options_.classifier ? options_.classifier() : nullptr;
  InboxResult result;
  result.report = ParseReport(message, classifier.get());
  const Report& report = result.report;

  // The token: in the envelope recipient first, then where the report
  // shows the original's return path.
  std::vector<std::string> candidates = recipients;
  candidates.insert(candidates.end(), report.candidates.begin(),
                    report.candidates.end());
  for (const std::string& c : candidates) {
    auto m = ParseVerp(options_.verp, c);
    if (m.ok() && m->has_value()) {
      result.matched = true;
      result.match = **m;
      break;
    }
    if (!m.ok() && result.verp_error.empty()) {
      result.verp_error = std::string(m.status().message());
    }
  }

  Outcome base;
  base.time = absl::Now();
  base.client = std::string(client);
  if (result.matched) {
    base.id = result.match.id;
  }
  std::string how =
      result.matched ? absl::StrCat("matched by VERP to message ",
                                    queue::FormatMessageId(result.match.id))
      : !result.verp_error.empty()
          ? absl::StrCat("not acted on: ", result.verp_error)
          : absl::StrCat("not matched (no VERP token",
                         report.original_message_id.empty()
                             ? std::string()
                             : absl::StrCat("; the returned message is <",
                                            report.original_message_id, ">"),
                         "): not acted on");

  if (report.kind == Report::Kind::kFeedback) {
    Outcome o = base;
    o.kind = Kind::kComplaint;
    o.recipient = result.matched ? result.match.recipient
                  : report.recipients.empty()
                      ? std::string()
                      : report.recipients.front().recipient;
    o.reason = absl::StrCat(
        report.feedback_type.empty() ? "feedback report" : report.feedback_type,
        " from ", report.reporting_mta.empty() ? client : report.reporting_mta,
        "; ", how);
    bus_->Publish(o);
    if (result.matched && options_.suppress_complaints) {
      Suppress(result.match.recipient, "complaint",
               absl::StrCat("feedback report: ", report.feedback_type),
               "complaint", o);
      ++result.suppressed;
    }
    return result;
  }

  if (report.recipients.empty()) {
    log::Warn(kLog, "a message to %s from %s read as no bounce: %s",
              recipients.empty() ? "?" : recipients.front(), client,
              report.error);
    if (result.matched) {
      Outcome o = base;
      o.kind = Kind::kAsyncBounce;
      o.recipient = result.match.recipient;
      o.reason = absl::StrCat("unreadable bounce (", report.error, "); ", how);
      bus_->Publish(o);
    }
    return result;
  }
  // With a token, one recipient is meant: the report's first failure, or
  // its first entry when nothing failed (a delay).
  size_t first = 0;
  if (result.matched) {
    for (size_t i = 0; i < report.recipients.size(); ++i) {
      if (Failed(report.recipients[i])) {
        first = i;
        break;
      }
    }
  }
  for (size_t i = first; i < report.recipients.size(); ++i) {
    const ReportedRecipient& r = report.recipients[i];
    Outcome o = base;
    o.kind = Kind::kAsyncBounce;
    // The token says whose mail it was; the report may name a forwarded
    // address instead.
    o.recipient = result.matched ? result.match.recipient : r.recipient;
    o.reply = r.reply;
    o.category = r.category;
    o.category_rule = r.rule;
    o.mx = r.remote_mta;
    o.reason =
        absl::StrCat(r.action.empty() ? "bounce" : r.action,
                     r.status.empty() ? "" : " ", r.status, " reported by ",
                     report.reporting_mta.empty() ? std::string(client)
                                                  : report.reporting_mta,
                     "; ", how);
    bus_->Publish(o);
    bool dead = std::find(options_.suppress.begin(), options_.suppress.end(),
                          r.category) != options_.suppress.end();
    if (result.matched && Failed(r) && dead) {
      Suppress(result.match.recipient, std::string(CategoryName(r.category)),
               r.reply.ToString(), "async_bounce", o);
      ++result.suppressed;
    }
    if (result.matched) break;  // One token, one recipient.
  }
  return result;
}

}  // namespace peregrine::bounce
