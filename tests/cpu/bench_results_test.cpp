// The bench results JSON (bench/results.hpp): a row's `name` and `sparsity.kept_blocks` are
// written under those keys, and files written before the rename (`variant`, `executed_blocks`:
// the committed reports/ and tests/fixtures/) still read, with the same values.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "bench/results.hpp"
#include "common/error.hpp"

namespace fs = std::filesystem;
using namespace sparge;

namespace {

const fs::path kSource = fs::path(SPARGE_SOURCE_DIR);

// A minimal version-2 document with one row; `name_key` / `kept_key` spell the two renamed keys.
nlohmann::json one_row(const char* name_key, const char* kept_key) {
  nlohmann::json row = {{name_key, "sparge_fwd.sm90.hd128.i8f8"},
                        {"shape",
                         {{"batch", 1},
                          {"heads", 2},
                          {"kv_heads", 2},
                          {"seq_q", 256},
                          {"seq_k", 256},
                          {"head_dim", 128}}},
                        {"causal", false},
                        {"density", 0.5},
                        {"time_ms", {{"median", 1.5}, {"samples", 30}, {"rel_spread", 0.01}}},
                        {"sparsity", {{"stage1", 0.5}, {"valid_blocks", 8}, {kept_key, 4}}}};
  return {{"schema", bench::kBenchSchema},
          {"schema_version", bench::kBenchSchemaVersion},
          {"environment", {{"gpu", "NVIDIA H100 80GB HBM3"}}},
          {"rows", nlohmann::json::array({row})}};
}

TEST(BenchResultsJson, OldKeysRead) {
  const bench::Results r = bench::results_from_json(one_row("variant", "executed_blocks"), "old");
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].name, "sparge_fwd.sm90.hd128.i8f8");
  EXPECT_EQ(r.rows[0].kept_blocks, 4);
  ASSERT_TRUE(r.rows[0].actual_tops().has_value());
  EXPECT_DOUBLE_EQ(*r.rows[0].actual_tops(), r.rows[0].effective_tops() * 0.5);
}

TEST(BenchResultsJson, NewKeysWrittenAndRead) {
  const bench::Results old = bench::results_from_json(one_row("variant", "executed_blocks"), "old");
  const nlohmann::json j = bench::to_json(old);
  const nlohmann::json& row = j.at("rows").at(0);
  EXPECT_EQ(row.at("name").get<std::string>(), "sparge_fwd.sm90.hd128.i8f8");
  EXPECT_FALSE(row.contains("variant"));
  EXPECT_EQ(row.at("sparsity").at("kept_blocks").get<int64_t>(), 4);
  EXPECT_FALSE(row.at("sparsity").contains("executed_blocks"));
  const bench::Results back = bench::results_from_json(j, "new");
  EXPECT_EQ(back.rows.at(0).name, old.rows[0].name);
  EXPECT_EQ(back.rows.at(0).kept_blocks, old.rows[0].kept_blocks);
  const bench::Results fresh = bench::results_from_json(one_row("name", "kept_blocks"), "fresh");
  EXPECT_EQ(fresh.rows.at(0).name, old.rows[0].name);
  EXPECT_EQ(fresh.rows.at(0).kept_blocks, 4);
}

TEST(BenchResultsJson, RowWithoutANameNamesTheNewKey) {
  nlohmann::json j = one_row("name", "kept_blocks");
  j["rows"][0].erase("name");
  try {
    bench::results_from_json(j, "x.json");
    ADD_FAILURE() << "a row without a name was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kDataError);
    EXPECT_NE(std::string(e.what()).find("rows[0].name"), std::string::npos) << e.what();
  }
}

// The prepare time's spread survives the file (so `sparge report` can weigh a prepare change
// against it), and a file without it reads as "not recorded", not as zero.
TEST(BenchResultsJson, PrepareSpreadRoundTrips) {
  nlohmann::json j = one_row("name", "kept_blocks");
  j["rows"][0]["split_ms"]["prepare"] = 0.65;
  const bench::Results old = bench::results_from_json(j, "old.json");
  ASSERT_TRUE(old.rows.at(0).prepare_ms.has_value());
  EXPECT_FALSE(old.rows.at(0).prepare_spread.has_value());
  bench::Results r = old;
  r.rows[0].prepare_spread = 0.031;
  const bench::Results back = bench::results_from_json(bench::to_json(r), "roundtrip");
  ASSERT_TRUE(back.rows.at(0).prepare_spread.has_value());
  EXPECT_DOUBLE_EQ(*back.rows[0].prepare_spread, 0.031);
  EXPECT_DOUBLE_EQ(*back.rows[0].prepare_ms, 0.65);
}

TEST(BenchResultsJson, ClockRoundTrips) {
  // A row's SM clock survives the JSON; files written before it was recorded read without one,
  // and a clock that is not a number is bad input (exit 65) naming its path.
  const nlohmann::json j = one_row("name", "kept_blocks");
  const bench::Results old = bench::results_from_json(j, "old.json");
  EXPECT_FALSE(old.rows.at(0).clock_mhz.has_value());
  bench::Results r = old;
  r.rows[0].clock_mhz = 1755.5;
  const nlohmann::json written = bench::to_json(r);
  const bench::Results back = bench::results_from_json(written, "roundtrip");
  ASSERT_TRUE(back.rows.at(0).clock_mhz.has_value());
  EXPECT_DOUBLE_EQ(*back.rows[0].clock_mhz, 1755.5);
  nlohmann::json broken = written;
  broken["rows"][0]["clock_mhz"] = "fast";
  try {
    bench::results_from_json(broken, "broken.json");
    FAIL() << "a non-numeric clock was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kDataError);
    EXPECT_NE(std::string(e.what()).find("rows[0].clock_mhz"), std::string::npos) << e.what();
  }
}

// Every committed result file (old keys) reads with a name on every row and the kept blocks of
// its sparse rows, and survives a round trip through the new keys unchanged.
TEST(BenchResultsJson, CommittedFilesRead) {
  int files = 0;
  for (const fs::path dir : {kSource / "reports", kSource / "tests" / "fixtures"}) {
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      if (e.path().extension() != ".json") continue;
      const nlohmann::json raw = nlohmann::json::parse(std::ifstream(e.path()));
      if (raw.value("schema", "") != bench::kBenchSchema) continue;
      SCOPED_TRACE(e.path().string());
      ++files;
      const bench::Results r = bench::load_results(e.path());
      ASSERT_EQ(r.rows.size(), raw.at("rows").size());
      for (size_t i = 0; i < r.rows.size(); ++i) {
        const nlohmann::json& x = raw["rows"][i];
        EXPECT_EQ(r.rows[i].name,
                  (x.contains("name") ? x["name"] : x["variant"]).get<std::string>());
        const nlohmann::json& sp = x.at("sparsity");
        EXPECT_EQ(r.rows[i].kept_blocks,
                  (sp.contains("kept_blocks") ? sp["kept_blocks"] : sp["executed_blocks"])
                      .get<int64_t>());
      }
      const bench::Results back = bench::results_from_json(bench::to_json(r), "roundtrip");
      ASSERT_EQ(back.rows.size(), r.rows.size());
      for (size_t i = 0; i < r.rows.size(); ++i) {
        EXPECT_EQ(back.rows[i].name, r.rows[i].name);
        EXPECT_EQ(back.rows[i].kept_blocks, r.rows[i].kept_blocks);
      }
    }
  }
  EXPECT_GE(files, 5);
}

}  // namespace
