#include "tune/journal.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/log.hpp"

namespace sparge::tune {
namespace {

nlohmann::json record_json(const HeadRecord& r) {
  nlohmann::json j;
  j["layer"] = r.layer;
  j["head"] = r.head;
  j["tau"] = r.c.tau;
  j["theta"] = r.c.theta;
  j["topk"] = r.c.topk;
  j["lambda"] = std::isinf(r.c.lambda) ? nlohmann::json(nullptr) : nlohmann::json(r.c.lambda);
  j["sparse"] = r.sparse;
  j["meets"] = r.meets;
  j["s1"] = r.s1;
  j["s12"] = r.s12;
  j["e1"] = r.e1;
  j["e12"] = r.e12;
  j["x1"] = r.x1;
  j["x12"] = r.x12;
  j["trace"] = r.trace;
  return j;
}

HeadRecord record_from_json(const nlohmann::json& j) {
  HeadRecord r;
  r.layer = j.at("layer").get<int>();
  r.head = j.at("head").get<int>();
  r.c.tau = j.at("tau").get<float>();
  r.c.theta = j.at("theta").get<float>();
  r.c.topk = j.at("topk").get<bool>();
  r.c.lambda = j.at("lambda").is_null() ? kNoSkip : j.at("lambda").get<float>();
  r.sparse = j.at("sparse").get<bool>();
  r.meets = j.at("meets").get<bool>();
  r.s1 = j.at("s1").get<double>();
  r.s12 = j.at("s12").get<double>();
  r.e1 = j.at("e1").get<double>();
  r.e12 = j.at("e12").get<double>();
  r.x1 = j.at("x1").get<double>();
  r.x12 = j.at("x12").get<double>();
  r.trace = j.at("trace");
  return r;
}

}  // namespace

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
}

std::map<std::pair<int, int>, HeadRecord> Journal::open(bool resume) {
  std::map<std::pair<int, int>, HeadRecord> done;
  int old_fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (old_fd >= 0 && ::flock(old_fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(old_fd);
    fail(ExitCode::kIoError,
         "{}: another `sparge tune` is writing this output (its journal is locked); wait for "
         "it or choose another -o",
         path_.string());
  }
  struct CloseOld {
    int fd;
    ~CloseOld() {
      if (fd >= 0) ::close(fd);
    }
  } close_old{old_fd};
  std::string kept = header() + "\n";
  if (resume && std::filesystem::exists(path_)) {
    std::ifstream in(path_);
    std::string line;
    bool first = true;
    while (std::getline(in, line)) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (first) {
        first = false;
        if (j.is_discarded() || !j.is_object() ||
            j.value("schema", "") != std::string("sparge.tune-journal")) {
          fail(ExitCode::kDataError,
               "{}: not a sparge tune journal (unreadable first line); delete it or rerun "
               "without --resume",
               path_.string());
        }
        if (j.value("fingerprint", "") != fingerprint_) {
          fail(ExitCode::kUsage,
               "{}: journal was written for other inputs or flags; rerun without --resume to "
               "start over (or with the original flags)",
               path_.string());
        }
        continue;
      }
      if (j.is_discarded()) continue;  // torn last line of a killed run
      try {
        HeadRecord r = record_from_json(j);
        done[{r.layer, r.head}] = r;
        kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
        log::warn("{}: skipping unreadable journal line", path_.string());
      }
    }
  } else if (std::filesystem::exists(path_)) {
    log::warn("{}: discarding the journal of an earlier run (pass --resume to continue it)",
              path_.string());
  }
  write_file_atomic(path_, kept);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) {
    fail(ExitCode::kIoError, "{}: cannot open journal: {}", path_.string(), std::strerror(errno));
  }
  ::flock(fd_, LOCK_EX | LOCK_NB);
  return done;
}

void Journal::append(const std::vector<HeadRecord>& records) {
  std::string text;
  for (const auto& r : records) text += record_json(r).dump() + "\n";
  std::lock_guard lock(mu_);
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd_, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      fail(ExitCode::kIoError, "{}: cannot append to journal: {}", path_.string(),
           std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }
  ::fsync(fd_);
}

void Journal::remove() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

std::string Journal::header() const {
  nlohmann::json h;
  h["schema"] = "sparge.tune-journal";
  h["schema_version"] = 1;
  h["fingerprint"] = fingerprint_;
  return h.dump();
}

}  // namespace sparge::tune
