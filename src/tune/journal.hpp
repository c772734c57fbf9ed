// The resumable journal of `sparge tune`: one JSON line per finished head, appended with one
// write(2) and an fsync, so a killed run loses at most the head it was writing (docs/design.md,
// Calibration). The file starts with a header line naming the schema and a fingerprint of
// everything that changes the result; --resume accepts only a journal of the same fingerprint.
#pragma once

#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tune/oracle.hpp"

namespace sparge::tune {

// One finished head, as journalled and as written.
struct HeadRecord {
  int layer = 0, head = 0;
  Candidate c;
  bool sparse = false, meets = true;
  double s1 = 0, s12 = 0, e1 = 0, e12 = 0;
  double x1 = 0, x12 = 0;  // predicted held-out error (SearchOptions::holdout)
  nlohmann::json trace = nlohmann::json::array();  // trace_json of the search
};

// Append-only JSON-lines journal. A kill leaves at most a torn last line, which the reader drops
// (and rewrites the file without it before appending again).
class Journal {
 public:
  Journal(std::filesystem::path path, std::string fingerprint)
      : path_(std::move(path)), fingerprint_(std::move(fingerprint)) {}
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Loads the records of a matching journal when resuming (keyed by (layer, head)); otherwise,
  // or when there is none, starts a fresh one. Two runs writing one output would discard each
  // other's journal: the live journal is held under flock(2), and a second run refuses (exit 74)
  // while the first holds it. A journal of other inputs or flags: Error(kUsage); not a journal:
  // Error(kDataError).
  std::map<std::pair<int, int>, HeadRecord> open(bool resume);
  // Appends the records as one write and fsyncs. Thread-safe. Error(kIoError) when it fails.
  void append(const std::vector<HeadRecord>& records);
  // Closes and deletes the journal (after the output is written, or after bad data).
  void remove();

 private:
  std::string header() const;
  std::filesystem::path path_;
  std::string fingerprint_;
  int fd_ = -1;
  std::mutex mu_;
};

}  // namespace sparge::tune
