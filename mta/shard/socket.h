// Socket set-up helpers for shards: listeners and outgoing sockets.
//
// Plain syscalls, called on any thread at set-up time. Listeners use
// SO_REUSEPORT so that each shard can bind its own socket on the same
// address and the kernel spreads connections across shards.
#pragma once

#include "absl/status/statusor.h"
#include "mta/shard/address.h"

namespace peregrine::shard {

// A non-blocking listening socket on `address`. With `reuse_port`, several
// sockets (one per shard) may share the address. Errors name the address and
// the cause ("address already in use").
absl::StatusOr<int> Listen(const SocketAddress& address, bool reuse_port,
                           int backlog = 1024);

// Fails if anything listens on `address` already. SO_REUSEPORT lets any
// process of the same user share a port, so a daemon that binds with it must
// ask this first, or a second instance would silently split the traffic.
absl::Status CheckPortFree(const SocketAddress& address);

// A non-blocking TCP socket of `family`, ready for IoBackend::Connect.
absl::StatusOr<int> NewStreamSocket(int family);

// The local address a socket is bound to (e.g. the port picked for port 0).
absl::StatusOr<SocketAddress> LocalAddress(int fd);
absl::StatusOr<SocketAddress> PeerAddress(int fd);

}  // namespace peregrine::shard
