// Inject(): an injection's messages signed and queued; the parsing and
// rendering are in inject.cc (which the fuzz target builds alone).
#include <atomic>
#include <memory>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "mta/inject.h"
#include "queue/types.h"

namespace peregrine {
namespace {

constexpr const char* kLog = "inject";
using json = nlohmann::json;

// Rendered mail handed to signing and the queue and not yet answered, all
// requests of all shards together (ReceptionContext::inject_memory).
std::atomic<uint64_t> in_flight{0};

}  // namespace

namespace {

// One request's messages in flight; answers when the last one did.
struct Batch {
  shard::Reactor* reactor;
  absl::AnyInvocable<void(int, std::string)> done;
  int pending = 0;
  json failed = json::array();
  json errors = json::array();
  json ids = json::array();
  int success = 0;

  void Fail(const std::string& email, std::string why) {
    failed.push_back(email);
    errors.push_back(absl::StrCat(email, ": ", why));
  }
  void MaybeAnswer() {
    if (pending > 0 || !done) return;
    json j = {{"success_count", success},
              {"fail_count", static_cast<int>(failed.size())},
              {"failed_recipients", failed},
              {"errors", errors},
              {"ids", ids}};
    auto d = std::move(done);
    d(200, j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
  }
};

void QueueOne(const ReceptionContext& context, std::shared_ptr<Batch> batch,
              const InjectRequest& r, const std::string& email,
              const std::string& client, std::string body, absl::Time now,
              uint64_t budget) {
  queue::NewMessage q;
  q.envelope.sender = r.sender;
  q.envelope.client_address = client;
  q.envelope.received = now;
  q.envelope.listener = "http";
  q.envelope.campaign = r.campaign;
  q.envelope.tenant = r.tenant;
  std::string domain =
      absl::AsciiStrToLower(email.substr(email.rfind('@') + 1));
  queue::RecipientSpec spec;
  spec.address = email;
  spec.site = domain;
  spec.shard = static_cast<uint16_t>(ShardForDomain(domain, context.shards));
  q.recipients.push_back(std::move(spec));
  q.body = std::move(body);
  auto o = std::make_shared<outcome::Outcome>();
  o->size = q.body.size();
  o->sender = r.sender;
  o->recipients.push_back(email);
  o->client = client;
  o->listener = "http";
  o->tenant = r.tenant;
  o->campaign = r.campaign;
  context.queue->Enqueue(
      std::move(q), [batch, o, email, outcomes = context.outcomes,
                     budget](absl::StatusOr<queue::MessageId> id) {
        in_flight.fetch_sub(budget, std::memory_order_relaxed);
        // On the committer thread: back to the request's shard.
        batch->reactor->Post([batch, o, email, id, outcomes] {
          --batch->pending;
          if (id.ok()) {
            ++batch->success;
            batch->ids.push_back(
                {{"recipient", email}, {"id", queue::FormatMessageId(*id)}});
            o->kind = outcome::Kind::kReceived;
            o->id = *id;
          } else {
            batch->Fail(email,
                        absl::StrCat("not queued: ", id.status().message()));
            o->kind = outcome::Kind::kRejected;
            o->reply = Reply{451, "4.3.0", "not queued"};
            o->reason = std::string(id.status().message());
          }
          o->time = absl::Now();
          o->shard = batch->reactor->id();
          if (outcomes != nullptr) outcomes->Publish(*o);
          batch->MaybeAnswer();
        });
      });
}

}  // namespace

void Inject(const ReceptionContext& context, shard::Reactor& reactor,
            InjectRequest request, std::string client,
            absl::AnyInvocable<void(int status, std::string body)> done) {
  auto batch = std::make_shared<Batch>();
  batch->reactor = &reactor;
  batch->done = std::move(done);
  auto shared = std::make_shared<const InjectRequest>(std::move(request));
  const InjectRequest& r = *shared;
  absl::Time now = absl::Now();
  std::string received = absl::StrCat(
      "Received: from [", client, "]\r\n\tby ", context.hostname,
      " (Peregrine) with HTTP;\r\n\t",
      absl::FormatTime("%a, %d %b %Y %H:%M:%S %z", now, absl::UTCTimeZone()),
      "\r\n");
  auto table = context.dkim ? context.dkim() : nullptr;
  // Counted up front, so that answers arriving early cannot reach zero.
  batch->pending = 1;
  for (const InjectRecipient& to : r.recipients) {
    if (!PlausibleAddress(to.email)) {
      batch->Fail(to.email, "not an address");
      continue;
    }
    if (context.local != nullptr) {
      // An own domain's address that no alias takes (mta/local/).
      std::string refusal = context.local->CheckRecipient(to.email);
      if (!refusal.empty()) {
        batch->Fail(to.email, refusal);
        continue;
      }
    }
    if (context.check_recipient) {
      std::string refusal = context.check_recipient(r.sender, to.email);
      if (!refusal.empty()) {
        batch->Fail(to.email, refusal);
        continue;
      }
    }
    auto message = RenderMessage(r, to, now, context.hostname);
    if (!message.ok()) {
      batch->Fail(to.email, std::string(message.status().message()));
      continue;
    }
    std::string body = absl::StrCat(received, *message);
    // Counted until the queue answers; past the budget the recipient fails
    // alone and the rest of the batch is still tried (a later one may fit
    // once earlier writes are answered).
    const uint64_t budget = body.size() + 1024;
    if (in_flight.fetch_add(budget, std::memory_order_relaxed) + budget >
        context.inject_memory) {
      in_flight.fetch_sub(budget, std::memory_order_relaxed);
      batch->Fail(to.email,
                  "too much injected mail waits for the disk "
                  "(admin.inject_memory): send it again shortly");
      continue;
    }
    ++batch->pending;
    if (table == nullptr) {
      QueueOne(context, batch, r, to.email, client, std::move(body), now,
               budget);
      continue;
    }
    auto signed_one = [&context, batch, shared, email = to.email, client, now,
                       budget](absl::StatusOr<std::string> signatures,
                               std::string body) {
      if (!signatures.ok()) {
        in_flight.fetch_sub(budget, std::memory_order_relaxed);
        --batch->pending;
        batch->Fail(email,
                    absl::StrCat("DKIM: ", signatures.status().message()));
        batch->MaybeAnswer();
        return;
      }
      QueueOne(context, batch, *shared, email, client, *signatures + body, now,
               budget);
    };
    if (context.signer == nullptr) {
      auto signatures = table->Sign(body, now);
      signed_one(std::move(signatures), std::move(body));
      continue;
    }
    context.signer->Sign(
        table, std::move(body), now,
        [&reactor, signed_one](absl::StatusOr<std::string> signatures,
                               std::string body) mutable {
          // On a signer thread: back to the request's shard.
          reactor.Post([signed_one, signatures = std::move(signatures),
                        body = std::move(body)]() mutable {
            signed_one(std::move(signatures), std::move(body));
          });
        });
  }
  --batch->pending;
  if (batch->failed.size() == r.recipients.size()) {
    log::Info(kLog, "injection from %s: every one of %d recipients refused",
              client, r.recipients.size());
  }
  batch->MaybeAnswer();
}

}  // namespace peregrine
