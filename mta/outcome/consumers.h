// The consumers every daemon attaches to the outcome Bus, in this order:
// QueueRecorder (the durable record), HumanLog (one line per outcome on
// the log), then EventLog (event_log.h) when [events] asks for one.
#pragma once

#include "mta/outcome/outcome.h"
#include "queue/store.h"

namespace peregrine::outcome {

// Writes each delivery outcome to the queue (Store::Update, committed by
// the queue's own thread; the call only hands it over). Reception outcomes
// need nothing: the message was queued before `received` was published.
// Takes some outcomes' queue updates over: bounce::Notifier writes a
// failure and its DSN together, in one atomic write.
class UpdateDiverter {
 public:
  virtual ~UpdateDiverter() = default;
  // On the outcome's thread. True: it took `update` (moved from) and will
  // write it; false: the recorder writes it as usual.
  virtual bool Divert(const Outcome& outcome,
                      queue::RecipientUpdate& update) = 0;
};

class QueueRecorder : public Consumer {
 public:
  // `diverter` may be null; it outlives the recorder's use.
  explicit QueueRecorder(queue::Store* queue,
                         UpdateDiverter* diverter = nullptr)
      : queue_(queue), diverter_(diverter) {}
  void OnOutcome(const Outcome& outcome) override;

 private:
  queue::Store* const queue_;
  UpdateDiverter* const diverter_;
};

// The human log's line for each outcome, as operators grep for it:
//   received  id=… client=… from=<…> rcpt=N size=N tls=… auth=…
//   refused   CLIENT on the relay port: REPLY (REASON)
//   delivered id=… to=<…> host=mx[ip] tls=… attempts=N delay=… reply="…"
//   deferred  id=… to=<…> attempts=N next=…Z reply="…" category=…
//   failed    id=… to=<…> attempts=N reply="…" category=…
//   expired   id=… to=<…> reply="expired after …; last: …" category=expired
// Recipients held back unattempted (a suspended site) get no line of their
// own: the engine logs how many.
class HumanLog : public Consumer {
 public:
  void OnOutcome(const Outcome& outcome) override;
};

}  // namespace peregrine::outcome
