#include "tune/masks.hpp"

#include <fmt/format.h>

#include <mutex>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "io/dump.hpp"
#include "io/h5.hpp"
#include "tune/oracle.hpp"
#include "tune/token_order.hpp"

namespace sparge::tune {

namespace {

void check(bool ok, const std::filesystem::path& out, const std::string& what) {
  if (!ok) fail(ExitCode::kIoError, "{}: cannot write {}", out.string(), what);
}

io::h5::Hid group(hid_t parent, const std::string& name, const std::filesystem::path& out) {
  if (io::h5::link_exists(parent, name))
    return io::h5::Hid(H5Gopen2(parent, name.c_str(), H5P_DEFAULT));
  io::h5::Hid g(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  check(g.valid(), out, name);
  return g;
}

}  // namespace

void save_masks(const std::filesystem::path& dump, const config::TunedConfig& cfg,
                const std::vector<int>& layers, const std::optional<std::vector<int>>& samples,
                const std::filesystem::path& out) {
  io::DumpReader reader(dump);
  ref::AttentionOptions attention;
  attention.causal = cfg.kernel.causal;
  attention.sink = cfg.kernel.sink;
  attention.scale = reader.info().scale.value_or(0.0);
  const auto& g = cfg.kernel.geometry;
  // The masks the kernel would use: in the config's token order (block i of a Hilbert config
  // covers tokens perm[i * block_q ...], not the dump's rows).
  const TokenOrder order = config_token_order(cfg, reader.info(), "tuned config");

  produce_file_atomic(out, [&](const std::filesystem::path& tmp) {
    std::lock_guard lock(io::h5::h5_mutex());
    io::h5::silence_errors();
    io::h5::Hid file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    check(file.valid(), out, "file");
    check(io::h5::write_string_attr(file.get(), "schema", "sparge.masks") &&
              io::h5::write_int_attr(file.get(), "schema_version", 1) &&
              io::h5::write_int_attr(file.get(), "block_q", g.block_q) &&
              io::h5::write_int_attr(file.get(), "block_k", g.block_k) &&
              io::h5::write_string_attr(file.get(), "kernel", g.name) &&
              io::h5::write_int_attr(file.get(), "causal", attention.causal ? 1 : 0) &&
              io::h5::write_string_attr(file.get(), "permutation", cfg.permutation.order),
          out, "root attributes");
    auto layers_g = group(file.get(), "layers", out);
    for (int id : layers) {
      const auto* tl = cfg.find_layer(id);
      SPARGE_ASSERT(tl, "layer {} not in config", id);
      const auto& L = reader.layer(id);
      // Per head thresholds; dense heads get kDenseCandidate so the mask is all kept.
      ref::Thresholds thr;
      for (int h = 0; h < tl->heads(); ++h) {
        const bool sp = tl->sparse[static_cast<size_t>(h)];
        thr.tau.push_back(sp ? tl->tau[static_cast<size_t>(h)] : kDenseCandidate.tau);
        thr.theta.push_back(sp ? tl->theta[static_cast<size_t>(h)] : kDenseCandidate.theta);
        thr.lambda.push_back(tl->lambda[static_cast<size_t>(h)]);
        if (!tl->topk.empty()) thr.topk.push_back(sp ? tl->topk[static_cast<size_t>(h)] : 1.0f);
        if (!tl->sparsity_cap.empty())
          thr.sparsity_cap.push_back(sp ? tl->sparsity_cap[static_cast<size_t>(h)] : 1.0f);
      }
      auto lg = group(layers_g.get(), fmt::format("{:03d}", id), out);
      auto sg = group(lg.get(), "samples", out);
      std::vector<int> ids;
      if (samples) {
        ids = *samples;
      } else {
        for (const auto& s : L.samples) ids.push_back(s.index);
      }
      for (int s : ids) {
        // q [B, H, Nq, D], k [B, Hkv, Nk, D] -> mask [B, H, nq, nk] as uint8 for h5py/numpy.
        at::Tensor q = permute_tokens(reader.read(id, s, "q"), order);
        at::Tensor k = permute_tokens(reader.read(id, s, "k"), order);
        at::Tensor mask =
            ref::predict_block_mask(q, k, g, thr, attention).to(at::kByte).contiguous();
        auto ng = group(sg.get(), fmt::format("{:04d}", s), out);
        std::vector<hsize_t> dims(mask.sizes().begin(), mask.sizes().end());
        io::h5::Hid space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
        io::h5::Hid ds(H5Dcreate2(ng.get(), "mask", H5T_STD_U8LE, space.get(), H5P_DEFAULT,
                                  H5P_DEFAULT, H5P_DEFAULT));
        const std::string what = fmt::format("/layers/{:03d}/samples/{:04d}/mask", id, s);
        check(ds.valid(), out, what);
        check(H5Dwrite(ds.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                       mask.data_ptr<uint8_t>()) >= 0 &&
                  io::h5::write_int_attr(ds.get(), "block_q", g.block_q) &&
                  io::h5::write_int_attr(ds.get(), "block_k", g.block_k),
              out, what);
      }
    }
    check(file.close(), out, "file (close)");
  });
}

}  // namespace sparge::tune
