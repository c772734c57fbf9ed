// Dump reader/writer (src/io): bit-exact round trips per dtype, head-range reads, atomic writes,
// and the reader's validation errors (exit codes and messages) at the library level. CLI-level
// bad-file cases (exit code + no output file) are in cli_io_test.cpp.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "common/error.hpp"
#include "io/dump.hpp"
#include "io/h5.hpp"
#include "io/tensor_stats.hpp"
#include "support/cli_harness.hpp"

namespace fs = std::filesystem;
using sparge::Error;
using sparge::ExitCode;
using sparge::io::DumpInfo;
using sparge::io::DumpReader;
using sparge::io::DumpWriter;

namespace {

fs::path scratch(const std::string& name) {
  return sparge::test_support::scratch_dir("io_test") / name;
}

uint64_t fresh_seed() { return std::random_device{}(); }

// Random values plus the awkward ones a bit-exact path must keep: signed zero, subnormals and the
// largest finite values of the dtype.
at::Tensor awkward(const std::vector<int64_t>& shape, at::ScalarType dtype, at::Generator& g) {
  at::Tensor t = (at::randn(shape, g, at::kFloat) * 3).to(dtype);
  at::Tensor flat = t.view({-1});
  const double big = dtype == at::kHalf ? 65504.0 : 3.0e38;
  const double tiny = dtype == at::kHalf ? 6.0e-8 : 1.0e-40;
  const std::vector<double> special = {-0.0, tiny, -tiny, big, -big};
  for (size_t i = 0; i < special.size() && static_cast<int64_t>(i) < flat.numel(); ++i) {
    flat[static_cast<int64_t>(i)] = special[i];
  }
  return t;
}

// Bitwise equality: compare the storage reinterpreted as integers of the same width.
bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || !a.sizes().equals(b.sizes())) return false;
  const auto int_type = a.element_size() == 2 ? at::kShort : at::kInt;
  return at::equal(a.contiguous().view(int_type), b.contiguous().view(int_type));
}

ExitCode code_of(const std::function<void()>& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  return ExitCode::kOk;
}

DumpInfo root_info() {
  DumpInfo info;
  info.producer = "io_test";
  info.model_id = "test/model";
  info.capture_point = "sdpa_inputs";
  info.causal = true;
  info.scale = 0.125;
  info.attributes["note"] = "hello";
  return info;
}

class RoundTrip : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(RoundTrip, BitExactWithMetadataAndGqa) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::ScalarType dtype = GetParam();
  const fs::path path = scratch(fmt::format("rt_{}.h5", toString(dtype)));
  // [B, H, N, D] with GQA (H = 4, Hkv = 2) and different N per sample (LLM prompts).
  std::map<std::pair<int, int>, std::vector<at::Tensor>> written;
  {
    DumpWriter w(path, root_info());
    for (int layer : {0, 7}) {
      for (int sample : {0, 1}) {
        const int64_t n = 33 + 17 * sample;
        at::Tensor q = awkward({2, 4, n, 16}, dtype, g);
        at::Tensor k = awkward({2, 2, n, 16}, dtype, g);
        at::Tensor v = awkward({2, 2, n, 16}, dtype, g);
        std::optional<at::Tensor> o;
        if (sample == 1) o = awkward({2, 4, n, 16}, dtype, g);
        w.write_sample(layer, fmt::format("blocks.{}.attn", layer), sample, q, k, v, o, sample + 10,
                       3);
        written[{layer, sample}] = {q, k, v};
        if (o) written[{layer, sample}].push_back(*o);
      }
    }
    w.close();
  }
  DumpReader r(path);
  const DumpInfo& info = r.info();
  EXPECT_EQ(info.schema_version, 1);
  EXPECT_EQ(info.model_id, "test/model");
  EXPECT_EQ(info.producer, "io_test");
  EXPECT_TRUE(info.causal);
  ASSERT_TRUE(info.scale.has_value());
  EXPECT_EQ(*info.scale, 0.125);
  EXPECT_FALSE(info.grid.has_value());
  EXPECT_EQ(info.attributes.at("note"), "hello");
  EXPECT_EQ(info.attributes.at("num_layers"), "2");
  ASSERT_EQ(info.layers.size(), 2u);
  EXPECT_EQ(info.layers[1].index, 7);
  EXPECT_EQ(r.layer(7).module_path, "blocks.7.attn");
  EXPECT_EQ(r.layer(7).num_q_heads, 4);
  EXPECT_EQ(r.layer(7).num_kv_heads, 2);
  EXPECT_EQ(r.layer(7).head_dim, 16);
  for (const auto& [key, tensors] : written) {
    const auto& s = r.layer(key.first).samples.at(key.second);
    EXPECT_EQ(s.dtype, dtype);
    EXPECT_EQ(s.step, key.second + 10);
    EXPECT_EQ(s.prompt, 3);
    EXPECT_EQ(s.has_o, tensors.size() == 4);
    const char* names[] = {"q", "k", "v", "o"};
    for (size_t i = 0; i < tensors.size(); ++i) {
      at::Tensor back = r.read(key.first, key.second, names[i]);
      EXPECT_TRUE(same_bits(back, tensors[i]))
          << "layer " << key.first << " sample " << key.second << " " << names[i];
    }
  }
  EXPECT_EQ(code_of([&] { r.read(0, 0, "o"); }), ExitCode::kDataError);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RoundTrip, ::testing::Values(at::kHalf, at::kBFloat16, at::kFloat),
                         [](const auto& info) { return std::string(toString(info.param)); });

TEST(Dump, HeadRangeReadsMatchTheFullTensor) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  const fs::path path = scratch("heads.h5");
  at::Tensor q = at::randn({3, 6, 40, 8}, g).to(at::kBFloat16);
  at::Tensor k = at::randn({3, 3, 40, 8}, g).to(at::kBFloat16);
  {
    DumpWriter w(path, root_info());
    w.write_sample(0, "", 0, q, k, k);
    w.close();
  }
  DumpReader r(path);
  for (auto [h0, h1] : {std::pair{0, 1}, {2, 5}, {5, 6}, {0, 6}}) {
    EXPECT_TRUE(same_bits(r.read(0, 0, "q", std::pair{h0, h1}), q.slice(1, h0, h1)))
        << h0 << ".." << h1;
  }
  EXPECT_TRUE(same_bits(r.read(0, 0, "k", std::pair{1, 3}), k.slice(1, 1, 3)));
  EXPECT_EQ(code_of([&] { r.read(0, 0, "q", std::pair{4, 7}); }), ExitCode::kUsage);
  EXPECT_EQ(code_of([&] { r.read(0, 0, "x"); }), ExitCode::kUsage);
  EXPECT_EQ(code_of([&] { r.read(3, 0, "q"); }), ExitCode::kDataError);
}

TEST(Dump, NonContiguousInputsAreStoredLogically) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  const fs::path path = scratch("nhd.h5");
  at::Tensor q_nhd = at::randn({2, 20, 4, 8}, g).to(at::kHalf);  // [B, N, H, D]
  at::Tensor q = q_nhd.transpose(1, 2);                          // [B, H, N, D] view
  {
    DumpWriter w(path, root_info());
    w.write_sample(0, "", 0, q, q, q);
    w.close();
  }
  EXPECT_TRUE(same_bits(DumpReader(path).read(0, 0, "q"), q.contiguous()));
}

TEST(Dump, WriterWithoutCloseLeavesNothing) {
  const fs::path path = scratch("abandoned.h5");
  fs::remove(path);
  {
    DumpWriter w(path, root_info());
    at::Tensor t = at::zeros({1, 1, 4, 8}, at::kHalf);
    w.write_sample(0, "", 0, t, t, t);
  }  // destroyed without close(), as when an exception unwinds
  EXPECT_FALSE(fs::exists(path));
  for (const auto& e : fs::directory_iterator(path.parent_path())) {
    EXPECT_EQ(e.path().filename().string().find("abandoned.h5.tmp"), std::string::npos) << e.path();
  }
}

TEST(Dump, WriterRejectsInconsistentShapes) {
  const fs::path path = scratch("reject.h5");
  DumpWriter w(path, root_info());
  at::Tensor q = at::zeros({1, 3, 4, 8}, at::kHalf);
  at::Tensor k = at::zeros({1, 2, 4, 8}, at::kHalf);
  EXPECT_EQ(code_of([&] { w.write_sample(0, "", 0, q, k, k); }), ExitCode::kDataError);  // 3 % 2
  at::Tensor k16 = at::zeros({1, 1, 4, 16}, at::kHalf);
  EXPECT_EQ(code_of([&] { w.write_sample(0, "", 0, q, k16, k16); }), ExitCode::kDataError);
  at::Tensor r3 = at::zeros({3, 4, 8}, at::kHalf);
  EXPECT_EQ(code_of([&] { w.write_sample(0, "", 0, r3, r3, r3); }), ExitCode::kDataError);
  at::Tensor d = at::zeros({1, 1, 4, 8}, at::kDouble);
  EXPECT_EQ(code_of([&] { w.write_sample(0, "", 0, d, d, d); }), ExitCode::kDataError);
}

TEST(Dump, NanAndInfAreReportedOnRead) {
  const fs::path path = scratch("nan.h5");
  at::Tensor q = at::zeros({1, 2, 8, 8}, at::kHalf);
  q[0][1][3][2] = std::numeric_limits<float>::quiet_NaN();
  q[0][1][4][2] = std::numeric_limits<float>::quiet_NaN();
  q[0][0][0][0] = std::numeric_limits<float>::infinity();
  at::Tensor k = at::zeros({1, 2, 8, 8}, at::kHalf);
  {
    DumpWriter w(path, root_info());
    w.write_sample(0, "", 0, q, k, k);
    w.close();
  }
  DumpReader r(path);  // structure is fine: values are checked when read
  std::string msg;
  EXPECT_EQ(code_of([&] { r.read(0, 0, "q"); }, &msg), ExitCode::kDataError);
  EXPECT_NE(msg.find("nan.h5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("/layers/000/samples/0000/q"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 NaN and 1 Inf"), std::string::npos) << msg;
  EXPECT_EQ(code_of([&] { r.read(0, 0, "q", std::pair{1, 2}); }, &msg), ExitCode::kDataError);
  EXPECT_NE(msg.find("2 NaN and 0 Inf"), std::string::npos) << msg;
  EXPECT_EQ(code_of([&] { r.read(0, 0, "k"); }), ExitCode::kOk);
  const auto stats = sparge::io::tensor_stats(r.read(0, 0, "q", std::nullopt, false));
  EXPECT_EQ(stats.nan, 2);
  EXPECT_EQ(stats.inf, 1);
}

// Library-level validation: each fault gives the documented exit code and names the file.
TEST(Dump, ReaderValidation) {
  std::string msg;
  EXPECT_EQ(code_of([&] { DumpReader r(scratch("does-not-exist.h5")); }, &msg), ExitCode::kNoInput);
  EXPECT_NE(msg.find("does-not-exist.h5"), std::string::npos) << msg;

  const fs::path text = scratch("text.h5");
  std::ofstream(text) << "this is not HDF5\n";
  EXPECT_EQ(code_of([&] { DumpReader r(text); }, &msg), ExitCode::kDataError);
  EXPECT_NE(msg.find("not an HDF5 file"), std::string::npos) << msg;

  const fs::path good = scratch("good.h5");
  {
    DumpWriter w(good, root_info());
    at::Tensor t = at::ones({1, 2, 512, 64}, at::kHalf);
    w.write_sample(0, "", 0, t, t, t);
    w.close();
  }
  const fs::path trunc = scratch("trunc.h5");
  fs::copy_file(good, trunc, fs::copy_options::overwrite_existing);
  fs::resize_file(trunc, fs::file_size(good) / 2);
  EXPECT_EQ(code_of(
                [&] {
                  DumpReader r(trunc);
                  r.read(0, 0, "v");
                },
                &msg),
            ExitCode::kDataError);
  EXPECT_NE(msg.find("trunc.h5"), std::string::npos) << msg;

  // An unknown schema major is refused (readers never guess at a newer layout).
  const fs::path v2 = scratch("v2.h5");
  fs::copy_file(good, v2, fs::copy_options::overwrite_existing);
  {
    std::lock_guard lock(sparge::io::h5::h5_mutex());
    sparge::io::h5::Hid f(H5Fopen(v2.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    ASSERT_TRUE(f.valid());
    ASSERT_TRUE(sparge::io::h5::write_int_attr(f.get(), "schema_version", 2));
  }
  EXPECT_EQ(code_of([&] { DumpReader r(v2); }, &msg), ExitCode::kDataError);
  EXPECT_NE(msg.find("unknown schema_version 2"), std::string::npos) << msg;
}

}  // namespace
