#include "common/log.hpp"

#include <atomic>

namespace sparge::log {
namespace {
std::atomic<Level> g_level{Level::kInfo};
}
Level level() { return g_level.load(std::memory_order_relaxed); }
void set_level(Level lvl) { g_level.store(lvl, std::memory_order_relaxed); }
}  // namespace sparge::log
