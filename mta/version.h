// Peregrine's version, printed by `peregrine --version` and at start.
#pragma once

namespace peregrine {
inline constexpr char kVersion[] = "0.1.0";
}  // namespace peregrine
